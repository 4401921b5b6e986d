"""The instance journal on real SQLite: exact decimals, fills stored once, readable while
written (WAL), and everything still there after reopening."""

from __future__ import annotations

import functools
import sqlite3
from decimal import Decimal
from pathlib import Path

import msgspec
from sqlmodel import Session, select

from worker.core.commands import PlaceOrder, ReportCycle, ReportTransition
from worker.core.events import Execution, OrderUpdate
from worker.core.model import Leg, Order, OrderStatus, OrderType, Phase, Purpose, Side
from worker.journal import ActionRecord, Journal, JournalWriter, journal_path

PLACE = PlaceOrder(
    link_id="btc-1700000000-1",
    leg=Leg.SPOT,
    side=Side.BUY,
    order_type=OrderType.LIMIT,
    qty=Decimal("0.002"),
    price=Decimal("65000.1"),
    post_only=True,
    reduce_only=False,
    purpose=Purpose.ENTRY,
)
FILL = Execution(
    link_id=PLACE.link_id,
    exec_id="e-1",
    qty=Decimal("0.002"),
    price=Decimal("65000.1"),
    fee=Decimal("0.000002"),
    fee_coin="BTC",
    is_maker=True,
    exec_ms=1_700_000_000_500,
)


def test_orders_fills_and_history_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "btc.sqlite"
    journal = Journal(path)
    journal.order_sent(PLACE, 1_700_000_000_000)
    journal.order_updated(
        OrderUpdate(
            link_id=PLACE.link_id,
            status=OrderStatus.FILLED,
            cum_qty=Decimal("0.002"),
            cum_value=Decimal("130.0002"),
            cum_fee=Decimal("0.000002"),
            fee_coin="BTC",
            qty=Decimal("0.002"),
            price=Decimal("65000.1"),
            updated_ms=1_700_000_000_600,
        ),
        1_700_000_000_600,
    )
    assert journal.fill(FILL) is True
    assert journal.fill(FILL) is False  # the same execution from the REST resync
    journal.transition(
        ReportTransition(source=Phase.FLAT, target=Phase.ENTRY_WORKING, trigger="t", reason="r"),
        1_700_000_000_000,
    )
    journal.cycle(
        ReportCycle(
            number=1,
            side="long_spot",
            qty=Decimal("0.002"),
            entry_price=None,
            pnl=Decimal("0.0123"),
            ended_by="unwind",
        ),
        1_700_000_001_000,
    )
    journal.error("venue", "x" * 5000, 1_700_000_001_000)
    journal.close()

    again = Journal(path)
    [order] = again.recent_orders()
    assert (order.status, order.cum_qty, order.price, order.fee_coin) == (
        "filled",
        "0.002",
        "65000.1",
        "BTC",
    )
    [fill] = again.recent_fills()
    assert (fill.qty, fill.fee) == ("0.002", "0.000002")
    [cycle] = again.cycles()
    assert Decimal(cycle.pnl) == Decimal("0.0123")
    again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT typeof(price) FROM fills").fetchone()[0] == "text"
        assert len(raw.execute("SELECT message FROM errors").fetchone()[0]) == 2000


def test_updates_for_orders_it_never_sent_are_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.order_updated(
        OrderUpdate(
            link_id="someone-else",
            status=OrderStatus.OPEN,
            cum_qty=Decimal(0),
            cum_value=None,
            cum_fee=Decimal(0),
            fee_coin="",
            qty=Decimal(1),
            price=None,
            updated_ms=1,
        ),
        1,
    )
    assert journal.recent_orders() == []
    journal.close()


def test_a_reader_sees_rows_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    writer = Journal(path)
    writer.order_sent(PLACE, 1)
    reader = Journal(path)  # the hub, in another connection
    assert [o.link_id for o in reader.recent_orders()] == [PLACE.link_id]
    writer.fill(FILL)
    assert [f.exec_id for f in reader.recent_fills()] == ["e-1"]
    reader.close()
    writer.close()


def test_the_writer_keeps_order_flushes_on_close_and_counts_failures(tmp_path: Path) -> None:
    path = tmp_path / "btc.journal.sqlite"
    writer = JournalWriter(path, batch_s=0.01)
    for i in range(20):
        writer.submit(functools.partial(Journal.action, action=f"a{i}", result="ok", ts_ms=i))

    def broken(_: Journal) -> None:
        raise RuntimeError("disk full")

    writer.submit(broken)
    writer.submit(lambda j: j.action("after", "ok", 99))
    writer.close()
    assert writer.failures == 1 and "disk full" in writer.last_error
    with Session(Journal(path).engine) as session:
        rows = session.exec(select(ActionRecord).order_by(ActionRecord.id)).all()  # type: ignore[arg-type]
    assert [r.action for r in rows] == [*(f"a{i}" for i in range(20)), "after"]


def test_journal_path_sits_beside_the_snapshot() -> None:
    assert journal_path(Path("state/btc.json")) == Path("state/btc.journal.sqlite")


def test_the_snapshots_orders_backfill_rows_the_journal_lacks(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.order_sent(PLACE, 1)
    lost = Order(
        link_id="btc-1-9",
        leg=Leg.PERP,
        side=Side.SELL,
        purpose=Purpose.HEDGE,
        order_type=OrderType.LIMIT,
        post_only=True,
        reduce_only=False,
        qty=Decimal("0.01"),
        price=Decimal("65000"),
        net_target=Decimal("0.01"),
        status=OrderStatus.OPEN,
        created_ms=5,
        cycle=1,
    )
    known = Order(**{**msgspec.structs.asdict(lost), "link_id": PLACE.link_id})
    assert journal.orders_known([known, lost], 7) == 1  # the existing row is left alone
    rows = {r.link_id: r for r in journal.recent_orders()}
    assert rows[PLACE.link_id].purpose == str(PLACE.purpose)
    assert rows["btc-1-9"].purpose == "hedge" and rows["btc-1-9"].status == "open"
    assert journal.orders_known([lost], 8) == 0

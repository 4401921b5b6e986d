"""The local order book: snapshot + deltas, update-id gaps, resets — fed by the simulator."""

from __future__ import annotations

from decimal import Decimal

from tests.unit.sim_helpers import Sim
from worker.core.events import BookInvalid, BookTop
from worker.core.model import Leg
from worker.venues.book import LocalBook
from worker.venues.bybit.parse import parse_book
from worker.venues.types import BookUpdate

D = Decimal
TOPIC = "orderbook.50.BTCUSDT"


def _update(u: int, *, snapshot: bool = False, bids: list[tuple[str, str]] | None = None,
            asks: list[tuple[str, str]] | None = None) -> BookUpdate:  # fmt: skip
    return BookUpdate(
        symbol="BTCUSDT",
        depth=50,
        snapshot=snapshot,
        bids=[(D(p), D(q)) for p, q in bids or []],
        asks=[(D(p), D(q)) for p, q in asks or []],
        update_id=u,
        seq=u,
        ts_ms=1000 + u,
    )


def test_snapshot_then_deltas_track_the_top() -> None:
    book = LocalBook(Leg.PERP)
    top = book.apply(
        _update(7, snapshot=True, bids=[("100", "1"), ("99", "2")], asks=[("101", "1")])
    )
    assert isinstance(top, BookTop)
    assert (top.bid, top.ask, top.bid_qty, top.update_id) == (D("100"), D("101"), D("1"), 7)
    top = book.apply(_update(8, bids=[("100", "0"), ("99.5", "3")], asks=[("100.5", "2")]))
    assert isinstance(top, BookTop)
    assert (top.bid, top.bid_qty, top.ask, top.ask_qty) == (D("99.5"), D("3"), D("100.5"), D("2"))


def test_a_gap_invalidates_until_the_next_snapshot() -> None:
    book = LocalBook(Leg.SPOT)
    book.apply(_update(7, snapshot=True, bids=[("100", "1")], asks=[("101", "1")]))
    invalid = book.apply(_update(9, bids=[("100", "2")]))
    assert isinstance(invalid, BookInvalid)
    assert "7 then 9" in invalid.reason
    assert book.needs_snapshot
    assert book.apply(_update(10, bids=[("100", "2")])) is None  # still waiting
    top = book.apply(_update(20, snapshot=True, bids=[("99", "1")], asks=[("101", "1")]))
    assert isinstance(top, BookTop) and top.bid == D("99")
    assert not book.needs_snapshot


def test_update_id_one_is_a_restart_and_resets_the_book() -> None:
    book = LocalBook(Leg.PERP)
    book.apply(_update(50, snapshot=True, bids=[("100", "1"), ("98", "1")], asks=[("101", "1")]))
    top = book.apply(_update(1, bids=[("97", "1")], asks=[("102", "1")]))
    assert isinstance(top, BookTop)
    assert (top.bid, top.ask) == (D("97"), D("102"))  # nothing of the old book survives


def test_deltas_before_any_snapshot_are_ignored_and_an_empty_side_is_invalid() -> None:
    book = LocalBook(Leg.PERP)
    assert book.apply(_update(3, bids=[("100", "1")])) is None
    invalid = book.apply(_update(4, snapshot=True, bids=[("100", "1")]))
    assert isinstance(invalid, BookInvalid)
    assert "empty" in invalid.reason


def test_the_simulators_stream_rebuilds_its_book_and_skip_u_is_caught() -> None:
    sim = Sim()
    sim.book("linear")
    book = LocalBook(Leg.PERP)
    first = sim.ex.snapshot_for("linear", TOPIC)
    assert first is not None
    book.apply(parse_book(first))
    sim.public.clear()
    sim.place("linear", "Buy", "0.5", "65000.0")
    sim.trade("linear", "Buy", "65000.2", "1.5")
    for _, topic, raw in list(sim.public):
        if topic == TOPIC:
            top = book.apply(parse_book(raw))
            assert isinstance(top, BookTop)
    expected = sim.top("linear", "Buy", 50), sim.top("linear", "Sell", 50)
    assert sorted(book.bids.items(), reverse=True) == expected[0]
    assert sorted(book.asks.items()) == expected[1]
    sim.public.clear()
    sim.ex.skip_u("linear", "BTCUSDT")
    sim.trade("linear", "Sell", "64999.9", "0.1")
    [raw] = [raw for _, topic, raw in sim.public if topic == TOPIC]
    assert isinstance(book.apply(parse_book(raw)), BookInvalid)

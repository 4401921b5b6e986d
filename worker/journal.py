"""The instance's journal: an SQLite history of orders, fills, transitions, cycles, errors and
operator actions (ARCHITECTURE §6), beside the snapshot.

The snapshot is the state that trading resumes from; the journal is the record people read
(the hub's row page, reconciliation, PnL reports). It is opened in WAL mode so the hub can
read while the worker writes. Decimals are stored as their exact text, never as REAL. A fill
is keyed by its execution id, so a fill seen twice (stream and REST resync) is stored once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from queue import SimpleQueue

from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

from worker.core.commands import PlaceOrder, ReportCycle, ReportTransition
from worker.core.events import Execution, OrderUpdate
from worker.core.model import Order

__all__ = [
    "ActionRecord",
    "CycleRecord",
    "ErrorRecord",
    "FillRecord",
    "Journal",
    "JournalWriter",
    "OrderRecord",
    "TransitionRecord",
    "journal_path",
]


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class OrderRecord(SQLModel, table=True):
    __tablename__ = "orders"

    link_id: str = Field(primary_key=True)
    leg: str
    side: str
    order_type: str
    purpose: str
    qty: str
    price: str | None
    post_only: bool
    reduce_only: bool
    status: str = "submitting"
    cum_qty: str = "0"
    cum_fee: str = "0"
    fee_coin: str = ""
    reject: str = ""
    created_ms: int
    updated_ms: int


class FillRecord(SQLModel, table=True):
    __tablename__ = "fills"

    exec_id: str = Field(primary_key=True)
    link_id: str = Field(index=True)
    qty: str
    price: str
    fee: str
    fee_coin: str
    is_maker: bool
    exec_ms: int = Field(index=True)


class TransitionRecord(SQLModel, table=True):
    __tablename__ = "transitions"

    id: int | None = Field(default=None, primary_key=True)
    ts_ms: int = Field(index=True)
    source: str
    target: str
    trigger: str
    reason: str


class CycleRecord(SQLModel, table=True):
    __tablename__ = "cycles"

    number: int = Field(primary_key=True)
    ts_ms: int
    side: str
    qty: str
    entry_price: str | None
    pnl: str
    ended_by: str


class ErrorRecord(SQLModel, table=True):
    __tablename__ = "errors"

    id: int | None = Field(default=None, primary_key=True)
    ts_ms: int = Field(index=True)
    kind: str
    message: str


class ActionRecord(SQLModel, table=True):
    __tablename__ = "actions"

    id: int | None = Field(default=None, primary_key=True)
    ts_ms: int = Field(index=True)
    action: str
    result: str


def _order_record(
    order: PlaceOrder | Order,
    *,
    created_ms: int,
    updated_ms: int,
    status: str = "submitting",
    cum_qty: str = "0",
) -> OrderRecord:
    """The row of an order as sent (a command) or as the snapshot holds it."""
    return OrderRecord(
        link_id=order.link_id,
        leg=str(order.leg),
        side=str(order.side),
        order_type=str(order.order_type),
        purpose=str(order.purpose),
        qty=str(order.qty),
        price=_text(order.price),
        post_only=order.post_only,
        reduce_only=order.reduce_only,
        status=status,
        cum_qty=cum_qty,
        created_ms=created_ms,
        updated_ms=updated_ms,
    )


def _wal(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed row
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.engine: Engine = create_engine(f"sqlite:///{path}")
        event.listen(self.engine, "connect", _wal)
        SQLModel.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def order_sent(self, command: PlaceOrder, ts_ms: int) -> None:
        with Session(self.engine) as session:
            session.merge(_order_record(command, created_ms=ts_ms, updated_ms=ts_ms))
            session.commit()

    def orders_known(self, orders: Iterable[Order], ts_ms: int) -> int:
        """Rows for the snapshot's orders the journal lacks (their rows were still queued when
        the process was killed); existing rows are left alone. Returns how many were added."""
        added = 0
        with Session(self.engine) as session:
            for order in orders:
                if session.get(OrderRecord, order.link_id) is not None:
                    continue
                session.add(
                    _order_record(
                        order,
                        created_ms=order.created_ms,
                        updated_ms=ts_ms,
                        status=str(order.status),
                        cum_qty=str(order.filled),
                    )
                )
                added += 1
            session.commit()
        return added

    def order_updated(self, update: OrderUpdate, ts_ms: int) -> None:
        """The latest status of an order the journal knows (others are not the instance's)."""
        with Session(self.engine) as session:
            record = session.get(OrderRecord, update.link_id)
            if record is None:
                return
            record.status = str(update.status)
            record.cum_qty = str(update.cum_qty)
            record.cum_fee = str(update.cum_fee)
            record.fee_coin = update.fee_coin
            record.reject = str(update.reject or "")
            record.updated_ms = ts_ms
            session.add(record)
            session.commit()

    def fill(self, execution: Execution) -> bool:
        """Store a fill once; returns False when its execution id was already there."""
        row = {
            "exec_id": execution.exec_id,
            "link_id": execution.link_id,
            "qty": str(execution.qty),
            "price": str(execution.price),
            "fee": str(execution.fee),
            "fee_coin": execution.fee_coin,
            "is_maker": execution.is_maker,
            "exec_ms": execution.exec_ms,
        }
        statement = insert(FillRecord).values(**row).on_conflict_do_nothing()
        with Session(self.engine) as session:
            result = session.exec(statement)
            session.commit()
            return bool(result.rowcount)

    def transition(self, report: ReportTransition, ts_ms: int) -> None:
        self._add(
            TransitionRecord(
                ts_ms=ts_ms,
                source=str(report.source),
                target=str(report.target),
                trigger=report.trigger,
                reason=report.reason,
            )
        )

    def cycle(self, report: ReportCycle, ts_ms: int) -> None:
        with Session(self.engine) as session:
            session.merge(
                CycleRecord(
                    number=report.number,
                    ts_ms=ts_ms,
                    side=report.side,
                    qty=str(report.qty),
                    entry_price=_text(report.entry_price),
                    pnl=str(report.pnl),
                    ended_by=report.ended_by,
                )
            )
            session.commit()

    def error(self, kind: str, message: str, ts_ms: int) -> None:
        self._add(ErrorRecord(ts_ms=ts_ms, kind=kind, message=message[:2000]))

    def action(self, action: str, result: str, ts_ms: int) -> None:
        self._add(ActionRecord(ts_ms=ts_ms, action=action, result=result))

    def _add(self, record: SQLModel) -> None:
        with Session(self.engine) as session:
            session.add(record)
            session.commit()

    # --- reading (the hub's row page, reports) ----------------------------------------------

    def recent_orders(self, limit: int = 50) -> list[OrderRecord]:
        with Session(self.engine) as session:
            query = select(OrderRecord).order_by(OrderRecord.created_ms.desc()).limit(limit)  # type: ignore[attr-defined]
            return list(session.exec(query))

    def recent_fills(self, limit: int = 50) -> list[FillRecord]:
        with Session(self.engine) as session:
            query = select(FillRecord).order_by(FillRecord.exec_ms.desc()).limit(limit)  # type: ignore[attr-defined]
            return list(session.exec(query))

    def cycles(self) -> list[CycleRecord]:
        with Session(self.engine) as session:
            return list(session.exec(select(CycleRecord).order_by(CycleRecord.number)))  # type: ignore[arg-type]


def journal_path(state_path: Path) -> Path:
    """The journal beside the snapshot: ``state/btc.json`` → ``state/btc.journal.sqlite``."""
    return state_path.with_name(state_path.stem + ".journal.sqlite")


class JournalWriter:
    """Journal writes on one background thread, in order, away from the order path.

    The thread waits ``batch_s`` after the first write of a batch and then performs every
    write queued meanwhile, so the SQLite and ORM work (which holds the GIL) happens in
    bursts a moment after the orders are out, not while the next ones are decided. A write
    that fails is counted and remembered, never raised into the trading path: the snapshot,
    not the journal, is what the worker resumes from.
    """

    def __init__(self, path: Path, *, batch_s: float = 0.05) -> None:
        self.batch_s = batch_s
        self.failures = 0
        self.last_error = ""
        self._queue: SimpleQueue[Callable[[Journal], object] | None] = SimpleQueue()
        self._journal = Journal(path)
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[Journal], object]) -> None:
        self._queue.put(write)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not None:
                time.sleep(self.batch_s)
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get())
            for write in batch:
                if write is None:
                    return
                self._write(write)

    def _write(self, write: Callable[[Journal], object]) -> None:
        try:
            write(self._journal)
        except Exception as exc:  # a journal problem must not stop trading
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]

    def close(self) -> None:
        """Finish every queued write, then close the database."""
        self._queue.put(None)
        self._thread.join()
        self._journal.close()

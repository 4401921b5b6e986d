"""Append-only journal of the simulator's accounts, orders, executions and positions.

Each client operation appends the records it changed, in one ``write()``, before its reply is
sent, so a process kill never loses an acknowledged order or fill (power loss is out of
scope: there is no fsync). At start the journal is replayed (last record of each order, coin
and position wins; executions accumulate), then rewritten compactly through a temporary file
and an atomic rename. A torn last line from a kill mid-write is ignored; a bad line anywhere
else is an error, never silently skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from exchange_sim.state import Coin, Execution, Order, Position

if TYPE_CHECKING:
    from exchange_sim.engine import Exchange

__all__ = ["Journal", "JournalError"]

_encoder = msgspec.json.Encoder(decimal_format="string")


class JournalError(RuntimeError):
    """The state file cannot be read or replayed."""


class _Counters(msgspec.Struct):
    orders: int
    execs: int
    seq: int
    trades: int
    messages: int


def _line(kind: str, *parts: Any) -> bytes:
    return _encoder.encode([kind, *parts]) + b"\n"


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._last_counters: _Counters | None = None

    def write_op(
        self,
        exchange: Exchange,
        orders: Iterable[Order],
        execs: Iterable[Execution],
        coins: Iterable[tuple[str, str]],
        positions: Iterable[tuple[str, str]],
    ) -> None:
        lines = [_line("o", o) for o in orders]
        lines += [_line("x", ex) for ex in execs]
        lines += [_line("c", key, name, exchange.accounts[key].coins[name]) for key, name in coins]
        lines += [
            _line("p", key, exchange.accounts[key].positions[symbol]) for key, symbol in positions
        ]
        counters = _counters(exchange)
        if not lines and counters == self._last_counters:
            return  # nothing changed (ids handed out, e.g. public trade ids, count as change)
        self._last_counters = counters
        lines.append(_line("n", counters))
        self._write(b"".join(lines))

    def write_model(self, state: dict[str, tuple[float, float]]) -> None:
        """The market model's position (spot mids and basis), so a restart continues there."""
        self._write(_line("m", state))

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise JournalError("journal is not open")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def replay(self, exchange: Exchange) -> None:
        """Load the journal into ``exchange`` (fresh from its config), then compact it."""
        if self.path.exists():
            self._load(exchange)
        self._compact(exchange)

    def _load(self, exchange: Exchange) -> None:
        """Apply the journal operation by operation: an operation's records count only once
        its closing counters record (``n``) is there, so one torn by a kill is left out
        whole (it was never acknowledged)."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read state file {self.path}: {exc.strerror}") from None
        lines = raw.split(b"\n")
        complete = raw.endswith(b"\n")
        orders: dict[str, Order] = {}
        pending: list[_Record] = []
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                record = _decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                if number == len(lines) and not complete:  # a kill during write()
                    break
                raise JournalError(f"{self.path}:{number}: unreadable record ({exc})") from None
            if isinstance(record, _ModelRecord):  # self-contained, written on its own
                exchange.model.restore(record.state)
                continue
            pending.append(record)
            if isinstance(record, _Counters):
                try:
                    for item in pending:
                        _apply(exchange, item, orders)
                except KeyError as exc:
                    raise JournalError(f"{self.path}:{number}: unknown api key {exc}") from None
                pending.clear()
        for account in exchange.accounts.values():
            account.orders.clear()
            account.by_id.clear()
            account.by_link.clear()
            account.open_orders.clear()
        for order in sorted(orders.values(), key=lambda o: o.number):
            owner = exchange.accounts.get(order.api_key)
            if owner is None:
                raise JournalError(f"{self.path}: order {order.order_id} of an unknown api key")
            owner.add_order(order)
            if order.is_open and order.order_type == "Limit":
                # at most the queue it had; the new background clamps it further
                exchange.books[(order.category, order.symbol)].rest(order, ahead=order.ahead)

    def _compact(self, exchange: Exchange) -> None:
        """Rewrite the journal as the current state, then append to it."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for key, account in exchange.accounts.items():
            lines += [_line("c", key, name, coin) for name, coin in account.coins.items()]
            lines += [_line("p", key, pos) for pos in account.positions.values()]
        everything = sorted(
            (o for a in exchange.accounts.values() for o in a.orders), key=lambda o: o.number
        )
        lines += [_line("o", o) for o in everything]
        for account in exchange.accounts.values():
            lines += [_line("x", ex) for ex in account.executions]
        self._last_counters = _counters(exchange)
        lines.append(_line("n", self._last_counters))
        lines.append(_line("m", exchange.model.state()))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(b"".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)


class _CoinRecord(msgspec.Struct):
    api_key: str
    name: str
    coin: Coin


class _PositionRecord(msgspec.Struct):
    api_key: str
    position: Position


class _ModelRecord(msgspec.Struct):
    state: dict[str, tuple[float, float]]


_Record = Order | Execution | _CoinRecord | _PositionRecord | _Counters | _ModelRecord


def _decode(line: bytes) -> _Record:
    kind, *parts = msgspec.json.decode(line, type=list[msgspec.Raw])
    tag = msgspec.json.decode(kind, type=str)
    if tag == "o":
        return msgspec.json.decode(parts[0], type=Order)
    if tag == "x":
        return msgspec.json.decode(parts[0], type=Execution)
    if tag == "c":
        key = msgspec.json.decode(parts[0], type=str)
        name = msgspec.json.decode(parts[1], type=str)
        return _CoinRecord(key, name, msgspec.json.decode(parts[2], type=Coin))
    if tag == "p":
        key = msgspec.json.decode(parts[0], type=str)
        return _PositionRecord(key, msgspec.json.decode(parts[1], type=Position))
    if tag == "n":
        return msgspec.json.decode(parts[0], type=_Counters)
    if tag == "m":
        return _ModelRecord(msgspec.json.decode(parts[0], type=dict[str, tuple[float, float]]))
    raise ValueError(f"unknown record kind {tag!r}")


def _apply(exchange: Exchange, record: _Record, orders: dict[str, Order]) -> None:
    if isinstance(record, Order):
        orders[record.order_id] = record
    elif isinstance(record, Execution):
        exchange.accounts[record.api_key].executions.append(record)
    elif isinstance(record, _CoinRecord):
        exchange.accounts[record.api_key].coins[record.name] = record.coin
    elif isinstance(record, _PositionRecord):
        exchange.accounts[record.api_key].positions[record.position.symbol] = record.position
    elif isinstance(record, _Counters):
        exchange.order_counter = max(exchange.order_counter, record.orders)
        exchange.exec_counter = max(exchange.exec_counter, record.execs)
        exchange.exec_seq = max(exchange.exec_seq, record.seq)
        exchange.trade_counter = max(exchange.trade_counter, record.trades)
        exchange.message_counter = max(exchange.message_counter, record.messages)


def _counters(exchange: Exchange) -> _Counters:
    return _Counters(
        orders=exchange.order_counter,
        execs=exchange.exec_counter,
        seq=exchange.exec_seq,
        trades=exchange.trade_counter,
        messages=exchange.message_counter,
    )

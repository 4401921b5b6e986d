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
        if not lines:
            return
        lines.append(_line("n", _counters(exchange)))
        self._write(b"".join(lines))

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
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read state file {self.path}: {exc.strerror}") from None
        lines = raw.split(b"\n")
        complete = raw.endswith(b"\n")
        orders: dict[str, Order] = {}
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            last = number == len(lines) and not complete
            try:
                self._apply(exchange, line, orders)
            except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError) as exc:
                if last:  # a kill during write(): the operation was never acknowledged
                    break
                raise JournalError(f"{self.path}:{number}: unreadable record ({exc})") from None
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
                exchange.books[(order.category, order.symbol)].rest(order)

    @staticmethod
    def _apply(exchange: Exchange, line: bytes, orders: dict[str, Order]) -> None:
        kind, *parts = msgspec.json.decode(line, type=list[msgspec.Raw])
        tag = msgspec.json.decode(kind, type=str)
        if tag == "o":
            order = msgspec.json.decode(parts[0], type=Order)
            orders[order.order_id] = order
        elif tag == "x":
            ex = msgspec.json.decode(parts[0], type=Execution)
            exchange.accounts[ex.api_key].executions.append(ex)
        elif tag == "c":
            key = msgspec.json.decode(parts[0], type=str)
            name = msgspec.json.decode(parts[1], type=str)
            exchange.accounts[key].coins[name] = msgspec.json.decode(parts[2], type=Coin)
        elif tag == "p":
            key = msgspec.json.decode(parts[0], type=str)
            pos = msgspec.json.decode(parts[1], type=Position)
            exchange.accounts[key].positions[pos.symbol] = pos
        elif tag == "n":
            counters = msgspec.json.decode(parts[0], type=_Counters)
            exchange.order_counter = max(exchange.order_counter, counters.orders)
            exchange.exec_counter = max(exchange.exec_counter, counters.execs)
            exchange.exec_seq = max(exchange.exec_seq, counters.seq)
            exchange.trade_counter = max(exchange.trade_counter, counters.trades)
            exchange.message_counter = max(exchange.message_counter, counters.messages)
        else:
            raise ValueError(f"unknown record kind {tag!r}")

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
        lines.append(_line("n", _counters(exchange)))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(b"".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)


def _counters(exchange: Exchange) -> _Counters:
    return _Counters(
        orders=exchange.order_counter,
        execs=exchange.exec_counter,
        seq=exchange.exec_seq,
        trades=exchange.trade_counter,
        messages=exchange.message_counter,
    )

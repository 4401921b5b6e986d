"""One instrument's limit order book: background liquidity plus resting user orders.

The market model (or ``/sim/book``) owns the *background* size at each price; user orders
rest on top of it in time priority. A user order remembers how much background was in front
of it when it joined the level (``ahead``), so it fills only after the traded volume at its
price has used up that queue. Background added later queues behind it; background removed
later shrinks the queue in front of it (cancellations ahead of us), never behind it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

__all__ = ["Book", "Fill", "Level", "Resting", "whole_lots"]

ZERO = Decimal(0)


def whole_lots(qty: Decimal, step: Decimal) -> Decimal:
    """``qty`` rounded down to a multiple of ``step``, unchanged (digits and all) if it is one."""
    rest = qty % step
    return qty - rest if rest else qty


class Resting(Protocol):
    """What the book needs from a user order resting in it."""

    side: str
    price: Decimal
    leaves: Decimal
    ahead: Decimal


@dataclass(slots=True)
class Level:
    price: Decimal
    background: Decimal = ZERO
    orders: list[Resting] = field(default_factory=list)

    def total(self) -> Decimal:
        return self.background + sum((o.leaves for o in self.orders), ZERO)

    def empty(self) -> bool:
        return self.background <= 0 and not self.orders


@dataclass(slots=True, frozen=True)
class Fill:
    """A taker's match at one price against background (``maker is None``) or a user order."""

    price: Decimal
    qty: Decimal
    maker: Resting | None


class _Side:
    """One side of the book: levels by price plus the prices kept sorted ascending."""

    __slots__ = ("descending", "levels", "prices")

    def __init__(self, *, descending: bool) -> None:
        self.levels: dict[Decimal, Level] = {}
        self.prices: list[Decimal] = []
        self.descending = descending

    def level(self, price: Decimal) -> Level:
        level = self.levels.get(price)
        if level is None:
            level = Level(price)
            self.levels[price] = level
            bisect.insort(self.prices, price)
        return level

    def drop_if_empty(self, level: Level) -> None:
        if level.empty() and self.levels.get(level.price) is level:
            del self.levels[level.price]
            self.prices.pop(bisect.bisect_left(self.prices, level.price))

    def best(self) -> Decimal | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.descending else self.prices[0]

    def walk(self) -> Iterator[Level]:
        """Levels from the best price outwards (over a copy: callers may empty levels)."""
        ordered = reversed(self.prices) if self.descending else iter(self.prices)
        for price in list(ordered):
            level = self.levels.get(price)
            if level is not None:
                yield level

    def scan(self) -> Iterator[Level]:
        """Levels from the best price outwards, read-only (the book must not change)."""
        levels = self.levels
        for price in reversed(self.prices) if self.descending else self.prices:
            yield levels[price]


class Book:
    """Price-time priority book of one instrument."""

    __slots__ = ("asks", "bids", "users")

    def __init__(self) -> None:
        self.bids = _Side(descending=True)
        self.asks = _Side(descending=False)
        self.users = 0  # user orders resting in the book

    def side(self, side: str) -> _Side:
        """``Buy`` orders rest in the bids, ``Sell`` orders in the asks."""
        return self.bids if side == "Buy" else self.asks

    def best_bid(self) -> Decimal | None:
        return self.bids.best()

    def best_ask(self) -> Decimal | None:
        return self.asks.best()

    def top(self, side: str, depth: int) -> list[tuple[Decimal, Decimal]]:
        """Aggregated ``(price, size)`` of the best ``depth`` levels of one side."""
        out: list[tuple[Decimal, Decimal]] = []
        for level in self.side(side).scan():
            size = level.total()
            if size > 0:
                out.append((level.price, size))
                if len(out) == depth:
                    break
        return out

    # --- user orders -------------------------------------------------------------------

    def best_user_price(self, side: str) -> Decimal | None:
        """The best price on one side where a user order rests."""
        for level in self.side(side).scan():
            if level.orders:
                return level.price
        return None

    def rest(self, order: Resting, *, ahead: Decimal | None = None) -> None:
        """Join the back of the queue at the order's price (or, restoring an order after a
        restart, keep at most its old queue ``ahead`` of it)."""
        level = self.side(order.side).level(order.price)
        order.ahead = level.background if ahead is None else min(ahead, level.background)
        level.orders.append(order)
        self.users += 1

    def remove(self, order: Resting) -> None:
        side = self.side(order.side)
        level = side.levels.get(order.price)
        if level is None:
            return
        try:
            level.orders.remove(order)
        except ValueError:
            return
        self.users -= 1
        side.drop_if_empty(level)

    def reduce(self, order: Resting, new_leaves: Decimal) -> None:
        """Shrink a resting order in place; it keeps its queue position."""
        order.leaves = new_leaves

    # --- background liquidity ----------------------------------------------------------

    def background(self, side: str) -> dict[Decimal, Decimal]:
        return {
            level.price: level.background
            for level in self.side(side).levels.values()
            if level.background > 0
        }

    def set_background(self, side: str, price: Decimal, size: Decimal) -> None:
        """Set the background size at one price; queues ahead of users only ever shrink."""
        book_side = self.side(side)
        if size <= 0:
            level = book_side.levels.get(price)
            if level is None:
                return
            level.background = ZERO
            for order in level.orders:
                order.ahead = ZERO
            book_side.drop_if_empty(level)
            return
        level = book_side.level(price)
        level.background = size
        for order in level.orders:
            order.ahead = min(order.ahead, size)

    def clear_background(self, side: str) -> None:
        for price in list(self.side(side).levels):
            self.set_background(side, price, ZERO)

    # --- matching ----------------------------------------------------------------------

    def match(
        self,
        taker_side: str,
        limit: Decimal,
        *,
        qty: Decimal | None = None,
        value: Decimal | None = None,
        step: Decimal,
        exclude: Resting | None = None,
    ) -> list[Fill]:
        """Take liquidity from the opposite side up to ``limit`` (never beyond it).

        The taker is bounded by ``qty`` (base units) or by ``value`` (quote units, a spot
        market buy by value; each level's quantity is floored to ``step``). Background and
        user orders at a level trade in queue order. The book is updated; the caller applies
        the fills to the user orders (``Fill.maker``) and removes the filled ones.
        """
        opposite = self.asks if taker_side == "Buy" else self.bids
        fills: list[Fill] = []
        remaining_qty = qty
        remaining_value = value
        for level in opposite.walk():
            price = level.price
            if (taker_side == "Buy" and price > limit) or (taker_side == "Sell" and price < limit):
                break
            if remaining_value is not None:
                want = (remaining_value / price // step) * step
            else:
                assert remaining_qty is not None
                want = remaining_qty
            if want <= 0:
                break
            taken = self._take_level(level, want, fills, exclude, step)
            opposite.drop_if_empty(level)
            if remaining_value is not None:
                remaining_value -= taken * price
            else:
                assert remaining_qty is not None
                remaining_qty -= taken
            if taken < want:
                continue
            break
        return fills

    def _take_level(
        self, level: Level, want: Decimal, fills: list[Fill], exclude: Resting | None, step: Decimal
    ) -> Decimal:
        """Consume up to ``want`` from one level in queue order; return what was taken. A user
        order fills in whole ``step``s only, as on the venue (background has no such rule)."""
        left = want
        for order in list(level.orders):
            if order is exclude:
                continue
            in_front = min(order.ahead, level.background)
            take = min(left, in_front)
            if take > 0:
                _take_background(level, take)
                fills.append(Fill(level.price, take, None))
                left -= take
            if left <= 0:
                break
            take = whole_lots(min(left, order.leaves), step)
            if take > 0:
                fills.append(Fill(level.price, take, order))
                order.leaves -= take
                left -= take
                if order.leaves <= 0:
                    level.orders.remove(order)
                    self.users -= 1
            if left <= 0:
                break
        if left > 0 and level.background > 0:
            take = min(left, level.background)
            _take_background(level, take)
            fills.append(Fill(level.price, take, None))
            left -= take
        return want - left


def _take_background(level: Level, qty: Decimal) -> None:
    """Background traded away from the front of the level moves every queue forward."""
    level.background -= qty
    for order in level.orders:
        order.ahead = max(ZERO, order.ahead - qty)

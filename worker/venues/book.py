"""A local order book rebuilt from snapshot + delta messages, with sequence checking.

It turns the venue's book messages into the core's ``BookTop`` (best bid and ask) or
``BookInvalid`` (the book cannot be trusted). A delta must carry the update id right after
the previous one; anything else is a gap: the book is invalid until the next snapshot, and
``needs_snapshot`` tells the runtime to resubscribe. An update id of 1 is the venue
restarting its stream and resets the book like a snapshot. Staleness and crossed books are
the core's to judge (it sees every ``BookTop`` with its receive time).
"""

from __future__ import annotations

from decimal import Decimal

from worker.core.events import BookInvalid, BookTop
from worker.core.model import Leg
from worker.venues.types import BookUpdate

__all__ = ["LocalBook"]


class LocalBook:
    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.last_update_id: int | None = None
        self.needs_snapshot = True

    def reset(self, reason: str) -> BookInvalid:
        """Forget the book (disconnect, resubscribe): invalid until the next snapshot."""
        self.bids.clear()
        self.asks.clear()
        self.last_update_id = None
        self.needs_snapshot = True
        return BookInvalid(leg=self.leg, reason=reason)

    def apply(self, update: BookUpdate) -> BookTop | BookInvalid | None:
        """The new top of book, ``BookInvalid`` on a gap, or ``None`` while waiting for a
        snapshot."""
        if update.snapshot or update.update_id == 1:
            self.bids = {price: size for price, size in update.bids if size}
            self.asks = {price: size for price, size in update.asks if size}
            self.needs_snapshot = False
        elif self.needs_snapshot or self.last_update_id is None:
            return None  # deltas before the first snapshot mean nothing
        elif update.update_id != self.last_update_id + 1:
            return self.reset(
                f"update id gap on {update.symbol}: {self.last_update_id} then {update.update_id}"
            )
        else:
            _merge(self.bids, update.bids)
            _merge(self.asks, update.asks)
        self.last_update_id = update.update_id
        if not self.bids or not self.asks:
            return BookInvalid(leg=self.leg, reason=f"one side of {update.symbol} is empty")
        bid = max(self.bids)
        ask = min(self.asks)
        return BookTop(
            leg=self.leg,
            bid=bid,
            ask=ask,
            bid_qty=self.bids[bid],
            ask_qty=self.asks[ask],
            ts_ms=update.ts_ms,
            update_id=update.update_id,
        )


def _merge(side: dict[Decimal, Decimal], levels: list[tuple[Decimal, Decimal]]) -> None:
    """Size 0 deletes a level; any other size inserts or replaces it."""
    for price, size in levels:
        if size:
            side[price] = size
        else:
            side.pop(price, None)

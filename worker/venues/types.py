"""Venue-neutral shapes the venue layer hands to the runtime (besides the core's events).

Order, execution and balance news become the core's own events (``worker.core.events``);
what the core does not consume directly (depth updates, positions) is described here.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = ["BookUpdate", "PositionState"]

Level = tuple[Decimal, Decimal]


class BookUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One order-book message: a full ``snapshot`` or a ``delta`` (size 0 deletes a level).

    ``update_id`` must follow the previous one by exactly 1 on a delta; ``update_id == 1``
    is a venue restart and resets the book (Bybit's ``u``).
    """

    symbol: str
    depth: int
    snapshot: bool
    bids: list[Level]
    asks: list[Level]
    update_id: int
    seq: int
    ts_ms: int


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    """A perpetual position in one-way mode: ``size`` > 0 long, < 0 short, 0 flat."""

    symbol: str
    size: Decimal
    avg_price: Decimal

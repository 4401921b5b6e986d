"""Venue-neutral shapes the venue layer hands to the runtime (besides the core's events).

Order, execution and balance news become the core's own events (``worker.core.events``);
what the core does not consume directly (depth updates, positions) is described here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import msgspec

from worker.core.events import Event
from worker.core.instruments import FeeRates, InstrumentRules
from worker.core.model import Leg

__all__ = ["BookUpdate", "Listener", "PositionState", "VenueSetup"]

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


@dataclass(frozen=True)
class VenueSetup:
    """What the pre-trading checks learned: the legs' rules and fees, and the clock skew."""

    spot: InstrumentRules
    perp: InstrumentRules
    spot_fees: FeeRates
    perp_fees: FeeRates
    skew_ms: int
    warnings: list[str]


class Listener(Protocol):
    """What a venue's streams report to the runtime (called on the event loop)."""

    def on_book(self, leg: Leg, update: BookUpdate) -> None:
        """An order-book message of either depth (1 or 50)."""

    def on_events(self, events: list[Event]) -> None:
        """Order updates, executions, funding and balances from the private stream. Messages
        naming none of the instance's orders are dropped unread by the venue; the runtime
        still keeps only its own orders and coins."""

    def on_position(self, position: PositionState) -> None:
        """The instance's perp position changed at the venue."""

    def on_link(self, name: str, up: bool, reason: str) -> None:
        """A stream (``spot``, ``perp`` or ``private``) connected (resync now) or dropped."""

    def on_bad_message(self, source: str, detail: str, raw: bytes) -> None:
        """A message that does not parse: logged and counted, never a crash (§5.9)."""

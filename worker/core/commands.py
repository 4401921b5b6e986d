"""What the core asks the world to do. The runtime executes a decision's commands in order:
a :class:`ReserveIds` before the orders that use those ids, so every id is durably accounted
for before it can reach the venue (ARCHITECTURE §5.1)."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from worker.core.model import Leg, OrderType, Phase, Purpose, Side


class ReserveIds(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Persist durably that sequence numbers below ``block_end`` of ``epoch`` may be in use."""

    epoch: int
    block_end: int


class PlaceOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A PostOnly limit (``post_only``) or a market order; ``qty`` is always in base units."""

    link_id: str
    leg: Leg
    side: Side
    order_type: OrderType
    qty: Decimal
    price: Decimal | None
    post_only: bool
    reduce_only: bool
    purpose: Purpose


class AmendOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    link_id: str
    leg: Leg
    qty: Decimal | None  # new total quantity, None = unchanged
    price: Decimal | None  # None = unchanged


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    link_id: str
    leg: Leg


class QueryOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Resolve an order's true state at the venue (by ``orderLinkId``)."""

    link_id: str
    leg: Leg


class ReportTransition(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    source: Phase
    target: Phase
    trigger: str
    reason: str


class ReportHalt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    reason: str
    detail: str


class ReportRiskBlock(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    blocked: bool
    reason: str


class ReportBlocked(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An entry is held back (empty ``reason``: no longer held back). Sent on change only."""

    reason: str


class ReportCycle(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    number: int
    side: str
    qty: Decimal
    entry_price: Decimal | None
    pnl: Decimal
    ended_by: str


class ReportRefused(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An operator command that does not apply now, and why."""

    command: str
    reason: str


class ReportAnomaly(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A venue message that does not fit (logged and counted; never crashes the worker)."""

    kind: str
    detail: str


class ReportStopped(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Stop is complete: nothing is in flight that the snapshot could miss; safe to exit."""


Command = (
    ReserveIds
    | PlaceOrder
    | AmendOrder
    | CancelOrder
    | QueryOrder
    | ReportTransition
    | ReportHalt
    | ReportRiskBlock
    | ReportBlocked
    | ReportCycle
    | ReportRefused
    | ReportAnomaly
    | ReportStopped
)
ORDER_COMMANDS = (PlaceOrder, AmendOrder, CancelOrder)

"""Everything that can happen to an instance, as plain data. Time is never inside the core:
it arrives with each event as ``now_ms`` (see :meth:`worker.core.strategy.Core.step`)."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from worker.core.model import Leg, OrderStatus, RejectKind, Request


class BookTop(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Best bid and ask of one leg, from a book the venue layer has checked for continuity."""

    leg: Leg
    bid: Decimal
    ask: Decimal
    bid_qty: Decimal
    ask_qty: Decimal
    ts_ms: int
    update_id: int


class BookInvalid(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The leg's book cannot be trusted (sequence gap, resubscribing, disconnected)."""

    leg: Leg
    reason: str


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The order stream (or a query) reporting one order's status and cumulative fills."""

    link_id: str
    status: OrderStatus  # OPEN, FILLED, CANCELLED or REJECTED
    cum_qty: Decimal
    cum_value: Decimal | None  # cumExecValue; None: derive from avg_price
    avg_price: Decimal | None = None
    cum_fee: Decimal
    fee_coin: str
    qty: Decimal
    price: Decimal | None
    updated_ms: int
    order_id: str = ""
    reject: RejectKind | None = None
    reject_text: str = ""


class Execution(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    link_id: str
    exec_id: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_coin: str
    is_maker: bool
    exec_ms: int


class Acknowledged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    link_id: str
    request: Request
    order_id: str = ""


class Rejected(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A definitive refusal: the venue code was on the venue's allow-list."""

    link_id: str
    request: Request
    kind: RejectKind
    code: str
    message: str


class OutcomeUnknown(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Timeout, 5xx, disconnect or an unlisted code: the request may or may not have landed."""

    link_id: str
    request: Request
    reason: str


class OrderNotFound(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A query proved the venue never took the order (after the receive window passed)."""

    link_id: str


class WalletBalance(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    coin: str
    available: Decimal
    total: Decimal


class FundingPayment(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Funding settled on the perp: positive received, negative paid (quote units).

    One settlement per ``ts_ms``: the stream and a REST resync may both report it, and only
    settlements after the last one counted (and after the state was created) are applied.
    """

    amount: Decimal
    ts_ms: int


class Tick(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Time passed; timers (chasing, max_unhedged_ms, staleness, daily reset) are checked."""


class Stop(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Pause: cancel the entry (and a racing spot exit), never market-unwind, then report."""


class CancelEntry(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Cancel the working entry and take no new entry until Resume."""


class Flatten(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Operator-confirmed: cancel everything and market-unwind both legs to flat."""


class ClearRisk(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Lift a daily-loss block; the loss window restarts from now."""


class Resume(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Leave ``halted`` keeping positions (after reconcile), or lift an entry pause."""


class Restarted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The worker process started again from this state, after its resync with the venue.

    Sent once before trading resumes: a completed Stop is lifted, and the id block that was
    open before the restart is skipped (its ids were resolved by the resync). ``block_end`` is
    the durable reservation, which may be newer than the snapshot's.
    """

    block_end: int = 0


class Resyncing(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The worker process started and is about to replay what the venue says (orders,
    executions, balances); no decision is made until ``Restarted`` ends the resync."""


class VenueMismatch(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The resync found the exchange holding something the state cannot explain: halt.

    ``perp_qty`` is the exchange's signed perp position; an operator ``Flatten`` unwinds that
    (the exchange's truth), and ``Resume`` is refused while it differs from the state's.
    """

    detail: str
    perp_qty: Decimal
    perp_avg_price: Decimal


class Clear(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Reset to flat with a new id epoch; only when nothing is held or working."""

    epoch: int


Event = (
    BookTop
    | BookInvalid
    | OrderUpdate
    | Execution
    | Acknowledged
    | Rejected
    | OutcomeUnknown
    | OrderNotFound
    | WalletBalance
    | FundingPayment
    | Tick
    | Stop
    | CancelEntry
    | Flatten
    | ClearRisk
    | Resume
    | Resyncing
    | Restarted
    | VenueMismatch
    | Clear
)

"""The core's vocabulary and its whole mutable state, as msgspec structs.

Everything a worker needs to resume lives in :class:`CoreState`; the snapshot is that struct
encoded, so nothing that influences a decision can be left out of it by accident.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

ZERO = Decimal(0)


class Leg(StrEnum):
    SPOT = "spot"
    PERP = "perp"


class Side(StrEnum):
    BUY = "Buy"
    SELL = "Sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Phase(StrEnum):
    FLAT = "flat"
    ENTRY_WORKING = "entry_working"
    RACE_EXIT = "race_exit"
    CARRY_HEDGED = "carry_hedged"
    UNWINDING = "unwinding"
    HALTED = "halted"


class OrderType(StrEnum):
    LIMIT = "Limit"
    MARKET = "Market"


class Purpose(StrEnum):
    ENTRY = "entry"  # the chased spot maker order that opens a cycle
    HEDGE = "hedge"  # perp order that offsets the spot fill
    SPOT_EXIT = "spot_exit"  # spot order that gives the fill back (the other racing exit)
    CLOSE_EXCESS = "close_excess"  # market perp order closing an over-hedge
    UNWIND = "unwind"  # market order closing a leg (carry exit, emergency, flatten)


class OrderStatus(StrEnum):
    SUBMITTING = "submitting"  # sent; the venue has not answered yet
    UNKNOWN = "unknown"  # the answer was lost (timeout, 5xx, …): being resolved by query
    OPEN = "open"  # acknowledged and working (possibly partly filled)
    FILLED = "filled"
    CANCELLED = "cancelled"  # terminal; cum_qty may be > 0
    REJECTED = "rejected"  # terminal; never traded

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def in_doubt(self) -> bool:
        """The venue may or may not hold this order: no new risk until it is resolved."""
        return self is OrderStatus.SUBMITTING or self is OrderStatus.UNKNOWN


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})


class RejectKind(StrEnum):
    """Why the venue definitively refused a request, by the action it calls for."""

    POST_ONLY = "post_only"  # would have taken liquidity: re-quote at the next interval
    RATE_LIMITED = "rate_limited"  # not processed: try again at the next interval
    INSUFFICIENT_BALANCE = "insufficient_balance"
    BELOW_MINIMUM = "below_minimum"
    INVALID = "invalid"  # price/quantity precision or range
    NOT_FOUND = "not_found"  # amend/cancel of an order the venue does not know (any more)
    FINISHED = "finished"  # amend/cancel of an order already filled or cancelled
    OTHER = "other"  # any other allow-listed definitive refusal


class Request(StrEnum):
    CREATE = "create"
    AMEND = "amend"
    CANCEL = "cancel"


class PendingAmend(msgspec.Struct, kw_only=True):
    qty: Decimal
    price: Decimal | None
    sent_ms: int
    unknown: bool = False


class Order(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One order of this instance, from the moment it is decided until well after it ends.

    Fills are counted from two independent sources, the order stream's cumulative figures and
    the individual executions; whichever has seen more quantity wins, so neither a lost
    execution nor a late order update can hide a fill.
    """

    link_id: str
    leg: Leg
    side: Side
    purpose: Purpose
    order_type: OrderType
    post_only: bool
    reduce_only: bool
    qty: Decimal  # total quantity as sent or last amended (base units)
    price: Decimal | None
    net_target: Decimal  # base the order aims to move; less than qty for a grossed-up buy
    status: OrderStatus
    created_ms: int
    cycle: int
    venue_order_id: str = ""
    last_action_ms: int = 0  # placement or last amend: paces the re-pricing
    venue_updated_ms: int = 0
    reject: RejectKind | None = None
    reject_text: str = ""
    # order-stream cumulative figures (monotone: the largest cum_qty seen wins)
    upd_qty: Decimal = ZERO
    upd_value: Decimal = ZERO
    upd_fee: Decimal = ZERO
    upd_fee_coin: str = ""
    # execution sums, de-duplicated by exec id
    exec_qty: Decimal = ZERO
    exec_value: Decimal = ZERO
    exec_fees: dict[str, Decimal] = msgspec.field(default_factory=dict)
    exec_ids: list[str] = msgspec.field(default_factory=list)
    # what has been applied to positions so far
    applied_qty: Decimal = ZERO
    applied_value: Decimal = ZERO
    applied_fees: dict[str, Decimal] = msgspec.field(default_factory=dict)
    # requests in flight
    amend: PendingAmend | None = None
    cancel_sent_ms: int | None = None  # when the cancel was first asked for
    cancel_last_ms: int | None = None  # when it was last sent (a lost one is sent again)
    cancel_acked: bool = False
    query_sent_ms: int | None = None

    @property
    def filled(self) -> Decimal:
        return self.applied_qty

    @property
    def leaves(self) -> Decimal:
        """Quantity still able to trade; the whole order while its outcome is in doubt."""
        if self.status.terminal:
            return ZERO
        return max(self.qty - self.applied_qty, ZERO)

    @property
    def live(self) -> bool:
        return not self.status.terminal

    @property
    def avg_price(self) -> Decimal | None:
        return self.applied_value / self.applied_qty if self.applied_qty else None


class TopOfBook(msgspec.Struct, kw_only=True):
    bid: Decimal
    ask: Decimal
    bid_qty: Decimal
    ask_qty: Decimal
    ts_ms: int  # venue timestamp
    update_id: int
    mid: Decimal
    received_ms: int  # local time the core saw it: freshness is judged on this
    invalid: str = ""  # non-empty: gapped / resubscribing / crossed, with the reason


class LegPosition(msgspec.Struct, kw_only=True):
    """Signed position with average-cost realised PnL (quote units)."""

    qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized: Decimal = ZERO


class Balance(msgspec.Struct, kw_only=True):
    available: Decimal
    total: Decimal


class Cycle(msgspec.Struct, kw_only=True):
    """One entry and everything that closes it."""

    number: int
    side: Side  # side of the spot entry
    target: Decimal  # net base the cycle aims to hold (order_qty at its start)
    entry_gross: Decimal  # spot quantity the entry orders buy or sell in total
    started_ms: int
    pnl_start: Decimal  # net PnL of the instance when the cycle began
    entry_filled: Decimal = ZERO  # gross spot quantity filled by entry orders
    entry_value: Decimal = ZERO
    entry_done: bool = False
    forced: bool = False  # max_unhedged_ms passed: finish with market orders
    exit_reason: str = ""
    market_shortfalls: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def entry_price(self) -> Decimal | None:
        return self.entry_value / self.entry_filled if self.entry_filled else None


class IdState(msgspec.Struct, kw_only=True):
    """``orderLinkId`` allocation: ``<id>-<epoch>-<seq>``, with durably reserved blocks."""

    epoch: int
    origin: int = 0  # the epoch this state was created in; clears keep it
    next_seq: int = 1
    block_end: int = 1  # ids with seq < block_end are durably reserved
    skipped: list[tuple[int, int, int]] = msgspec.field(default_factory=list)  # (epoch, from, to)


class CoreState(msgspec.Struct, kw_only=True):
    instance_id: str
    spot_symbol: str
    future_symbol: str
    ids: IdState
    phase: Phase = Phase.FLAT
    orders: dict[str, Order] = msgspec.field(default_factory=dict)  # live orders
    done: dict[str, Order] = msgspec.field(default_factory=dict)  # recent terminal orders
    done_rev: int = 0  # rises whenever ``done`` or an order in it may change (staging's cache)
    cycle: Cycle | None = None
    cycles_done: int = 0
    spot: LegPosition = msgspec.field(default_factory=LegPosition)
    perp: LegPosition = msgspec.field(default_factory=LegPosition)
    dust: Decimal = ZERO  # spot left over from closed cycles, tracked and never traded
    fees: Decimal = ZERO  # quote units (base-coin fees valued at their fill price)
    other_fees: dict[str, Decimal] = msgspec.field(default_factory=dict)  # coins we cannot value
    funding: Decimal = ZERO
    funding_last_ms: int = 0  # the newest funding settlement counted
    day: int = -1  # UTC day number of the daily-loss window
    day_pnl_base: Decimal = ZERO  # net PnL at the start of the window
    risk_blocked: bool = False
    risk_reason: str = ""
    entries_paused: bool = False  # CancelEntry or Flatten: no new cycle until Resume
    blocked: str = ""  # why an entry is being held back (balance, notional), as reported
    balance_block_version: int = -1  # an insufficient-balance reject waits for a newer wallet
    wallet_version: int = 0
    stopping: bool = False
    stopped: bool = False
    syncing: bool = False  # a restarted worker replays the venue's facts: no decisions yet
    venue_perp_qty: Decimal | None = None  # the exchange's perp after a mismatch, until flatten
    flattening: bool = False
    halt_reason: str = ""
    halt_detail: str = ""
    last_error: str = ""
    unhedged_since: int | None = None
    next_place: dict[str, int] = msgspec.field(default_factory=dict)  # purpose -> earliest ms
    quiet_until: int = 0  # a settled race skips decisions on book updates until then
    spot_book: TopOfBook | None = None
    perp_book: TopOfBook | None = None
    balances: dict[str, Balance] = msgspec.field(default_factory=dict)
    orders_sent: int = 0
    fills_seen: int = 0
    duplicates_ignored: int = 0

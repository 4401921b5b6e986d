"""Stateful property test of the pure core against a small, adversarial venue model.

``CoreMachine`` drives :class:`worker.core.strategy.Core` (hedge mode race or market, chosen at
``setup``) with moving books whose basis triggers entries, carry exits and emergencies, book
glitches, time jumps past ``chase_interval_ms``, ``max_unhedged_ms`` and ``stale_book_ms``,
wallet balances, funding, stray fills and operator commands, and it plays the venue: every
command the core sends becomes a venue-side order or a pending request, which the venue answers
in any order (acknowledge; reject as PostOnly, rate-limited, insufficient balance, …; or lose the
answer, having applied the request or not), resolves by query (an order update, or not found for
an order it never took), fills (partly or fully, before the acknowledgement, racing a cancel;
market orders at the touch, possibly running short), and reports through executions and order
updates that may be deferred, reordered, duplicated or (executions) lost. The venue stays
consistent: a terminal order never fills again, cumulative quantities only grow, fills never
exceed an order's quantity, and every message is true, if late or repeated.

After every single event (``CoreMachine.check``):

1. at most one entry order live in the core, and at most one working at the venue;
2. no entry is placed while another live order's outcome is in doubt;
3. exits never reserve more than is unhedged, and an over-hedge is always being closed;
4. orderLinkIds are unique, well-formed, prefixed and reserved before use;
5. a state decoded from its snapshot decides exactly as the original (same commands, same
   snapshot bytes) for the rest of the run (``operator("fork")``);
6. once halted the core places and amends nothing, and cancels only what was live at the halt;
7. positions are exactly the fills the core was told about, net of base-coin fees;
8. an operator action out of halted does not halt again in the same step;
10. a PostOnly or rate-limited create is not retried in the same step;
11. maker prices are on the grid, never through the touch, and the spot exit never worse than
    the entry.

And after ``settle`` (the venue answers everything, time passes): 9. the core comes to rest
agreeing with the venue about every order and position, with no race or unwind left over.

The core bugs the machine found are pinned down by the named regression tests at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from bench.common import EPOCH, PERP, PERP_FEES, SPOT, SPOT_FEES, T0, params
from tests.unit.core_harness import (
    RICH,
    SPOT_BOOK,
    Harness,
    of,
    order_cmds,
    places,
)
from worker.core import snapshot
from worker.core.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    PlaceOrder,
    QueryOrder,
    ReportCycle,
    ReportHalt,
    ReportRefused,
    ReportTransition,
    ReserveIds,
)
from worker.core.config import HedgeMode
from worker.core.events import (
    Acknowledged,
    BookInvalid,
    BookTop,
    CancelEntry,
    Clear,
    ClearRisk,
    Event,
    Execution,
    Flatten,
    FundingPayment,
    OrderNotFound,
    OrderUpdate,
    OutcomeUnknown,
    Rejected,
    Resume,
    Stop,
    Tick,
    WalletBalance,
)
from worker.core.instruments import floor_to, gross_up_buy
from worker.core.model import (
    ZERO,
    CoreState,
    Leg,
    OrderStatus,
    OrderType,
    Phase,
    Purpose,
    RejectKind,
    Request,
    Side,
)
from worker.core.params import CoreParams
from worker.core.strategy import Core

D = Decimal
TICK = SPOT.tick_size
LINK_RE = re.compile(r"^[a-z0-9-]+$")
LINK_PARTS = re.compile(r"^btc-([0-9]+)-([0-9]+)$")

# basis targets (bps): entries at |b| >= 10, carry exit at b <= 2 (long) / >= -2 (short),
# emergency at b >= 50 (long) / <= -50 (short); the first values are what shrinking tends to
BASES = (12, 0, -12, 30, -30, 60, -60, 1, -1, 5, -5, 10, -10, 2, -2, 50, -50, 9)
MOVES = (20, 0, -4, 1, -1, 4, -20, 300, -300)  # spot bid moves, in ticks of 0.1
SETTLE_ROUNDS = 20
TICKS_MS = (201, 1, 150, 200, 999, 201, 1000, 1001, 3000, 3001, 5001, 201, 43_200_000)
# how the venue answers a request (see ``CoreMachine.answer_request``); "ok_partial" is a market
# order that ran short (IOC remainder cancelled), or a PostOnly order cancelled because it would
# have crossed right after its create or amend was accepted;
# "stream_reject" a create acknowledged and then reported Rejected on the order stream
OUTCOMES = (
    "ok",
    "unknown",
    "ok_late",
    "unknown_applied",
    "reject:post_only",
    "ok_partial",
    "reject:rate_limited",
    "ok",
    "reject:insufficient_balance",
    "unknown",
    "reject:below_minimum",
    "reject:invalid",
    "reject:other",
    "stream_reject:post_only",
    "stream_reject:insufficient_balance",
)
OPERATOR = ("fork", "resume", "cancel_entry", "flatten", "stop", "clear_risk", "clear", "fork")
# how a fill's two messages (execution, order update) reach the core
FILL_MODES = (
    "exec_then_update",
    "update_then_exec",
    "defer_update",
    "defer_exec",
    "defer_both",
    "lose_exec",
)


# ----------------------------------------------------------------------------- venue model


@dataclass
class VOrder:
    """What the venue knows of one order the core sent."""

    link_id: str
    leg: Leg
    side: Side
    purpose: Purpose
    market: bool
    post_only: bool
    qty: Decimal
    price: Decimal | None
    fee_rate: Decimal
    taken: bool | None = None  # None: the create's fate is not decided yet
    status: OrderStatus = OrderStatus.OPEN  # venue status once taken
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    updated_ms: int = 0
    reject: RejectKind | None = None

    @property
    def working(self) -> bool:
        """May trade at the venue now or later (taken, or not yet decided, and not ended)."""
        return self.taken is not False and not self.status.terminal

    @property
    def step(self) -> Decimal:
        return SPOT.qty_step if self.leg is Leg.SPOT else PERP.qty_step

    @property
    def base_fee(self) -> bool:
        return self.leg is Leg.SPOT and self.side is Side.BUY

    @property
    def fee_coin(self) -> str:
        return "BTC" if self.base_fee else "USDT"


@dataclass
class VRequest:
    kind: str  # "create", "amend", "cancel", "query"
    link_id: str
    qty: Decimal | None = None
    price: Decimal | None = None


@dataclass
class Delivered:
    """The fill messages the core has seen for one order (what its bookkeeping must show)."""

    execs: dict[str, Execution] = field(default_factory=dict)
    best: OrderUpdate | None = None  # first update with the largest cum_qty


def event(text: str) -> None:
    """Coverage statistics (``--hypothesis-show-statistics``); a no-op outside a test run."""
    if currently_in_test_context():
        hypothesis_event(text)


def fee_rates(leg: Leg) -> tuple[Decimal, Decimal]:
    rates = SPOT_FEES if leg is Leg.SPOT else PERP_FEES
    return rates.maker, rates.taker


# ----------------------------------------------------------------------------- the machine


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.p: CoreParams = params()
        self.core = Core(self.p)
        self.state: CoreState = self.core.new_state(EPOCH)
        self.shadow_core: Core | None = None
        self.shadow: CoreState | None = None
        self.now = T0
        self.vclock = T0
        self.book_ts = T0
        self.book_uid = 0
        self.spot_bid = 500_000  # in ticks: 50 000.0
        self.spot_spread = 1
        self.basis = 0
        self.books: dict[Leg, tuple[Decimal, Decimal]] = {}
        self.orders: dict[str, VOrder] = {}
        self.requests: list[VRequest] = []
        self.outbox: list[Event] = []
        self.history: list[Execution | OrderUpdate] = []
        self.delivered: dict[str, Delivered] = {}
        self.exec_seq = 0
        # invariant bookkeeping
        self.link_ids: set[str] = set()
        self.reserved: dict[int, int] = {}
        self.halt_live: set[str] = set()
        self.situations: set[tuple[object, ...]] = set()  # guides the search (see teardown)

    # ------------------------------------------------------------------ plumbing

    @initialize(
        mode=st.sampled_from([HedgeMode.MARKET, HedgeMode.RACE]),
        order_qty=st.sampled_from(["0.01", "0.002"]),
        emergency=st.sampled_from(["50", "0"]),
        loss=st.sampled_from([None, "3"]),
        cap=st.sampled_from([None, None, None, "300"]),
        basis=st.sampled_from(BASES),
        slip=st.sampled_from(["0.1", "3"]),
    )
    def setup(
        self,
        mode: HedgeMode,
        order_qty: str,
        emergency: str,
        loss: str | None,
        cap: str | None,
        basis: int,
        slip: str,
    ) -> None:
        self.p = params(
            hedge_mode=mode,
            order_qty=D(order_qty),
            emergency_unwind_bps=D(emergency),
            max_daily_loss_quote=None if loss is None else D(loss),
            max_notional_quote=None if cap is None else D(cap),
            chase_max_slip_bps=D(slip),
        )
        self.core = Core(self.p)
        self.state = self.core.new_state(EPOCH)
        event(f"hedge_mode={mode}")
        self.send(Tick())
        self.send(WalletBalance(coin="USDT", available=D(100_000), total=D(100_000)))
        self.send(WalletBalance(coin="BTC", available=D(2), total=D(2)))
        self.basis = basis
        self.send_books("both")

    def venue_ms(self) -> int:
        self.vclock = max(self.now, self.vclock + 1)
        return self.vclock

    def send(self, ev: Event) -> list[Command]:
        s = self.state
        pre_phase = s.phase
        pre_live = set(s.orders)
        known = isinstance(ev, Execution | OrderUpdate) and (
            ev.link_id in s.orders or ev.link_id in s.done
        )
        pre_done, pre_rev = msgspec.json.encode(s.done), s.done_rev
        candidates, pre_spot = self.core.entry_candidates(s), s.spot_book
        cmds = self.core.step(s, ev, self.now)
        if pre_phase is Phase.FLAT and s.spot_book == pre_spot:
            # the runtime signs the candidates ahead: an entry the spot book did not move
            # must be exactly one of them, or the prepared request would never be used
            for c in cmds:
                if isinstance(c, PlaceOrder) and c.purpose is Purpose.ENTRY:
                    assert c in candidates, (ev, c, candidates)
                    event("an entry was one of the signed-ahead candidates")
        # the staged copy re-encodes the finished orders only when done_rev moved
        assert msgspec.json.encode(s.done) == pre_done or s.done_rev != pre_rev, ev
        if self.shadow is not None:
            assert self.shadow_core is not None
            shadow_cmds = self.shadow_core.step(self.shadow, ev, self.now)
            assert shadow_cmds == cmds, (ev, cmds, shadow_cmds)
            assert snapshot.encode(self.shadow) == snapshot.encode(s), ev
        if known:
            assert isinstance(ev, Execution | OrderUpdate)
            self.record_delivery(ev)
        self.check(ev, pre_phase, pre_live, cmds)
        self.absorb(cmds)
        return cmds

    def record_delivery(self, ev: Execution | OrderUpdate) -> None:
        d = self.delivered.setdefault(ev.link_id, Delivered())
        if isinstance(ev, Execution):
            d.execs.setdefault(ev.exec_id, ev)
        elif d.best is None or ev.cum_qty > d.best.cum_qty:
            d.best = ev
        self.history.append(ev)

    def absorb(self, cmds: list[Command]) -> None:
        """The venue receives the core's requests."""
        for c in cmds:
            if isinstance(c, PlaceOrder):
                maker, taker = fee_rates(c.leg)
                self.orders[c.link_id] = VOrder(
                    link_id=c.link_id,
                    leg=c.leg,
                    side=c.side,
                    purpose=c.purpose,
                    market=c.order_type is OrderType.MARKET,
                    post_only=c.post_only,
                    qty=c.qty,
                    price=c.price,
                    fee_rate=maker if c.post_only else taker,
                )
                self.requests.append(VRequest("create", c.link_id))
            elif isinstance(c, AmendOrder):
                self.requests.append(VRequest("amend", c.link_id, c.qty, c.price))
            elif isinstance(c, CancelOrder):
                self.requests.append(VRequest("cancel", c.link_id))
            elif isinstance(c, QueryOrder):
                self.requests.append(VRequest("query", c.link_id))

    def emit(self, events: list[Event], defer: bool) -> None:
        if defer:
            self.outbox.extend(events)
        else:
            for ev in events:
                self.send(ev)

    # ------------------------------------------------------------------ venue behaviour

    def update_msg(self, v: VOrder) -> OrderUpdate:
        # every third order is reported the way some venues do: average price, no value
        avg_only = v.cum_qty > ZERO and int(v.link_id.rsplit("-", 1)[1]) % 3 == 0
        return OrderUpdate(
            link_id=v.link_id,
            status=v.status,
            cum_qty=v.cum_qty,
            cum_value=None if avg_only else v.cum_value,
            avg_price=v.cum_value / v.cum_qty if avg_only else None,
            cum_fee=v.cum_fee,
            fee_coin=v.fee_coin if v.cum_qty else "",
            qty=v.qty,
            price=v.price,
            updated_ms=v.updated_ms,
            order_id="v" + v.link_id,
            reject=v.reject,
        )

    def fill(self, v: VOrder, qty: Decimal, price: Decimal) -> Execution:
        assert v.working and ZERO < qty <= v.qty - v.cum_qty, (v, qty)
        fee = qty * v.fee_rate if v.base_fee else qty * price * v.fee_rate
        v.taken = True
        v.cum_qty += qty
        v.cum_value += qty * price
        v.cum_fee += fee
        if v.cum_qty == v.qty:
            v.status = OrderStatus.FILLED
        v.updated_ms = self.venue_ms()
        self.exec_seq += 1
        return Execution(
            link_id=v.link_id,
            exec_id=f"x{self.exec_seq}",
            qty=qty,
            price=price,
            fee=fee,
            fee_coin=v.fee_coin,
            is_maker=v.post_only,
            exec_ms=v.updated_ms,
        )

    def take(self, v: VOrder, partial: bool) -> list[Event]:
        """The venue takes the order; a market order trades at the touch at once (an IOC
        remainder may be cancelled)."""
        v.taken = True
        if v.updated_ms == 0:
            v.updated_ms = self.venue_ms()
        if not v.market:
            return []
        bid, ask = self.books[v.leg]
        price = ask if v.side is Side.BUY else bid
        first = floor_to(v.qty / 2, v.step) if partial else v.qty
        msgs: list[Event] = []
        if first > ZERO:
            msgs.append(self.fill(v, first, price))
        if partial:
            if first > ZERO and not v.status.terminal:
                v.status = OrderStatus.CANCELLED
                v.updated_ms = self.venue_ms()
            elif not v.status.terminal:
                msgs.append(self.fill(v, v.qty - v.cum_qty, price))
        msgs.append(self.update_msg(v))
        return msgs

    def answer_request(self, req: VRequest, outcome: str) -> list[Event]:
        """The venue's answer to one request, as an ``OUTCOMES`` value says, kept truthful: a
        request the venue applied is never refused, one it refused never takes effect."""
        v = self.orders[req.link_id]
        lid = req.link_id
        verdict, _, reason = outcome.partition(":")
        kind = RejectKind(reason) if reason else RejectKind.OTHER
        partial = verdict == "ok_partial"
        applied = verdict in ("ok", "ok_late", "ok_partial", "unknown_applied", "stream_reject")
        if req.kind == "create":
            if v.taken is not None:  # already settled (a fill came first, or a query said)
                applied = v.taken
            if verdict.startswith("unknown"):
                if v.taken is None and (v.market or applied):
                    if not applied:
                        v.taken = False
                        return [self._unknown(lid, Request.CREATE)]
                    return [*self.take(v, partial), self._unknown(lid, Request.CREATE)]
                return [self._unknown(lid, Request.CREATE)]  # limit: fate still open
            if not applied:
                v.taken = False
                if v.market and kind is RejectKind.POST_ONLY:
                    kind = RejectKind.RATE_LIMITED
                return [
                    Rejected(link_id=lid, request=Request.CREATE, kind=kind, code="1", message="")
                ]
            msgs: list[Event] = [
                Acknowledged(link_id=lid, request=Request.CREATE, order_id="v" + lid)
            ]
            if v.taken is None and verdict == "stream_reject":
                v.taken, v.status, v.reject = True, OrderStatus.REJECTED, kind
                v.updated_ms = self.venue_ms()
                msgs.append(self.update_msg(v))
            elif v.taken is None:
                msgs += self.take(v, partial)
                if partial and v.post_only and v.cum_qty == ZERO:
                    # PostOnly accepted, then cancelled because it would have crossed
                    v.status = OrderStatus.CANCELLED
                    v.updated_ms = self.venue_ms()
                    msgs.append(self.update_msg(v))
            return msgs
        if req.kind == "query":
            if verdict == "unknown":
                return []  # the query itself failed: the core asks again later
            msgs = []
            if v.taken is None:
                if applied or verdict == "unknown_applied":
                    msgs += self.take(v, partial)
                else:
                    v.taken = False  # the receive window has passed: it never landed
            if v.taken:
                return [*msgs, self.update_msg(v)]
            return [OrderNotFound(link_id=lid)]
        # amend or cancel
        request = Request.AMEND if req.kind == "amend" else Request.CANCEL
        if verdict == "reject":
            if kind in (RejectKind.POST_ONLY, RejectKind.INSUFFICIENT_BALANCE):
                kind = RejectKind.RATE_LIMITED
            return [Rejected(link_id=lid, request=request, kind=kind, code="2", message="")]
        if v.taken is None:
            v.taken = True  # the core only amends or cancels orders the venue acknowledged
            v.updated_ms = self.venue_ms()
        if not v.taken:
            refusal: RejectKind | None = RejectKind.NOT_FOUND
        elif v.status.terminal:
            refusal = RejectKind.FINISHED
        elif request is Request.AMEND and req.qty is not None and req.qty <= v.cum_qty:
            refusal = RejectKind.INVALID
        else:
            refusal = None
        msgs = []
        if refusal is None and applied:
            if request is Request.AMEND:
                if req.qty is not None:
                    v.qty = req.qty
                if req.price is not None:
                    v.price = req.price
            else:
                v.status = OrderStatus.CANCELLED
            v.updated_ms = self.venue_ms()
            msgs.append(self.update_msg(v))
            if request is Request.AMEND and partial and v.post_only:
                # the new price would cross: the venue cancels the PostOnly order
                v.status = OrderStatus.CANCELLED
                v.updated_ms = self.venue_ms()
                msgs.append(self.update_msg(v))
        if verdict.startswith("unknown"):
            return [self._unknown(lid, request), *msgs]
        if refusal is not None:
            return [Rejected(link_id=lid, request=request, kind=refusal, code="3", message="")]
        return [Acknowledged(link_id=lid, request=request, order_id="v" + lid), *msgs]

    @staticmethod
    def _unknown(lid: str, request: Request) -> OutcomeUnknown:
        return OutcomeUnknown(link_id=lid, request=request, reason="timeout")

    def send_books(self, legs: str) -> None:
        self.book_ts = max(self.book_ts + 1, self.now)
        sb, sa = D(self.spot_bid) * TICK, D(self.spot_bid + self.spot_spread) * TICK
        mid2 = (sb + sa) * (1 + D(self.basis) / 10_000)
        pb = floor_to((mid2 - TICK) / 2, TICK)
        pa = pb + TICK
        self.books = {Leg.SPOT: (sb, sa), Leg.PERP: (pb, pa)}
        for leg in (Leg.SPOT, Leg.PERP):
            if legs in ("both", leg.value):
                bid, ask = self.books[leg]
                self.book_uid += 1
                self.send(
                    BookTop(
                        leg=leg,
                        bid=bid,
                        ask=ask,
                        bid_qty=D(3),
                        ask_qty=D(3),
                        ts_ms=self.book_ts,
                        update_id=self.book_uid,
                    )
                )

    # ------------------------------------------------------------------ rules: market and time

    @rule(
        basis=st.sampled_from(BASES),
        move=st.sampled_from(MOVES),
        spread=st.integers(1, 8),
        legs=st.sampled_from(["both", "both", "both", "spot", "perp"]),
        dt=st.sampled_from([201, 0, 30, 1000]),
    )
    def market(self, basis: int, move: int, spread: int, legs: str, dt: int) -> None:
        """The books move ``dt`` ms later: the spot by ``move`` ticks, the perp to ``basis``."""
        self.now += dt
        self.basis = basis
        self.spot_bid += move
        self.spot_spread = spread
        self.send_books(legs)

    @rule(ms=st.sampled_from(TICKS_MS), resend=st.booleans())
    def tick(self, ms: int, resend: bool) -> None:
        """Time passes (the unchanged books may be resent, as ``orderbook.1`` does); a worker
        that completed a Stop is started again from its snapshot."""
        if self.state.stopped:
            self.restart()
        self.now += ms
        self.send(Tick())
        if resend:
            self.send_books("both")

    @rule(
        what=st.sampled_from(["funding", "gap", "crossed", "old", "USDT", "BTC", "stray"]),
        leg=st.sampled_from([Leg.SPOT, Leg.PERP]),
        amount=st.sampled_from(["0.3", "-2.5", "-0.01", "4"]),
        short=st.sampled_from([False, False, False, True]),
    )
    def noise(self, what: str, leg: Leg, amount: str, short: bool) -> None:
        """Book glitches (gap, crossed, an overtaken message), wallet balances (ample, or too
        short for an entry), funding payments, and a fill of an order of this instance that the
        core never sent (e.g. from a lost state file): it must halt, not trade on."""
        if what == "stray":
            stray = f"btc-{EPOCH - 1}-{self.exec_seq}"
            self.exec_seq += 1
            self.send(
                Execution(
                    link_id=stray,
                    exec_id=f"x{self.exec_seq}",
                    qty=D("0.001"),
                    price=self.books[Leg.PERP][0],
                    fee=ZERO,
                    fee_coin="USDT",
                    is_maker=True,
                    exec_ms=self.now,
                )
            )
        elif what == "funding":
            self.send(FundingPayment(amount=D(amount), ts_ms=self.now))
        elif what in ("USDT", "BTC"):
            value = {("USDT", False): D(100_000), ("USDT", True): D(50)}.get(
                (what, short), D("0.001") if short else D(2)
            )
            self.send(WalletBalance(coin=what, available=value, total=value))
        elif what == "gap":
            self.send(BookInvalid(leg=leg, reason="sequence gap"))
        else:
            bid, ask = self.books[leg]
            if what == "crossed":
                self.book_ts = max(self.book_ts + 1, self.now)
                bid, ask, ts = ask, bid, self.book_ts
            else:  # overtaken by a newer message: must be ignored
                bid, ask, ts = bid - 50 * TICK, ask - 50 * TICK, self.book_ts - 5
            self.book_uid += 1
            self.send(
                BookTop(
                    leg=leg, bid=bid, ask=ask, bid_qty=D(1), ask_qty=D(1), ts_ms=ts, update_id=0
                )
            )

    # ------------------------------------------------------------------ rules: the venue

    @precondition(lambda self: self.requests)
    @rule(pick=st.integers(0, 63), outcome=st.sampled_from(OUTCOMES))
    def answer(self, pick: int, outcome: str) -> None:
        """The venue answers one pending request, in any order (``pick`` 0 is the newest):
        success (its messages now or later), a definitive refusal, or a lost answer (the venue
        applied the request or not)."""
        req = self.requests.pop(-1 - pick % len(self.requests))
        self.emit(self.answer_request(req, outcome), outcome == "ok_late")

    @precondition(lambda self: self.requests or self.working_limits())
    @rule(trade=st.booleans(), count=st.sampled_from([99, 1, 2]))
    def catch_up(self, trade: bool, count: int) -> None:
        """The oldest pending requests (all of them, or one or two) succeed, in order; with
        ``trade`` the oldest working maker order then fills completely (keeps cycles moving)."""
        for _ in range(min(count, len(self.requests))):
            req = self.requests.pop(0)
            self.emit(self.answer_request(req, "ok"), False)
        working = self.working_limits()
        if trade and working:
            v = working[0]
            assert v.price is not None
            self.emit([self.fill(v, v.qty - v.cum_qty, v.price), self.update_msg(v)], False)

    def working_limits(self) -> list[VOrder]:
        return [v for v in self.orders.values() if v.working and not v.market]

    @precondition(lambda self: self.working_limits())
    @rule(
        pick=st.integers(0, 63),
        size=st.sampled_from(["all", "half", "step", "tenth", "most"]),
        mode=st.sampled_from(FILL_MODES),
    )
    def fill_limit(self, pick: int, size: str, mode: str) -> None:
        """A maker fill of a working order (possibly before its create is acknowledged, or
        while a cancel or an amend is in flight), reported by an execution and an order update
        that arrive in either order, late, or (the execution) never."""
        working = self.working_limits()
        v = working[pick % len(working)]
        assert v.price is not None
        left = v.qty - v.cum_qty
        share = {"all": D(1), "half": D("0.5"), "step": ZERO, "tenth": D("0.1"), "most": D("0.9")}
        qty = min(max(floor_to(left * share[size], v.step), v.step), left)
        ex = self.fill(v, qty, v.price)
        upd = self.update_msg(v)
        if mode == "exec_then_update":
            self.emit([ex, upd], False)
        elif mode == "update_then_exec":
            self.emit([upd, ex], False)
        elif mode == "defer_update":
            self.emit([ex], False)
            self.emit([upd], True)
        elif mode == "defer_exec":
            self.emit([upd], False)
            self.emit([ex], True)
        elif mode == "defer_both":
            self.emit([ex, upd], True)
        else:  # the execution is lost; the order stream still reports the cumulative fill
            self.emit([upd], False)

    @precondition(lambda self: self.outbox or self.history)
    @rule(pick=st.integers(0, 255), count=st.integers(1, 4), again=st.booleans())
    def deliver(self, pick: int, count: int, again: bool) -> None:
        """Deferred messages arrive in any order (late, reordered); or an execution or order
        update the core already saw arrives again, however old (duplicated)."""
        s = self.state
        if (again and self.history) or not self.outbox:
            ev = self.history[-1 - pick % len(self.history)]
            if ev.link_id in s.orders or ev.link_id in s.done:
                self.send(ev)
            return
        for _ in range(count):
            if not self.outbox:
                return
            self.send(self.outbox.pop(pick % len(self.outbox)))

    @rule(dt=st.sampled_from([1001, 3001]), resend=st.sampled_from([True, False]))
    def settle(self, dt: int, resend: bool) -> None:
        """Quiescence: the venue answers every request truthfully and in order, delivers every
        deferred message, and time passes (the unchanged books resent, or going stale). The
        core must come to rest, agreeing with the venue about every order, and no race or unwind
        may outlast ``max_unhedged_ms`` (resting maker exits then give way to market orders)."""
        waited = 0
        for _ in range(SETTLE_ROUNDS):
            while self.requests or self.outbox:
                while self.requests:
                    self.emit(self.answer_request(self.requests.pop(0), "ok"), False)
                while self.outbox:
                    self.send(self.outbox.pop(0))
            self.tick(dt, resend)
            waited += dt
            if not self.requests and waited > self.p.max_unhedged_ms:
                break
        s = self.state
        # 9. the core comes to rest: a plain Tick sends nothing, nothing is in doubt or hanging
        assert not self.requests, ("the core does not come to rest", self.requests)
        for o in s.orders.values():
            assert o.status is OrderStatus.OPEN, o
            assert o.amend is None and o.cancel_sent_ms is None, ("request left hanging", o)
            v = self.orders[o.link_id]
            assert v.working, ("the core holds an order the venue ended", o, v)
            assert (o.qty, o.filled) == (v.qty, v.cum_qty), ("views differ", o, v)
            assert o.price == v.price, ("views differ", o, v)
        for v in self.orders.values():
            assert not v.working or v.link_id in s.orders, ("orphan at the venue", v)
        assert s.phase not in (Phase.RACE_EXIT, Phase.UNWINDING), ("stuck", s.phase, s.orders)
        # with every message delivered the positions are the venue's own fills
        spot, perp = ZERO, ZERO
        for v in self.orders.values():
            if v.leg is Leg.SPOT:
                spot += v.cum_qty * v.side.sign - (v.cum_fee if v.base_fee else ZERO)
            else:
                perp += v.cum_qty * v.side.sign
        assert (s.spot.qty, s.perp.qty) == (spot, perp), ("positions", s.spot, s.perp, spot, perp)

    # ------------------------------------------------------------------ rules: operator, resume

    @rule(cmd=st.sampled_from(OPERATOR), epoch_step=st.sampled_from([1, 0, 1000]))
    def operator(self, cmd: str, epoch_step: int) -> None:
        """Operator commands (a Clear with a larger, the same or a much larger epoch), and the
        snapshot round trip of a restart."""
        if cmd == "stop":
            self.send(Stop())
        elif cmd == "cancel_entry":
            self.send(CancelEntry())
        elif cmd == "flatten":
            self.send(Flatten())
        elif cmd == "clear_risk":
            self.send(ClearRisk())
        elif cmd == "resume":
            self.send(Resume())
        elif cmd == "fork":
            self.fork()
        elif cmd == "clear":
            self.send(Clear(epoch=self.state.ids.epoch + epoch_step))

    def fork(self) -> None:
        """Resume equivalence: a state decoded from the snapshot decides exactly as the
        original for the rest of the run (checked in ``send``)."""
        data = snapshot.encode(self.state)
        self.shadow = snapshot.decode(data)
        self.shadow_core = Core(self.p)
        assert snapshot.encode(self.shadow) == data

    def restart(self) -> None:
        """The worker exited after Stop and starts again from its snapshot (the runtime clears
        the stop flags; fills that arrived meanwhile are delivered as the venue resends them)."""
        for attr in ("state", "shadow"):
            old: CoreState | None = getattr(self, attr)
            if old is not None:
                new = snapshot.decode(snapshot.encode(old))
                new.stopping = new.stopped = False
                setattr(self, attr, new)
        self.core = Core(self.p)

    # ------------------------------------------------------------------ the invariants

    def check(self, ev: Event, pre_phase: Phase, pre_live: set[str], cmds: list[Command]) -> None:
        """Every invariant, after every single event."""
        self.record_coverage(pre_phase, cmds)
        self.check_one_entry()
        self.check_no_risk_in_doubt(cmds)
        if not self.state.stopped:  # a stopped worker has exited: it decides nothing more
            self.check_exit_reservations()
            self.check_over_hedge_is_closed(ev, cmds)
        self.check_link_ids(cmds)
        self.check_halted_sends_nothing(ev, pre_phase, pre_live, cmds)
        self.check_operator_exit_holds(ev, pre_phase, cmds)
        self.check_positions()
        self.check_no_busy_retry(ev, pre_live, cmds)
        self.check_prices(cmds)

    def teardown(self) -> None:
        """Steer generation towards runs that visit many distinct situations (phase and the
        purposes, states and requests in flight of the live orders)."""
        if currently_in_test_context():
            target(len(self.situations), label="distinct situations")

    def record_coverage(self, pre_phase: Phase, cmds: list[Command]) -> None:
        s = self.state
        self.situations.add(
            (
                s.phase,
                tuple(
                    sorted(
                        (o.purpose, o.status, o.cancel_sent_ms is not None, o.amend is not None)
                        for o in s.orders.values()
                    )
                ),
            )
        )
        if self.state.phase is not pre_phase:
            event(f"phase {pre_phase} -> {self.state.phase}")
        for cmd in cmds:
            if isinstance(cmd, PlaceOrder):
                event(f"place {cmd.purpose} {cmd.order_type}")
            elif isinstance(cmd, ReportHalt):
                event(f"halt: {cmd.reason}")
            elif isinstance(cmd, ReportCycle):
                event(f"cycle ended by {cmd.ended_by}")

    def check_one_entry(self) -> None:
        """1. At most one entry order live in the core, and at most one the venue works."""
        live = [o.link_id for o in self.state.orders.values() if o.purpose is Purpose.ENTRY]
        assert len(live) <= 1, live
        working = [
            v.link_id for v in self.orders.values() if v.purpose is Purpose.ENTRY and v.working
        ]
        assert len(working) <= 1, working

    def check_no_risk_in_doubt(self, cmds: list[Command]) -> None:
        """2. No new risk while an outcome is in doubt: a step places an entry only if, once its
        event is recorded, no other live order is SUBMITTING or UNKNOWN. (Judged after the
        event, not before it: an acknowledgement may resolve the last doubt and let the same
        step place the entry, which is right.)"""
        entries = [c for c in cmds if isinstance(c, PlaceOrder) and c.purpose is Purpose.ENTRY]
        assert len(entries) <= 1, entries
        if entries:
            doubtful = [
                o.link_id
                for o in self.state.orders.values()
                if o.status.in_doubt and o.link_id != entries[0].link_id
            ]
            assert not doubtful, (entries, doubtful)

    def needs(self) -> tuple[Decimal, Decimal]:
        """(perp still to hedge, spot not covered by the perp) in the cycle's direction, as
        ``Core._needs`` defines them; a negative hedge need is an over-hedge."""
        return self.core._needs(self.state)  # the rule (incl. over-hedge rounding) is the core's

    def check_exit_reservations(self) -> None:
        """3a. Exits never reserve more than is unhedged. Counted are the exit orders the core
        can still change (open limit orders with no cancel or amend in flight); market orders
        and orders with a request in flight keep reserving what they may fill: the documented
        race."""
        s = self.state
        hedge_need, spot_need = self.needs()

        def changeable(purpose: Purpose) -> Decimal:
            return sum(
                (
                    o.leaves
                    for o in s.orders.values()
                    if o.purpose is purpose
                    and o.status is OrderStatus.OPEN
                    and o.order_type is OrderType.LIMIT
                    and o.cancel_sent_ms is None
                    and o.amend is None
                ),
                ZERO,
            )

        hedges = changeable(Purpose.HEDGE)
        assert hedges <= max(hedge_need, ZERO), ("hedges", hedges, hedge_need)
        exits = changeable(Purpose.SPOT_EXIT)
        if s.cycle is None or s.cycle.side is Side.BUY:  # selling back: base units as held
            assert exits <= max(spot_need, ZERO), ("spot exit", exits, spot_need)
        else:  # buying back: grossed up for the base-coin fee, and never beyond that
            need = floor_to(spot_need, SPOT.qty_step) if spot_need > ZERO else ZERO
            fee = max(SPOT_FEES.maker, SPOT_FEES.taker)
            limit = gross_up_buy(need, fee, SPOT) if need else ZERO
            assert exits <= limit, ("spot buy-back", exits, spot_need, limit)

    def check_over_hedge_is_closed(self, ev: Event, cmds: list[Command]) -> None:
        """3b. An over-hedge (hedge need < 0) outside halted is always being closed: in the race
        (or a market-mode entry) live CLOSE_EXCESS orders cover it, unless an exit racing its
        cancel is still live or the close backs off after a refusal; while unwinding, the unwind
        (or the cancels before it) is working or backing off; in any other phase it cannot
        exist (carry and flat halt on it)."""
        s = self.state
        hedge_need, _ = self.needs()
        if hedge_need >= ZERO or s.phase is Phase.HALTED:
            return
        if s.phase in (Phase.RACE_EXIT, Phase.ENTRY_WORKING):
            closing = sum(
                (o.leaves for o in s.orders.values() if o.purpose is Purpose.CLOSE_EXCESS), ZERO
            )
            racing = any(
                o.purpose in (Purpose.HEDGE, Purpose.SPOT_EXIT) and o.cancel_sent_ms is not None
                for o in s.orders.values()
            )
            ok = closing >= -hedge_need or racing or self.backing_off(Purpose.CLOSE_EXCESS)
            assert ok, ("over-hedge left open", ev, hedge_need, cmds)
        elif s.phase is Phase.UNWINDING:
            ok = bool(s.orders) or self.backing_off(Purpose.UNWIND)
            assert ok, ("over-hedge left open", ev, hedge_need, cmds)
        else:
            raise AssertionError(f"over-hedged by {-hedge_need} in {s.phase} after {ev}")

    def backing_off(self, purpose: Purpose) -> bool:
        """The core waits before placing again after a refusal (§5.7)."""
        return self.now < self.state.next_place.get(purpose, 0)

    def check_link_ids(self, cmds: list[Command]) -> None:
        """4. Every orderLinkId is new, at most 36 characters of [a-z0-9-], carries the instance
        prefix, and its sequence number was reserved earlier in this or a previous step."""
        for cmd in cmds:
            if isinstance(cmd, ReserveIds):
                assert cmd.block_end > self.reserved.get(cmd.epoch, 0), cmd
                self.reserved[cmd.epoch] = cmd.block_end
            elif isinstance(cmd, PlaceOrder):
                lid = cmd.link_id
                assert lid not in self.link_ids, ("orderLinkId reused", lid)
                assert len(lid) <= 36 and LINK_RE.match(lid) and lid.startswith("btc-"), lid
                parts = LINK_PARTS.match(lid)
                assert parts is not None, lid
                epoch, seq = int(parts.group(1)), int(parts.group(2))
                assert seq < self.reserved.get(epoch, 0), ("not reserved", lid, self.reserved)
                self.link_ids.add(lid)
            elif isinstance(cmd, AmendOrder | CancelOrder | QueryOrder):
                assert cmd.link_id in self.link_ids, cmd

    def check_halted_sends_nothing(
        self, ev: Event, pre_phase: Phase, pre_live: set[str], cmds: list[Command]
    ) -> None:
        """6. Once halted (from the halting transition on, within the step too) the core sends
        no PlaceOrder and no AmendOrder, and cancels only orders that were live when it
        halted, until an operator Flatten, Resume or Clear takes it out of halted."""
        s = self.state
        operator_exit = isinstance(ev, Flatten | Resume | Clear) and s.phase is not Phase.HALTED
        start: int | None = 0 if pre_phase is Phase.HALTED and not operator_exit else None
        for i, cmd in enumerate(cmds):
            if isinstance(cmd, ReportTransition) and cmd.target is Phase.HALTED:
                placed = {c.link_id for c in cmds[:i] if isinstance(c, PlaceOrder)}
                self.halt_live = pre_live | placed
                start = i
        if start is None:
            return
        for cmd in cmds[start:]:
            assert not isinstance(cmd, PlaceOrder | AmendOrder), ("sent while halted", ev, cmd)
            if isinstance(cmd, CancelOrder):
                assert cmd.link_id in self.halt_live, ("cancel of a new order", cmd)

    def check_operator_exit_holds(self, ev: Event, pre_phase: Phase, cmds: list[Command]) -> None:
        """8. An operator Resume, Clear or Flatten that takes the core out of halted picks a
        phase consistent with the positions: that phase does not halt again in the same
        step."""
        if pre_phase is not Phase.HALTED or not isinstance(ev, Resume | Clear | Flatten):
            return
        left = any(isinstance(c, ReportTransition) and c.source is Phase.HALTED for c in cmds)
        if not left or self.state.phase is not Phase.HALTED:
            return
        raise AssertionError(("halted again at once", ev, cmds))

    def check_no_busy_retry(self, ev: Event, pre_live: set[str], cmds: list[Command]) -> None:
        """10. A create refused as PostOnly or rate-limited is not retried in the same step
        (§5.7: back off, never busy-loop on a rejection)."""
        if not (
            isinstance(ev, Rejected)
            and ev.request is Request.CREATE
            and ev.kind in (RejectKind.POST_ONLY, RejectKind.RATE_LIMITED)
            and ev.link_id in pre_live
        ):
            return
        refused = self.state.done.get(ev.link_id)
        assert refused is not None, ev
        again = [c for c in cmds if isinstance(c, PlaceOrder) and c.purpose is refused.purpose]
        assert not again, ("busy retry", ev, again)

    def check_prices(self, cmds: list[Command]) -> None:
        """11. Maker orders are priced on the tick grid, never through the touch the core saw,
        and the racing spot exit never gives the fill back worse than its entry price (§4.4)."""
        s = self.state
        for cmd in cmds:
            if not isinstance(cmd, PlaceOrder | AmendOrder) or cmd.price is None:
                continue
            o = s.orders[cmd.link_id]
            assert cmd.price % TICK == ZERO, cmd
            book = s.spot_book if o.leg is Leg.SPOT else s.perp_book
            assert book is not None, cmd
            if o.side is Side.BUY:
                assert cmd.price <= book.bid, ("buy above the bid", cmd, book)
            else:
                assert cmd.price >= book.ask, ("sell below the ask", cmd, book)
            entry = s.cycle.entry_price if s.cycle is not None else None
            if o.purpose is Purpose.SPOT_EXIT and entry is not None:
                worse = cmd.price < entry if o.side is Side.SELL else cmd.price > entry
                assert not worse, ("spot exit worse than the entry", cmd, entry)

    def check_positions(self) -> None:
        """7. Positions are exactly the fills the core was told about: per order the larger of
        the de-duplicated executions and the largest cumulative update, the spot net of the
        base-coin fee (exact decimals)."""
        spot, perp = ZERO, ZERO
        for lid, seen in self.delivered.items():
            v = self.orders[lid]
            exec_qty = sum((e.qty for e in seen.execs.values()), ZERO)
            if seen.best is not None and seen.best.cum_qty >= exec_qty:
                qty = seen.best.cum_qty
                base_fee = seen.best.cum_fee if seen.best.fee_coin == "BTC" else ZERO
            else:
                qty = exec_qty
                base_fee = sum((e.fee for e in seen.execs.values() if e.fee_coin == "BTC"), ZERO)
            if v.leg is Leg.SPOT:
                spot += qty * v.side.sign - base_fee
            else:
                perp += qty * v.side.sign
        assert self.state.spot.qty == spot, ("spot", self.state.spot.qty, spot)
        assert self.state.perp.qty == perp, ("perp", self.state.perp.qty, perp)


CoreMachine.TestCase.settings = settings(stateful_step_count=60)
TestCoreProperties = CoreMachine.TestCase


@pytest.mark.parametrize("doubt", ["submitting", "unknown"])
def test_machine_entry_replaced_while_a_hedge_is_in_doubt(doubt: str) -> None:
    """A path the random search reaches only rarely, replayed through the machine (every
    invariant is checked after every event): in market mode a partial entry fill is hedged
    at once; the entry is then re-priced by cancel-and-replace while that hedge's create is
    unanswered (or its answer was lost). The replacement must wait for the hedge (invariant
    2), then go out."""
    m = CoreMachine()
    m.setup(HedgeMode.MARKET, "0.01", "50", None, None, 12, "0.1")
    m.catch_up(trade=False, count=99)  # the entry is acknowledged
    m.fill_limit(pick=0, size="half", mode="exec_then_update")  # hedged by a market order
    if doubt == "unknown":
        m.answer(pick=0, outcome="unknown")  # the hedge's answer is lost: it is queried
    m.market(basis=12, move=20, spread=1, legs="both", dt=201)  # 0.4 bps: cancel and replace
    assert [r.kind for r in m.requests][-1] == "cancel"
    m.answer(pick=0, outcome="ok")  # the cancel lands first; the hedge is still in doubt
    assert not [o for o in m.state.orders.values() if o.purpose is Purpose.ENTRY]
    m.settle(dt=1001, resend=True)  # the hedge resolves: the entry is placed again
    assert m.state.phase is Phase.ENTRY_WORKING, m.state.phase
    assert [o for o in m.state.orders.values() if o.purpose is Purpose.ENTRY]


# ----------------------------------------------------------------------------- regressions
# Each is the smallest example the machine above shrank a core bug to (all fixed).


@pytest.mark.parametrize("failure", ["lost", "rate_limited"])
@pytest.mark.parametrize("path", ["entry_chase", "exit_trim"])
def test_a_cancel_that_failed_is_sent_again(path: str, failure: str) -> None:
    """The cancel's answer is lost (and a query shows the order still working), or the venue
    refuses it as rate-limited ("try again at the next interval"): the core must ask again. It
    never does when the cancel came from ``_chase`` or ``_trim``, which skip an order with
    ``cancel_sent_ms`` set: the order keeps working at the venue, is queried every second
    forever, and the entry stays at a stale price (or the race never ends)."""
    h = Harness.make(chase_max_slip_bps=D("0.1"))
    (entry,) = places(h.books(SPOT_BOOK, RICH))
    h.ack(entry.link_id)
    if path == "entry_chase":
        h.now += 201  # the touch moves 1.5 bps: beyond max slip, so cancel and replace
        books = (("65010.0", "65010.1"), ("65110.0", "65110.1"))
        target = entry.link_id
        cmds = h.books(*books)
    else:
        books = (SPOT_BOOK, RICH)
        h.fill(entry.link_id)
        hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
        h.ack(hedge.link_id)
        h.ack(spot_exit.link_id)
        target = spot_exit.link_id
        cmds = h.fill(hedge.link_id)  # the hedge won the race: cancel the spot exit
    assert order_cmds(cmds) == [CancelOrder(link_id=target, leg=Leg.SPOT)]
    if failure == "lost":
        h.send(OutcomeUnknown(link_id=target, request=Request.CANCEL, reason="timeout"))
        h.update(target, OrderStatus.OPEN, "0")  # the query: the cancel never landed
    else:
        h.reject(target, RejectKind.RATE_LIMITED, Request.CANCEL)
    resent: list[CancelOrder] = []
    for _ in range(10):  # ten seconds of unchanged books; the venue still works the order
        resent += of(h.advance(1000) + h.books(*books), CancelOrder)
    assert resent, "never cancelled again: the order works on, queried every second forever"


@pytest.mark.parametrize(
    "action", ["resume_after_hedge_shortfalls", "flatten_after_unwind_shortfalls"]
)
def test_operator_leaving_halted_gets_a_new_market_order_budget(action: str) -> None:
    """Three market orders of one leg ended short (IOC ran dry), so the cycle halted "could
    not complete". The operator reconciles and resumes (or flattens): the cycle's shortfall
    count is still 3, so the very first market order of the new phase halts again in the same
    step and the operator action cannot work. (Resume resets ``forced``, not the shortfalls.)"""
    operator_action: Resume | Flatten
    if action == "resume_after_hedge_shortfalls":
        h = Harness.make(hedge_mode=HedgeMode.MARKET)
        (entry,) = places(h.books(SPOT_BOOK, RICH))
        h.ack(entry.link_id)
        (market_hedge,) = places(h.fill(entry.link_id))
        link, price, operator_action = market_hedge.link_id, "65100.0", Resume()
    else:
        h = Harness.make()
        (entry,) = places(h.books(SPOT_BOOK, RICH))
        h.ack(entry.link_id)
        h.fill(entry.link_id)
        hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
        h.ack(hedge.link_id)
        h.ack(spot_exit.link_id)
        h.fill(hedge.link_id)
        h.cancelled(spot_exit.link_id)
        assert h.phase is Phase.CARRY_HEDGED
        unwinds = places(h.book(Leg.PERP, "65003.0", "65003.1"))  # the carry exit
        spot = next(p for p in unwinds if p.leg is Leg.SPOT)
        perp = next(p for p in unwinds if p.leg is Leg.PERP)
        h.ack(spot.link_id)
        h.fill(spot.link_id, price="65000.0")
        link, price, operator_action = perp.link_id, "65003.0", Flatten()
    for _ in range(3):  # each market order trades 0.001 and its IOC remainder is cancelled
        h.ack(link)
        h.execution(link, "0.001", price)
        cmds = h.update(link, OrderStatus.CANCELLED, "0.001", price=price)
        link = places(cmds)[0].link_id if places(cmds) else link
    assert h.phase is Phase.HALTED and of(cmds, ReportHalt)
    cmds = h.send(operator_action)
    assert h.phase is not Phase.HALTED, of(cmds, ReportHalt)
    assert places(cmds), "the operator action sends the market order it stands for"


@pytest.mark.parametrize("purpose", [Purpose.UNWIND, Purpose.CLOSE_EXCESS])
def test_rate_limited_market_order_backs_off_instead_of_halting(purpose: Purpose) -> None:
    """§5.7: on a rate-limit refusal back off, never busy-loop. A refused unwind or
    close-excess market order is re-sent in the same millisecond (``_decide_unwind`` and the
    over-hedge close ignore ``next_place``), and every refusal counts as a market shortfall: the
    third rate-limit refusal halts the instance ("unwind could not complete") with the carry
    still open. (The hedge and the spot exit do wait for the next interval.)"""
    h = Harness.make()
    (entry,) = places(h.books(SPOT_BOOK, RICH))
    h.ack(entry.link_id)
    h.fill(entry.link_id)
    hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
    h.ack(hedge.link_id)
    h.ack(spot_exit.link_id)
    if purpose is Purpose.UNWIND:
        h.fill(hedge.link_id)
        h.cancelled(spot_exit.link_id)
        cmds = h.book(Leg.PERP, "65003.0", "65003.1")  # the carry exit: unwind both legs
    else:
        h.fill(spot_exit.link_id)
        cmds = h.fill(hedge.link_id)  # both exits filled: close the excess perp
    (order,) = [p for p in places(cmds) if p.leg is Leg.PERP and p.purpose is purpose]
    cmds = h.reject(order.link_id, RejectKind.RATE_LIMITED)
    assert not places(cmds), "re-sent in the same millisecond"
    retries = 0
    for _ in range(10):  # the venue stays busy for ten seconds, refusing every retry
        h.advance(1000)
        for o in h.live(purpose):
            retries += 1
            h.reject(o.link_id, RejectKind.RATE_LIMITED)
    assert 0 < retries <= 20, retries
    assert h.phase is not Phase.HALTED, "a busy venue is not a failed unwind"


def test_clear_refuses_an_epoch_that_cannot_form_an_order_link_id() -> None:
    """§5.9: bad input never crashes a worker. A Clear whose epoch has more than the 10 digits
    ``<id>-<epoch>-<seq>`` allows (e.g. milliseconds sent for seconds) is refused, and the next
    entry still forms a valid id."""
    h = Harness.make()
    cmds = h.send(Clear(epoch=1_763_000_000_000))  # epoch milliseconds by mistake
    assert of(cmds, ReportRefused) and h.state.ids.epoch == EPOCH
    h.books(SPOT_BOOK, RICH)
    assert h.phase is Phase.ENTRY_WORKING

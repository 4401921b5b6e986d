"""The pure strategy: ``Core.step(state, event, now_ms) -> commands`` (ARCHITECTURE §4, §5).

Each step first records what the event says (books, order states, fills, balances), then lets
the current phase decide from those facts alone. Deciding from facts rather than from the event
is what makes duplicated, reordered and late venue messages harmless: a message that changes no
fact changes no decision.

Quantities are Decimal base units. ``cycle spot`` is the spot this cycle holds (signed, net of
base-coin fees); the perp offsets it in whole ``qtyStep``s, and what the perp cannot cover is
either raced back on the spot or, below both venues' minimums, kept as tracked dust.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from worker.core import basis
from worker.core.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    PlaceOrder,
    QueryOrder,
    ReportAnomaly,
    ReportBlocked,
    ReportCycle,
    ReportHalt,
    ReportRefused,
    ReportRiskBlock,
    ReportStopped,
    ReportTransition,
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
    Restarted,
    Resume,
    Resyncing,
    Stop,
    Tick,
    VenueMismatch,
    WalletBalance,
)
from worker.core.ids import allocate, issued_before, next_link_id, owns, skip_open_block
from worker.core.instruments import (
    buy_price,
    ceil_to,
    floor_to,
    gross_up_buy,
    sell_price,
    tradeable,
    trunc_to,
)
from worker.core.ledger import apply_fills, fee_coin_of, fmt, net_pnl
from worker.core.machine import Trigger, next_phase
from worker.core.model import (
    ZERO,
    Balance,
    CoreState,
    Cycle,
    IdState,
    Leg,
    Order,
    OrderStatus,
    OrderType,
    PendingAmend,
    Phase,
    Purpose,
    RejectKind,
    Request,
    Side,
    TopOfBook,
)
from worker.core.params import CoreParams

DAY_MS = 86_400_000
QUERY_AFTER_MS = 3_000  # a request unanswered this long is resolved by querying the order
QUERY_RETRY_MS = 1_000  # and the query is repeated at this pace until it is
CANCEL_RETRY_MS = 1_000  # a cancel the venue has not confirmed is re-sent at this pace
MAX_MARKET_ATTEMPTS = 3  # market orders per leg and purpose that may end short before halting
DONE_KEEP = 64  # terminal orders remembered for late and duplicated messages

_RETRYABLE = frozenset({RejectKind.POST_ONLY, RejectKind.RATE_LIMITED})
_EXITS = frozenset({Purpose.HEDGE, Purpose.SPOT_EXIT, Purpose.CLOSE_EXCESS})

Out = list[Command]


class Core:
    """Decision logic of one instance. Holds immutable parameters (and a memo of a pure
    function); all state is passed in."""

    def __init__(self, params: CoreParams) -> None:
        self.p = params
        self._needs_key: tuple[Decimal, Decimal, Decimal, int] | None = None
        self._needs_value: tuple[Decimal, Decimal, Decimal | None] = (ZERO, ZERO, ZERO)
        self.base = params.spot.base_coin
        self.quote = params.spot.quote_coin
        self._handlers: dict[type[Any], Callable[[CoreState, Any, int, Out], bool]] = {
            BookTop: self._on_book,
            BookInvalid: self._on_book_invalid,
            OrderUpdate: self._on_order_update,
            Execution: self._on_execution,
            Acknowledged: self._on_ack,
            Rejected: self._on_rejected,
            OutcomeUnknown: self._on_unknown,
            OrderNotFound: self._on_not_found,
            WalletBalance: self._on_wallet,
            FundingPayment: self._on_funding,
            Tick: self._on_tick,
            Stop: self._on_stop,
            CancelEntry: self._on_cancel_entry,
            Flatten: self._on_flatten,
            ClearRisk: self._on_clear_risk,
            Resume: self._on_resume,
            Resyncing: self._on_resyncing,
            Restarted: self._on_restarted,
            VenueMismatch: self._on_mismatch,
            Clear: self._on_clear,
        }
        self._phase_deciders: dict[Phase, Callable[[CoreState, int, Out], None]] = {
            Phase.FLAT: self._decide_flat,
            Phase.ENTRY_WORKING: self._decide_entry,
            Phase.RACE_EXIT: self._decide_race,
            Phase.CARRY_HEDGED: self._decide_carry,
            Phase.UNWINDING: self._decide_unwind,
            Phase.HALTED: self._decide_halted,
        }

    # ------------------------------------------------------------------ public API

    def new_state(self, epoch: int) -> CoreState:
        """A fresh instance; ``epoch`` is the wall-clock second it is created (see ids)."""
        return CoreState(
            instance_id=self.p.instance_id,
            spot_symbol=self.p.spot.symbol,
            future_symbol=self.p.perp.symbol,
            ids=IdState(epoch=epoch, origin=epoch),
        )

    def step(self, state: CoreState, event: Event, now_ms: int) -> list[Command]:
        """Apply one event at time ``now_ms``; ``state`` is updated in place, commands returned.

        The runtime must execute the commands in order and persist the state after any step
        that returned commands or changed a fill (§5.1, §6).
        """
        out: Out = []
        kind = type(event)
        if kind is not BookTop:
            state.quiet_until = 0  # anything but a price may change what the exits need
        if self._handlers[kind](state, event, now_ms, out) and now_ms >= state.quiet_until:
            self._decide(state, now_ms, out)
        return out

    # ------------------------------------------------------------------ derived facts

    def cycle_spot(self, s: CoreState) -> Decimal:
        """Spot held by the current cycle (signed, net of base-coin fees)."""
        return s.spot.qty - s.dust

    def unhedged_qty(self, s: CoreState) -> Decimal:
        """Spot not offset by the perp (signed); includes sub-step remainders."""
        return self.cycle_spot(s) + s.perp.qty

    def net_pnl(self, s: CoreState) -> Decimal:
        """Realised PnL net of fees and funding (quote units)."""
        return net_pnl(s)

    def basis_bps(self, s: CoreState) -> Decimal | None:
        sb, pb = s.spot_book, s.perp_book
        if sb is None or pb is None:
            return None
        return basis.display_bps(basis.basis_bps(sb.bid, sb.ask, pb.bid, pb.ask))

    def book_fresh(self, book: TopOfBook | None, now: int) -> bool:
        return (
            book is not None and not book.invalid and now - book.received_ms <= self.p.stale_book_ms
        )

    def next_deadline(self, s: CoreState, now: int) -> int | None:
        """The earliest time after ``now`` at which a Tick could change a decision.

        Only timers still pending count: a re-price already due waits for a new price, not for
        time, so a runtime sleeping until this deadline never spins.
        """
        times: list[int] = []
        for o in s.orders.values():
            if o.order_type is OrderType.LIMIT and o.amend is None and o.cancel_sent_ms is None:
                times.append(o.last_action_ms + self.p.chase_interval_ms)
            if o.cancel_last_ms is not None and not o.cancel_acked:
                times.append(o.cancel_last_ms + CANCEL_RETRY_MS)
            if o.status.in_doubt or o.amend is not None or o.cancel_sent_ms is not None:
                times.append(max(o.last_action_ms, o.cancel_sent_ms or 0) + QUERY_AFTER_MS)
                if o.query_sent_ms is not None:
                    times.append(o.query_sent_ms + QUERY_RETRY_MS)
        times.extend(s.next_place.values())
        if s.unhedged_since is not None:
            times.append(s.unhedged_since + self.p.max_unhedged_ms)
        for book in (s.spot_book, s.perp_book):
            if book is not None:
                times.append(book.received_ms + self.p.stale_book_ms + 1)
        if s.day >= 0:
            times.append((s.day + 1) * DAY_MS)
        future = [t for t in times if t > now]
        return min(future) if future else None

    # ------------------------------------------------------------------ event handlers
    # Each returns whether a decision pass is needed.

    def _on_book(self, s: CoreState, ev: BookTop, now: int, out: Out) -> bool:
        current = s.spot_book if ev.leg is Leg.SPOT else s.perp_book
        if current is not None and ev.ts_ms < current.ts_ms:
            return False  # an older message overtaken by a newer one
        crossed = ev.bid <= ZERO or ev.ask <= ev.bid
        book = TopOfBook(
            bid=ev.bid,
            ask=ev.ask,
            bid_qty=ev.bid_qty,
            ask_qty=ev.ask_qty,
            ts_ms=ev.ts_ms,
            update_id=ev.update_id,
            mid=(ev.bid + ev.ask) / 2,
            received_ms=now,
            invalid="crossed book" if crossed else "",
        )
        if ev.leg is Leg.SPOT:
            s.spot_book = book
        else:
            s.perp_book = book
        return True

    def _on_book_invalid(self, s: CoreState, ev: BookInvalid, now: int, out: Out) -> bool:
        book = s.spot_book if ev.leg is Leg.SPOT else s.perp_book
        if book is not None:
            book.invalid = ev.reason or "invalid"
        return True

    def _find(self, s: CoreState, link_id: str, out: Out, what: str) -> Order | None:
        order = s.orders.get(link_id)
        if order is None and (order := s.done.get(link_id)) is not None:
            s.done_rev += 1  # the caller may update a finished order (a late fill, say)
        if order is None and issued_before(s.ids, s.instance_id, link_id):
            # finished long ago and forgotten (DONE_KEEP): its final count was applied then
            s.duplicates_ignored += 1
        elif order is None and owns(s.instance_id, link_id):
            # An id of ours we hold no record of: the venue knows an order we do not.
            out.append(ReportAnomaly(kind="unknown_order", detail=f"{what} for {link_id}"))
            if s.phase is not Phase.HALTED:
                self._halt(
                    s,
                    out,
                    "unknown order",
                    f"{what} for {link_id}, which this "
                    "instance has no record of; reconcile before trading",
                )
        return order

    def _on_order_update(self, s: CoreState, ev: OrderUpdate, now: int, out: Out) -> bool:
        o = self._find(s, ev.link_id, out, "order update")
        if o is None:
            return bool(out)
        if ev.order_id:
            o.venue_order_id = ev.order_id
        if ev.cum_qty > o.upd_qty:
            value = ev.cum_value
            if value is None:  # venues that report only the average price
                value = ev.cum_qty * (ev.avg_price or o.price or ZERO)
            o.upd_qty, o.upd_value = ev.cum_qty, value
            o.upd_fee, o.upd_fee_coin = ev.cum_fee, ev.fee_coin
        newer = ev.updated_ms >= o.venue_updated_ms
        if not o.status.terminal:
            if ev.status.terminal:
                o.status = ev.status
                o.reject, o.reject_text = ev.reject, ev.reject_text
            elif newer:
                o.status = OrderStatus.OPEN
            if newer and not ev.status.terminal:
                o.venue_updated_ms = ev.updated_ms
                amend = o.amend
                if amend is not None and (
                    amend.unknown or (ev.qty == amend.qty and ev.price == amend.price)
                ):
                    o.amend = None
                o.qty = ev.qty
                if ev.price is not None and o.order_type is OrderType.LIMIT:
                    o.price = ev.price
        self._account(s, o, out)
        if o.status.terminal and o.link_id in s.orders:
            self._retire(s, o, now)
            if o.status is OrderStatus.REJECTED and o.reject is not RejectKind.POST_ONLY:
                kind = o.reject or RejectKind.OTHER  # an unclassified refusal is still final
                self._after_create_reject(s, o, kind, o.reject_text or str(kind), now, out)
        return True

    def _on_execution(self, s: CoreState, ev: Execution, now: int, out: Out) -> bool:
        o = self._find(s, ev.link_id, out, "execution")
        if o is None:
            return bool(out)
        if ev.exec_id in o.exec_ids:
            s.duplicates_ignored += 1
            return False
        o.exec_ids.append(ev.exec_id)
        o.exec_qty += ev.qty
        o.exec_value += ev.qty * ev.price
        coin = ev.fee_coin or fee_coin_of(o, base=self.base, quote=self.quote)
        o.exec_fees[coin] = o.exec_fees.get(coin, ZERO) + ev.fee
        s.fills_seen += 1
        self._account(s, o, out)
        return True

    def _on_ack(self, s: CoreState, ev: Acknowledged, now: int, out: Out) -> bool:
        o = s.orders.get(ev.link_id)
        if o is None:
            return False  # the order already ended; an acknowledgement changes nothing
        if ev.request is Request.CREATE:
            if o.status.in_doubt:
                o.status = OrderStatus.OPEN
            if ev.order_id:
                o.venue_order_id = ev.order_id
        elif ev.request is Request.AMEND and o.amend is not None:
            o.qty = o.amend.qty
            if o.amend.price is not None:
                o.price = o.amend.price
            o.amend = None
        elif ev.request is Request.CANCEL:
            o.cancel_acked = True
        return True

    def _on_rejected(self, s: CoreState, ev: Rejected, now: int, out: Out) -> bool:
        o = s.orders.get(ev.link_id)
        if o is None:
            return False
        text = f"{ev.kind} (venue code {ev.code}: {ev.message})"
        if ev.request is Request.CREATE:
            if o.applied_qty > ZERO or not o.status.in_doubt:
                out.append(ReportAnomaly(kind="late_reject", detail=f"{o.link_id}: {text}"))
                return False
            o.status, o.reject, o.reject_text = OrderStatus.REJECTED, ev.kind, text
            self._retire(s, o, now)
            self._after_create_reject(s, o, ev.kind, text, now, out)
        elif ev.request is Request.AMEND:
            reduce = o.amend is not None and o.amend.qty < o.qty
            o.amend = None
            o.last_action_ms = now  # re-price again only at the next interval
            if ev.kind in (RejectKind.NOT_FOUND, RejectKind.FINISHED):
                self._query(o, now, out)
            elif reduce:
                self._cancel(o, now, out)  # the reservation must shrink, one way or another
        elif ev.kind in (RejectKind.NOT_FOUND, RejectKind.FINISHED):
            self._query(o, now, out)  # the order ended or never landed: learn which
        return True

    def _after_create_reject(
        self, s: CoreState, o: Order, kind: RejectKind, text: str, now: int, out: Out
    ) -> None:
        if kind in _RETRYABLE:
            s.next_place[o.purpose] = now + self.p.chase_interval_ms
        elif o.purpose is Purpose.ENTRY and kind is RejectKind.INSUFFICIENT_BALANCE:
            s.balance_block_version = s.wallet_version
            self._set_blocked(s, out, f"entry rejected for insufficient balance: {text}")
        else:
            self._halt(s, out, f"{o.purpose} order rejected", f"{o.link_id}: {text}")

    def _on_unknown(self, s: CoreState, ev: OutcomeUnknown, now: int, out: Out) -> bool:
        o = s.orders.get(ev.link_id)
        if o is None:
            return False
        if ev.request is Request.CREATE and o.status is OrderStatus.SUBMITTING:
            o.status = OrderStatus.UNKNOWN
        elif ev.request is Request.AMEND and o.amend is not None:
            o.amend.unknown = True
        o.query_sent_ms = None  # ask now
        self._query(o, now, out)
        return True

    def _on_not_found(self, s: CoreState, ev: OrderNotFound, now: int, out: Out) -> bool:
        o = s.orders.get(ev.link_id)
        if o is None:
            return False
        if o.status.in_doubt and o.applied_qty == ZERO:
            o.status, o.reject = OrderStatus.REJECTED, RejectKind.NOT_FOUND
            o.reject_text = "the venue never took it"
            self._retire(s, o, now)
            if o.order_type is OrderType.LIMIT:  # a quote waits for the next interval
                s.next_place[o.purpose] = now + self.p.chase_interval_ms
        else:
            self._halt(
                s,
                out,
                "order vanished",
                f"{o.link_id} was acknowledged or filled but the venue no longer reports it",
            )
        return True

    def _on_wallet(self, s: CoreState, ev: WalletBalance, now: int, out: Out) -> bool:
        s.balances[ev.coin] = Balance(available=ev.available, total=ev.total)
        s.wallet_version += 1
        return True

    def _on_funding(self, s: CoreState, ev: FundingPayment, now: int, out: Out) -> bool:
        if ev.ts_ms <= max(s.funding_last_ms, s.ids.origin * 1000):
            s.duplicates_ignored += 1  # counted already, or settled before this state existed
            return False
        s.funding_last_ms = ev.ts_ms
        s.funding += ev.amount
        self._check_daily_loss(s, out)
        return True

    def _on_tick(self, s: CoreState, ev: Tick, now: int, out: Out) -> bool:
        return True

    def _on_stop(self, s: CoreState, ev: Stop, now: int, out: Out) -> bool:
        s.stopping = True
        return True

    def _on_cancel_entry(self, s: CoreState, ev: CancelEntry, now: int, out: Out) -> bool:
        s.entries_paused = True
        return True

    def _on_flatten(self, s: CoreState, ev: Flatten, now: int, out: Out) -> bool:
        s.entries_paused = True  # after an operator flatten the row waits for Resume
        if s.venue_perp_qty is not None and s.phase is Phase.HALTED:
            # the operator flattens what the exchange holds, not what the snapshot believed
            s.perp.qty, s.venue_perp_qty = s.venue_perp_qty, None
        if s.phase is Phase.UNWINDING:
            s.flattening = True
            if s.cycle is not None:
                s.cycle.market_shortfalls.clear()
        elif s.phase is Phase.FLAT:
            out.append(
                ReportRefused(
                    command="flatten", reason="already flat; new entries paused until Resume"
                )
            )
        else:
            s.flattening = True
            if s.cycle is None:
                s.cycle = self._cycle_from_positions(s, now)
            s.cycle.exit_reason = "flatten"
            s.cycle.market_shortfalls.clear()  # the operator grants a new market-order budget
            self._go(s, Trigger.FLATTEN, out, "operator flatten")
        return True

    def _on_clear_risk(self, s: CoreState, ev: ClearRisk, now: int, out: Out) -> bool:
        if not s.risk_blocked:
            out.append(ReportRefused(command="clear_risk", reason="no risk block is active"))
            return False
        s.day_pnl_base = self.net_pnl(s)
        self._set_risk(s, out, False, "cleared by operator")
        return True

    def _on_resume(self, s: CoreState, ev: Resume, now: int, out: Out) -> bool:
        if s.phase is not Phase.HALTED:
            if s.entries_paused:
                s.entries_paused = False
                return True
            out.append(ReportRefused(command="resume", reason="not halted and not paused"))
            return False
        if s.venue_perp_qty is not None and s.venue_perp_qty != s.perp.qty:
            out.append(
                ReportRefused(
                    command="resume",
                    reason=f"the exchange's perp position {s.venue_perp_qty} differs from "
                    f"the snapshot's {s.perp.qty}: flatten, or reconcile and clear",
                )
            )
            return False
        if s.orders:
            out.append(
                ReportRefused(
                    command="resume",
                    reason=f"{len(s.orders)} order(s) still "
                    "working: wait for their cancels or cancel the orphans",
                )
            )
            return False
        hedge_need, spot_need = self._needs(s)
        if not self._exposed(s, hedge_need, spot_need) and s.perp.qty == ZERO:
            trigger = Trigger.RESUME_FLAT
        elif hedge_need == ZERO and not self._spot_tradeable(spot_need, s):
            trigger = Trigger.RESUME_HEDGED
        else:
            trigger = Trigger.RESUME_UNHEDGED
        s.halt_reason = s.halt_detail = ""
        if trigger is Trigger.RESUME_FLAT:
            if s.cycle is not None:
                self._close_cycle(s, out, "resume")
            s.dust = s.spot.qty  # what the venues cannot trade stays, tracked
        elif s.cycle is None:
            s.cycle = self._cycle_from_positions(s, now)
        if s.cycle is not None:
            s.cycle.market_shortfalls.clear()  # the operator grants a new market-order budget
        if trigger is Trigger.RESUME_UNHEDGED:
            assert s.cycle is not None
            s.cycle.forced = False
            s.unhedged_since = now
        self._go(s, trigger, out, "operator resume after reconcile")
        return True

    def _on_resyncing(self, s: CoreState, ev: Resyncing, now: int, out: Out) -> bool:
        s.syncing = True
        return False

    def _on_mismatch(self, s: CoreState, ev: VenueMismatch, now: int, out: Out) -> bool:
        s.venue_perp_qty = ev.perp_qty
        if ev.perp_qty != s.perp.qty and ev.perp_qty and not s.perp.qty:
            s.perp.avg_price = ev.perp_avg_price  # a position the snapshot never had
        self._halt(s, out, "venue mismatch", ev.detail)
        return True

    def _on_restarted(self, s: CoreState, ev: Restarted, now: int, out: Out) -> bool:
        s.stopping = s.stopped = s.syncing = False
        s.ids.block_end = max(s.ids.block_end, ev.block_end)  # reserved after the snapshot
        skip_open_block(s.ids)
        return True

    def _on_clear(self, s: CoreState, ev: Clear, now: int, out: Out) -> bool:
        why = ""
        if s.phase not in (Phase.FLAT, Phase.HALTED):
            why = f"state is {s.phase}"
        elif s.orders:
            why = f"{len(s.orders)} order(s) still working"
        elif s.perp.qty != ZERO or self._spot_tradeable(abs(self.cycle_spot(s)), s):
            why = "the snapshot still holds a position"
        elif ev.epoch <= s.ids.epoch:
            why = f"the new epoch {ev.epoch} must exceed {s.ids.epoch}"
        elif ev.epoch >= 10**10:
            why = f"the new epoch {ev.epoch} is not a Unix time in seconds"
        if why:
            out.append(ReportRefused(command="clear", reason=why))
            return False
        s.ids = IdState(epoch=ev.epoch, origin=s.ids.origin, skipped=s.ids.skipped)
        s.cycle = None
        s.dust = s.spot.qty
        s.halt_reason = s.halt_detail = s.blocked = ""
        s.unhedged_since = None
        s.next_place.clear()
        self._go(s, Trigger.CLEAR, out, "operator clear after reconcile")
        return True

    # ------------------------------------------------------------------ fills and accounting

    def _account(self, s: CoreState, o: Order, out: Out) -> None:
        """Apply whatever fill quantity the order's best source shows beyond what is applied."""
        dq, dv = apply_fills(s, o, base=self.base, quote=self.quote)
        if not dq:
            return
        cyc = s.cycle
        if o.purpose is Purpose.ENTRY and cyc is not None and o.cycle == cyc.number:
            cyc.entry_filled += dq
            cyc.entry_value += dv
        if o.status.terminal and o.link_id in s.done:
            out.append(
                ReportAnomaly(
                    kind="late_fill",
                    detail=f"{o.link_id} filled {dq} after it was reported finished",
                )
            )
        self._check_daily_loss(s, out)

    def _retire(self, s: CoreState, o: Order, now: int) -> None:
        cyc = s.cycle
        if (
            o.order_type is OrderType.MARKET
            and o.status is not OrderStatus.REJECTED  # a refusal is judged by its reason
            and o.applied_qty < o.qty
            and cyc is not None
        ):
            key = f"{o.leg}:{o.purpose}"  # an IOC that ran out of liquidity or was refused
            cyc.market_shortfalls[key] = cyc.market_shortfalls.get(key, 0) + 1
        del s.orders[o.link_id]
        s.done[o.link_id] = o
        s.done_rev += 1
        if len(s.done) > DONE_KEEP:
            del s.done[next(iter(s.done))]
        if (
            o.cancel_sent_ms is None
            and o.order_type is OrderType.LIMIT
            and o.leaves == ZERO
            and o.applied_qty < o.qty
        ):
            # ended without our asking (PostOnly would have crossed): re-quote next interval
            s.next_place[o.purpose] = now + self.p.chase_interval_ms

    # ------------------------------------------------------------------ the decision pass

    def _decide(self, s: CoreState, now: int, out: Out) -> None:
        if s.stopped or s.syncing:
            return
        day = now // DAY_MS
        if day != s.day:
            self._new_day(s, day, out)
        for _ in range(4):  # a transition lets the new phase act within the same step
            phase = s.phase
            self._phase_deciders[phase](s, now, out)
            if s.phase is phase:
                break
        self._track_unhedged(s, now)
        self._resolve_doubts(s, now, out)
        if s.stopping and self._stop_ready(s, now):
            s.stopped = True
            out.append(ReportStopped())
        s.quiet_until = self._quiet_until(s) if not out else 0

    def _quiet_until(self, s: CoreState) -> int:
        """Until when book updates alone cannot change a decision of a settled race.

        Settled: both exits (or the one that can work) are resting at their full size with no
        request in flight, nothing is forced, stopping or over-hedged. Then a new price matters
        only once an exit is due for re-pricing or a timer fires, and the many book updates
        before that are recorded without a decision pass. (A price move that makes a resting
        exit's size fall below the minimum notional leaves that order working until then; it
        can only reduce exposure.)
        """
        cyc = s.cycle
        if s.phase is not Phase.RACE_EXIT or cyc is None or cyc.forced or s.stopping:
            return 0
        hedge_need, spot_need = self._needs(s)
        if hedge_need < ZERO or not s.orders:
            return 0
        hedged = exiting = ZERO
        until = (s.day + 1) * DAY_MS
        if s.unhedged_since is not None:
            until = min(until, s.unhedged_since + self.p.max_unhedged_ms)
        for o in s.orders.values():
            if (
                o.status is not OrderStatus.OPEN
                or o.amend is not None
                or o.cancel_sent_ms is not None
                or o.order_type is OrderType.MARKET
            ):
                return 0
            if o.purpose is Purpose.HEDGE:
                hedged += o.leaves
            elif o.purpose is Purpose.SPOT_EXIT:
                exiting += o.leaves
            else:
                return 0
            until = min(until, o.last_action_ms + self.p.chase_interval_ms)
        hedge_target = hedge_need if self._perp_tradeable(hedge_need, s) else ZERO
        if hedged != hedge_target or (exiting == ZERO and self._spot_tradeable(spot_need, s)):
            return 0  # something is still to be placed or resized
        return until

    # FLAT ------------------------------------------------------------------------

    def _decide_flat(self, s: CoreState, now: int, out: Out) -> None:
        if s.perp.qty != ZERO or s.spot.qty != s.dust:
            self._halt(
                s,
                out,
                "position while flat",
                f"spot {self.cycle_spot(s)} and perp "
                f"{s.perp.qty} changed with no cycle open (a fill on a finished order?)",
            )
            return
        if (
            s.stopping
            or s.entries_paused
            or s.risk_blocked
            or s.orders
            or now < s.next_place.get(Purpose.ENTRY, 0)
        ):
            return
        sb, pb = s.spot_book, s.perp_book
        if not (self.book_fresh(sb, now) and self.book_fresh(pb, now)):
            return
        assert sb is not None and pb is not None
        spot2, fut2 = sb.bid + sb.ask, pb.bid + pb.ask
        t = self.p.entry_threshold_bps
        if basis.at_least(spot2, fut2, t):
            side = Side.BUY
        elif basis.at_most(spot2, fut2, -t):
            side = Side.SELL
        else:
            if s.blocked:
                self._set_blocked(s, out, "")
            return
        price = sb.bid if side is Side.BUY else sb.ask
        gross = self._entry_gross(side)
        why = self._entry_blocker(s, side, gross, price)
        if why:
            self._set_blocked(s, out, why)
            return
        if s.blocked:
            self._set_blocked(s, out, "")
        s.cycle = Cycle(
            number=s.cycles_done + 1,
            side=side,
            target=self.p.order_qty,
            entry_gross=gross,
            started_ms=now,
            pnl_start=self.net_pnl(s),
        )
        self._go(
            s,
            Trigger.ENTRY_SIGNAL,
            out,
            f"basis {self.basis_bps(s)} bps {'>=' if side is Side.BUY else '<='} "
            f"{'' if side is Side.BUY else '-'}{t}",
        )

    def _entry_gross(self, side: Side) -> Decimal:
        """A spot buy is grossed up by its fee (Bybit takes a spot buy's fee in the coin)."""
        if side is Side.BUY:
            return gross_up_buy(self.p.order_qty, self.p.spot_fees.maker, self.p.spot)
        return self.p.order_qty

    def entry_candidates(self, s: CoreState) -> tuple[PlaceOrder, ...]:
        """The entry order each side would place if the basis crossed now with the spot book
        as it is, changing nothing: the runtime signs them ahead, so an entry triggered by
        the perp costs no request building. Empty when no entry can start from here."""
        sb = s.spot_book
        if s.phase is not Phase.FLAT or s.stopping or sb is None:
            return ()
        link_id = next_link_id(s.ids, s.instance_id)
        return tuple(
            PlaceOrder(
                link_id=link_id,
                leg=Leg.SPOT,
                side=side,
                order_type=OrderType.LIMIT,
                qty=self._entry_gross(side),
                price=price,
                post_only=True,
                reduce_only=False,
                purpose=Purpose.ENTRY,
            )
            for side, price in ((Side.BUY, sb.bid), (Side.SELL, sb.ask))
        )

    def _entry_blocker(self, s: CoreState, side: Side, gross: Decimal, price: Decimal) -> str:
        if s.balance_block_version == s.wallet_version:
            return s.blocked or "waiting for a wallet update after an insufficient-balance reject"
        cap = self.p.max_notional_quote
        if cap is not None and self.p.order_qty * price > cap:
            return (
                f"order_qty × price = {fmt(self.p.order_qty * price)} {self.quote} exceeds "
                f"max_notional_quote {fmt(cap)}"
            )
        coin, need = (self.quote, gross * price) if side is Side.BUY else (self.base, gross)
        bal = s.balances.get(coin)
        if bal is None:
            return f"no {coin} wallet balance known yet"
        if bal.available < need:
            verb = "buy" if side is Side.BUY else "sell"
            return (
                f"spot {verb} blocked: available {coin} {fmt(bal.available)} < required {fmt(need)}"
            )
        return ""

    # ENTRY_WORKING -----------------------------------------------------------------

    def _decide_entry(self, s: CoreState, now: int, out: Out) -> None:
        cyc = s.cycle
        assert cyc is not None
        entries = [o for o in s.orders.values() if o.purpose is Purpose.ENTRY]
        if self.p.hedge_mode is HedgeMode.MARKET:
            self._work_exits(s, now, out, hedge_only=True)
            if s.phase is not Phase.ENTRY_WORKING:
                return  # the hedge could not complete: halted
        sb = s.spot_book
        remaining = cyc.entry_gross - cyc.entry_filled
        ref = (sb.bid if cyc.side is Side.BUY else sb.ask) if sb is not None else None
        complete = remaining <= ZERO or (
            ref is not None and not tradeable(remaining, ref, self.p.spot)
        )
        why = "entry complete" if complete else self._entry_stop_reason(s, now)
        if why:
            for o in entries:
                self._cancel(o, now, out)
            if entries:
                return  # a cancel is a request: wait for the final fill count
            if cyc.entry_filled == ZERO:
                s.cycle = None
                self._go(s, Trigger.ENTRY_ABANDONED, out, why)
            else:
                cyc.entry_done = True
                self._go(s, Trigger.ENTRY_FILLED, out, why)
            return
        assert ref is not None
        if not entries:
            if self._may_add_risk(s, now, Purpose.ENTRY):
                self._quote(
                    s, now, out, Leg.SPOT, cyc.side, Purpose.ENTRY, remaining, ref, remaining
                )
            return
        self._chase(entries[0], ref, now, out, replace_over=self.p.chase_max_slip_bps)

    def _entry_stop_reason(self, s: CoreState, now: int) -> str:
        cyc = s.cycle
        assert cyc is not None
        if s.stopping:
            return "stop requested"
        if s.entries_paused:
            return "entry cancelled by operator"
        if s.risk_blocked:
            return "daily loss limit"
        if s.balance_block_version == s.wallet_version:
            return "insufficient balance"
        sb, pb = s.spot_book, s.perp_book
        if not (self.book_fresh(sb, now) and self.book_fresh(pb, now)):
            return "book stale or invalid"
        assert sb is not None and pb is not None
        spot2, fut2 = sb.bid + sb.ask, pb.bid + pb.ask
        t = self.p.entry_threshold_bps
        holds = (
            basis.at_least(spot2, fut2, t)
            if cyc.side is Side.BUY
            else basis.at_most(spot2, fut2, -t)
        )
        if not holds:
            return f"basis {self.basis_bps(s)} bps fell back inside ±{t}"
        if s.unhedged_since is not None and now - s.unhedged_since >= self.p.max_unhedged_ms:
            hedge_need, _ = self._needs(s)
            if self._perp_tradeable(hedge_need, s):  # a part the perp could take is waiting
                return f"max_unhedged_ms {self.p.max_unhedged_ms} reached with a partial fill"
        return ""

    def _may_add_risk(self, s: CoreState, now: int, purpose: Purpose) -> bool:
        """No order whose outcome is in doubt, and the re-quote pause is over (§5.2)."""
        if now < s.next_place.get(purpose, 0):
            return False
        return not any(o.status.in_doubt for o in s.orders.values())

    # RACE_EXIT (and hedging during a market-mode entry) ------------------------------

    def _needs(self, s: CoreState) -> tuple[Decimal, Decimal]:
        """(perp still to hedge, spot not covered by the perp), in the cycle's direction.

        A negative hedge need is an over-hedge of that size. The common case is memoised on
        the positions it depends on: a book update, the common event, changes none of them.
        """
        sign = self._direction(s)
        key = (s.spot.qty, s.dust, s.perp.qty, sign)
        if key != self._needs_key:
            held = (s.spot.qty - s.dust) * sign
            hedged = -s.perp.qty * sign
            need = trunc_to(held, self.p.perp.qty_step) - hedged if held >= hedged else None
            self._needs_key, self._needs_value = key, (held, hedged, need)
        held, hedged, need = self._needs_value
        if need is None:
            need = self._over_hedge(s, hedged - held, hedged)
        return need, held - hedged

    def _over_hedge(self, s: CoreState, over: Decimal, hedged: Decimal) -> Decimal:
        """The (negative) need of an over-hedge: whole perp steps rounded up, so what is left is
        spot the spot exit can give back, never more than the perp holds. An excess the spot
        could not trade (below its minimum quantity or notional) stays, tracked like dust."""
        price = self._ref_price(s, Leg.SPOT) or self._ref_price(s, Leg.PERP) or s.perp.avg_price
        if over < self.p.spot.min_qty or (price and over * price < self.p.spot.min_notional):
            return ZERO
        return -min(ceil_to(over, self.p.perp.qty_step), hedged)

    def _direction(self, s: CoreState) -> int:
        if s.cycle is not None:
            return s.cycle.side.sign
        return 1 if self.cycle_spot(s) >= ZERO else -1

    def _decide_race(self, s: CoreState, now: int, out: Out) -> None:
        cyc = s.cycle
        assert cyc is not None
        if (
            not cyc.forced
            and not s.stopping
            and s.unhedged_since is not None
            and now - s.unhedged_since >= self.p.max_unhedged_ms
        ):
            cyc.forced = True  # bound the leg risk: finish with market orders
        self._work_exits(s, now, out, hedge_only=False)
        if s.orders or s.phase is not Phase.RACE_EXIT:
            return
        hedge_need, spot_need = self._needs(s)
        if self._exposed(s, hedge_need, spot_need) or s.stopping:
            return
        if s.perp.qty == ZERO:
            self._close_cycle(s, out, "spot exit")
            self._go(s, Trigger.SPOT_UNWOUND, out, "the spot fill was given back (or is dust)")
        else:
            self._go(s, Trigger.HEDGED, out, "perp hedge filled")

    def _exposed(self, s: CoreState, hedge_need: Decimal, spot_need: Decimal) -> bool:
        """True while some exposure can still be traded away on either venue."""
        return (
            hedge_need < ZERO
            or self._perp_tradeable(hedge_need, s)
            or self._spot_tradeable(spot_need, s)
        )

    def _work_exits(self, s: CoreState, now: int, out: Out, *, hedge_only: bool) -> None:
        """Size, place, re-price and trim the exits so they never reserve more than is open."""
        cyc = s.cycle
        assert cyc is not None
        market = cyc.forced or self.p.hedge_mode is HedgeMode.MARKET
        hedge_need, spot_need = self._needs(s)
        exit_side = cyc.side.opposite  # the perp hedge and the spot exit both trade this way
        closes: list[Order] = []
        hedges: list[Order] = []
        exits: list[Order] = []
        by_purpose = {Purpose.CLOSE_EXCESS: closes, Purpose.HEDGE: hedges, Purpose.SPOT_EXIT: exits}
        for o in s.orders.values():
            group = by_purpose.get(o.purpose)
            if group is not None:
                group.append(o)
        # 1. over-hedge: both exits filled; close the excess perp at once
        if hedge_need < ZERO:
            excess = -hedge_need - sum((o.leaves for o in closes), ZERO)
            if (
                excess > ZERO
                and excess >= self.p.perp.min_qty
                and self._may_place(s, now, Purpose.CLOSE_EXCESS)
            ):
                self._place_market(
                    s,
                    now,
                    out,
                    Leg.PERP,
                    exit_side.opposite,
                    Purpose.CLOSE_EXCESS,
                    excess,
                    reduce_only=True,
                )
                if s.phase is Phase.HALTED:
                    return
        # 2. the perp hedge
        # below the perp's minimum the hedge cannot work; the spot exit takes that part
        hedge_target = hedge_need if self._perp_tradeable(hedge_need, s) else ZERO
        resting = [o for o in (*hedges, *exits) if o.order_type is OrderType.LIMIT]
        if cyc.forced and resting:
            for o in resting:  # replaced by market orders once both have ended: a racing
                self._cancel(o, now, out)  # fill must not meet a market order too
            return
        self._trim(hedges, hedge_target, now, out)
        gap = hedge_target - sum((o.leaves for o in hedges), ZERO)
        can_hedge = self._perp_tradeable(gap, s) and self._may_place(s, now, Purpose.HEDGE)
        if market:
            if can_hedge:
                self._place_market(s, now, out, Leg.PERP, exit_side, Purpose.HEDGE, gap)
        else:  # a stop keeps the hedge: alone it can only reduce exposure
            pb = s.perp_book
            if self.book_fresh(pb, now):
                assert pb is not None
                touch = pb.ask if exit_side is Side.SELL else pb.bid
                if not hedges and can_hedge:
                    self._quote(s, now, out, Leg.PERP, exit_side, Purpose.HEDGE, gap, touch, gap)
                elif hedges and not s.stopping and self._due(hedges[0], now):
                    self._chase(hedges[0], touch, now, out, replace_over=None)
        if hedge_only or s.phase is Phase.HALTED:
            return
        # 3. the spot exit: races for everything uncovered, or only the part the perp cannot take
        exit_need = spot_need if not market else spot_need - hedge_target
        exit_need = floor_to(exit_need, self.p.spot.qty_step) if exit_need > ZERO else ZERO
        if not self._spot_tradeable(exit_need, s):
            exit_need = ZERO  # dust: tracked, never traded
        if s.stopping:
            for o in exits:
                self._cancel(o, now, out)
            return
        buy = exit_side is Side.BUY
        if buy:
            fee = self.p.spot_fees.taker if cyc.forced else self.p.spot_fees.maker
            exit_qty = gross_up_buy(exit_need, fee, self.p.spot) if exit_need else ZERO
        else:
            exit_qty = exit_need
        self._trim(
            exits, exit_qty, now, out, grow=not buy or any(o.leaves < exit_need for o in exits)
        )
        if exits or not exit_need or not self._may_place(s, now, Purpose.SPOT_EXIT):
            if exits and not cyc.forced and self._due(exits[0], now):
                target = self._spot_exit_price(s, now)
                if target is not None:
                    self._chase(exits[0], target, now, out, replace_over=None)
            return
        if cyc.forced:
            self._place_market(
                s, now, out, Leg.SPOT, exit_side, Purpose.SPOT_EXIT, exit_qty, net=exit_need
            )
            return
        price = self._spot_exit_price(s, now)
        if price is not None:
            self._quote(
                s, now, out, Leg.SPOT, exit_side, Purpose.SPOT_EXIT, exit_qty, price, exit_need
            )

    def _spot_exit_price(self, s: CoreState, now: int) -> Decimal | None:
        """Spot sell at max(best ask, entry), spot buy at min(best bid, entry) (§4.4)."""
        cyc, sb = s.cycle, s.spot_book
        assert cyc is not None
        if not self.book_fresh(sb, now):
            return None
        assert sb is not None
        entry = cyc.entry_price
        if cyc.side is Side.BUY:  # we hold spot: give it back no cheaper than we paid
            return sell_price(sb.ask if entry is None else max(sb.ask, entry), self.p.spot)
        return buy_price(sb.bid if entry is None else min(sb.bid, entry), self.p.spot)

    def _trim(
        self, orders: list[Order], target: Decimal, now: int, out: Out, *, grow: bool = True
    ) -> None:
        """Bring the working quantity of ``orders`` to ``target``: amend down (or up, with
        ``grow``), cancel what no longer has a purpose. An order that cannot be changed now
        (market, cancelling, amending, unacknowledged) keeps reserving all it may still fill."""
        budget = target
        for o in orders:
            leaves = o.leaves
            if (
                o.order_type is OrderType.MARKET
                or o.cancel_sent_ms is not None
                or o.amend is not None
                or o.status is not OrderStatus.OPEN
            ):
                budget -= leaves
                continue
            keep = budget if grow else min(budget, leaves)
            if keep <= ZERO:
                self._cancel(o, now, out)
            elif keep != leaves:
                self._amend(o, now, out, qty=o.applied_qty + keep, price=None)
            budget -= max(keep, ZERO)

    # CARRY_HEDGED --------------------------------------------------------------------

    def _decide_carry(self, s: CoreState, now: int, out: Out) -> None:
        cyc = s.cycle
        assert cyc is not None
        hedge_need, spot_need = self._needs(s)
        if (
            hedge_need < ZERO
            or self._perp_tradeable(hedge_need, s)
            or self._spot_tradeable(spot_need, s)
        ):
            self._halt(
                s,
                out,
                "carry out of balance",
                f"spot {self.cycle_spot(s)} vs perp "
                f"{s.perp.qty} changed while hedged (a late fill?)",
            )
            return
        if s.stopping:
            return
        sb, pb = s.spot_book, s.perp_book
        if not (self.book_fresh(sb, now) and self.book_fresh(pb, now)):
            return
        assert sb is not None and pb is not None
        spot2, fut2 = sb.bid + sb.ask, pb.bid + pb.ask
        e, x = self.p.emergency_unwind_bps, self.p.exit_threshold_bps
        long_spot = cyc.side is Side.BUY
        if e > ZERO and (
            basis.at_least(spot2, fut2, e) if long_spot else basis.at_most(spot2, fut2, -e)
        ):
            cyc.exit_reason = "emergency"
            self._go(
                s,
                Trigger.EMERGENCY,
                out,
                f"basis {self.basis_bps(s)} bps crossed the "
                f"emergency threshold {'' if long_spot else '-'}{e}",
            )
        elif basis.at_most(spot2, fut2, x) if long_spot else basis.at_least(spot2, fut2, -x):
            cyc.exit_reason = "carry exit"
            self._go(
                s,
                Trigger.EXIT_SIGNAL,
                out,
                f"basis {self.basis_bps(s)} bps reached the "
                f"exit threshold {'' if long_spot else '-'}{x}",
            )

    # UNWINDING -------------------------------------------------------------------------

    def _decide_unwind(self, s: CoreState, now: int, out: Out) -> None:
        others = [o for o in s.orders.values() if o.purpose is not Purpose.UNWIND]
        for o in others:
            self._cancel(o, now, out)
        if others:
            return  # cancel what works first, so no late fill lands after the unwind
        held = self.cycle_spot(s)
        spot_qty = floor_to(abs(held), self.p.spot.qty_step)
        perp_qty = abs(s.perp.qty)
        may = self._may_place(s, now, Purpose.UNWIND)  # after a rate-limit refusal: back off
        send_spot = may and not self._live_on(s, Leg.SPOT) and self._spot_tradeable(spot_qty, s)
        send_perp = may and not self._live_on(s, Leg.PERP) and perp_qty >= self.p.perp.min_qty
        cyc = s.cycle
        if cyc is not None:  # judge both legs' budgets first: a halt must not follow a send
            for leg, send in ((Leg.SPOT, send_spot), (Leg.PERP, send_perp)):
                if send and cyc.market_shortfalls.get(f"{leg}:{Purpose.UNWIND}", 0) >= (
                    MAX_MARKET_ATTEMPTS
                ):
                    self._halt(
                        s,
                        out,
                        "unwind could not complete",
                        f"{MAX_MARKET_ATTEMPTS} market orders on the {leg} ended unfilled",
                    )
                    return
        if send_spot:
            if held > ZERO:
                self._place_market(s, now, out, Leg.SPOT, Side.SELL, Purpose.UNWIND, spot_qty)
            else:
                gross = gross_up_buy(spot_qty, self.p.spot_fees.taker, self.p.spot)
                self._place_market(
                    s, now, out, Leg.SPOT, Side.BUY, Purpose.UNWIND, gross, net=spot_qty
                )
        if send_perp:
            side = Side.BUY if s.perp.qty < ZERO else Side.SELL
            self._place_market(
                s, now, out, Leg.PERP, side, Purpose.UNWIND, perp_qty, reduce_only=True
            )
        if s.orders or s.phase is not Phase.UNWINDING:
            return
        if s.perp.qty != ZERO and perp_qty >= self.p.perp.min_qty:
            return
        if self._spot_tradeable(spot_qty, s):
            return
        reason = s.cycle.exit_reason if s.cycle is not None else "flatten"
        if s.cycle is not None:
            self._close_cycle(s, out, reason)
        s.flattening = False
        self._go(s, Trigger.UNWOUND, out, f"{reason}: both legs unwound")

    # HALTED ----------------------------------------------------------------------------

    def _decide_halted(self, s: CoreState, now: int, out: Out) -> None:
        for o in list(s.orders.values()):
            self._cancel(o, now, out)

    # ------------------------------------------------------------------ order actions

    def _live(self, s: CoreState, purpose: Purpose) -> list[Order]:
        return [o for o in s.orders.values() if o.purpose is purpose]

    def _live_on(self, s: CoreState, leg: Leg) -> bool:
        return any(o.leg is leg for o in s.orders.values())

    def _may_place(self, s: CoreState, now: int, purpose: Purpose) -> bool:
        return now >= s.next_place.get(purpose, 0)

    def _place(
        self,
        s: CoreState,
        now: int,
        out: Out,
        *,
        leg: Leg,
        side: Side,
        purpose: Purpose,
        qty: Decimal,
        price: Decimal | None,
        net_target: Decimal,
        post_only: bool = False,
        reduce_only: bool = False,
    ) -> None:
        if s.phase is Phase.HALTED:
            return  # halted sends nothing of its own accord
        link_id, reserve = allocate(s.ids, s.instance_id)
        if reserve is not None:
            out.append(reserve)
        order_type = OrderType.MARKET if price is None else OrderType.LIMIT
        cyc = s.cycle
        o = Order(
            link_id=link_id,
            leg=leg,
            side=side,
            purpose=purpose,
            order_type=order_type,
            post_only=post_only,
            reduce_only=reduce_only,
            qty=qty,
            price=price,
            net_target=net_target,
            status=OrderStatus.SUBMITTING,
            created_ms=now,
            cycle=cyc.number if cyc is not None else 0,
            last_action_ms=now,
        )
        s.orders[link_id] = o
        s.orders_sent += 1
        out.append(
            PlaceOrder(
                link_id=link_id,
                leg=leg,
                side=side,
                order_type=order_type,
                qty=qty,
                price=price,
                post_only=post_only,
                reduce_only=reduce_only,
                purpose=purpose,
            )
        )

    def _quote(
        self,
        s: CoreState,
        now: int,
        out: Out,
        leg: Leg,
        side: Side,
        purpose: Purpose,
        qty: Decimal,
        price: Decimal,
        net: Decimal,
    ) -> None:
        """A PostOnly limit: every quote the strategy rests is a maker order."""
        self._place(
            s,
            now,
            out,
            leg=leg,
            side=side,
            purpose=purpose,
            qty=qty,
            price=price,
            post_only=True,
            net_target=net,
        )

    def _place_market(
        self,
        s: CoreState,
        now: int,
        out: Out,
        leg: Leg,
        side: Side,
        purpose: Purpose,
        qty: Decimal,
        *,
        net: Decimal | None = None,
        reduce_only: bool = False,
    ) -> None:
        cyc = s.cycle
        assert cyc is not None
        shortfalls = cyc.market_shortfalls.get(f"{leg}:{purpose}", 0)
        if shortfalls >= MAX_MARKET_ATTEMPTS:
            self._halt(
                s,
                out,
                f"{purpose} could not complete",
                f"{shortfalls} market orders on the {leg} ended unfilled; {qty} still to trade",
            )
            return
        self._place(
            s,
            now,
            out,
            leg=leg,
            side=side,
            purpose=purpose,
            qty=qty,
            price=None,
            net_target=qty if net is None else net,
            reduce_only=reduce_only,
        )

    def _chase(
        self, o: Order, target: Decimal, now: int, out: Out, *, replace_over: Decimal | None
    ) -> None:
        """Re-price a working maker order to ``target`` once per ``chase_interval_ms``: amend,
        or cancel (and place anew once the cancel is final) beyond ``replace_over`` bps."""
        if not self._due(o, now) or target == o.price:
            return
        assert o.price is not None
        if replace_over is not None and abs(target - o.price) * basis.BPS > replace_over * o.price:
            self._cancel(o, now, out)
        else:
            self._amend(o, now, out, qty=None, price=target)

    def _due(self, o: Order, now: int) -> bool:
        """A working maker order whose re-pricing interval has passed, with nothing in flight."""
        return (
            now - o.last_action_ms >= self.p.chase_interval_ms
            and o.status is OrderStatus.OPEN
            and o.amend is None
            and o.cancel_sent_ms is None
            and o.price is not None
        )

    def _amend(
        self, o: Order, now: int, out: Out, *, qty: Decimal | None, price: Decimal | None
    ) -> None:
        o.amend = PendingAmend(
            qty=o.qty if qty is None else qty, price=price or o.price, sent_ms=now
        )
        o.last_action_ms = now
        out.append(AmendOrder(link_id=o.link_id, leg=o.leg, qty=qty, price=price))

    def _cancel(self, o: Order, now: int, out: Out) -> None:
        """Ask the venue to cancel; idempotent. An order not yet acknowledged is cancelled once
        it is (a cancel could overtake its own create), a market order is left to end."""
        if o.order_type is OrderType.MARKET or o.status is not OrderStatus.OPEN or not o.leaves:
            return  # (fully filled by executions: its Filled status is on the way)
        if o.cancel_sent_ms is None:
            o.cancel_sent_ms = now
        elif o.cancel_acked or now - (o.cancel_last_ms or 0) < CANCEL_RETRY_MS:
            return  # confirmed, or asked too recently: a lost or refused cancel is asked again
        o.cancel_last_ms = now
        out.append(CancelOrder(link_id=o.link_id, leg=o.leg))

    def _query(self, o: Order, now: int, out: Out) -> None:
        if o.query_sent_ms is not None and now - o.query_sent_ms < QUERY_RETRY_MS:
            return
        o.query_sent_ms = now
        out.append(QueryOrder(link_id=o.link_id, leg=o.leg))

    def _resolve_doubts(self, s: CoreState, now: int, out: Out) -> None:
        """Query every order whose true state is unknown, or whose request went unanswered;
        ask again for every cancel the venue has not confirmed."""
        for o in s.orders.values():
            if o.cancel_sent_ms is not None and not o.cancel_acked:
                self._cancel(o, now, out)
            if o.status is OrderStatus.UNKNOWN or (o.amend is not None and o.amend.unknown):
                self._query(o, now, out)
                continue
            pending = (
                o.status is OrderStatus.SUBMITTING
                or o.amend is not None
                or (o.cancel_sent_ms is not None)
            )
            since = max(o.last_action_ms, o.cancel_sent_ms or 0)
            if pending and now - since >= QUERY_AFTER_MS:
                self._query(o, now, out)

    # ------------------------------------------------------------------ bookkeeping

    def _go(self, s: CoreState, trigger: Trigger, out: Out, reason: str) -> None:
        source = s.phase
        s.phase = next_phase(source, trigger)
        out.append(ReportTransition(source=source, target=s.phase, trigger=trigger, reason=reason))

    def _halt(self, s: CoreState, out: Out, reason: str, detail: str) -> None:
        s.last_error = f"{reason}: {detail}"
        if s.phase is Phase.HALTED:
            return
        s.halt_reason, s.halt_detail = reason, detail
        self._go(s, Trigger.HALT, out, reason)
        out.append(ReportHalt(reason=reason, detail=detail))

    def _close_cycle(self, s: CoreState, out: Out, ended_by: str) -> None:
        cyc = s.cycle
        assert cyc is not None
        pnl = self.net_pnl(s) - cyc.pnl_start
        if cyc.entry_filled == ZERO and not pnl:
            s.cycle = None  # nothing was ever traded: not a cycle worth reporting
            return
        out.append(
            ReportCycle(
                number=cyc.number,
                side=cyc.side,
                qty=cyc.entry_filled,
                entry_price=cyc.entry_price,
                pnl=pnl,
                ended_by=ended_by,
            )
        )
        s.dust = s.spot.qty  # what the venues cannot trade stays, tracked
        s.cycle = None
        s.cycles_done += 1
        s.unhedged_since = None

    def _cycle_from_positions(self, s: CoreState, now: int) -> Cycle:
        held = self.cycle_spot(s)
        side = Side.BUY if held > ZERO or (held == ZERO and s.perp.qty < ZERO) else Side.SELL
        return Cycle(
            number=s.cycles_done + 1,
            side=side,
            target=abs(held),
            entry_gross=ZERO,
            started_ms=now,
            pnl_start=self.net_pnl(s),
            entry_done=True,
            entry_filled=abs(held),
            entry_value=abs(held) * s.spot.avg_price,
        )

    def _track_unhedged(self, s: CoreState, now: int) -> None:
        if s.cycle is None:
            s.unhedged_since = None
            return
        hedge_need, spot_need = self._needs(s)
        if self._exposed(s, hedge_need, spot_need):
            if s.unhedged_since is None:
                s.unhedged_since = now
        else:
            s.unhedged_since = None

    def _ref_price(self, s: CoreState, leg: Leg) -> Decimal | None:
        book = s.spot_book if leg is Leg.SPOT else s.perp_book
        return None if book is None else book.mid

    def _perp_tradeable(self, qty: Decimal, s: CoreState) -> bool:
        if qty <= ZERO or qty < self.p.perp.min_qty:
            return False
        price = self._ref_price(s, Leg.PERP)
        return price is None or qty * price >= self.p.perp.min_notional

    def _spot_tradeable(self, qty: Decimal, s: CoreState) -> bool:
        """Whether the spot can trade ``qty`` (signed, any precision) after rounding it down."""
        if qty < ZERO:
            qty = -qty
        if qty < self.p.spot.min_qty or not qty:
            return False
        qty = floor_to(qty, self.p.spot.qty_step)
        price = self._ref_price(s, Leg.SPOT)
        return qty >= self.p.spot.min_qty and (
            price is None or qty * price >= self.p.spot.min_notional
        )

    def _set_blocked(self, s: CoreState, out: Out, reason: str) -> None:
        if s.blocked != reason:
            s.blocked = reason
            out.append(ReportBlocked(reason=reason))

    def _new_day(self, s: CoreState, day: int, out: Out) -> None:
        s.day = day
        s.day_pnl_base = self.net_pnl(s)
        if s.risk_blocked:
            self._set_risk(s, out, False, "new UTC day")

    def _check_daily_loss(self, s: CoreState, out: Out) -> None:
        limit = self.p.max_daily_loss_quote
        if limit is None or s.risk_blocked or s.day < 0:
            return
        loss = s.day_pnl_base - self.net_pnl(s)
        if loss >= limit:
            self._set_risk(
                s,
                out,
                True,
                f"daily loss {fmt(loss)} {self.quote} reached max_daily_loss_quote {fmt(limit)}",
            )

    def _set_risk(self, s: CoreState, out: Out, blocked: bool, reason: str) -> None:
        s.risk_blocked, s.risk_reason = blocked, reason if blocked else ""
        out.append(ReportRiskBlock(blocked=blocked, reason=reason))

    def _stop_ready(self, s: CoreState, now: int) -> bool:
        """Stop may complete once nothing is in flight that the snapshot could miss, and an
        unhedged race has its perp hedge resting (when one can be placed at all)."""
        if s.phase in (Phase.ENTRY_WORKING, Phase.UNWINDING):
            return False
        if s.phase is Phase.RACE_EXIT and not self._live(s, Purpose.HEDGE):
            hedge_need, _ = self._needs(s)
            if self._perp_tradeable(hedge_need, s) and self.book_fresh(s.perp_book, now):
                return False  # (also while a refused hedge waits for its next interval)
        for o in s.orders.values():
            if o.status.in_doubt or o.amend is not None:
                return False
            if s.phase is Phase.HALTED:
                if not o.cancel_acked:
                    return False  # its cancel went out on halting; wait for the venue's word
            elif not (
                s.phase is Phase.RACE_EXIT
                and o.purpose is Purpose.HEDGE
                and o.order_type is OrderType.LIMIT
            ):
                return False  # only a resting perp hedge may outlive the worker
        return True

"""``spot-future-arb --reconcile``: compare a stopped instance's snapshot with the exchange.

``hub reconcile`` runs this for a row whose worker is not running (ARCHITECTURE §4.6, §6, §8):
the hub never imports the core's decision code, the worker package does. It takes the instance
lock exactly as a worker does (exit 3 while a worker holds it), refuses a bad config (2) and an
unreadable or newer snapshot (4) with the worker's own start-up checks (``worker.run``), loads
the snapshot with its staged copy, and asks the venue with the worker's own client:

- **orders**: an open order with the instance's ``orderLinkId`` prefix that the snapshot does
  not hold as working is an *orphan*; a working order of the snapshot that the exchange no
  longer has open, or that filled more than the snapshot knows, is a difference too;
- **perp**: the exchange's position must equal the snapshot's claim (one instance per perp);
- **spot**: the account's balance of the base coin must cover the claims of every instance on
  that coin and account (the others' snapshots are read, never locked; a missing one claims
  nothing) — the comparison is the runtime's own (:func:`worker.runtime.venue_differences`).

Actions, each refused with its reason when its precondition fails, none ever market-unwinding:
``--cancel-orphans`` cancels the orphans by ``orderLinkId`` (an unknown outcome is resolved by
querying, never by a blind resend); ``--resume`` leaves ``halted`` keeping the positions (the
core's ``Resume``) when snapshot and exchange agree; ``--clear`` resets the state to ``flat``
with a new id epoch (the core's ``Clear``) when the instance is flat on the exchange and its
snapshot holds nothing. The snapshot is saved atomically; the journal keeps its history and
records the outcome as an operator action.

Exit codes: 0 clean (every requested action done), 1 differences remain or an action was
refused or failed (or the venue could not be asked), 2 configuration, 3 locked, 4 snapshot.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from worker.core import commands as cmd
from worker.core import snapshot
from worker.core.config import ConfigError, InstanceConfig
from worker.core.events import (
    BookInvalid,
    Clear,
    Event,
    OrderNotFound,
    OrderUpdate,
    Rejected,
    Resume,
    VenueMismatch,
    WalletBalance,
)
from worker.core.ids import owns
from worker.core.ledger import fmt
from worker.core.model import ZERO, CoreState, Leg, Order, Phase, RejectKind
from worker.core.params import CoreParams
from worker.core.strategy import Core
from worker.journal import Journal, journal_path
from worker.run import (
    EXIT_CRASH,
    Opened,
    StartRefusedError,
    endpoints_for,
    json_path,
    open_instance,
)
from worker.runtime import Difference, venue_differences, wall_ms
from worker.store import IdReservation, SnapshotStore
from worker.venues.bybit.client import BybitVenue
from worker.venues.bybit.parse import BybitError, parse_instruments
from worker.venues.bybit.rest import BybitRest, Done
from worker.venues.bybit.setup import SetupError, prepare
from worker.venues.types import PositionState

__all__ = ["EXIT_CLEAN", "EXIT_DIFFERENCES", "Action", "Report", "reconcile"]

EXIT_CLEAN, EXIT_DIFFERENCES = 0, 1
_ASK_ATTEMPTS, _ASK_FIRST_PAUSE_S = 4, 0.5  # a venue query is tried again, then given up
_CANCEL_WAIT_S = 15.0  # how long a cancel's final status is waited for
_CANCEL_RESEND_S = 2.0  # an order still open this long after a cancel is cancelled again
_MAX_CANCELS = 3
_LOOK_PAUSE_S = 0.3
_FINAL_CANCEL = frozenset({RejectKind.FINISHED, RejectKind.NOT_FOUND, RejectKind.RATE_LIMITED})
_ORDER_COMMANDS = (cmd.ReserveIds, cmd.PlaceOrder, cmd.AmendOrder, cmd.CancelOrder, cmd.QueryOrder)
_T = TypeVar("_T")


class _VenueUnavailableError(Exception):
    """The venue did not answer a query after several attempts."""


@dataclass(frozen=True)
class Action:
    """One requested action: ``result`` is ``done``, ``refused`` (its precondition failed;
    nothing was changed) or ``failed`` (tried, and it did not complete)."""

    action: str
    result: str
    detail: str
    target: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "done"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "result": self.result}
        if self.target is not None:
            out["target"] = self.target
        out["detail"] = self.detail
        return out


@dataclass
class Report:
    instance: str
    mode: str
    spot_symbol: str
    perp_symbol: str
    state: str | None = None  # the trading state after the actions; None: no snapshot
    differences: list[Difference] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def clean(self) -> bool:
        return self.error is None and not self.differences

    @property
    def exit_code(self) -> int:
        ok = self.clean and all(a.ok for a in self.actions)
        return EXIT_CLEAN if ok else EXIT_DIFFERENCES

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "instance": self.instance,
            "state": self.state,
            "mode": self.mode,
            "differences": [{"kind": d.kind, "detail": d.detail} for d in self.differences],
            "actions": [a.to_json() for a in self.actions],
            "notes": list(self.notes),
            "clean": self.clean,
        }
        if self.error is not None:
            out["error"] = self.error
        return out

    def lines(self) -> list[str]:
        state = self.state if self.state is not None else "no snapshot"
        out = [
            f"instance {self.instance}: state {state} "
            f"({self.mode}, spot {self.spot_symbol}, perp {self.perp_symbol})"
        ]
        out += [f"note: {note}" for note in self.notes]
        out += [f"difference {d.kind}: {d.detail}" for d in self.differences]
        for a in self.actions:
            target = f" {a.target}" if a.target is not None else ""
            out.append(f"action {a.action}{target} {a.result}: {a.detail}")
        if self.error is not None:
            out.append(f"error: {self.error}")
        if self.clean:
            out.append("clean: the snapshot and the exchange agree")
        else:
            count = len(self.differences)
            out.append(f"not clean: {count} difference{'s' if count != 1 else ''}")
        return out


@dataclass
class _Facts:
    """What the exchange says about the instance."""

    open: dict[str, tuple[Leg, OrderUpdate]]  # the instance's open orders by orderLinkId
    gone: dict[str, OrderUpdate | None]  # snapshot working orders not open: their last word
    perp: PositionState
    balances: dict[str, WalletBalance]


def reconcile(
    config: str,
    instance_id: str | None,
    *,
    cancel_orphans: bool = False,
    resume: bool = False,
    clear: bool = False,
    as_json: bool = False,
) -> int:
    """Run one reconciliation; prints the report on stdout and returns the exit code."""
    try:
        opened = open_instance(config, instance_id, log_stream=sys.stderr)
    except StartRefusedError as exc:
        _print_refusal(instance_id, exc, as_json)
        return exc.exit_code
    try:
        lock = opened.lock()
    except StartRefusedError as exc:
        message = (
            f"{exc.detail}: a running worker (or another reconcile) owns this instance; "
            "stop the worker first (a running worker is resumed through the hub instead)"
        )
        _print_refusal(opened.cfg.id, StartRefusedError(exc.exit_code, message), as_json)
        return exc.exit_code
    try:
        reconciler = _Reconciler(opened, cancel_orphans=cancel_orphans, resume=resume, clear=clear)
        try:
            report = asyncio.run(reconciler.run())
        except StartRefusedError as exc:
            _print_refusal(opened.cfg.id, exc, as_json)
            return exc.exit_code
        except Exception as exc:  # a bug: the snapshot is only ever replaced whole
            error = f"{type(exc).__name__}: {exc}"[:2000]
            opened.log.error("crashed", error=error)
            _print_refusal(opened.cfg.id, StartRefusedError(EXIT_CRASH, error), as_json)
            return EXIT_CRASH
    finally:
        lock.release()
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(report.lines()))
    return report.exit_code


def _print_refusal(instance_id: str | None, exc: StartRefusedError, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = {
            "instance": instance_id,
            "state": None,
            "differences": [],
            "actions": [],
            "clean": False,
            "error": exc.detail,
            "exit_code": exc.exit_code,
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"reconcile refused (exit {exc.exit_code}): {exc.detail}", file=sys.stderr)


class _Reconciler:
    def __init__(
        self,
        opened: Opened,
        *,
        cancel_orphans: bool,
        resume: bool,
        clear: bool,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.opened = opened
        self.cfg = opened.cfg
        self.want_cancel = cancel_orphans
        self.want_resume = resume
        self.want_clear = clear
        self.clock_ms = clock_ms
        self.store = SnapshotStore(opened.state_path)
        self.journal_rows: list[Callable[[Journal], object]] = []

    async def run(self) -> Report:
        """The report; raises ``StartRefusedError`` for a snapshot or venue-rule refusal."""
        cfg = self.cfg
        state = self.opened.load_snapshot(self.store)
        report = Report(
            instance=cfg.id,
            mode=cfg.mode.value,
            spot_symbol=cfg.spot_symbol,
            perp_symbol=cfg.future_symbol,
            state=None if state is None else state.phase.value,
        )
        if state is None:
            report.notes.append(f"no snapshot at {cfg.state_path}: the instance claims nothing")
        venue = self.opened.venue()
        try:
            await self._reconcile(venue, state, report)
        except _VenueUnavailableError as exc:
            report.error = f"the venue could not be asked ({exc}); run reconcile again"
            self.opened.log.error("venue_unavailable", detail=str(exc))
        finally:
            await venue.close()
        self._write_journal(report)
        return report

    async def _reconcile(self, venue: BybitVenue, state: CoreState | None, report: Report) -> None:
        cfg = self.cfg
        try:
            setup = await prepare(
                venue.rest,
                cfg,
                path=json_path(self.opened.fleet, cfg),
                clock_ms=self.clock_ms,
                private=self.opened.credentials is not None,
                trading=False,  # reconcile changes nothing on the account (no leverage set)
            )
        except SetupError as exc:
            self.opened.log.error("venue_check_failed", detail=str(exc), exit_code=exc.exit_code)
            if exc.exit_code == EXIT_CRASH:
                raise _VenueUnavailableError(str(exc)) from None
            raise StartRefusedError(exc.exit_code, str(exc)) from None
        core = Core(
            CoreParams.from_config(
                cfg,
                spot=setup.spot,
                perp=setup.perp,
                spot_fees=setup.spot_fees,
                perp_fees=setup.perp_fees,
            )
        )
        base = setup.spot.base_coin
        facts: _Facts | None = None
        others: dict[str, Decimal] = {}
        problems: list[Difference] = []
        if not cfg.execute:
            report.notes.append(
                "dry-run: this instance never sends orders, so there is nothing on the exchange "
                "to compare"
            )
        else:
            others, problems = await self._other_claims(venue.rest, base)
            facts = await self._facts(venue, state)
        report.differences = problems + self._compare(state, facts, base, others)
        if self.want_cancel:
            if facts is None:
                report.actions.append(
                    Action(
                        "cancel_orphans", "refused", "a dry-run instance has no orders to cancel"
                    )
                )
            else:
                report.actions += await self._cancel_orphans(venue, state, facts)
                facts = await self._facts(venue, state)
                report.differences = problems + self._compare(state, facts, base, others)
        if self.want_resume:
            action, state = self._resume(core, state, facts, report.differences)
            report.actions.append(action)
        if self.want_clear:
            action, state = self._clear(core, state, facts)
            report.actions.append(action)
        report.differences = problems + self._compare(state, facts, base, others)
        report.state = None if state is None else state.phase.value

    # ------------------------------------------------------------------ what the venue says

    async def _ask(self, ask: Callable[[], Awaitable[_T | None]], what: str) -> _T:
        pause = _ASK_FIRST_PAUSE_S
        for attempt in range(_ASK_ATTEMPTS):
            answer = await ask()
            if answer is not None:
                return answer
            if attempt < _ASK_ATTEMPTS - 1:
                await asyncio.sleep(pause)
                pause *= 2
        raise _VenueUnavailableError(what)

    async def _facts(self, venue: BybitVenue, state: CoreState | None) -> _Facts:
        open_orders: dict[str, tuple[Leg, OrderUpdate]] = {}
        for leg in Leg:
            listed = await self._ask(
                functools.partial(venue.open_orders, leg), f"{leg} open orders"
            )
            for update in listed:
                if owns(self.cfg.id, update.link_id) and not update.status.terminal:
                    open_orders[update.link_id] = (leg, update)
        gone: dict[str, OrderUpdate | None] = {}
        for order in [] if state is None else list(state.orders.values()):
            if order.link_id in open_orders:
                continue
            found = await self._look_up(venue, order.link_id, order.leg)
            if isinstance(found, OrderUpdate) and not found.status.terminal:
                open_orders[order.link_id] = (order.leg, found)  # opened after the listing
            else:
                gone[order.link_id] = found if isinstance(found, OrderUpdate) else None
        perp = await self._ask(venue.perp_position, "perp position")
        balances = await self._ask(venue.balances, "wallet balance")
        return _Facts(
            open=open_orders, gone=gone, perp=perp, balances={b.coin: b for b in balances}
        )

    async def _look_up(
        self, venue: BybitVenue, link_id: str, leg: Leg
    ) -> OrderUpdate | OrderNotFound | None:
        """The order's latest status by ``orderLinkId`` (open orders, then history); None when
        the venue could not tell (yet)."""
        events = await venue.submit(cmd.QueryOrder(link_id=link_id, leg=leg))
        updates = [e for e in events if isinstance(e, OrderUpdate) and e.link_id == link_id]
        if updates:
            return max(updates, key=lambda u: (u.updated_ms, u.cum_qty))
        for event in events:
            if isinstance(event, OrderNotFound):
                return event
        return None

    async def _other_claims(
        self, rest: BybitRest, base: str
    ) -> tuple[dict[str, Decimal], list[Difference]]:
        """The spot claims on ``base`` of the other trading instances on this account."""
        me = self.cfg
        account = self._account(me)
        bases = {me.spot_symbol: base}
        claims: dict[str, Decimal] = {}
        problems: list[Difference] = []
        for other in self.opened.fleet.instances:
            if other.id == me.id or not other.execute or self._account(other) != account:
                continue
            coin = bases.get(other.spot_symbol)
            if coin is None:
                coin = await self._ask(
                    functools.partial(_base_coin, rest, other.spot_symbol),
                    f"{other.spot_symbol} rules",
                )
                bases[other.spot_symbol] = coin
            if coin != base:
                continue
            try:
                theirs = SnapshotStore(Path(other.state_path)).load()
            except snapshot.SnapshotError as exc:
                problems.append(
                    Difference(
                        "other_snapshot",
                        f"instance {other.id}: {exc}; its claim on {base} is unknown",
                    )
                )
                continue
            if theirs is not None and theirs.spot.qty > ZERO:
                claims[other.id] = theirs.spot.qty
        return claims, problems

    def _account(self, cfg: InstanceConfig) -> tuple[object, ...]:
        """Instances with equal keys trade one account (same venue, keys and endpoints)."""
        try:
            endpoints = endpoints_for(cfg)
        except ConfigError:
            endpoints = cfg.endpoints
        rest = None if endpoints is None else endpoints.rest
        return (cfg.venue, cfg.demo, cfg.testnet, cfg.account_file, rest)

    # ------------------------------------------------------------------ the comparison

    def _compare(
        self,
        state: CoreState | None,
        facts: _Facts | None,
        base: str,
        others: dict[str, Decimal],
    ) -> list[Difference]:
        if facts is None:
            return []
        found: list[Difference] = []
        working = {} if state is None else state.orders
        symbols = {Leg.SPOT: self.cfg.spot_symbol, Leg.PERP: self.cfg.future_symbol}
        for link_id, (leg, update) in sorted(facts.open.items()):
            order = working.get(link_id)
            what = f"{leg} {symbols[leg]} order {link_id} ({_describe(update)})"
            if order is None:
                known = (
                    "finished in the snapshot"
                    if state is not None and link_id in state.done
                    else "unknown to the snapshot"
                )
                found.append(
                    Difference("orphan_order", f"{what} is open on the exchange but {known}")
                )
            elif update.cum_qty != order.filled:
                found.append(
                    Difference(
                        "order_fills",
                        f"{what}: the exchange has filled {fmt(update.cum_qty)}, the snapshot "
                        f"{fmt(order.filled)}",
                    )
                )
        for link_id, last in sorted(facts.gone.items()):
            order = working[link_id]
            what = f"{order.leg} {symbols[order.leg]} order {link_id} ({_describe_own(order)})"
            if last is None:
                seen = "the exchange does not list it as open (its final status could not be read)"
            else:
                seen = (
                    f"the exchange has it {last.status} with {fmt(last.cum_qty)} filled "
                    f"(the snapshot counts {fmt(order.filled)})"
                )
            found.append(
                Difference("missing_order", f"{what} is working in the snapshot, but {seen}")
            )
        balance = facts.balances.get(base)
        found += venue_differences(
            perp_symbol=self.cfg.future_symbol,
            perp_claim=ZERO if state is None else state.perp.qty,
            perp_held=facts.perp.size,
            base=base,
            spot_claim=ZERO if state is None else state.spot.qty,
            spot_held=None if balance is None else balance.total,
            other_spot_claims=others,
        )
        return found

    # ------------------------------------------------------------------ actions

    async def _cancel_orphans(
        self, venue: BybitVenue, state: CoreState | None, facts: _Facts
    ) -> list[Action]:
        working = {} if state is None else state.orders
        orphans = [(i, leg) for i, (leg, _) in sorted(facts.open.items()) if i not in working]
        if not orphans:
            return [Action("cancel_orphans", "done", "no orphan order to cancel")]
        return [await self._cancel(venue, link_id, leg) for link_id, leg in orphans]

    async def _cancel(self, venue: BybitVenue, link_id: str, leg: Leg) -> Action:
        """Cancel one order and wait for the venue's final word on it (§5.2, §5.3)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CANCEL_WAIT_S
        cancels, sent_at, still_open = 0, 0.0, True
        why = "its final status could not be read"
        while loop.time() < deadline:
            if still_open and cancels < _MAX_CANCELS and loop.time() - sent_at >= _CANCEL_RESEND_S:
                answer = await venue.submit(cmd.CancelOrder(link_id=link_id, leg=leg))
                cancels, sent_at = cancels + 1, loop.time()
                for event in answer:
                    if isinstance(event, Rejected) and event.kind not in _FINAL_CANCEL:
                        return Action(
                            "cancel",
                            "failed",
                            f"the venue refused the cancel ({event.code}: {event.message})",
                            link_id,
                        )
                # acknowledged, unknown or already final: the venue's word is asked, not assumed
            found = await self._look_up(venue, link_id, leg)
            if isinstance(found, OrderUpdate):
                if found.status.terminal:
                    return Action("cancel", "done", _final(found), link_id)
                still_open = True
                why = f"still open after {cancels} cancel request(s)"
            elif isinstance(found, OrderNotFound):
                why = "the venue no longer lists it anywhere"
                still_open = False
            else:
                still_open = False  # not known: never send again blind
            await asyncio.sleep(_LOOK_PAUSE_S)
        return Action("cancel", "failed", f"{why}; run reconcile again", link_id)

    def _resume(
        self,
        core: Core,
        state: CoreState | None,
        facts: _Facts | None,
        differences: list[Difference],
    ) -> tuple[Action, CoreState | None]:
        if state is None:
            return Action("resume", "refused", "there is no snapshot to resume"), state
        if state.phase is not Phase.HALTED:
            why = f"the state is {state.phase}, not halted: there is nothing to resume"
            return Action("resume", "refused", why), state
        if differences:
            why = (
                f"the snapshot and the exchange differ ({len(differences)} difference(s)): "
                "cancel the orphans, correct the account, or flatten, then reconcile again"
            )
            return Action("resume", "refused", why), state
        if state.orders:
            why = (
                f"the snapshot still has {len(state.orders)} working order(s): start the "
                "worker (halted, it cancels them) and resume it through the hub"
            )
            return Action("resume", "refused", why), state
        events: list[Event] = []
        if facts is not None and state.venue_perp_qty not in (None, facts.perp.size):
            # the core remembers the exchange's perp from the halt; it now matches the snapshot
            events.append(
                VenueMismatch(
                    detail=f"reconcile: the exchange holds {fmt(facts.perp.size)} "
                    f"{self.cfg.future_symbol}, as the snapshot says",
                    perp_qty=facts.perp.size,
                    perp_avg_price=facts.perp.avg_price,
                )
            )
        events.append(Resume())
        return self._apply(core, state, events, "resume")

    def _clear(
        self, core: Core, state: CoreState | None, facts: _Facts | None
    ) -> tuple[Action, CoreState | None]:
        if state is None:
            why = "there is no snapshot: the first start creates a fresh state with a new epoch"
            return Action("clear", "refused", why), state
        if facts is not None:
            held: list[str] = []
            if facts.perp.size != ZERO:
                held.append(f"a perp position of {fmt(facts.perp.size)} {self.cfg.future_symbol}")
            if facts.open:
                held.append(f"{len(facts.open)} open order(s) ({', '.join(sorted(facts.open))})")
            if held:
                why = f"the instance is not flat on the exchange: {' and '.join(held)}"
                return Action("clear", "refused", why), state
        exposure: list[str] = []
        if state.orders:
            exposure.append(f"{len(state.orders)} working order(s)")
        if state.perp.qty != ZERO:
            exposure.append(f"a perp position of {fmt(state.perp.qty)}")
        if exposure:
            why = f"the snapshot has exposure: {' and '.join(exposure)}"
            return Action("clear", "refused", why), state
        saved = IdReservation(self.opened.state_path).saved()
        epoch = max(int(time.time()), state.ids.epoch + 1, saved[0] + 1 if saved else 0)
        return self._apply(core, state, [Clear(epoch=epoch)], "clear")

    def _apply(
        self, core: Core, state: CoreState, events: list[Event], name: str
    ) -> tuple[Action, CoreState]:
        """Feed the core an operator event on a copy of the state; save it atomically when the
        core accepts and asks for nothing to be sent (this process sends no orders)."""
        work = snapshot.decode(snapshot.encode(state))
        now = self.clock_ms()
        # no market data here: a book the snapshot kept must not look fresh to a decision
        steps: list[Event] = [
            BookInvalid(leg=leg, reason="reconcile: no market data")
            for leg, book in ((Leg.SPOT, work.spot_book), (Leg.PERP, work.perp_book))
            if book is not None
        ]
        out: list[cmd.Command] = []
        for event in [*steps, *events]:
            out += core.step(work, event, now)
        refused = [c for c in out if isinstance(c, cmd.ReportRefused)]
        if refused:
            why = "; ".join(c.reason for c in refused)
            return Action(name, "refused", f"the strategy core refuses: {why}"), state
        sends = [c for c in out if isinstance(c, _ORDER_COMMANDS)]
        if sends:
            why = (
                f"the core would send {len(sends)} request(s) ({type(sends[0]).__name__}); "
                "reconcile sends no orders: start the worker instead"
            )
            return Action(name, "refused", why), state
        self.store.save(work)
        transitions = [c for c in out if isinstance(c, cmd.ReportTransition)]
        cycles = [c for c in out if isinstance(c, cmd.ReportCycle)]
        for report in transitions:
            self.journal_rows.append(
                functools.partial(Journal.transition, report=report, ts_ms=now)
            )
        for cycle in cycles:
            self.journal_rows.append(functools.partial(Journal.cycle, report=cycle, ts_ms=now))
        moves = ", ".join(f"{t.source} → {t.target}" for t in transitions) or "no state change"
        detail = f"{moves}; saved {self.opened.state_path}"
        if name == "clear":
            detail = f"{moves}, new id epoch {work.ids.epoch} (was {state.ids.epoch}); saved"
        return Action(name, "done", detail), work

    # ------------------------------------------------------------------ the record

    def _write_journal(self, report: Report) -> None:
        """The outcome as operator actions in the instance's journal (its history is kept)."""
        now = self.clock_ms()
        if report.error is not None:
            summary = f"failed: {report.error}"
        elif report.clean:
            summary = "clean"
        else:
            summary = f"{len(report.differences)} difference(s): " + "; ".join(
                d.detail for d in report.differences
            )
        rows = list(self.journal_rows)
        actions = [("reconcile", summary)]
        for a in report.actions:
            target = f" {a.target}" if a.target is not None else ""
            actions.append((f"reconcile {a.action}", f"{a.result}{target}: {a.detail}"))
        for action, result in actions:
            rows.append(
                functools.partial(Journal.action, action=action, result=result[:2000], ts_ms=now)
            )
        journal = Journal(journal_path(self.opened.state_path))
        try:
            for row in rows:
                row(journal)
        finally:
            journal.close()


async def _base_coin(rest: BybitRest, symbol: str) -> str | None:
    """The base coin of a spot symbol from the venue's instrument rules."""
    outcome = await rest.get(
        "/v5/market/instruments-info", {"category": "spot", "symbol": symbol}, auth=False
    )
    if not isinstance(outcome, Done):
        return None
    try:
        rules = [r for r in parse_instruments(outcome.body) if r.symbol == symbol]
    except (BybitError, msgspec.DecodeError):
        return None
    return rules[0].base_coin if rules else ""  # not listed: no claim on any coin


def _describe(update: OrderUpdate) -> str:
    price = "market" if update.price is None else f"price {fmt(update.price)}"
    return f"qty {fmt(update.qty)}, {price}, filled {fmt(update.cum_qty)}"


def _describe_own(order: Order) -> str:
    price = "market" if order.price is None else f"price {fmt(order.price)}"
    return f"{order.side} {fmt(order.qty)}, {price}, {order.purpose}"


def _final(update: OrderUpdate) -> str:
    if update.cum_qty > ZERO:
        return (
            f"ended {update.status} with {fmt(update.cum_qty)} of {fmt(update.qty)} filled "
            "before the cancel"
        )
    return f"{update.status}, nothing filled"

"""The worker's event loop: venue events and timers into the pure core, its commands out.

One asyncio loop does everything that decides or sends (ARCHITECTURE §5, §6):

- **Steps.** Every book update, order update, execution, reply, timer and operator command
  becomes one ``Core.step``; its commands run in order: a ``ReserveIds`` is fsynced before
  anything else, the state is *staged* (written without fsync, so a killed process cannot lose
  it) before the step's new orders leave, then each order request is written to an idle
  connection right there, inside the step, and a task awaits its reply, which is fed back as
  the next event. The durable snapshot, the journal, the log and the hub status follow off the
  hot path.
- **Books.** ``orderbook.1`` gives the top of book the core prices from; ``orderbook.50``
  proves continuity: while its update ids have a gap (or after a disconnect) the leg is
  invalid, the ``.1`` tops are held back, and the topic is resubscribed for a new snapshot,
  whose top is fed at once.
- **Resync.** At start the core is told ``Resyncing`` (no decisions), the venue's word on
  every order the snapshot holds, on the symbols' orders since the snapshot (which covers the
  id block that was open), on executions, balances and the perp position is replayed (only once
  the private stream is subscribed, so nothing can fall between the two); anything
  the state cannot explain becomes ``VenueMismatch`` (halted, the process stays up); then
  ``Restarted`` lets the core trade. Every reconnection of the private stream replays open
  orders and recent executions again before the stream is trusted.
- **Stop.** SIGTERM, SIGINT or the hub's ``Stop``: the core cancels what it must (never a
  market unwind) and reports ``ReportStopped``; replies in flight land, the snapshot is
  written durably, exit 0. A second signal stops without waiting for the core.

A bug that raises inside a step ends the process with exit code 1 *without* writing the
half-changed state: the last snapshot is consistent and the restarted worker resyncs from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from worker import ipc
from worker.core import commands as cmd
from worker.core.config import InstanceConfig
from worker.core.events import (
    BookInvalid,
    BookTop,
    CancelEntry,
    ClearRisk,
    Event,
    Execution,
    Flatten,
    FundingPayment,
    OrderUpdate,
    OutcomeUnknown,
    Restarted,
    Resume,
    Resyncing,
    Stop,
    Tick,
    VenueMismatch,
    WalletBalance,
)
from worker.core.ids import ID_BLOCK, owns
from worker.core.ledger import fmt
from worker.core.model import ZERO, CoreState, Leg, Phase, Request
from worker.core.strategy import Core
from worker.hub_link import HubLink
from worker.journal import JournalWriter
from worker.logs import JsonLog
from worker.store import IdReservation, SnapshotStore
from worker.venues.book import LocalBook
from worker.venues.types import BookUpdate, PositionState

__all__ = ["Difference", "OrderExecutor", "ResyncVenue", "Worker", "venue_differences"]

OrderCommand = cmd.PlaceOrder | cmd.AmendOrder | cmd.CancelOrder | cmd.QueryOrder
_SENDS = (cmd.PlaceOrder, cmd.AmendOrder, cmd.CancelOrder, cmd.QueryOrder)
_QUIET = (BookTop, Tick)  # events that change nothing worth saving unless they command
# Shown in the status but not worth a durable snapshot of their own: every start re-reads the
# balances from the exchange (§4.6), and on an account shared by a fleet every fill of any row
# moves the quote coin, which made every worker fsync a snapshot for each.
_UNSAVED = (WalletBalance,)
_RESYNC_MARGIN_MS = 60_000  # history is read from this long before the last snapshot
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 5.0
_COMPARE_ATTEMPTS = 4  # a resting perp order may fill while the resync reads the position
_STATUS_EVERY_S = 1.0
_PNL_SHOWN = Decimal("0.00000001")  # logs show PnL to 1e-8; the journal keeps it exact
_T = TypeVar("_T")


async def _raise(exc: Exception) -> list[Event]:
    raise exc


class Difference(NamedTuple):
    """One thing the exchange holds that a snapshot cannot explain: ``kind`` names it for
    machines (``perp_position``, ``spot_balance``), ``detail`` says it for people."""

    kind: str
    detail: str


def venue_differences(
    *,
    perp_symbol: str,
    perp_claim: Decimal,
    perp_held: Decimal | None,
    base: str,
    spot_claim: Decimal,
    spot_held: Decimal | None,
    other_spot_claims: Mapping[str, Decimal] | None = None,
) -> list[Difference]:
    """Compare a snapshot's claims with the exchange's position and balance (§4.6, §8).

    The perp position (``perp_held``, signed; ``None``: not known) must equal the claim of the
    one instance on that symbol. The account's balance of the base coin (``spot_held``, its
    wallet total; ``None``: the account holds none) must cover every positive spot claim on
    that coin: this instance's and ``other_spot_claims`` (instance id -> claim) of the other
    instances on the same account. Used by the worker's start-up resync and by reconcile.
    """
    found: list[Difference] = []
    if perp_held is not None and perp_held != perp_claim:
        found.append(
            Difference(
                "perp_position",
                f"perp {perp_symbol}: the exchange holds {fmt(perp_held)}, "
                f"the snapshot {fmt(perp_claim)} (difference {fmt(perp_held - perp_claim)})",
            )
        )
    claims = {instance: qty for instance, qty in (other_spot_claims or {}).items() if qty > ZERO}
    own = max(spot_claim, ZERO)
    total = own + sum(claims.values(), ZERO)
    if total > ZERO and (spot_held is None or spot_held < total):
        have = fmt(spot_held) if spot_held is not None else "nothing"
        if not claims:
            detail = f"spot {base}: the snapshot claims {fmt(own)}, the account holds {have}"
        else:
            parts = ", ".join(
                [f"this instance {fmt(own)}"] + [f"{i} {fmt(q)}" for i, q in sorted(claims.items())]
            )
            detail = (
                f"spot {base}: the snapshots claim {fmt(total)} in all ({parts}), "
                f"the account holds {have}"
            )
        found.append(Difference("spot_balance", detail))
    return found


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class OrderExecutor(Protocol):
    """Sends one order command and answers with the core events it produced."""

    def submit(self, command: OrderCommand) -> Awaitable[list[Event]]:
        """Sends at once when it can (before returning); await the answer."""

    def sign_ahead(self, likely: Sequence[cmd.PlaceOrder]) -> None:
        """Build ahead the requests for orders the core is likely to place next."""


class ResyncVenue(Protocol):
    """The venue as the runtime uses it besides sending orders."""

    def start(self, listener: Worker, *, private: bool) -> None: ...
    async def resubscribe_book(self, leg: Leg, depth: int) -> None: ...
    async def open_orders(self, leg: Leg) -> list[OrderUpdate] | None: ...
    async def order_history(self, leg: Leg, since_ms: int) -> list[OrderUpdate] | None: ...
    async def executions(
        self, leg: Leg, since_ms: int
    ) -> list[Execution | FundingPayment] | None: ...
    async def perp_position(self) -> PositionState | None: ...
    async def balances(self) -> list[WalletBalance] | None: ...
    async def close(self) -> None: ...


class _StoppedWaitingError(Exception):
    """A stop arrived while the resync was still waiting for the venue."""


class Worker:
    def __init__(
        self,
        *,
        cfg: InstanceConfig,
        core: Core,
        state: CoreState,
        venue: ResyncVenue,
        orders: OrderExecutor,
        store: SnapshotStore,
        reservation: IdReservation,
        journal: JournalWriter,
        log: JsonLog,
        hub_socket: Path | None,
        version: str,
        snapshot_ms: int | None,
        assumed_balances: list[WalletBalance] | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.cfg = cfg
        self.core = core
        self.state = state
        self.venue = venue
        self.orders = orders
        self.store = store
        self.reservation = reservation
        self.journal = journal
        self.log = log
        self.clock_ms = clock_ms
        self.dry_run = not cfg.execute
        self.snapshot_ms = snapshot_ms  # when the durable snapshot was written; None: new
        self.assumed_balances = assumed_balances
        self.base = core.p.spot.base_coin
        self.quote = core.p.spot.quote_coin
        self.top = {leg: LocalBook(leg) for leg in Leg}
        self.deep = {leg: LocalBook(leg) for leg in Leg}
        self.position: PositionState | None = None
        self.ready = False
        self.bad_messages = 0
        self.note = ""  # what the runtime is waiting for, shown as the status error
        self._inflight: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._after_pending = False
        self._save_pending = False  # a step of this loop turn needs a durable snapshot
        self._sign_pending = False
        self._deferred: list[Callable[[], None]] = []  # logs and journal writes of this turn
        self._reserving = False
        self._dirty = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._forced = False
        self._crash: BaseException | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._private_down_ms: int | None = None
        self._private_up = asyncio.Event()
        self.link: HubLink | None = None
        if hub_socket is not None:
            hello = ipc.Hello(
                instance=cfg.id, pid=os.getpid(), mode=cfg.mode.value, version=version
            )
            self.link = HubLink(hub_socket, hello, on_command=self.on_hub_command)

    # ------------------------------------------------------------------ the whole life

    async def run(self) -> int:
        """Trade until stopped; returns the exit code (0), or raises what crashed a step."""
        background = [asyncio.create_task(self._saver()), asyncio.create_task(self._periodic())]
        if self.link is not None:
            background.append(asyncio.create_task(self.link.run()))
        self.venue.start(self, private=not self.dry_run)
        self.log.info(
            "started",
            mode=self.cfg.mode.value,
            phase=self.state.phase.value,
            spot=self.cfg.spot_symbol,
            perp=self.cfg.future_symbol,
            resumed=self.snapshot_ms is not None,
        )
        resync = asyncio.create_task(self._startup_resync())
        stop = asyncio.create_task(self._stop_requested.wait())
        await asyncio.wait({resync, stop}, return_when=asyncio.FIRST_COMPLETED)
        try:
            if not resync.done():
                resync.cancel()
                with contextlib.suppress(asyncio.CancelledError, _StoppedWaitingError):
                    await resync
            elif (error := resync.exception()) is not None and not isinstance(
                error, _StoppedWaitingError
            ):
                self._fail(error, "resync")
            if self._crash is None:
                await stop
                await self._stop()
        finally:
            await self._close(background)
        if self._crash is not None:
            raise self._crash
        return 0

    def request_stop(self) -> None:
        """SIGTERM, SIGINT or the hub's Stop; a second request stops without waiting."""
        if self._stop_requested.is_set():
            self._forced = True
            self._stopped.set()
            self.log.warning("forced_stop", working_orders=len(self.state.orders))
            return
        self.log.info("stop_requested")
        self._stop_requested.set()

    async def _stop(self) -> None:
        if self.ready and not self.state.stopped:
            self.feed(Stop())
            await self._stopped.wait()
        if self._inflight:  # let replies already on their way land in the state
            await asyncio.wait(set(self._inflight), timeout=10)

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        for record in self._deferred:
            record()
        self._deferred = []
        if self._timer is not None:
            self._timer.cancel()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.link is not None:
            await self.link.stop()
        await self.venue.close()
        for task in list(self._inflight):
            task.cancel()
        self._disk.shutdown(wait=True)
        if self._crash is None:
            self.store.save(self.state)  # durable, after every reply that could land
        self.store.close()
        self.journal.close()
        self.log.info(
            "exited",
            phase=self.state.phase.value,
            crashed=self._crash is not None,
            forced=self._forced,
            working_orders=len(self.state.orders),
        )

    # ------------------------------------------------------------------ one step

    def feed(self, event: Event) -> None:
        """Apply one event and carry out what the core commands."""
        if self._crash is not None:
            return
        now = self.clock_ms()
        try:
            commands = self.core.step(self.state, event, now)
        except Exception as exc:  # a bug: never save what it half-changed
            self._fail(exc, event)
            return
        if commands:
            self._carry_out(commands, now)
        if commands or not isinstance(event, _QUIET):
            self._after_step(save=bool(commands) or not isinstance(event, _UNSAVED))
        elif isinstance(event, Tick):
            self._arm_timer(now)

    def _fail(self, exc: BaseException, during: object) -> None:
        self._crash = exc
        self.log.error(
            "crash",
            error=f"{type(exc).__name__}: {exc}",
            during=during if isinstance(during, str) else type(during).__name__,
            traceback="".join(traceback.format_exception(exc))[-4000:],
        )
        self._stop_requested.set()
        self._stopped.set()

    def _carry_out(self, commands: list[cmd.Command], now: int) -> None:
        sends: list[OrderCommand] = []
        for command in commands:
            if isinstance(command, cmd.ReserveIds):
                # durable before any id of the block can reach the venue (§5.1)
                self.reservation.save(command.epoch, command.block_end)
            elif isinstance(command, _SENDS):
                sends.append(command)
            else:  # logged and journaled after the sends have left (see _settle)
                self._deferred.append(functools.partial(self._report, command, now))
        if not sends:
            return
        if any(isinstance(c, cmd.PlaceOrder) for c in sends):
            self.store.stage(self.state)  # a killed process cannot lose the new orders
        for command in sends:
            self._deferred.append(functools.partial(self._log_send, command, now))
            try:
                answer = self.orders.submit(command)  # on the wire now, as a rule
            except Exception as exc:  # a client bug: the request may have gone out
                answer = _raise(exc)
            task = asyncio.ensure_future(self._request(command, answer))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _request(self, command: OrderCommand, answer: Awaitable[list[Event]]) -> None:
        try:
            events = await answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a client bug: the request may have gone out
            self.log.error("request_failed", link_id=command.link_id, error=repr(exc)[:500])
            if isinstance(command, cmd.QueryOrder):
                return  # the core asks again
            request = (
                Request.CREATE
                if isinstance(command, cmd.PlaceOrder)
                else Request.AMEND
                if isinstance(command, cmd.AmendOrder)
                else Request.CANCEL
            )
            events = [OutcomeUnknown(link_id=command.link_id, request=request, reason=repr(exc))]
        for event in events:
            self._record(event)
            self.feed(event)

    def _after_step(self, *, save: bool) -> None:
        """Saving, status and timers for the steps of this loop turn, after the sends."""
        self._save_pending = self._save_pending or save
        if not self._after_pending:
            self._after_pending = True
            asyncio.get_running_loop().call_soon(self._settle)

    def _settle(self) -> None:
        self._after_pending = False
        deferred, self._deferred = self._deferred, []
        for record in deferred:
            record()
        now = self.clock_ms()
        if self._save_pending:
            self._save_pending = False
            self._dirty.set()
        self.store.finished_orders(self.state)  # re-encoded now, not on the next order's path
        self._publish(now)
        self._arm_timer(now)
        self._reserve_ahead()

    def _reserve_ahead(self) -> None:
        """Keep the durable id reservation a block ahead, in the background, so the core's
        ``ReserveIds`` finds it done and no fsync waits on the order path."""
        ids = self.state.ids
        if (
            self.ready
            and not self._reserving
            and not self.reservation.covers(ids.epoch, ids.next_seq + ID_BLOCK)
        ):
            self._reserving = True
            target = ids.next_seq + 2 * ID_BLOCK
            loop = asyncio.get_running_loop()
            done = loop.run_in_executor(self._disk, self.reservation.save, ids.epoch, target)
            done.add_done_callback(self._reserved)

    def _reserved(self, done: asyncio.Future[None]) -> None:
        self._reserving = False
        if done.exception() is not None:  # the order path reserves synchronously instead
            self.log.error("reserve_failed", error=repr(done.exception()))

    # ------------------------------------------------------------------ timers

    def _arm_timer(self, now: int) -> None:
        deadline = self.core.next_deadline(self.state, now)
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        delay = (deadline - now + 1) / 1000
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.feed(Tick())

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(_STATUS_EVERY_S)
            now = self.clock_ms()
            self._publish(now)
            self._arm_timer(now)

    async def _saver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._crash is not None:
                return
            data = self.store.encode(self.state)  # on the loop: a consistent point
            await loop.run_in_executor(self._disk, self.store.write, data)

    # ------------------------------------------------------------------ the venue's news

    def on_book(self, leg: Leg, update: BookUpdate) -> None:
        if update.depth == 1:
            if self.deep[leg].needs_snapshot:
                return  # the deep book has a gap or no snapshot yet: no price is trusted
            top = self.top[leg].apply(update)
            if top is not None:
                self.feed(top)
                self._sign_ahead_soon()
            return
        result = self.deep[leg].apply(update)
        if isinstance(result, BookTop):
            if update.snapshot:  # a (re)start of the deep book: its top is good right away
                self.feed(result)
                self._sign_ahead_soon()
        elif isinstance(result, BookInvalid):
            gap = self.deep[leg].needs_snapshot  # an update-id gap: only a snapshot heals it
            if gap:
                self.top[leg].reset(result.reason)
                self.log.warning("book_gap", leg=leg.value, reason=result.reason)
            self.feed(result)  # no quoting or exit pricing on this leg until a good top
            if gap:
                self._spawn(self.venue.resubscribe_book(leg, 50))

    def _sign_ahead_soon(self) -> None:
        """Once per loop turn, after the steps: sign the entry the next crossing would send."""
        if not self._sign_pending:
            self._sign_pending = True
            asyncio.get_running_loop().call_soon(self._sign_entries_ahead)

    def _sign_entries_ahead(self) -> None:
        self._sign_pending = False
        if self._crash is None:
            self.orders.sign_ahead(self.core.entry_candidates(self.state))

    def on_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, (OrderUpdate, Execution)):
                if not owns(self.cfg.id, event.link_id):
                    continue  # another instance's order on the same account
            elif isinstance(event, WalletBalance) and event.coin not in (self.base, self.quote):
                continue
            self._record(event)
            self.feed(event)

    def on_position(self, position: PositionState) -> None:
        self.position = position

    def on_link(self, name: str, up: bool, reason: str) -> None:
        if up:
            self.log.info("stream_up", stream=name)
        else:
            self.log.warning("stream_down", stream=name, reason=reason)
        if name == "private":
            if not up:
                self._private_up.clear()
                self._private_down_ms = self._private_down_ms or self.clock_ms()
            else:
                self._private_up.set()
                if self.ready:
                    self._spawn(self._reconnect_resync())
            return
        leg = Leg(name)
        if not up:
            self.top[leg].reset(reason)
            self.feed(self.deep[leg].reset(f"{name} stream down: {reason}"))

    def on_bad_message(self, source: str, detail: str, raw: bytes) -> None:
        self.bad_messages += 1
        self.log.warning(
            "bad_message", source=source, detail=detail, raw=raw[:500].decode(errors="replace")
        )
        self._record_error("bad_message", f"{source}: {detail}")
        if source in (Leg.SPOT.value, Leg.PERP.value):  # a book we cannot read: start over
            leg = Leg(source)
            self.top[leg].reset(detail)
            self.feed(self.deep[leg].reset(f"malformed book message: {detail}"))
            self._spawn(self.venue.resubscribe_book(leg, 50))

    def on_hub_command(self, command: ipc.Down) -> None:
        name, now = type(command).__name__, self.clock_ms()
        self.log.info("hub_command", command=name)
        self.journal.submit(lambda j: j.action(name, "received", now))
        if isinstance(command, ipc.Stop):
            self.request_stop()
            return
        event: Event
        if isinstance(command, ipc.CancelEntry):
            event = CancelEntry()
        elif isinstance(command, ipc.Flatten):
            event = Flatten()
        elif isinstance(command, ipc.ClearRisk):
            event = ClearRisk()
        else:
            event = Resume()
        self.feed(event)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    # ------------------------------------------------------------------ resync

    async def _until(self, ask: Callable[[], Awaitable[_T | None]], what: str) -> _T:
        """Ask the venue until it answers; trading waits, and a stop ends the wait."""
        delay = _RETRY_MIN_S
        while True:
            answer = await ask()
            if answer is not None:
                return answer
            self.note = f"resync: waiting for the venue ({what})"
            self.log.warning("resync_retry", what=what, retry_in_s=delay)
            if self._stop_requested.is_set():
                raise _StoppedWaitingError
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def _startup_resync(self) -> None:
        s = self.state
        known, started = [*s.done.values(), *s.orders.values()], self.clock_ms()
        self.journal.submit(lambda j: j.orders_known(known, started))  # before their updates
        self.feed(Resyncing())
        if not self.dry_run:
            # subscribed first, then asked: whatever happens after the answers is on the stream
            while not self._private_up.is_set():
                self.note = "resync: waiting for the private stream"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._private_up.wait(), _RETRY_MAX_S)
            self.note = ""
        reserved = max(self.reservation.load(s.ids.epoch), s.ids.block_end)
        now = self.clock_ms()
        since = (self.snapshot_ms or now) - _RESYNC_MARGIN_MS
        for attempt in range(_COMPARE_ATTEMPTS):
            await self._replay(since, restart=True)
            difference = self._difference()
            if difference is None or attempt == _COMPARE_ATTEMPTS - 1:
                break
            if not any(o.leg is Leg.PERP for o in s.orders.values()):
                break  # nothing could have moved the position meanwhile
            await asyncio.sleep(0.5)
        if difference is not None:
            position = self.position
            assert position is not None
            self.log.error("venue_mismatch", detail=difference)
            self.feed(
                VenueMismatch(
                    detail=difference, perp_qty=position.size, perp_avg_price=position.avg_price
                )
            )
        self.feed(Restarted(block_end=reserved))
        gc.freeze()  # what startup built is permanent: collections stay short on the order path
        self.ready = True
        self.note = ""
        self._private_down_ms = None
        self.log.info(
            "resynced",
            phase=s.phase.value,
            spot=s.spot.qty,
            perp=s.perp.qty,
            working_orders=len(s.orders),
            halted=s.phase is Phase.HALTED,
        )

    async def _replay(self, since: int, *, restart: bool) -> None:
        """Feed the venue's word on the instance's orders, executions, balances, position."""
        s = self.state
        if restart:
            for order in list(s.orders.values()):
                query = cmd.QueryOrder(link_id=order.link_id, leg=order.leg)
                events = await self._until(
                    functools.partial(self._answers, query), f"order {order.link_id}"
                )
                self._feed_own(events)
        if self.dry_run:
            balances = self.assumed_balances
            if balances is None:
                balances = await self._until(self.venue.balances, "wallet balance")
            self._feed_own(list(balances))
            return
        for leg in Leg:
            venue = self.venue
            self._feed_own(
                list(await self._until(functools.partial(venue.open_orders, leg), "orders"))
            )
            history = functools.partial(venue.order_history, leg, since)
            self._feed_own(list(await self._until(history, "order history")))
            fills = functools.partial(venue.executions, leg, since)
            self._feed_own(list(await self._until(fills, "executions")))
        self._feed_own(list(await self._until(self.venue.balances, "wallet balance")))
        self.position = await self._until(self.venue.perp_position, "perp position")

    async def _answers(self, query: cmd.QueryOrder) -> list[Event] | None:
        events = await self.orders.submit(query)
        return events or None

    def _feed_own(self, events: list[Event]) -> None:
        self.on_events(events)

    def _difference(self) -> str | None:
        """What the exchange holds that the state cannot explain, in words; None if nothing."""
        if self.dry_run:
            return None
        s = self.state
        held = s.balances.get(self.base)
        found = venue_differences(
            perp_symbol=self.cfg.future_symbol,
            perp_claim=s.perp.qty,
            perp_held=None if self.position is None else self.position.size,
            base=self.base,
            spot_claim=s.spot.qty,
            spot_held=None if held is None else held.total,
        )
        return "; ".join(d.detail for d in found) or None

    async def _reconnect_resync(self) -> None:
        """After the private stream reconnects: what it may have missed, by REST."""
        since = (self._private_down_ms or self.clock_ms()) - _RESYNC_MARGIN_MS
        self._private_down_ms = None
        try:
            await self._replay(since, restart=False)
        except _StoppedWaitingError:
            return
        self.note = ""

    # ------------------------------------------------------------------ reports and records

    def _record(self, event: Event) -> None:
        if isinstance(event, OrderUpdate):
            ts = self.clock_ms()
            self.journal.submit(lambda j: j.order_updated(event, ts))
        elif isinstance(event, Execution):
            self.journal.submit(lambda j: j.fill(event))

    def _record_error(self, kind: str, message: str) -> None:
        ts = self.clock_ms()
        self.journal.submit(lambda j: j.error(kind, message, ts))

    def _log_send(self, command: OrderCommand, now: int) -> None:
        verb = "would_send" if self.dry_run else "send"
        if isinstance(command, cmd.PlaceOrder):
            self.journal.submit(lambda j: j.order_sent(command, now))
            self.log.info(
                verb,
                request="place",
                link_id=command.link_id,
                leg=command.leg.value,
                side=command.side.value,
                order_type=command.order_type.value,
                qty=command.qty,
                price=command.price,
                purpose=command.purpose.value,
            )
        elif isinstance(command, cmd.CancelOrder):
            self.log.info(verb, request="cancel", link_id=command.link_id)
        elif isinstance(command, cmd.AmendOrder):
            level = "info" if self.dry_run else "debug"
            self.log.write(
                level,
                verb,
                request="amend",
                link_id=command.link_id,
                qty=command.qty,
                price=command.price,
            )
        else:
            self.log.debug("query", link_id=command.link_id)

    def _report(self, report: cmd.Command, now: int) -> None:
        if isinstance(report, cmd.ReportTransition):
            self.log.info(
                "transition",
                source=report.source.value,
                target=report.target.value,
                trigger=report.trigger,
                reason=report.reason,
            )
            self.journal.submit(lambda j: j.transition(report, now))
        elif isinstance(report, cmd.ReportHalt):
            self.log.error("halted", reason=report.reason, detail=report.detail)
            self._record_error("halt", f"{report.reason}: {report.detail}")
        elif isinstance(report, cmd.ReportCycle):
            self.log.info(
                "cycle",
                number=report.number,
                side=report.side,
                qty=report.qty,
                entry_price=None if report.entry_price is None else fmt(report.entry_price),
                pnl=fmt(report.pnl.quantize(_PNL_SHOWN)),
                ended_by=report.ended_by,
            )
            self.journal.submit(lambda j: j.cycle(report, now))
        elif isinstance(report, cmd.ReportRefused):
            self.log.warning("refused", command=report.command, reason=report.reason)
            result = f"refused: {report.reason}"
            self.journal.submit(lambda j: j.action(report.command, result, now))
        elif isinstance(report, cmd.ReportAnomaly):
            self.log.warning("anomaly", kind=report.kind, detail=report.detail)
            self._record_error(report.kind, report.detail)
        elif isinstance(report, cmd.ReportRiskBlock):
            self.log.warning("risk_block", blocked=report.blocked, reason=report.reason)
        elif isinstance(report, cmd.ReportBlocked):
            self.log.info("entry_blocked", reason=report.reason)
        elif isinstance(report, cmd.ReportStopped):
            self.log.info("stopped", phase=self.state.phase.value)
            self._stopped.set()

    # ------------------------------------------------------------------ status for the hub

    def status(self, now: int) -> ipc.Status:
        s = self.state
        sb, pb = s.spot_book, s.perp_book
        unrealized = ZERO
        if sb is not None and pb is not None:
            unrealized = s.spot.qty * (sb.mid - s.spot.avg_price) + s.perp.qty * (
                pb.mid - s.perp.avg_price
            )
        ages = [now - b.received_ms for b in (sb, pb) if b is not None]
        error = s.last_error if s.phase is Phase.HALTED else (self.note or None)
        return ipc.Status(
            instance=self.cfg.id,
            mode=self.cfg.mode.value,
            spot_symbol=self.cfg.spot_symbol,
            perp_symbol=self.cfg.future_symbol,
            state=s.phase.value,
            basis_bps=self.core.basis_bps(s),
            book_age_ms=max(ages) if len(ages) == 2 else None,
            spot_position=s.spot.qty,
            perp_position=s.perp.qty,
            unhedged_qty=self.core.unhedged_qty(s),
            unhedged_age_ms=None if s.unhedged_since is None else now - s.unhedged_since,
            working_orders=len(s.orders),
            orders=s.orders_sent,
            fills=s.fills_seen,
            realized_pnl=s.spot.realized + s.perp.realized,
            unrealized_pnl=unrealized.quantize(_PNL_SHOWN),
            fees=s.fees,
            funding=s.funding,
            risk_blocked=s.risk_reason if s.risk_blocked else None,
            error=error,
            updated_ms=now,
            blocked=s.blocked or None,
            syncing=s.syncing,
        )

    def _publish(self, now: int) -> None:
        if self.link is not None:
            self.link.publish(self.status(now))

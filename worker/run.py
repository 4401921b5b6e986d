"""``spot-future-arb --config PATH [--instance ID]``: build one instance's worker and run it.

Everything that can refuse a start is checked here, each with its exit code (ARCHITECTURE §7):
the config and the account file (2), the instance lock (3), the snapshot (4), the venue's
rules and account (2, or 1 when the venue cannot be reached), and only then the runtime.
Environment from the hub: ``ARBHUB_ENDPOINTS`` (JSON like the ``endpoints`` key) and
``ARBHUB_HUB_SOCKET``; a worker started by hand takes both from the config.

The checks up to the snapshot (:func:`open_instance`, :meth:`Opened.lock`,
:meth:`Opened.load_snapshot`) and the venue client (:meth:`Opened.venue`) are shared with the
one-shot ``--reconcile`` mode (``worker.reconcile``), so both refuse alike and reach the venue
with the same keys, endpoints and rate budget.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import msgspec

from worker import ipc
from worker.config_loader import (
    SIM_CREDENTIALS,
    ApiCredentials,
    load_config_with_warnings,
    load_credentials,
)
from worker.core.config import (
    ConfigError,
    ConfigProblem,
    Endpoints,
    FleetConfig,
    InstanceConfig,
    Venue,
)
from worker.core.events import WalletBalance
from worker.core.model import CoreState
from worker.core.params import CoreParams
from worker.core.snapshot import SnapshotError
from worker.core.strategy import Core
from worker.journal import JournalWriter, journal_path
from worker.logs import JsonLog
from worker.runtime import OrderExecutor, Worker, wall_ms
from worker.store import IdReservation, InstanceLock, LockedError, SnapshotStore
from worker.venues.budget import AccountBudget
from worker.venues.bybit.client import BybitVenue, urls_for
from worker.venues.bybit.setup import SetupError
from worker.venues.paper import PaperOrders

__all__ = [
    "EXIT_CONFIG",
    "EXIT_CRASH",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_SNAPSHOT",
    "SIM_CREDENTIALS",
    "Opened",
    "StartRefusedError",
    "endpoints_for",
    "json_path",
    "open_instance",
    "run",
]

EXIT_OK, EXIT_CRASH, EXIT_CONFIG, EXIT_LOCKED, EXIT_SNAPSHOT = 0, 1, 2, 3, 4
# Bybit limits order requests per account and endpoint (10–20/s); one bucket for all of them,
# with a reserve that only risk-reducing requests may spend (§5.7)
BUDGET_RATE_PER_S, BUDGET_BURST, BUDGET_RESERVE = 20.0, 20.0, 5.0
# a dry-run without keys cannot know the balances: decisions assume they suffice
ASSUMED_BALANCE = Decimal("1e12")
GIL_SWITCH_S = 0.0005


def _version() -> str:
    try:
        return version("arbhub")
    except PackageNotFoundError:
        return "unknown"


def endpoints_for(cfg: InstanceConfig) -> Endpoints | None:
    """Where the venue is: ``ARBHUB_ENDPOINTS`` (set by the hub) wins over the config's key."""
    raw = os.environ.get("ARBHUB_ENDPOINTS")
    if not raw:
        return cfg.endpoints
    try:
        return msgspec.json.decode(raw, type=Endpoints)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        problem = ConfigProblem("$ARBHUB_ENDPOINTS", f"not valid endpoints JSON ({exc})")
        raise ConfigError([problem]) from None


class StartRefusedError(Exception):
    """A start-up check refused the instance; it has been logged. ``exit_code`` is the
    process's (§7) and the message says why, in words an operator can act on."""

    def __init__(self, exit_code: int, detail: str) -> None:
        super().__init__(detail)
        self.exit_code = exit_code
        self.detail = detail


@dataclass(frozen=True)
class Opened:
    """One instance resolved for a process that will own it: its config, keys (never shown),
    the venue's address and the log that already redacts the keys."""

    fleet: FleetConfig
    cfg: InstanceConfig
    credentials: ApiCredentials | None
    endpoints: Endpoints | None
    log: JsonLog

    @property
    def state_path(self) -> Path:
        return Path(self.cfg.state_path)

    def lock(self) -> InstanceLock:
        """The instance lock, held until released; refuses (3) while another process has it."""
        lock = InstanceLock(self.state_path)
        try:
            lock.acquire()
        except LockedError as exc:
            self.log.error("locked", detail=str(exc))
            raise StartRefusedError(EXIT_LOCKED, str(exc)) from None
        return lock

    def load_snapshot(self, store: SnapshotStore) -> CoreState | None:
        """The newest saved state (durable or staged), ``None`` for a first start; refuses an
        unreadable or newer snapshot (4) and one of other symbols than the config's (2)."""
        try:
            state = store.load()
        except SnapshotError as exc:
            self.log.error("snapshot_refused", detail=str(exc))
            raise StartRefusedError(EXIT_SNAPSHOT, str(exc)) from None
        cfg = self.cfg
        if state is not None and (state.spot_symbol, state.future_symbol) != (
            cfg.spot_symbol,
            cfg.future_symbol,
        ):
            detail = (
                f"the snapshot {self.state_path} is for {state.spot_symbol}/"
                f"{state.future_symbol}, the config says {cfg.spot_symbol}/{cfg.future_symbol}: "
                "give the instance a new state_path, or reconcile and clear the old one first"
            )
            self.log.error("config_error", detail=detail)
            raise StartRefusedError(EXIT_CONFIG, detail)
        return state

    def budget(self) -> AccountBudget | None:
        """The order-rate budget every process on these keys shares (§5.7)."""
        if self.credentials is None:
            return None
        return AccountBudget(
            Path(self.fleet.hub.run_dir) / "budget",
            self.credentials.api_key,
            rate_per_s=BUDGET_RATE_PER_S,
            burst=BUDGET_BURST,
            reserve=BUDGET_RESERVE,
        )

    def venue(self) -> BybitVenue:
        cfg = self.cfg
        return BybitVenue(
            cfg,
            urls_for(cfg, self.endpoints),
            self.credentials,
            budget=self.budget(),
            clock_ms=wall_ms,
        )


def open_instance(
    config: str, instance_id: str | None, *, log_stream: TextIO | None = None
) -> Opened:
    """Read the config, the account file and the venue's address for one instance.

    Every problem is reported (on stderr before the instance is known, then as ``config_error``
    log lines) and refuses with exit code 2. ``log_stream``: where the log goes (stdout).
    """
    try:
        fleet, warnings = load_config_with_warnings(config)
        cfg = fleet.instance(instance_id)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        raise StartRefusedError(EXIT_CONFIG, "; ".join(str(p) for p in exc.problems)) from None
    log = JsonLog(cfg.id, stream=log_stream)
    for warning in warnings:
        log.warning("config_warning", detail=str(warning))
    try:
        credentials = load_credentials(cfg)
        endpoints = endpoints_for(cfg)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config_error", detail=str(problem))
        raise StartRefusedError(EXIT_CONFIG, "; ".join(str(p) for p in exc.problems)) from None
    if credentials is None and cfg.venue is Venue.SIM:
        credentials = ApiCredentials(*SIM_CREDENTIALS)
    if credentials is not None:
        log.forget([credentials.api_key, credentials.api_secret])
    if cfg.venue is Venue.SIM and endpoints is None:
        detail = (
            "venue sim needs the simulator's address: start the fleet with the hub "
            "(it passes ARBHUB_ENDPOINTS) or set endpoints in the config"
        )
        log.error("config_error", detail=detail)
        raise StartRefusedError(EXIT_CONFIG, detail)
    return Opened(fleet=fleet, cfg=cfg, credentials=credentials, endpoints=endpoints, log=log)


class _StopSignals:
    """SIGTERM and SIGINT ask the worker to stop, for the whole life of the process.

    Plain handlers (not the event loop's) stay installed after the loop has closed, so a
    signal that arrives while the process exits cannot turn a clean stop into a death by
    signal; one that arrives before the runtime exists stops the start.
    """

    def __init__(self, log: JsonLog) -> None:
        self.log = log
        self.requested = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker: Worker | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.requested = True
        loop, worker = self.loop, self.worker
        if worker is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(worker.request_stop)


def json_path(fleet: FleetConfig, cfg: InstanceConfig) -> str:
    """The instance's JSON path in the config, for stage-2 (venue) messages."""
    return "$" if fleet.single_strategy else f"instances[{fleet.ids.index(cfg.id)}]"


def run(config: str, instance_id: str | None) -> int:
    """Run one instance until it is stopped; returns the process exit code."""
    try:
        opened = open_instance(config, instance_id)
        lock = opened.lock()
    except StartRefusedError as exc:
        return exc.exit_code
    code = EXIT_CRASH
    try:
        code = _run_locked(opened)
    except Exception as exc:
        opened.log.error("crashed", error=f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        lock.release()
        # the last line: a hub that adopted this process (not its parent) reads the code here
        opened.log.info("exit", code=code, pid=os.getpid())
    return code


def _run_locked(opened: Opened) -> int:
    fleet, cfg, credentials, log = opened.fleet, opened.cfg, opened.credentials, opened.log
    state_path = opened.state_path
    store = SnapshotStore(state_path)
    try:
        state = opened.load_snapshot(store)
    except StartRefusedError as exc:
        return exc.exit_code
    snapshot_ms = int(state_path.stat().st_mtime * 1000) if state_path.exists() else None
    if snapshot_ms is None and state is not None:  # only the staged copy survived
        snapshot_ms = int(store.staged_path.stat().st_mtime * 1000)
    venue = opened.venue()
    hub_socket = os.environ.get("ARBHUB_HUB_SOCKET") or str(
        Path(fleet.hub.run_dir) / ipc.SOCKET_NAME
    )

    stop = _StopSignals(log)

    async def main() -> int:
        stop.loop = asyncio.get_running_loop()
        try:
            setup = await venue.prepare(json_path(fleet, cfg))
        except SetupError as exc:
            await venue.close()
            log.error("venue_check_failed", detail=str(exc), exit_code=exc.exit_code)
            return exc.exit_code
        if stop.requested:  # stopped before it could trade: nothing to wind down
            await venue.close()
            log.info("exited", phase="not started", crashed=False, forced=False)
            return EXIT_OK
        for warning in setup.warnings:
            log.warning("venue_warning", detail=warning)
        params = CoreParams.from_config(
            cfg,
            spot=setup.spot,
            perp=setup.perp,
            spot_fees=setup.spot_fees,
            perp_fees=setup.perp_fees,
        )
        core = Core(params)
        current = state
        reservation = IdReservation(state_path)
        if current is None:
            saved = reservation.saved()
            epoch = max(int(time.time()), saved[0] + 1 if saved else 0)  # ids never repeat
            current = core.new_state(epoch)
            store.save(current)
        orders: OrderExecutor = venue
        if not cfg.execute:
            paper = PaperOrders(wall_ms)
            paper.adopt(current.orders.values())
            orders = paper
        for order in current.orders.values():
            venue.remember(order.link_id, order.purpose)
        assumed = None
        if credentials is None:
            log.warning("dry_run_balances_assumed", detail="no API keys: balances are unknown")
            assumed = [
                WalletBalance(coin=coin, available=ASSUMED_BALANCE, total=ASSUMED_BALANCE)
                for coin in (setup.spot.base_coin, setup.spot.quote_coin)
            ]
        worker = Worker(
            cfg=cfg,
            core=core,
            state=current,
            venue=venue,
            orders=orders,
            store=store,
            reservation=reservation,
            journal=JournalWriter(journal_path(state_path)),
            log=log,
            hub_socket=Path(hub_socket),
            version=_version(),
            snapshot_ms=snapshot_ms,
            assumed_balances=assumed,
        )
        stop.worker = worker
        return await worker.run()

    # The journal and snapshot threads hold the GIL in bursts; the default 5 ms switch
    # interval would let such a burst delay an order by up to 5 ms.
    sys.setswitchinterval(GIL_SWITCH_S)
    return asyncio.run(main())

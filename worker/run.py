"""``spot-future-arb --config PATH [--instance ID]``: build one instance's worker and run it.

Everything that can refuse a start is checked here, each with its exit code (ARCHITECTURE §7):
the config and the account file (2), the instance lock (3), the snapshot (4), the venue's
rules and account (2, or 1 when the venue cannot be reached), and only then the runtime.
Environment from the hub: ``ARBHUB_ENDPOINTS`` (JSON like the ``endpoints`` key) and
``ARBHUB_HUB_SOCKET``; a worker started by hand takes both from the config.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import msgspec

from worker import ipc
from worker.config_loader import ApiCredentials, load_config_with_warnings, load_credentials
from worker.core.config import (
    ConfigError,
    ConfigProblem,
    Endpoints,
    FleetConfig,
    InstanceConfig,
    Venue,
)
from worker.core.events import WalletBalance
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

__all__ = ["SIM_CREDENTIALS", "run"]

EXIT_OK, EXIT_CRASH, EXIT_CONFIG, EXIT_LOCKED, EXIT_SNAPSHOT = 0, 1, 2, 3, 4
# the simulator's default account (exchange_sim.config), used with venue sim and no key file
SIM_CREDENTIALS = ("arbhub-sim-key", "arbhub-sim-secret")
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


def _endpoints(cfg: InstanceConfig) -> Endpoints | None:
    raw = os.environ.get("ARBHUB_ENDPOINTS")
    if not raw:
        return cfg.endpoints
    try:
        return msgspec.json.decode(raw, type=Endpoints)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        problem = ConfigProblem("$ARBHUB_ENDPOINTS", f"not valid endpoints JSON ({exc})")
        raise ConfigError([problem]) from None


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


def _json_path(fleet: FleetConfig, cfg: InstanceConfig) -> str:
    return "$" if fleet.single_strategy else f"instances[{fleet.ids.index(cfg.id)}]"


def run(config: str, instance_id: str | None) -> int:
    """Run one instance until it is stopped; returns the process exit code."""
    try:
        fleet, warnings = load_config_with_warnings(config)
        cfg = fleet.instance(instance_id)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    log = JsonLog(cfg.id)
    for warning in warnings:
        log.warning("config_warning", detail=str(warning))
    try:
        credentials = load_credentials(cfg)
        endpoints = _endpoints(cfg)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config_error", detail=str(problem))
        return EXIT_CONFIG
    if credentials is None and cfg.venue is Venue.SIM:
        credentials = ApiCredentials(*SIM_CREDENTIALS)
    if credentials is not None:
        log.forget([credentials.api_key, credentials.api_secret])
    if cfg.venue is Venue.SIM and endpoints is None:
        log.error(
            "config_error",
            detail="venue sim needs the simulator's address: start the fleet with the hub "
            "(it passes ARBHUB_ENDPOINTS) or set endpoints in the config",
        )
        return EXIT_CONFIG
    state_path = Path(cfg.state_path)
    lock = InstanceLock(state_path)
    try:
        lock.acquire()
    except LockedError as exc:
        log.error("locked", detail=str(exc))
        return EXIT_LOCKED
    try:
        return _run_locked(fleet, cfg, credentials, endpoints, log)
    except Exception as exc:
        log.error("crashed", error=f"{type(exc).__name__}: {exc}"[:2000])
        return EXIT_CRASH
    finally:
        lock.release()


def _run_locked(
    fleet: FleetConfig,
    cfg: InstanceConfig,
    credentials: ApiCredentials | None,
    endpoints: Endpoints | None,
    log: JsonLog,
) -> int:
    state_path = Path(cfg.state_path)
    store = SnapshotStore(state_path)
    try:
        state = store.load()
    except SnapshotError as exc:
        log.error("snapshot_refused", detail=str(exc))
        return EXIT_SNAPSHOT
    if state is not None and (state.spot_symbol, state.future_symbol) != (
        cfg.spot_symbol,
        cfg.future_symbol,
    ):
        log.error(
            "config_error",
            detail=f"the snapshot {state_path} is for {state.spot_symbol}/"
            f"{state.future_symbol}, the config says {cfg.spot_symbol}/{cfg.future_symbol}: "
            "give the instance a new state_path, or reconcile and clear the old one first",
        )
        return EXIT_CONFIG
    snapshot_ms = int(state_path.stat().st_mtime * 1000) if state_path.exists() else None
    if snapshot_ms is None and state is not None:  # only the staged copy survived
        snapshot_ms = int(store.staged_path.stat().st_mtime * 1000)
    budget = None
    if credentials is not None:
        budget = AccountBudget(
            Path(fleet.hub.run_dir) / "budget",
            credentials.api_key,
            rate_per_s=BUDGET_RATE_PER_S,
            burst=BUDGET_BURST,
            reserve=BUDGET_RESERVE,
        )
    venue = BybitVenue(cfg, urls_for(cfg, endpoints), credentials, budget=budget, clock_ms=wall_ms)
    hub_socket = os.environ.get("ARBHUB_HUB_SOCKET") or str(
        Path(fleet.hub.run_dir) / ipc.SOCKET_NAME
    )

    stop = _StopSignals(log)

    async def main() -> int:
        stop.loop = asyncio.get_running_loop()
        try:
            setup = await venue.prepare(_json_path(fleet, cfg))
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

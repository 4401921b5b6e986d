"""The hub: rows and their workers, the IPC server they report to, and the simulator.

Workers trade on their own; the hub starts, watches and stops them, and collects what they
report. Everything it must remember across its own restarts is in ``run_dir`` (see
``hub.files``): on start it adopts the simulator and every worker whose pid record is still
alive (they count as running once they say ``Hello``), then starts the rows the operator
wants running and no worker yet runs, so there is never a second worker for an instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil

from hub.account import AccountCheck
from hub.files import PidRecord, RunDir, log_too_big, rotate_log
from hub.procs import Proc, spawn
from hub.simulator import Simulator
from hub.supervisor import ProcessState, Row, RowPolicy
from worker import ipc
from worker.config_loader import SIM_CREDENTIALS, ApiCredentials
from worker.core.config import Endpoints, FleetConfig, Venue
from worker.core.ledger import fmt

__all__ = ["Hub", "HubRunningError"]

TICK_S = 0.25
USAGE_EVERY_S = 2.0
HELLO_TIMEOUT_S = 10.0
STARTS_AT_ONCE = 2 * (os.cpu_count() or 1)  # workers between spawn and Hello at one time


class HubRunningError(RuntimeError):
    """Another hub process already serves this ``run_dir``."""


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


# what only a worker's status can tell (null until it reports); decimals are written exact and
# plain by ``fmt`` (``0``, ``0.0000003994``), never ``0E-8``
_REPORTED = (
    "state", "basis_bps", "book_age_ms", "spot_position", "perp_position", "unhedged_qty",
    "unhedged_age_ms", "working_orders", "orders", "fills", "realized_pnl", "unrealized_pnl",
    "fees", "funding", "risk_reason", "blocked", "updated_at",
)  # fmt: skip


def worker_side(s: ipc.Status) -> dict[str, Any]:
    """A status as its fields of the view: converted once when it arrives, not on every read
    of the API, the page, the metrics and the CLI."""
    return {
        "mode": s.mode,
        "state": s.state,
        "basis_bps": float(s.basis_bps) if s.basis_bps is not None else None,
        "book_age_ms": s.book_age_ms,
        "spot_position": fmt(s.spot_position),
        "perp_position": fmt(s.perp_position),
        "unhedged_qty": fmt(s.unhedged_qty),
        "unhedged_age_ms": s.unhedged_age_ms,
        "working_orders": s.working_orders,
        "orders": s.orders,
        "fills": s.fills,
        "realized_pnl": fmt(s.realized_pnl),
        "unrealized_pnl": fmt(s.unrealized_pnl),
        "fees": fmt(s.fees),
        "funding": fmt(s.funding),
        "risk_blocked": s.risk_blocked is not None,
        "risk_reason": s.risk_blocked,
        "blocked": s.blocked,
        "syncing": s.syncing,
        "updated_at": _iso(s.updated_ms),
    }


class Hub:
    def __init__(
        self, fleet: FleetConfig, *, config_path: Path, starts_at_once: int = STARTS_AT_ONCE
    ) -> None:
        self.fleet = fleet
        self.config_path = config_path.resolve()
        self.run = RunDir(fleet.hub.run_dir)
        hub = fleet.hub
        policy = RowPolicy(
            start_retries=hub.start_retries,
            backoff_max_s=float(hub.backoff_max_s),
            stop_grace_s=float(hub.stop_grace_s),
        )
        self.rows = {cfg.id: Row(cfg, policy) for cfg in fleet.instances}
        sim_config = fleet.instances[0].sim_config if fleet.instances else None
        self.sim = (
            Simulator(self.run, Path(sim_config) if sim_config else None)
            if fleet.venue is Venue.SIM
            else None
        )
        self.account = AccountCheck(
            list(self.rows.values()), default_credentials=None, endpoints=None
        )
        self.wanted: set[str] = set()
        self.starts_at_once = starts_at_once
        self.started_wall = time.time()
        self.ready = False
        self._ipc: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bin = Path(sys.executable).parent

    # ---------------------------------------------------------------- life

    async def open(self) -> None:
        """Take over ``run_dir``: sockets, the simulator, adopted workers, wanted rows."""
        self.run.create()
        other = self.run.read_pid("hub")
        if other is not None and other.pid != os.getpid() and other.alive():
            raise HubRunningError(f"a hub (pid {other.pid}) already runs in {self.run.path}")
        self.run.write_pid("hub", PidRecord.of(os.getpid()))
        with contextlib.suppress(FileNotFoundError):
            self.run.ipc_socket.unlink()  # left by a hub that died; no live hub owns it
        self._ipc = await asyncio.start_unix_server(
            self._worker_connected, str(self.run.ipc_socket)
        )
        os.chmod(self.run.ipc_socket, 0o600)
        if self.sim is not None:
            await self.sim.ensure()
            self._tasks.append(asyncio.create_task(self.sim.watch()))
            endpoints = msgspec.convert(self.sim.endpoints, Endpoints)
            self.account = AccountCheck(
                list(self.rows.values()),
                default_credentials=ApiCredentials(*SIM_CREDENTIALS),
                endpoints=endpoints,
            )
        self._tasks.append(asyncio.create_task(self.account.run()))
        now = time.monotonic()
        for row in self.rows.values():
            record = self.run.read_pid(row.id)
            if record is not None and record.alive():
                row.adopted(Proc(record, None, self.run.log(row.id)), now)
            elif record is not None:
                self.run.forget_pid(row.id, record)
        self.wanted = self.run.read_wanted() & set(self.rows)
        self.start(sorted(self.wanted))
        self._tasks.append(asyncio.create_task(self._supervise()))
        self.ready = True

    async def close(self, *, stop_fleet: bool) -> None:
        """With ``stop_fleet`` every worker is stopped, then the simulator; otherwise they
        keep running for the next hub to adopt."""
        self.ready = False
        if stop_fleet:
            self.stop(list(self.rows), remember=False)
            grace = max(row.policy.stop_grace_s for row in self.rows.values()) if self.rows else 0
            deadline = time.monotonic() + grace + 5
            while any(row.alive for row in self.rows.values()) and time.monotonic() < deadline:
                self._observe(time.monotonic())
                await asyncio.sleep(TICK_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if stop_fleet and self.sim is not None:
            await self.sim.stop()
        if self._ipc is not None:
            self._ipc.close()
            with contextlib.suppress(FileNotFoundError):
                self.run.ipc_socket.unlink()

    def forget(self) -> None:
        """The last act of a hub process: the CLI waits for this record to go."""
        self.run.forget_pid("hub", self.run.read_pid("hub"))

    # ---------------------------------------------------------------- operator actions

    def _known(self, ids: list[str], notes: list[str]) -> Iterator[Row]:
        for instance in ids:
            row = self.rows.get(instance)
            if row is None:
                notes.append(f"{instance}: no such instance")
            else:
                yield row

    def start(self, ids: list[str]) -> list[str]:
        """Start these rows (unknown ids are reported, running ones left alone)."""
        notes: list[str] = []
        now = time.monotonic()
        for row in self._known(ids, notes):
            self.wanted.add(row.id)
            if row.alive or row.queued:
                notes.append(f"{row.id}: already {row.state.value}")
                continue
            row.reset_failures()
            row.queue()
            notes.append(f"{row.id}: starting")
        self.run.write_wanted(self.wanted)
        self._start_queued(now)
        return notes

    def stop(self, ids: list[str], *, remember: bool = True) -> list[str]:
        notes: list[str] = []
        now = time.monotonic()
        for row in self._known(ids, notes):
            self.wanted.discard(row.id)
            row.stop(now)
            notes.append(f"{row.id}: {row.state.value}")
        if remember:
            self.run.write_wanted(self.wanted)
        return notes

    def command(self, instance: str, command: ipc.Down) -> str | None:
        """Send a command to a running worker; the reason when it cannot be sent."""
        row = self.rows.get(instance)
        if row is None:
            return f"{instance}: no such instance"
        if not row.send(command):
            return f"{instance}: the worker is not connected ({row.state.value})"
        return None

    # ---------------------------------------------------------------- supervision

    def _spawn(self, row: Row, now: float) -> None:
        env = dict(os.environ)
        env["ARBHUB_HUB_SOCKET"] = str(self.run.ipc_socket)
        if self.sim is not None and self.sim.url is not None:
            env["ARBHUB_ENDPOINTS"] = json.dumps(self.sim.endpoints)
        argv = [str(self._bin / "spot-future-arb"), "--config", str(self.config_path)]
        argv += ["--instance", row.id]
        proc = spawn(argv, log=self.run.log(row.id), env=env, cwd=self.config_path.parent)
        self.run.write_pid(row.id, proc.record)
        row.started(proc, now)

    def _observe(self, now: float) -> None:
        for row in self.rows.values():
            if row.proc is not None:
                done, code = row.proc.exited()
                if done:
                    self.run.forget_pid(row.id, row.proc.record)
                    row.exited(code, now)
            row.tick(now)
            if row.state is ProcessState.BACKOFF and now >= row.retry_at:
                if row.id in self.wanted:
                    row.restarts += 1
                    row.queue()
                else:
                    row.state = ProcessState.STOPPED
        self._start_queued(now)

    def _start_queued(self, now: float) -> None:
        """Spawn queued rows while fewer than ``starts_at_once`` are starting: a whole fleet
        starting at once would starve every worker's start-up (and the venue's patience)."""
        rows = self.rows.values()
        starting = sum(1 for r in rows if r.state is ProcessState.STARTING and r.alive)
        for row in rows:
            if starting >= self.starts_at_once:
                return
            if row.queued:
                self._spawn(row, now)
                starting += 1

    async def _supervise(self) -> None:
        last_usage = 0.0
        while True:
            now = time.monotonic()
            self._observe(now)
            if now - last_usage >= USAGE_EVERY_S:
                last_usage = now
                await self._sample_usage()
            await asyncio.sleep(TICK_S)

    async def _sample_usage(self) -> None:
        """CPU and memory per worker, and log rotation, one row at a time with the loop let
        through in between: over 100 rows in one go it held requests and statuses up for tens
        of milliseconds on a busy host. A rotation copies up to 10 MB: in a thread."""
        for row in list(self.rows.values()):
            usage = row.proc.usage() if row.proc is not None else None
            row.cpu_percent, row.rss_bytes = usage if usage else (None, None)
            log = self.run.log(row.id)
            if log_too_big(log):
                await asyncio.to_thread(rotate_log, log)
            await asyncio.sleep(0)

    # ---------------------------------------------------------------- IPC

    async def _worker_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        row: Row | None = None

        def send(command: ipc.Down) -> bool:
            if writer.is_closing():
                return False
            writer.write(ipc.encode(command))
            return True

        try:
            frame = await asyncio.wait_for(ipc.read_frame(reader), HELLO_TIMEOUT_S)
            hello = ipc.decode_up(frame) if frame is not None else None
            if not isinstance(hello, ipc.Hello) or hello.instance not in self.rows:
                return  # not a worker of this fleet
            row = self.rows[hello.instance]
            now = time.monotonic()
            if row.proc is None or row.proc.pid != hello.pid:
                # a worker the hub did not start (by hand, or its pid file was lost): it
                # holds the instance lock, so it is the one to supervise
                with contextlib.suppress(psutil.Error):
                    record = PidRecord.of(hello.pid)
                    row.adopted(Proc(record, None, self.run.log(row.id)), now)
                    self.run.write_pid(row.id, record)
            row.said_hello(hello, send, now)
            while (frame := await ipc.read_frame(reader)) is not None:
                message = ipc.decode_up(frame)
                if isinstance(message, ipc.Status):
                    row.reported(message, time.monotonic(), worker_side(message))
        except (ipc.ProtocolError, OSError, TimeoutError):
            return  # a confused or vanished peer: dropped (finally); a worker reconnects
        finally:
            if row is not None:
                row.disconnected(send)
            writer.close()

    # ---------------------------------------------------------------- views

    def view(self, row: Row, now: float) -> dict[str, Any]:
        """One row as ``/api/instances`` and ``hub status --json`` show it (§8)."""
        cfg = row.cfg
        view: dict[str, Any] = {
            "id": row.id,
            "spot_symbol": cfg.spot_symbol,
            "perp_symbol": cfg.future_symbol,
            "mode": cfg.mode.value,
            "process_state": row.state.value,
            "stale": row.stale(now),
            "pid": row.proc.pid if row.proc is not None else None,
            "uptime_s": self._uptime_s(row),
            "restarts": row.restarts,
            "exit_code": row.exit_code,
            "cpu_percent": row.cpu_percent,
            "rss_bytes": row.rss_bytes,
            **dict.fromkeys(_REPORTED),
            "risk_blocked": False,
            "syncing": False,
            "error": row.error,
        }
        s = row.status
        if s is None:
            return view  # nothing reported yet: the worker's side is unknown
        view.update(row.shown)
        view["error"] = row.error or s.error
        return view

    def views(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [self.view(row, now) for row in self.rows.values()]

    def view_json(self, row: Row, now: float) -> bytes:
        """``view`` as JSON, encoded again only when something it shows has changed. Every open
        ``/arb`` page, the CLI and Prometheus poll the API; at 100 rows, building and encoding
        every row for every request was most of the hub's time, and a status changes a row
        about once a second."""
        # everything ``view`` reads that can change (``shown`` is a new dict with every status)
        key = (
            row.state,
            row.stale(now),
            row.proc,
            self._uptime_s(row),
            row.restarts,
            row.exit_code,
            row.cpu_percent,
            row.rss_bytes,
            row.error,
            row.shown,
        )
        cached = row.encoded
        if cached is None or cached[0] != key:
            cached = row.encoded = (key, msgspec.json.encode(self.view(row, now)))
        return cached[1]

    def views_json(self) -> bytes:
        """``views`` as a JSON array, from the rows' cached encodings."""
        now = time.monotonic()
        return b"[" + b",".join(self.view_json(row, now) for row in self.rows.values()) + b"]"

    @staticmethod
    def _uptime_s(row: Row) -> int | None:
        return int(time.time() - row.started_wall) if row.alive else None

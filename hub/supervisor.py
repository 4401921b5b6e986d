"""One row per instance: its worker process, the supervisord-style process state, and the
restart and stop policy of ARCHITECTURE §8.

Process states: ``STOPPED`` (not running, not wanted) → ``STARTING`` (waiting for a start
slot, or spawned with no ``Hello`` yet) → ``RUNNING`` (its ``Hello`` arrived) → ``STOPPING`` →
``STOPPED``. An exit nobody asked
for goes to ``BACKOFF`` and is restarted after 1 s × 2ⁿ (capped at ``backoff_max_s``); after
more than ``start_retries`` quick failures in a row, or at once on exit code 2, 3 or 4
(configuration, locked, snapshot), the row is ``FATAL`` and stays down until the operator
starts it again. A clean exit 0 that nobody asked for is ``EXITED``. A process found alive
after a hub restart is ``UNKNOWN`` until its ``Hello``. Stopping sends IPC ``Stop``, then
SIGTERM, then SIGKILL to the process group once ``stop_grace_s`` has passed.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hub.procs import Proc
from worker import ipc
from worker.core.config import InstanceConfig

__all__ = ["EXIT_MEANING", "ProcessState", "Row", "RowPolicy"]


class ProcessState(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"
    UNKNOWN = "UNKNOWN"


EXIT_MEANING = {
    0: "stopped cleanly",
    1: "crashed",
    2: "configuration error (see the log)",
    3: "the instance is locked by another process",
    4: "the snapshot is unreadable or from a newer version",
}
_FATAL_CODES = frozenset({2, 3, 4})
QUICK_S = 10.0  # an exit sooner than this after the start counts as a failure to start
TERM_AFTER_S = 5.0  # IPC Stop first; SIGTERM (the same clean stop) if it has not worked by then
STALE_AFTER_S = 3.0  # three status intervals
BASIS_POINTS = 900  # the row page's chart: 15 minutes of once-a-second statuses


@dataclass(frozen=True)
class RowPolicy:
    start_retries: int
    backoff_max_s: float
    stop_grace_s: float


@dataclass
class Row:
    cfg: InstanceConfig
    policy: RowPolicy
    state: ProcessState = ProcessState.STOPPED
    proc: Proc | None = None
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0
    restarts: int = 0
    quick_failures: int = 0
    retry_at: float = 0.0
    exit_code: int | None = None
    error: str | None = None  # the process side (the trading side is in status.error)
    stop_at: float = 0.0
    term_sent: bool = False
    hello: ipc.Hello | None = None
    status: ipc.Status | None = None
    shown: dict[str, Any] = field(default_factory=dict)  # the status as the views show it
    status_at: float = 0.0
    link: Callable[[ipc.Down], bool] | None = None  # sends a command while connected
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    basis: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=BASIS_POINTS))
    encoded: tuple[tuple[Any, ...], bytes] | None = None  # the view as JSON, and what it showed

    def reported(self, status: ipc.Status, now: float, shown: dict[str, Any]) -> None:
        self.status = status
        self.shown = shown
        self.status_at = now
        if status.basis_bps is not None:
            self.basis.append((status.updated_ms, float(status.basis_bps)))

    @property
    def id(self) -> str:
        return self.cfg.id

    @property
    def alive(self) -> bool:
        return self.proc is not None

    def stale(self, now: float) -> bool:
        return self.state is ProcessState.RUNNING and now - self.status_at > STALE_AFTER_S

    # ---------------------------------------------------------------- transitions

    def queue(self) -> None:
        """Wanted running; it is spawned when a start slot is free (see ``Hub``)."""
        self.state = ProcessState.STARTING
        self.error = None

    @property
    def queued(self) -> bool:
        return self.state is ProcessState.STARTING and self.proc is None

    def started(self, proc: Proc, now: float) -> None:
        self.proc = proc
        self.state = ProcessState.STARTING
        self.started_at = now
        self.started_wall = time.time()
        self.exit_code = None
        self.error = None
        self.term_sent = False
        self.hello = None

    def adopted(self, proc: Proc, now: float) -> None:
        """Found alive after a hub restart: it counts as running once it says hello."""
        self.proc = proc
        self.state = ProcessState.UNKNOWN
        self.started_at = now - QUICK_S  # its start was long ago: an exit is not "quick"
        self.started_wall = proc.record.create_time

    def said_hello(self, hello: ipc.Hello, send: Callable[[ipc.Down], bool], now: float) -> None:
        self.hello = hello
        self.link = send
        self.status_at = now
        if self.state in (ProcessState.STARTING, ProcessState.UNKNOWN):
            self.state = ProcessState.RUNNING

    def disconnected(self, send: Callable[[ipc.Down], bool]) -> None:
        if self.link is send:
            self.link = None

    def stop(self, now: float) -> None:
        """Ask the worker to stop (it cancels its entry, never market-unwinds, exits 0)."""
        if self.proc is None:
            if self.state in (ProcessState.BACKOFF, ProcessState.STARTING):
                self.state = ProcessState.STOPPED
            return
        if self.state is ProcessState.STOPPING:
            return
        self.state = ProcessState.STOPPING
        self.stop_at = now
        self.term_sent = False
        if not self.send(ipc.Stop()):
            self._term()

    def send(self, command: ipc.Down) -> bool:
        return self.link is not None and self.link(command)

    def _term(self) -> None:
        assert self.proc is not None
        self.proc.signal_group(signal.SIGTERM)
        self.term_sent = True

    def exited(self, code: int | None, now: float) -> None:
        """The process is gone; decide what comes next."""
        self.proc = None
        self.link = None
        self.exit_code = code
        meaning = EXIT_MEANING.get(code, "") if code is not None else ""
        if self.state is ProcessState.STOPPING:
            self.state = ProcessState.STOPPED
            if code not in (0, None):
                self.error = f"exit code {code} while stopping {meaning}".rstrip()
            return
        if code in _FATAL_CODES:
            self.state = ProcessState.FATAL
            self.error = f"exit code {code}: {meaning}"
            return
        if code == 0:
            self.state = ProcessState.EXITED
            return
        quick = self.state is ProcessState.STARTING or now - self.started_at < QUICK_S
        self.quick_failures = self.quick_failures + 1 if quick else 1
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if code is None:
            how = "exited (exit code unknown)"
        if self.quick_failures > self.policy.start_retries:
            self.state = ProcessState.FATAL
            self.error = f"{how}; gave up after {self.quick_failures - 1} quick restarts"
            return
        self.state = ProcessState.BACKOFF
        delay = min(2.0 ** (self.quick_failures - 1), self.policy.backoff_max_s)
        self.retry_at = now + delay
        self.error = f"{how}; restarting in {delay:g} s"

    def tick(self, now: float) -> None:
        """Stop escalation; the caller restarts a row whose ``retry_at`` has come."""
        if self.state is ProcessState.STOPPING and self.proc is not None:
            if now - self.stop_at >= self.policy.stop_grace_s:
                self.proc.signal_group(signal.SIGKILL)
            elif not self.term_sent and now - self.stop_at >= TERM_AFTER_S:
                self._term()

    def reset_failures(self) -> None:
        """The operator starts a row by hand: it gets a fresh set of retries."""
        self.quick_failures = 0

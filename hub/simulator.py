"""The embedded exchange simulator under the hub (``venue: sim``, ARCHITECTURE §1).

Started detached like a worker, with its state journal in ``<run_dir>/sim-state`` so a
restarted fleet finds the exchange as its snapshots left it, and adopted (pid record + a
live answer on its URL) after a hub restart. If it dies while the hub runs, it is restarted
on the same port, so the workers' endpoints stay right and they simply reconnect.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from hub.files import PidRecord, RunDir
from hub.procs import Proc, spawn

__all__ = ["SimError", "Simulator", "endpoints_for"]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SEED = 1


def endpoints_for(url: str) -> dict[str, str]:
    """The ``endpoints`` of a simulator at ``url`` (``http://127.0.0.1:PORT``)."""
    ws = url.replace("http://", "ws://", 1)
    return {"rest": url, "ws_public": f"{ws}/v5/public", "ws_private": f"{ws}/v5/private"}


class SimError(RuntimeError):
    """The simulator could not be started (its log says why)."""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v5/market/time", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


class Simulator:
    def __init__(self, run: RunDir, config: Path | None) -> None:
        self.run = run
        self.config = config
        self.proc: Proc | None = None
        self.url: str | None = None
        self.restarts = 0

    @property
    def endpoints(self) -> dict[str, str]:
        """What the workers get in ``ARBHUB_ENDPOINTS``."""
        assert self.url is not None
        return endpoints_for(self.url)

    async def ensure(self) -> str:
        """Adopt the running simulator or start one; returns its base URL."""
        record = self.run.read_pid("sim")
        url = record.url if record is not None and record.alive() else None
        if record is not None and url and await asyncio.to_thread(_answers, url):
            self.proc = Proc(record, None, self.run.sim_log)
            self.url = url
            return url
        port = 0
        if record is not None and record.url:
            port = int(record.url.rsplit(":", 1)[1])  # keep the workers' endpoints valid
        return await self._start(port)

    async def _start(self, port: int) -> str:
        argv = [str(Path(sys.executable).parent / "exchange-sim"), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--seed", str(SEED), "--state", str(self.run.sim_state)]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        log = self.run.sim_log
        offset = log.stat().st_size if log.exists() else 0
        proc = spawn(argv, log=log, env=os.environ, cwd=self.run.path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            url = _listening(log, offset)
            if url is not None:
                self.proc = Proc(PidRecord.of(proc.pid, url), proc.popen, log)
                self.url = url
                self.run.write_pid("sim", self.proc.record)
                return url
            done, code = proc.exited()
            if done:
                raise SimError(f"exchange-sim exited with code {code}; see {log}")
            await asyncio.sleep(0.05)
        proc.signal_group(signal.SIGKILL)
        raise SimError(f"exchange-sim did not start within {START_TIMEOUT_S:g} s; see {log}")

    async def watch(self) -> None:
        """Restart the simulator on its port whenever it dies (backoff up to 30 s)."""
        delay = 1.0
        while True:
            await asyncio.sleep(1.0)
            if self.proc is None or not self.proc.exited()[0]:
                continue
            self.proc = None
            try:
                await self.ensure()
                self.restarts += 1
                delay = 1.0
            except SimError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; forgets the pid record."""
        proc = self.proc
        if proc is None:
            return
        proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not proc.exited()[0]:
            if time.monotonic() > deadline:
                proc.signal_group(signal.SIGKILL)
                deadline = float("inf")
            await asyncio.sleep(0.05)
        self.run.forget_pid("sim", proc.record)
        self.proc = None


def _listening(log: Path, offset: int) -> str | None:
    """The URL from the simulator's ``listening on http://…`` line written after ``offset``."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("listening on http://"):
            return line.removeprefix("listening on ").strip()
    return None

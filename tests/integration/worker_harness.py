"""Real ``spot-future-arb`` processes against a real scripted ``exchange-sim``.

``WorkerProc`` starts the worker's console script with a config written for the test, keeps
its JSON-lines log, and reads its snapshot; ``HubStub`` is a Unix-socket peer speaking the
real IPC protocol (``worker.ipc``) in a background thread, standing in for the hub, which is
not part of this tier. ``Market`` sets the simulator's books for a basis in bps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.conftest import WAIT_S, Json, Sim
from worker import ipc
from worker.core import snapshot
from worker.core.model import CoreState

D = Decimal


def worker_command() -> list[str]:
    beside = Path(sys.executable).with_name("spot-future-arb")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("spot-future-arb")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def write_config(
    folder: Path,
    sim: Sim,
    *,
    instances: list[Json] | None = None,
    **root: Any,
) -> Path:
    """A fleet config for the simulator at ``sim``; ``root`` overrides shared parameters."""
    doc: Json = {
        "venue": "sim",
        "execute": True,
        "endpoints": {
            "rest": sim.url,
            "ws_public": sim.ws_url("/v5/public"),
            "ws_private": sim.ws_url("/v5/private"),
        },
        "entry_threshold_bps": 10,
        "exit_threshold_bps": 2,
        "emergency_unwind_bps": 60,
        "chase_interval_ms": 200,
        "chase_max_slip_bps": 3,
        "max_unhedged_ms": 3000,
        "stale_book_ms": 5000,
        "ws_ping_interval_s": 20,
        "hub": {"run_dir": "run"},
        "instances": instances
        or [
            {
                "id": "btc",
                "spot_symbol": "BTCUSDT",
                "future_symbol": "BTCUSDT",
                "order_qty": "0.01",
                "state_path": "state/btc.json",
            }
        ],
    }
    doc.update(root)
    path = folder / "config.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


class WorkerProc:
    """One worker process; its stdout (JSON lines) goes to a file, never a pipe."""

    def __init__(
        self, config: Path, instance: str = "btc", *, env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.instance = instance
        self.folder = config.parent
        self.log_path = self.folder / f"{instance}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*worker_command(), "--config", str(self.config), "--instance", self.instance],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=self.env,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # --- what it wrote --------------------------------------------------------------------

    def lines(self) -> list[Json]:
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                out.append({"event": "<not json>", "raw": raw})
        return out

    def events(self, name: str) -> list[Json]:
        return [line for line in self.lines() if line.get("event") == name]

    def mark(self) -> int:
        """The number of log lines so far: ``wait_log(..., after=mark)`` skips them."""
        return len(self.lines())

    def wait_log(
        self, predicate: Callable[[Json], bool], timeout: float = WAIT_S, *, after: int = 0
    ) -> Json:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines()[after:]:
                if predicate(line):
                    return line
            self.assert_alive()
            time.sleep(0.05)
        raise AssertionError(f"no such log line within {timeout} s:\n{self.tail()}")

    def wait_event(
        self, name: str, timeout: float = WAIT_S, *, after: int = 0, **fields: Any
    ) -> Json:
        return self.wait_log(
            lambda line: (
                line.get("event") == name and all(line.get(k) == v for k, v in fields.items())
            ),
            timeout,
            after=after,
        )

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def state(self) -> CoreState:
        path = self.folder / "state" / f"{self.instance}.json"
        staged = path.with_name(path.name + ".staged")
        best = None
        for candidate in (path, staged):
            with contextlib.suppress(OSError, snapshot.SnapshotError):
                found = snapshot.decode_with_serial(candidate.read_bytes())
                if best is None or found[1] > best[1]:
                    best = found
        assert best is not None, "no snapshot"
        return best[0]

    def wait_state(self, predicate: Callable[[CoreState], bool], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                if predicate(self.state()):
                    return
            self.assert_alive()
            time.sleep(0.05)
        raise AssertionError(f"snapshot never matched within {timeout} s:\n{self.tail()}")

    # --- life -------------------------------------------------------------------------------

    def assert_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        assert code is None, f"worker exited with {code}:\n{self.tail()}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout} s:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = WAIT_S) -> int:
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def running_worker(config: Path, instance: str = "btc", **kwargs: Any) -> Iterator[WorkerProc]:
    worker = WorkerProc(config, instance, **kwargs)
    try:
        yield worker
    finally:
        worker.close()


class HubStub:
    """The hub's IPC socket, real protocol, run in a thread: collects what workers send and
    sends them commands."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[ipc.Up] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(WAIT_S)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_unix_server(self._serve, path=str(self.path))
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ipc.ProtocolError, OSError):
            while (frame := await ipc.read_frame(reader)) is not None:
                self.received.append(ipc.decode_up(frame))

    def send(self, command: ipc.Down) -> None:
        def write() -> None:
            for writer in self._writers:
                if not writer.is_closing():
                    writer.write(ipc.encode(command))

        self._loop.call_soon_threadsafe(write)

    def statuses(self) -> list[ipc.Status]:
        return [m for m in list(self.received) if isinstance(m, ipc.Status)]

    def latest(self) -> ipc.Status | None:
        found = self.statuses()
        return found[-1] if found else None

    def wait_status(
        self, predicate: Callable[[ipc.Status], bool], timeout: float = WAIT_S
    ) -> ipc.Status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in reversed(self.statuses()):
                if predicate(status):
                    return status
            time.sleep(0.05)
        raise AssertionError(f"no status matched; latest {self.latest()}")

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class Market:
    """Scripted books for one spot/perp pair: ``at(spot_bid, basis_bps)`` places both."""

    def __init__(self, sim: Sim, symbol: str = "BTCUSDT", tick: str = "0.1") -> None:
        self.sim = sim
        self.symbol = symbol
        self.tick = D(tick)
        self.depth = "5"

    def spot(self, bid: Decimal | str, ask: Decimal | str | None = None) -> None:
        bid = D(bid)
        ask = D(ask) if ask is not None else bid + self.tick
        self.sim.book("spot", self.symbol, [(str(bid), self.depth)], [(str(ask), self.depth)])

    def perp(self, bid: Decimal | str, ask: Decimal | str | None = None) -> None:
        bid = D(bid)
        ask = D(ask) if ask is not None else bid + self.tick
        self.sim.book("linear", self.symbol, [(str(bid), self.depth)], [(str(ask), self.depth)])

    def at(self, spot_bid: Decimal | str, basis_bps: Decimal | str) -> tuple[Decimal, Decimal]:
        """Spot ``bid/bid+tick``; perp bid so that the mid basis is about ``basis_bps``."""
        bid = D(spot_bid)
        perp_bid = (bid * (1 + D(basis_bps) / 10_000)).quantize(self.tick)
        self.spot(bid)
        self.perp(perp_bid)
        return bid, perp_bid


def own_orders(sim: Sim, prefix: str = "btc-") -> list[Json]:
    return [o for o in sim.orders() if o["orderLinkId"].startswith(prefix)]


def wait_for(what: Callable[[], Any], timeout: float = WAIT_S, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = what()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{message} not met within {timeout} s")

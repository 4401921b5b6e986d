"""Real ``spot-future-arb`` processes against a real scripted ``exchange-sim``.

``WorkerProc`` starts the worker's console script with a config written for the test, keeps
its JSON-lines log, and reads its snapshot; ``HubStub`` is a Unix-socket peer speaking the
real IPC protocol (``worker.ipc``) in a background thread, standing in for the hub, which is
not part of this tier. ``Market`` sets the simulator's books for a basis in bps.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import http.server
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import WAIT_S, Json, Sim
from worker import ipc
from worker.core import snapshot
from worker.core.model import CoreState
from worker.run import BUDGET_BURST, BUDGET_RATE_PER_S, BUDGET_RESERVE
from worker.store import SnapshotStore
from worker.venues.budget import AccountBudget

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
        """The newest state the worker wrote (durable snapshot or staged copy)."""
        path = self.folder / "state" / f"{self.instance}.json"
        try:
            found = SnapshotStore(path).load()
        except snapshot.SnapshotError as exc:  # caught mid-write: the caller polls again
            raise AssertionError(str(exc)) from None
        assert found is not None, "no snapshot"
        return found

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


# --- fault-test helpers (tests/integration/test_worker_faults.py) -------------------------


def never(
    what: Callable[[], Any], duration: float, message: str = "condition", every: float = 0.05
) -> None:
    """Fail if ``what()`` becomes true at any poll within ``duration`` seconds (a negative
    check over a window: something must *not* happen)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        found = what()
        if found:
            raise AssertionError(f"{message}: {found!r}")
        time.sleep(every)


def sends(worker: WorkerProc, request: str | None = None, link_id: str | None = None) -> list[Json]:
    """The worker's ``send`` log lines (info level: places and cancels), optionally filtered."""
    return [
        line
        for line in worker.events("send")
        if (request is None or line.get("request") == request)
        and (link_id is None or line.get("link_id") == link_id)
    ]


def log_ms(line: Json) -> int:
    """A log line's ``ts`` (ISO 8601 UTC, milliseconds) as epoch milliseconds."""
    stamp = str(line["ts"]).replace("Z", "+00:00")
    return int(dt.datetime.fromisoformat(stamp).timestamp() * 1000)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Seen:
    """One REST request as the recording proxy passed it to the simulator."""

    sent_ms: int
    method: str
    path: str
    params: Json
    status: int | None = None  # None: the simulator never answered (lose_reply)
    ret_code: int | None = None
    reset_ms: int | None = None  # X-Bapi-Limit-Reset-Timestamp
    done_ms: int | None = None


_HOP_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


class RestRecorder:
    """A transparent HTTP proxy in front of the simulator's REST API that records every
    request (time, path, parameters, HTTP status, ``retCode``, rate-limit reset): what the
    exchange saw, in order. The worker's ``endpoints.rest`` points here; WebSockets go to the
    simulator directly. Bodies and query strings pass unchanged, so signatures stay valid."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        # a little longer than the worker's own 5 s: an unanswered request (lose_reply) is
        # given up here soon after the worker gave up, which lets the simulator stop promptly
        self._upstream = httpx.Client(base_url=sim.url, timeout=6.5)
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                recorder._forward(self)

            def do_POST(self) -> None:
                recorder._forward(self)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path, _, query = handler.path.partition("?")
        params: Json = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if body:
            with contextlib.suppress(ValueError):
                decoded = json.loads(body)
                if isinstance(decoded, dict):
                    params = decoded
        entry = Seen(sent_ms=wall_ms(), method=handler.command, path=path, params=params)
        with self._lock:
            self.seen.append(entry)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            reply = self._upstream.request(
                handler.command, handler.path, content=body or None, headers=headers
            )
        except httpx.HTTPError:
            entry.done_ms = wall_ms()
            handler.close_connection = True  # as the simulator did: no answer at all
            return
        entry.status, entry.done_ms = reply.status_code, wall_ms()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry.ret_code = int(reply.json()["retCode"])
        with contextlib.suppress(KeyError, ValueError):
            entry.reset_ms = int(reply.headers["x-bapi-limit-reset-timestamp"])
        try:
            handler.send_response(reply.status_code)
            for key, value in reply.headers.items():
                if key.lower() not in _HOP_HEADERS and key.lower() != "content-encoding":
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(reply.content)))
            handler.end_headers()
            handler.wfile.write(reply.content)
        except OSError:  # the worker gave up on this request (or stopped) meanwhile
            handler.close_connection = True

    def requests(self, path: str | None = None, *, since_ms: int = 0, **params: str) -> list[Seen]:
        """Recorded requests (oldest first) to ``path`` whose parameters include ``params``."""
        with self._lock:
            found = list(self.seen)
        return [
            s
            for s in found
            if s.sent_ms >= since_ms
            and (path is None or s.path == path)
            and all(str(s.params.get(k)) == v for k, v in params.items())
        ]

    def settle(self, timeout: float = WAIT_S) -> list[Seen]:
        """Every request recorded so far, once each has its outcome (a reply reaches the
        simulator's order book before it reaches this record)."""
        wait_for(
            lambda: all(s.done_ms is not None for s in self.requests()),
            timeout,
            "every recorded request answered",
        )
        return self.requests()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


@contextlib.contextmanager
def recording_rest(sim: Sim) -> Iterator[RestRecorder]:
    recorder = RestRecorder(sim)
    try:
        yield recorder
    finally:
        recorder.close()


def endpoints(sim: Sim, rest: str | None = None) -> Json:
    """The ``endpoints`` config key for ``sim``, with REST optionally through ``rest``."""
    return {
        "rest": rest or sim.url,
        "ws_public": sim.ws_url("/v5/public"),
        "ws_private": sim.ws_url("/v5/private"),
    }


def budget_path(config: Path, api_key: str) -> Path:
    """The account's shared rate-budget file (``<hub.run_dir>/budget/…``) for ``config``
    written by ``write_config`` (its ``run_dir`` is ``run`` beside the config)."""
    run_dir = Path(json.loads(config.read_text())["hub"]["run_dir"])
    if not run_dir.is_absolute():
        run_dir = config.parent / run_dir
    budget = AccountBudget(
        run_dir / "budget",
        api_key,
        rate_per_s=BUDGET_RATE_PER_S,
        burst=BUDGET_BURST,
        reserve=BUDGET_RESERVE,
    )
    return budget.path


class BudgetPin:
    """Holds the shared budget file at ``tokens`` (rewritten under the same ``flock`` the
    workers take, every few milliseconds): a shortage that lasts until ``release()``.
    Between 0 and the budget's reserve, only risk-reducing requests may spend."""

    _STATE = struct.Struct("<dd")

    def __init__(self, path: Path, tokens: float, every_s: float = 0.005) -> None:
        self.path = path
        self.tokens = tokens
        self.every_s = every_s
        self._stop = threading.Event()
        self._write()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> tuple[float, float]:
        raw = self.path.read_bytes()
        tokens, last = self._STATE.unpack(raw[: self._STATE.size])
        return float(tokens), float(last)

    def _write(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, self._STATE.pack(self.tokens, time.time()), 0)
        finally:
            os.close(fd)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._write()

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def open_order(sim: Sim, category: str, side: str) -> Json:
    """The one open order of the worker (prefix ``btc-``) on that category and side."""

    def find() -> Json | None:
        found = [
            o
            for o in own_orders(sim)
            if o["category"] == category and o["side"] == side and o["orderStatus"] == "New"
        ]
        return found[0] if len(found) == 1 else None

    result: Json = wait_for(find, message=f"one open {category} {side} order")
    return result


def perp_position(sim: Sim, symbol: str = "BTCUSDT") -> Decimal:
    """The simulator account's signed perp position."""
    for pos in sim.account()["positions"]:
        if pos["symbol"] == symbol:
            size = D(pos["size"])
            return size if pos["side"] == "Buy" else -size
    return D(0)


def spot_balance(sim: Sim, coin: str = "BTC") -> Decimal:
    return D(sim.account()["balances"][coin]["walletBalance"])


def into_race(worker: WorkerProc, sim: Sim, market: Market) -> tuple[Json, Json]:
    """A long entry at 50,000 filled by a trade through it: both exits resting.
    Returns (perp hedge, spot exit) as the simulator lists them."""
    market.at("50000", "15")
    open_order(sim, "spot", "Buy")
    sim.trade("spot", "BTCUSDT", "Sell", "50000", "0.52")  # empties the bid: set it again
    market.spot("50000", "50000.1")
    hedge = open_order(sim, "linear", "Sell")
    spot_exit = open_order(sim, "spot", "Sell")
    worker.wait_state(lambda s: s.phase.value == "race_exit" and len(s.orders) == 2)
    return hedge, spot_exit


def market_orders(sim: Sim, category: str, side: str) -> list[Json]:
    """The worker's market orders on that category and side."""
    return [
        o
        for o in own_orders(sim)
        if o["category"] == category and o["orderType"] == "Market" and o["side"] == side
    ]

"""Integration fixtures: the real ``exchange-sim`` process driven by the real pybit client.

Every xdist worker is its own process, so the session-scoped ``sim`` below is one simulator
per worker (started ``--scripted --seed 7`` with a state file in the worker's tmp dir).
Tests that share it use their own orderLinkId prefix (``links``), set the books they need
with ``/sim/book`` first and cancel their orders afterwards (``clean_orders``). Tests that
inject faults or restart the process start simulators of their own with ``start_sim``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import websockets.sync.client as ws_client
from pybit import unified_trading
from websockets.exceptions import ConnectionClosed

API_KEY = "arbhub-sim-key"
API_SECRET = "arbhub-sim-secret"
SEED = 7
WAIT_S = 15.0  # the longest any helper waits for something to happen

Json = dict[str, Any]
Predicate = Callable[[Json], bool]


# --- the simulator process ---------------------------------------------------------------


def _sim_command() -> list[str]:
    beside = Path(sys.executable).with_name("exchange-sim")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("exchange-sim")
    if found:
        return [found]
    return [sys.executable, "-m", "exchange_sim.cli"]


def sim_argv(
    state: Path | None, *, seed: int = SEED, scripted: bool = True, config: Path | None = None
) -> list[str]:
    argv = [*_sim_command(), "--host", "127.0.0.1", "--port", "0", "--seed", str(seed)]
    if config is not None:
        argv += ["--config", str(config)]
    if scripted:
        argv.append("--scripted")
    if state is not None:
        argv += ["--state", str(state)]
    return argv


@dataclass
class Sim:
    """One running simulator and its admin API."""

    proc: subprocess.Popen[str]
    port: int
    state: Path | None
    stderr_path: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=WAIT_S)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    # admin API --------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Json | None = None) -> Json:
        response = self.http.request(method, path, json=body)
        assert response.status_code == 200, f"{method} {path} {body}: {response.text}"
        return cast(Json, response.json())

    def book(
        self, category: str, symbol: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
    ) -> None:
        self.admin(
            "POST",
            "/sim/book",
            {
                "category": category,
                "symbol": symbol,
                "bids": [list(level) for level in bids],
                "asks": [list(level) for level in asks],
            },
        )

    def trade(self, category: str, symbol: str, side: str, price: str, qty: str) -> Json:
        body = {"category": category, "symbol": symbol, "side": side, "price": price, "qty": qty}
        return self.admin("POST", "/sim/trade", body)

    def fault(self, kind: str, **params: Any) -> None:
        self.admin("POST", "/sim/faults", {"kind": kind, **params})

    def adjust(self, **params: Any) -> None:
        self.admin("POST", "/sim/adjust", params)

    def freeze(self) -> None:
        self.admin("POST", "/sim/freeze")

    def unfreeze(self) -> None:
        self.admin("POST", "/sim/unfreeze")

    def orders(self) -> list[Json]:
        return cast(list[Json], self.admin("GET", "/sim/orders")["orders"])

    def order(self, link_id: str) -> Json | None:
        found = [o for o in self.orders() if o["orderLinkId"] == link_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    def accounts(self) -> list[Json]:
        return cast(list[Json], self.admin("GET", "/sim/account")["accounts"])

    def account(self, api_key: str = API_KEY) -> Json:
        for account in self.accounts():
            if account["apiKey"] == api_key:
                return account
        raise AssertionError(f"no account {api_key}")

    # lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """``kill -9``: no shutdown handler runs."""
        self.http.close()
        self.proc.kill()
        self.proc.wait(timeout=10)


def _drain(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_sim(
    state: Path | None, *, seed: int = SEED, scripted: bool = True, config: Path | None = None
) -> Sim:
    """Start ``exchange-sim`` on a free port and wait for its ``listening on`` line."""
    log_dir = state.parent if state is not None else Path(os.environ.get("TMPDIR", "/tmp"))
    stderr_path = log_dir / f"exchange-sim-{uuid.uuid4().hex[:8]}.stderr"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            sim_argv(state, seed=seed, scripted=scripted, config=config),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
    try:
        first = lines.get(timeout=WAIT_S)
    except queue.Empty:
        first = None
    if first is None or not first.startswith("listening on http://"):
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(
            f"exchange-sim did not start (first line {first!r}, exit {proc.returncode}): "
            f"{stderr_path.read_text(errors='replace')}"
        )
    port = int(first.strip().rsplit(":", 1)[1])
    return Sim(proc=proc, port=port, state=state, stderr_path=stderr_path)


@contextlib.contextmanager
def running_sim(state: Path | None, **kwargs: Any) -> Iterator[Sim]:
    sim = start_sim(state, **kwargs)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """The simulator this xdist worker's tests share."""
    with running_sim(tmp_path_factory.mktemp("sim") / "state.jsonl") as shared:
        yield shared


# --- REST: pybit and hand-signed requests --------------------------------------------------


def pybit_http(
    sim: Sim, *, api_key: str = API_KEY, api_secret: str = API_SECRET, **kwargs: Any
) -> Any:
    """A real pybit ``HTTP`` session pointed at the simulator."""
    session = unified_trading.HTTP(testnet=False, api_key=api_key, api_secret=api_secret, **kwargs)
    session.endpoint = sim.url
    return session


@pytest.fixture(scope="session")
def http(sim: Sim) -> Any:
    return pybit_http(sim)


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signed_request(
    sim: Sim,
    method: str,
    path: str,
    params: Json,
    *,
    api_key: str = API_KEY,
    api_secret: str = API_SECRET,
    timestamp: int | None = None,
    recv_window: int = 5000,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """A private request signed exactly as Bybit specifies, without pybit's retries."""
    ts = timestamp if timestamp is not None else int(time.time() * 1000)
    if method == "GET":
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        target = f"{path}?{payload}" if payload else path
        content = None
    else:
        payload = json.dumps(params)
        target = path
        content = payload.encode()
    headers = {
        "Content-Type": "application/json",
        "X-BAPI-API-KEY": api_key,
        "X-BAPI-SIGN": sign(api_secret, f"{ts}{api_key}{recv_window}{payload}"),
        "X-BAPI-SIGN-TYPE": "2",
        "X-BAPI-TIMESTAMP": str(ts),
        "X-BAPI-RECV-WINDOW": str(recv_window),
    }
    c = client if client is not None else sim.http
    return c.request(method, f"{sim.url}{target}", content=content, headers=headers)


def resting_spot_buy(link_id: str) -> Json:
    """A spot limit buy far below the default book: it rests and never trades."""
    return {
        "category": "spot",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "orderType": "Limit",
        "qty": "0.001",
        "price": "30000",
        "orderLinkId": link_id,
    }


def clean_orders(sim: Sim) -> None:
    """Cancel every open order of the default account (tests share the books)."""
    for params in ({"category": "spot"}, {"category": "linear", "settleCoin": "USDT"}):
        for _ in range(5):
            reply = signed_request(sim, "POST", "/v5/order/cancel-all", params).json()
            if reply["retCode"] == 0:
                break
            assert reply["retCode"] == 10006, reply
            time.sleep(0.3)


class Links:
    """orderLinkIds unique to one test: ``links("a") == "<prefix>-a"``."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:12]

    def __call__(self, name: str) -> str:
        return f"{self.prefix}-{name}"


@pytest.fixture
def links() -> Links:
    return Links()


# --- WebSocket: pybit and raw connections -------------------------------------------------


class Collector:
    """Thread-safe sink for messages (pybit callbacks run on its WebSocket thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[tuple[float, Json]] = []

    def __call__(self, message: Json) -> None:
        # pybit hands orderbook/ticker callbacks its live cache: copy before it changes.
        item = (time.time(), copy.deepcopy(message))
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    @property
    def messages(self) -> list[Json]:
        with self._cond:
            return [m for _, m in self._items]

    def timed(self) -> list[tuple[float, Json]]:
        with self._cond:
            return list(self._items)

    def mark(self) -> int:
        """Position to pass as ``start`` to wait only for messages that arrive later."""
        with self._cond:
            return len(self._items)

    def wait_for_timed(
        self, predicate: Predicate, timeout: float = WAIT_S, *, start: int = 0
    ) -> tuple[float, Json]:
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for at, message in self._items[seen:]:
                    if predicate(message):
                        return at, message
                seen = max(seen, len(self._items))
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [m for _, m in self._items[-5:]]
                    raise AssertionError(f"no matching message within {timeout}s; last: {tail}")
                self._cond.wait(left)

    def wait_for(self, predicate: Predicate, timeout: float = WAIT_S, *, start: int = 0) -> Json:
        return self.wait_for_timed(predicate, timeout, start=start)[1]


class PybitSocket:
    """A real pybit ``WebSocket`` (``.ws``) plus a record of the subscribe acks it handled.

    pybit gives no way to know that a subscription is live; a private topic has no first
    snapshot to wait for. The acks (including the re-subscriptions after a reconnect) are
    recorded by wrapping pybit's own ack handler, which still runs unchanged.
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._cond = threading.Condition()
        self._acks: list[str] = []
        original = ws._process_subscription_message

        def track(message: Json) -> None:
            original(message)
            req_id = message.get("req_id")
            if message.get("success") is True and req_id in ws.subscriptions:
                topics = json.loads(ws.subscriptions[req_id])["args"]
                with self._cond:
                    self._acks.extend(topics)
                    self._cond.notify_all()

        ws._process_subscription_message = track

    def ack_count(self) -> int:
        with self._cond:
            return len(self._acks)

    def wait_acked(self, *topics: str, start: int = 0, timeout: float = WAIT_S) -> None:
        """Wait until every topic has been acknowledged (after ack number ``start``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not set(topics) <= set(self._acks[start:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{topics} not acknowledged; acks: {self._acks}")
                self._cond.wait(left)

    def is_connected(self) -> bool:
        return bool(self.ws.is_connected())


PybitWsFactory = Callable[..., PybitSocket]


@pytest.fixture
def pybit_ws(monkeypatch: pytest.MonkeyPatch) -> Iterator[PybitWsFactory]:
    """``open(sim, channel_type)`` → a real pybit ``WebSocket`` connected to ``sim``.

    pybit reads its URL templates from module globals when a socket is constructed, so
    they are patched to the simulator (keeping ``/v5/public`` and the ``/private`` suffix
    its topic validators insist on)."""
    created: list[PybitSocket] = []

    def open_ws(sim: Sim, channel_type: str, **kwargs: Any) -> PybitSocket:
        monkeypatch.setattr(unified_trading, "PUBLIC_WSS", sim.ws_url("/v5/public/{CHANNEL_TYPE}"))
        monkeypatch.setattr(unified_trading, "PRIVATE_WSS", sim.ws_url("/v5/private"))
        if channel_type == "private":
            kwargs.setdefault("api_key", API_KEY)
            kwargs.setdefault("api_secret", API_SECRET)
        socket = PybitSocket(
            unified_trading.WebSocket(testnet=False, channel_type=channel_type, **kwargs)
        )
        created.append(socket)
        return socket

    yield open_ws
    for socket in created:
        with contextlib.suppress(Exception):
            socket.ws.exit()


class RawWS:
    """A plain WebSocket connection to see the simulator's exact replies."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.conn = self._stack.enter_context(
            ws_client.connect(url, open_timeout=WAIT_S, max_size=None)
        )

    def send(self, message: Json) -> None:
        self.conn.send(json.dumps(message))

    def recv(self, timeout: float = WAIT_S) -> Json:
        return cast(Json, json.loads(self.conn.recv(timeout=timeout)))

    def recv_until(self, predicate: Predicate, timeout: float = WAIT_S) -> Json:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message within {timeout}s")
            try:
                message = self.recv(timeout=left)
            except TimeoutError:
                raise AssertionError(f"no matching message within {timeout}s") from None
            if predicate(message):
                return message

    def subscribe(self, *topics: str, req_id: str | None = None) -> Json:
        """Subscribe and return the ack (messages before it are dropped)."""
        request: Json = {"op": "subscribe", "args": list(topics)}
        if req_id is not None:
            request["req_id"] = req_id
        self.send(request)
        return self.recv_until(lambda m: m.get("op") == "subscribe")

    def auth(self, api_key: str = API_KEY, api_secret: str = API_SECRET) -> Json:
        expires = int(time.time() * 1000) + 10_000
        self.send(
            {"op": "auth", "args": [api_key, expires, sign(api_secret, f"GET/realtime{expires}")]}
        )
        return self.recv_until(lambda m: m.get("op") == "auth")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


@pytest.fixture
def raw_ws() -> Iterator[Callable[[Sim, str], RawWS]]:
    """``open(sim, path)`` → a raw connection, closed at the end of the test."""
    opened: list[RawWS] = []

    def open_raw(sim: Sim, path: str) -> RawWS:
        conn = RawWS(sim.ws_url(path))
        opened.append(conn)
        return conn

    yield open_raw
    for conn in opened:
        conn.close()


__all__ = [
    "API_KEY",
    "API_SECRET",
    "WAIT_S",
    "Collector",
    "ConnectionClosed",
    "Links",
    "PybitSocket",
    "PybitWsFactory",
    "RawWS",
    "Sim",
    "clean_orders",
    "pybit_http",
    "running_sim",
    "signed_request",
    "sim_argv",
    "start_sim",
]

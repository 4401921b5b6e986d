"""The simulator under load: REST order round trip, sustained order rate, WS delivery rate.

``make bench`` (``python -m bench.sim``). Starts a real ``exchange-sim`` process on 127.0.0.1
with its rate limits raised, then measures from this process:

* order round trip: one signed ``POST /v5/order/create`` (a PostOnly far from the touch)
  then its cancel, sequentially on a keep-alive connection; the baseline is an unsigned
  ``GET /v5/market/time`` on the same connection (the HTTP stack's floor);
* sustained order requests/s: several keep-alive clients creating and cancelling orders
  as fast as the server answers;
* WebSocket messages/s delivered: clients subscribed to ``orderbook.50``, ``orderbook.1``
  and ``publicTrade`` of many books while the market model runs fast.

Client and server share this machine's cores, so the figures are a floor for the server.
Timing never fails the run: targets are printed with PASS/MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Latency, latency

KEY = "arbhub-sim-key"
SECRET = "arbhub-sim-secret"
TARGET_ORDERS_PER_S = 1000.0
TARGET_WS_PER_S = 20000.0
WS_CLIENTS = 32
ORDER_CLIENTS = 8


def _bench_config(path: Path, n_symbols: int) -> None:
    """Many perpetual books, a fast model and rate limits far above what we send."""
    instruments = []
    for i in range(n_symbols):
        instruments.append(
            {
                "symbol": f"C{i:03d}USDT",
                "base_coin": f"C{i:03d}",
                "quote_coin": "USDT",
                "price": "100",
                "linear": _leg(),
            }
        )
    limits = {path: {"*": 1_000_000} for path in ("/v5/order/create", "/v5/order/cancel")}
    config = {
        "instruments": instruments,
        "accounts": [{"api_key": KEY, "api_secret": SECRET, "balances": {"USDT": "100000000"}}],
        "model": {"step_ms": 20, "taker_rate_per_s": "20", "depth_levels": 50},
        "rate_limits": limits,
        "ws_subscribe_delay_ms": 0,
    }
    path.write_text(json.dumps(config))


def _leg() -> dict[str, str]:
    return {
        "tick_size": "0.01",
        "qty_step": "0.01",
        "min_qty": "0.01",
        "min_notional": "5",
        "max_qty": "100000",
        "max_market_qty": "100000",
    }


class Simulator:
    """An ``exchange-sim`` process on a free port (its defaults without ``config``)."""

    def __init__(self, config: Path | None, *, scripted: bool) -> None:
        args = [sys.executable, "-m", "exchange_sim.cli", "--port", "0"]
        if config is not None:
            args += ["--config", str(config)]
        if scripted:
            args.append("--scripted")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _signed(body: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body)
    ts = str(time.time_ns() // 1_000_000)
    sign = hmac.new(SECRET.encode(), f"{ts}{KEY}5000{raw}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-BAPI-API-KEY": KEY,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": sign,
    }
    return raw.encode(), headers


def _create_body(link: str) -> dict[str, str]:
    """A PostOnly bid far below the book: it rests, never trades."""
    return {
        "category": "linear",
        "symbol": "C000USDT",
        "side": "Buy",
        "orderType": "Limit",
        "qty": "1",
        "price": "50",
        "timeInForce": "PostOnly",
        "orderLinkId": link,
    }


def _cancel_body(link: str) -> dict[str, str]:
    return {"category": "linear", "symbol": "C000USDT", "orderLinkId": link}


class Client:
    def __init__(self, sim: Simulator, tag: str) -> None:
        self.conn = http.client.HTTPConnection(sim.host, sim.port)
        self.tag = tag
        self.n = 0

    def post(self, path: str, body: dict[str, str]) -> dict[str, object]:
        raw, headers = _signed(body)
        self.conn.request("POST", path, raw, headers)
        reply: dict[str, object] = json.loads(self.conn.getresponse().read())
        if reply["retCode"] != 0:
            raise RuntimeError(f"{path}: {reply}")
        return reply

    def get(self, path: str) -> None:
        self.conn.request("GET", path)
        self.conn.getresponse().read()

    def create(self) -> str:
        self.n += 1
        link = f"{self.tag}-{self.n}"
        self.post("/v5/order/create", _create_body(link))
        return link

    def cancel(self, link: str) -> None:
        self.post("/v5/order/cancel", _cancel_body(link))


def round_trip(sim: Simulator, n: int) -> tuple[Latency, Latency]:
    client = Client(sim, "rt")
    base: list[int] = []
    orders: list[int] = []
    for _ in range(n // 10):
        client.get("/v5/market/time")
        link = client.create()
        client.cancel(link)
    for _ in range(n):
        t0 = time.perf_counter_ns()
        client.get("/v5/market/time")
        t1 = time.perf_counter_ns()
        link = client.create()
        t2 = time.perf_counter_ns()
        client.cancel(link)
        base.append(t1 - t0)
        orders.append(t2 - t1)
    return latency(orders), latency(base)


def _raw_request(host: str, port: int, path: str, body: dict[str, str]) -> bytes:
    raw, headers = _signed(body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}Content-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


async def _order_client(sim: Simulator, i: int, stop: float, counts: list[int]) -> None:
    """Create then cancel on one keep-alive connection, as fast as the replies come. A raw
    asyncio client, so the figure measures the server rather than a Python HTTP library."""
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    n = 0
    while time.perf_counter() < stop:
        n += 1
        link = f"r{i}-{n}"
        for path, body in (
            ("/v5/order/create", _create_body(link)),
            ("/v5/order/cancel", _cancel_body(link)),
        ):
            writer.write(_raw_request(sim.host, sim.port, path, body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            reply = await reader.readexactly(length)
            if not reply.startswith(b'{"retCode":0,'):
                raise RuntimeError(f"{path}: {reply!r}")
            counts[i] += 1
    writer.close()


def sustained(sim: Simulator, clients: int, seconds: float) -> float:
    counts = [0] * clients

    async def run() -> float:
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*(_order_client(sim, i, stop, counts) for i in range(clients)))
        return sum(counts) / (time.perf_counter() - start)

    return asyncio.run(run())


async def _raw_client(
    host: str, port: int, path: str, subscribe: str, counts: list[int], i: int, stop: asyncio.Event
) -> None:
    """A minimal WebSocket client that counts server frames without decoding them, so the
    figure measures the server's delivery rather than a Python client's JSON parsing."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    payload = subscribe.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
    header = (
        bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big")
        if len(payload) >= 126
        else bytes((0x81, 0x80 | len(payload)))
    )
    writer.write(header + mask + masked)
    buffer = b""
    while not stop.is_set():
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        buffer += chunk
        offset = 0
        while True:
            if len(buffer) - offset < 2:
                break
            n = buffer[offset + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buffer) - offset < 4:
                    break
                n = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                head = 4
            elif n == 127:
                if len(buffer) - offset < 10:
                    break
                n = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                head = 10
            if len(buffer) - offset < head + n:
                break
            if buffer[offset] & 0x0F == 1:
                counts[i] += 1
            offset += head + n
        buffer = buffer[offset:]
    writer.close()


async def _ws_rate(sim: Simulator, clients: int, symbols: int, seconds: float) -> float:
    topics = []
    for i in range(symbols):
        topics += [
            f"orderbook.50.C{i:03d}USDT",
            f"orderbook.1.C{i:03d}USDT",
            f"publicTrade.C{i:03d}USDT",
        ]
    subscribe = json.dumps({"op": "subscribe", "args": topics})
    counts = [0] * clients
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            _raw_client(sim.host, sim.port, "/v5/public/linear", subscribe, counts, i, stop)
        )
        for i in range(clients)
    ]
    await asyncio.sleep(1.0)  # subscriptions settle, snapshots drain
    before = sum(counts)
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    delivered = sum(counts) - before
    elapsed = time.perf_counter() - start
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return delivered / elapsed


def _mark(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 500 if args.quick else 3000
    seconds = 2.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench-sim.json"
        _bench_config(config, n_symbols=20)
        sim = Simulator(config, scripted=True)
        try:
            orders, base = round_trip(sim, n)
            rate = sustained(sim, clients=ORDER_CLIENTS, seconds=seconds)
        finally:
            sim.close()
        sim = Simulator(config, scripted=False)
        try:
            ws_rate = asyncio.run(_ws_rate(sim, clients=WS_CLIENTS, symbols=20, seconds=seconds))
        finally:
            sim.close()
    print()
    print("arbhub simulator bench (client and server on this machine)")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print()
    print(f"{'':32}{'median µs':>12}{'p99 µs':>12}{'× baseline':>12}")
    print(
        f"{'order create (round trip)':32}{orders.median_us:12.0f}{orders.p99_us:12.0f}"
        f"{orders.median_us / base.median_us:12.2f}"
    )
    print(f"{'baseline GET /v5/market/time':32}{base.median_us:12.0f}{base.p99_us:12.0f}{1:12.2f}")
    print()
    print(
        f"sustained order requests/s ({ORDER_CLIENTS} clients, create+cancel): {rate:9.0f}"
        f"   target ≥ {TARGET_ORDERS_PER_S:.0f}  {_mark(rate, TARGET_ORDERS_PER_S)}"
    )
    print(
        f"WS messages/s delivered ({WS_CLIENTS} clients × 60 topics):     {ws_rate:9.0f}"
        f"   target ≥ {TARGET_WS_PER_S:.0f}  {_mark(ws_rate, TARGET_WS_PER_S)}"
    )


if __name__ == "__main__":
    main()

"""One worker process under measurement: tick-to-order latency and book-message throughput.

``make bench`` (``python -m bench.worker``). Everything runs as real processes on 127.0.0.1:

* **tick-to-order**: a scripted ``exchange-sim`` and a real ``spot-future-arb`` worker. The
  bench asks the simulator to move the perp book across the entry threshold 20 ms later
  (``POST /sim/book`` with ``delay_ms``) and sleeps through the publish, so it does not wake
  on the same cores while the worker reacts; the worker answers with a PostOnly spot buy, and
  the simulator records when that create request arrived (``GET /sim/arrivals``): when its
  first bytes were read off the socket (the figure the target is judged on: the request has
  reached the simulator), and, for reference, when the simulator's handler got it after its
  own HTTP parsing and dispatch, beside the publish time. All times are ``CLOCK_MONOTONIC``,
  shared by every process of the host. The book is then moved back, the worker cancels, and
  the next sample starts.
  Baseline, measured in the same run once the worker is stopped: a **reflex**, a bare
  WebSocket subscriber in this process that writes a pre-signed order create over a warm
  connection the moment the crossing book arrives: the same two hops with no work between.
* **book messages/s**: the worker's public streams come from a feeder in this process that
  speaks Bybit's public WebSocket protocol and writes a pre-built backlog of ``orderbook.50``
  deltas and ``orderbook.1`` snapshots in one go; the last message crosses the threshold, so
  the order's arrival at the simulator marks the moment the worker got through the backlog.

The machine has 2 cores shared by the simulator, the worker and the bench; the figures are
what one worker achieves here. Timing never fails the run (PASS/MISS is printed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import Latency, latency
from bench.sim import Simulator, _signed

TARGET_MEDIAN_US, TARGET_P99_US, TARGET_MSGS_PER_S = 1000.0, 3000.0, 20000.0
SAMPLES, WARMUP = 150, 10
PUBLISH_DELAY_S = 0.02
BACKLOG = 100_000
SPOT_BID = 50000
TICK = "0.1"


def _perp_bid(basis_bps: float) -> str:
    return f"{SPOT_BID * (1 + basis_bps / 10_000):.1f}"


class Processes:
    """A scripted simulator and one worker, in a temporary folder."""

    def __init__(self, folder: Path, *, public_ws: str | None = None) -> None:
        self.folder = folder
        self.sim = Simulator(None, scripted=True)
        self.url = self.sim.url
        ws = self.url.replace("http://", "ws://")
        config = {
            "venue": "sim",
            "execute": True,
            "endpoints": {
                "rest": self.url,
                "ws_public": public_ws or f"{ws}/v5/public",
                "ws_private": f"{ws}/v5/private",
            },
            "entry_threshold_bps": 10,
            "chase_interval_ms": 200,
            "hub": {"run_dir": "run"},
            "instances": [
                {
                    "id": "btc",
                    "spot_symbol": "BTCUSDT",
                    "future_symbol": "BTCUSDT",
                    "order_qty": "0.01",
                    "state_path": "state/btc.json",
                }
            ],
        }
        (folder / "config.json").write_text(json.dumps(config))
        self.log = folder / "worker.log"
        with open(self.log, "wb") as out:
            self.worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker.cli",
                    "--config",
                    "config.json",
                    "--instance",
                    "btc",
                ],
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_resynced(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b'"event":"resynced"' in self.log.read_bytes():
                return
            if self.worker.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the worker did not start:\n{self.log.read_text()[-3000:]}")

    def close(self) -> None:
        if self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        self.sim.close()


# --- tick-to-order -------------------------------------------------------------------------


async def _book(http: aiohttp.ClientSession, url: str, category: str, bid: str, ask: str) -> int:
    body = {"category": category, "symbol": "BTCUSDT", "bids": [[bid, "5"]], "asks": [[ask, "5"]]}
    async with http.post(f"{url}/sim/book", json=body) as reply:
        return int((await reply.json())["published_ns"])


async def _book_later(http: aiohttp.ClientSession, url: str, bid: str) -> int:
    """Move the perp book ``PUBLISH_DELAY_S`` after asking and sleep through the publish, so
    this process is not waking up on the two cores while the client under measurement
    reacts; returns the simulator's publish time."""
    body = {
        "category": "linear",
        "symbol": "BTCUSDT",
        "bids": [[bid, "5"]],
        "asks": [[_ask(bid), "5"]],
        "delay_ms": PUBLISH_DELAY_S * 1000,
    }
    async with http.post(f"{url}/sim/book", json=body) as reply:
        reply.raise_for_status()
    await asyncio.sleep(PUBLISH_DELAY_S + 0.03)
    async with http.get(f"{url}/sim/arrivals") as reply:
        return int((await reply.json())["published"]["linear/BTCUSDT"])


def _ask(bid: str) -> str:
    return f"{float(bid) + float(TICK):.1f}"


async def _arrivals(http: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """orderLinkId → when the simulator read its create off the socket."""
    return (await _stamps(http, url))[0]


async def _stamps(http: aiohttp.ClientSession, url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Both of the simulator's stamps per create: read off the socket, and seen by the
    handler after the simulator's own HTTP parsing and dispatch."""
    async with http.get(f"{url}/sim/arrivals") as reply:
        body = await reply.json()
    return dict(body["arrivals"]), dict(body["handled"])


async def _open_orders(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/sim/orders") as reply:
        orders = (await reply.json())["orders"]
    return sum(1 for o in orders if o["orderStatus"] in ("New", "PartiallyFilled"))


class _Subscriber(asyncio.Protocol):
    """A bare WebSocket subscriber for the floor: it stamps each chunk the moment the loop
    hands it over, with no client library in between, and can answer one with an order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytes]] = []
        self.ready = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buffer = bytearray()
        self.reflex: tuple[bytes, bytes, asyncio.Transport] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append((time.monotonic_ns(), data))
        self.ready.set()
        if self.reflex is not None and self.reflex[0] in data:
            self.reflex[2].write(self.reflex[1])
            self.reflex = None
        if not self.upgraded:  # the HTTP 101 answer
            self.upgraded = True
            return
        self.buffer += data
        while len(self.buffer) >= 2:  # answer the server's pings wherever they fall
            length, start = self.buffer[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + length:
                return
            opcode, payload = self.buffer[0] & 0x0F, bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            if opcode == 0x9 and self.transport is not None:
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def arm(self, needle: bytes, request: bytes, to: asyncio.Transport) -> None:
        """Write ``request`` to ``to`` the moment a chunk holding ``needle`` arrives."""
        self.reflex = (needle, request, to)

    def first_with(self, needle: bytes, after: int) -> int | None:
        return next((t for t, data in self.chunks if t >= after and needle in data), None)


async def _subscribe(url: str, topic: str) -> tuple[asyncio.Transport, _Subscriber]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    transport, sub = await loop.create_connection(_Subscriber, host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        f"GET /v5/public/linear HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await sub.ready.wait()
    payload = json.dumps({"op": "subscribe", "args": [topic]}).encode()
    # a client frame must be masked; a zero mask leaves the payload as it is
    transport.write(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
    return transport, sub


async def tick_to_order(procs: Processes) -> tuple[Latency, Latency, Latency, Latency]:
    url = procs.url
    worker_ns: list[int] = []
    handled_ns: list[int] = []
    reflex_ns: list[int] = []  # publish → a bare reflex's create read by the simulator
    hop_ns: list[int] = []  # publish → the same reflex's socket read
    async with aiohttp.ClientSession() as http:
        await _book(http, url, "spot", str(SPOT_BID), _ask(str(SPOT_BID)))
        flat = _perp_bid(0)
        await _book(http, url, "linear", flat, _ask(flat))
        procs.wait_resynced()
        await asyncio.sleep(0.5)
        seen = set(await _arrivals(http, url))
        for i in range(SAMPLES + WARMUP):
            crossing = _perp_bid(15 + (i % 3))  # a new price every time
            published = await _book_later(http, url, crossing)
            link = None
            for _ in range(500):
                arrivals, handled = await _stamps(http, url)
                link = next((k for k in arrivals if k not in seen), None)
                if link is not None:
                    seen.add(link)
                    break
                await asyncio.sleep(0.01)
            if link is None:
                raise RuntimeError(f"no order after sample {i}:\n{procs.log.read_text()[-2000:]}")
            if i >= WARMUP:
                worker_ns.append(arrivals[link] - published)
                handled_ns.append(handled[link] - published)
            await _book(http, url, "linear", flat, _ask(flat))  # the worker cancels
            for _ in range(2000):
                if not await _open_orders(http, url):
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.25)  # past the entry's re-placement pacing
        # the floor: the same publishes answered by a bare reflex, the worker stopped (on
        # two cores a reacting worker would also delay the reflex and blur the floor)
        procs.worker.terminate()
        procs.worker.wait(30)
        transport, sub = await _subscribe(url, "orderbook.1.BTCUSDT")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        orders, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, host, int(port)
        )
        for i in range(SAMPLES + WARMUP):
            crossing = _perp_bid(15 + (i % 3))
            needle = f'"{crossing}'.encode()  # 50075.0(0)
            link = f"reflex-{i}"
            sub.chunks.clear()
            sub.arm(needle, _create_request(host, link), orders)
            published = await _book_later(http, url, crossing)
            delivered = sub.first_with(needle, published)
            arrived = (await _arrivals(http, url)).get(link)
            if delivered is None or arrived is None:
                raise RuntimeError(f"floor sample {i}: the reflex saw or sent nothing")
            if i >= WARMUP:
                hop_ns.append(delivered - published)
                reflex_ns.append(arrived - published)
            await _signed_post(http, url, "/v5/order/cancel", _spot_order(link))
            await _book(http, url, "linear", flat, _ask(flat))
            await asyncio.sleep(0.05)
        orders.close()
        transport.close()
    return latency(worker_ns), latency(handled_ns), latency(reflex_ns), latency(hop_ns)


def _spot_order(link: str, **fields: str) -> dict[str, str]:
    return {"category": "spot", "symbol": "BTCUSDT", "orderLinkId": link, **fields}


def _create_request(host: str, link: str) -> bytes:
    """A signed PostOnly spot bid below the book, as raw HTTP/1.1 bytes ready to write."""
    body, headers = _signed(
        _spot_order(
            link,
            side="Buy",
            orderType="Limit",
            qty="0.01",
            price=f"{SPOT_BID - 100}.0",
            timeInForce="PostOnly",
        )
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST /v5/order/create HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        f"{head}\r\n"
    ).encode() + body


async def _signed_post(
    http: aiohttp.ClientSession, url: str, path: str, fields: dict[str, str]
) -> None:
    body, headers = _signed(fields)
    async with http.post(f"{url}{path}", data=body, headers=headers) as reply:
        answer = await reply.json()
    if answer.get("retCode") != 0:
        raise RuntimeError(f"{path}: {answer}")


# --- book messages per second --------------------------------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(text: str) -> bytes:
    """One unmasked server text frame."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes([0x81, n])
    elif n < 65536:
        header = bytes([0x81, 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 127]) + n.to_bytes(8, "big")
    return header + payload


def _book_message(depth: int, kind: str, u: int, bid: str, ask: str, size: str = "5") -> str:
    ts = time.time_ns() // 1_000_000
    return json.dumps(
        {
            "topic": f"orderbook.{depth}.BTCUSDT",
            "ts": ts,
            "type": kind,
            "data": {"s": "BTCUSDT", "b": [[bid, size]], "a": [[ask, size]], "u": u, "seq": u},
            "cts": ts,
        },
        separators=(",", ":"),
    )


class Feeder:
    """A public-WebSocket stand-in: answers subscriptions and, for the perp, writes a backlog."""

    def __init__(self) -> None:
        self.spot_ready = asyncio.Event()
        self.perp: asyncio.StreamWriter | None = None
        self.perp_ready = asyncio.Event()
        self.sent_ns = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        lines = request.decode().split("\r\n")
        path = lines[0].split()[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        key = headers["sec-websocket-key"]
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        writer.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        spot = path.endswith("/spot")
        try:
            while True:
                message = await _read_client_frame(reader)
                if message is None:
                    return
                request_json = json.loads(message)
                if request_json.get("op") != "subscribe":
                    continue
                reply = {"success": True, "ret_msg": "", "op": "subscribe", "conn_id": "bench"}
                writer.write(_frame(json.dumps(reply)))
                bid = str(SPOT_BID) if spot else _perp_bid(0)
                for depth in (50, 1):
                    writer.write(_frame(_book_message(depth, "snapshot", 1, bid, _ask(bid))))
                if spot:
                    self.spot_ready.set()
                    asyncio.get_running_loop().create_task(self._keep_fresh(writer, bid))
                else:
                    self.perp = writer
                    self.perp_ready.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except asyncio.CancelledError:  # the bench is over: asyncio.run cancels the handlers
            return

    async def _keep_fresh(self, writer: asyncio.StreamWriter, bid: str) -> None:
        while not writer.is_closing():  # Bybit resends orderbook.1 every 3 s
            await asyncio.sleep(1)
            writer.write(_frame(_book_message(1, "snapshot", 1, bid, _ask(bid))))

    def blast(self, n: int) -> None:
        """``n`` book messages below the threshold, then one that crosses it."""
        assert self.perp is not None
        frames = []
        u = 1
        for i in range(n // 2):
            bid = _perp_bid(2 + (i % 5))
            u += 1
            frames.append(_frame(_book_message(50, "delta", u, bid, _ask(bid), str(5 + i % 3))))
            frames.append(_frame(_book_message(1, "snapshot", u, bid, _ask(bid))))
        crossing = _perp_bid(15)
        u += 1
        frames.append(_frame(_book_message(50, "delta", u, crossing, _ask(crossing))))
        frames.append(_frame(_book_message(1, "snapshot", u, crossing, _ask(crossing))))
        data = b"".join(frames)
        self.sent_ns = time.monotonic_ns()
        self.perp.write(data)


async def _read_client_frame(reader: asyncio.StreamReader) -> str | None:
    """One masked client frame's text (control frames are skipped, close ends)."""
    while True:
        head = await reader.readexactly(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
        if opcode == 0x8:
            return None
        if opcode == 0x1:
            return payload.decode()


async def throughput(folder: Path) -> float:
    feeder = Feeder()
    server = await asyncio.start_server(feeder.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    procs = Processes(folder, public_ws=f"ws://127.0.0.1:{port}/v5/public")
    try:
        async with aiohttp.ClientSession() as http:
            url = procs.url
            await _book(http, url, "spot", str(SPOT_BID), _ask(str(SPOT_BID)))
            procs.wait_resynced()
            await asyncio.wait_for(feeder.perp_ready.wait(), 30)
            await asyncio.sleep(1.0)
            feeder.blast(BACKLOG)
            for _ in range(3000):  # (the arrival time is the simulator's: polling is coarse)
                await asyncio.sleep(0.05)
                arrivals = await _arrivals(http, url)
                if arrivals:
                    arrival = min(arrivals.values())
                    return (BACKLOG + 2) / ((arrival - feeder.sent_ns) / 1e9)
            raise RuntimeError(f"no order after the backlog:\n{procs.log.read_text()[-3000:]}")
    finally:
        procs.close()
        server.close()


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        procs = Processes(Path(tmp))
        try:
            worker, handled, reflex, hop = asyncio.run(tick_to_order(procs))
        finally:
            procs.close()
    with tempfile.TemporaryDirectory() as tmp:
        rate = asyncio.run(throughput(Path(tmp)))
    print()
    print("arbhub worker bench (simulator, worker and bench on this machine)")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} cores, {SAMPLES} samples")
    print()
    print(f"{'':46}{'median µs':>12}{'p99 µs':>12}{'× floor':>10}")
    rows = [
        ("tick-to-order (publish → create read by sim)", worker),
        ("  the same, to the sim handler (+ its HTTP)", handled),
        ("floor: publish → reflex's create read by sim", reflex),
        ("  publish → the reflex's socket (one hop)", hop),
    ]
    for label, figures in rows:
        print(
            f"{label:46}{figures.median_us:12.0f}{figures.p99_us:12.0f}"
            f"{figures.median_us / reflex.median_us:10.2f}",
            end="",
        )
        if figures is worker:
            print(
                f"   median {_mark(worker.median_us <= TARGET_MEDIAN_US)} "
                f"(≤ {TARGET_MEDIAN_US:.0f}), p99 {_mark(worker.p99_us <= TARGET_P99_US)} "
                f"(≤ {TARGET_P99_US:.0f})",
                end="",
            )
        print()
    print(f"  worker's own share of the median: {worker.median_us - reflex.median_us:.0f} µs")
    print()
    print(
        f"book messages/s one worker sustains: {rate:,.0f}   "
        f"{_mark(rate >= TARGET_MSGS_PER_S)} (≥ {TARGET_MSGS_PER_S:,.0f})"
    )


if __name__ == "__main__":
    main()

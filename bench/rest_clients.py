"""Which HTTP client the worker's Bybit REST client should use: a measurement.

``python -m bench.rest_clients`` starts a scripted ``exchange-sim`` and times, sequentially
on one keep-alive connection, a signed ``GET /v5/order/realtime`` (a query the worker makes
on every unknown outcome and resync) with: pybit's synchronous ``HTTP`` (run directly, and
through ``asyncio.to_thread`` as an event loop would have to), ``httpx.AsyncClient``,
``aiohttp.ClientSession`` and the worker's own ``worker.venues.http1.HttpClient``.
docs/venues.md records the result and the choice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp
import httpx
from pybit.unified_trading import HTTP

from bench.common import Latency, latency
from bench.sim import KEY, SECRET, Simulator, _bench_config
from worker.venues.http1 import HttpClient

N = 1500
PARAMS = "category=linear&symbol=C000USDT"


def _headers(query: str) -> dict[str, str]:
    ts = str(time.time_ns() // 1_000_000)
    sign = hmac.new(SECRET.encode(), f"{ts}{KEY}5000{query}".encode(), hashlib.sha256)
    return {
        "X-BAPI-API-KEY": KEY,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": sign.hexdigest(),
    }


def _time_sync(call: Callable[[], object]) -> Latency:
    samples = []
    for i in range(N + N // 10):
        t0 = time.perf_counter_ns()
        call()
        if i >= N // 10:
            samples.append(time.perf_counter_ns() - t0)
    return latency(samples)


async def _time_async(call: Callable[[], Awaitable[object]]) -> Latency:
    samples = []
    for i in range(N + N // 10):
        t0 = time.perf_counter_ns()
        await call()
        if i >= N // 10:
            samples.append(time.perf_counter_ns() - t0)
    return latency(samples)


async def _async_clients(url: str, session: HTTP) -> dict[str, Latency]:
    out = {}
    out["pybit via asyncio.to_thread"] = await _time_async(
        lambda: asyncio.to_thread(session.get_open_orders, category="linear", symbol="C000USDT")
    )
    async with httpx.AsyncClient(base_url=url) as client:

        async def httpx_call() -> object:
            reply = await client.get(f"/v5/order/realtime?{PARAMS}", headers=_headers(PARAMS))
            return reply.json()

        out["httpx.AsyncClient"] = await _time_async(httpx_call)
    async with aiohttp.ClientSession(base_url=url) as aio:

        async def aiohttp_call() -> object:
            async with aio.get(f"/v5/order/realtime?{PARAMS}", headers=_headers(PARAMS)) as r:
                return await r.json()

        out["aiohttp.ClientSession"] = await _time_async(aiohttp_call)
    http1 = HttpClient(url)
    try:

        async def http1_call() -> object:
            reply = await http1.request("GET", f"/v5/order/realtime?{PARAMS}", _headers(PARAMS))
            return json.loads(reply.body)

        out["worker.venues.http1.HttpClient"] = await _time_async(http1_call)
    finally:
        await http1.close()
    return out


def main() -> None:
    with TemporaryDirectory() as tmp:
        config = Path(tmp) / "sim.json"
        _bench_config(config, n_symbols=1)
        sim = Simulator(config, scripted=True)
        try:
            url = f"http://{sim.host}:{sim.port}"
            session = HTTP(testnet=False, api_key=KEY, api_secret=SECRET)
            session.endpoint = url
            results = {
                "pybit HTTP (sync)": _time_sync(
                    lambda: session.get_open_orders(category="linear", symbol="C000USDT")
                )
            }
            results.update(asyncio.run(_async_clients(url, session)))
        finally:
            sim.close()
    base = results["pybit HTTP (sync)"].median_us
    print(f"signed GET /v5/order/realtime against exchange-sim, {N} sequential calls each")
    print(f"{'client':32}{'median µs':>12}{'p99 µs':>12}{'× pybit':>10}")
    for name, lat in results.items():
        print(f"{name:32}{lat.median_us:12.0f}{lat.p99_us:12.0f}{lat.median_us / base:10.2f}")


if __name__ == "__main__":
    main()

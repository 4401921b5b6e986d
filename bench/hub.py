"""The hub under a fleet: 50, then 100 instances on the simulator.

``make bench`` (``python -m bench.hub``). For each fleet size the bench writes a config of N
rows on N generated instruments (spot and perp each), starts ``hub serve --all`` (which
starts the simulator and N real workers), waits until every row is RUNNING with a status
and then a minute more (the steady state), then measures from this process while the fleet
trades:

* ``/api/instances`` and ``/arb`` latency (sequential GETs on a keep-alive connection); the
  baseline is ``/livez`` on the same connection (the HTTP stack's floor);
* status freshness: for every row of every ``/api/instances`` answer, the age of the worker's
  last status (``updated_at``) when the hub answered;
* the hub's CPU over 10 s in which nobody queries it (collecting statuses, supervising),
  and every worker's resident memory.

Everything shares this machine's 2 cores. Timing never fails the run (PASS/MISS is printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import Latency, latency

SIZES = (50, 100)
REQUESTS = 200
PAGE_REQUESTS = 60
TARGET_API_P99_MS, TARGET_FRESH_S, TARGET_RSS_MB = 100.0, 2.0, 80.0
START_TIMEOUT_S = 600.0
# The last rows to report have only just started: their resyncs, subscriptions and first
# entries, and rows still restarting after a slow start, load the two cores for tens of
# seconds more. The figures are for a fleet that runs (the start is "settled after").
STEADY_AFTER_S = 60.0
CPU_WINDOW_S = 10.0
KEY, SECRET = "arbhub-sim-key", "arbhub-sim-secret"


def _leg(tick: str, step: str) -> dict[str, str]:
    return {
        "tick_size": tick,
        "qty_step": step,
        "min_qty": step,
        "min_notional": "5",
        "max_qty": "100000",
        "max_market_qty": "100000",
    }


def _write(folder: Path, n: int, port: int) -> Path:
    coins = [f"C{i:03d}" for i in range(n)]
    sim = {
        "instruments": [
            {
                "symbol": f"{coin}USDT",
                "base_coin": coin,
                "quote_coin": "USDT",
                "price": "100",
                "spot": _leg("0.01", "0.01"),
                "linear": _leg("0.01", "0.1"),
            }
            for coin in coins
        ],
        "accounts": [
            {
                "api_key": KEY,
                "api_secret": SECRET,
                "balances": {"USDT": "100000000", **dict.fromkeys(coins, "1000")},
            }
        ],
        # a calm model: 2n books on 2 cores next to n workers and the hub
        "model": {
            "step_ms": 500,
            "depth_levels": 10,
            "basis_volatility_bps": "5.7",
            "taker_rate_per_s": "1",
        },
    }
    (folder / "sim.json").write_text(json.dumps(sim))
    config = {
        "venue": "sim",
        "execute": True,
        "sim_config": "sim.json",
        "entry_threshold_bps": 12,
        "exit_threshold_bps": 2,
        "hub": {"host": "127.0.0.1", "port": port, "run_dir": "run", "stop_grace_s": 30},
        "instances": [
            {
                "id": coin.lower(),
                "spot_symbol": f"{coin}USDT",
                "future_symbol": f"{coin}USDT",
                "order_qty": "1",
                "state_path": f"state/{coin.lower()}.json",
            }
            for coin in coins
        ],
    }
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(http: httpx.Client, path: str, n: int) -> tuple[Latency, list[Any]]:
    """``n`` sequential GETs; this client's garbage collector is off meanwhile (as timeit
    does), so that its pauses over the bodies it keeps are not counted against the hub."""
    samples, bodies = [], []
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            reply = http.get(path)
            samples.append(time.perf_counter_ns() - t0)
            reply.raise_for_status()
            if path == "/api/instances":
                bodies.append((time.time(), reply.json()))
    finally:
        gc.enable()
    return latency(samples), bodies


def _age_s(answered: float, updated_at: str | None) -> float | None:
    if updated_at is None:
        return None
    return answered - dt.datetime.fromisoformat(updated_at).timestamp()


def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = _free_port()
        config = _write(folder, n, port)
        bin_dir = Path(sys.executable).parent
        with open(folder / "hub.out", "wb") as out:
            hub = subprocess.Popen(
                [str(bin_dir / "hub"), "--config", str(config), "serve", "--all"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        try:
            t0 = time.monotonic()
            while True:
                try:
                    rows = http.get("/api/instances").json()
                    # settled: reporting, or given up on (counted and shown below)
                    ready = [
                        r
                        for r in rows
                        if (r["process_state"] == "RUNNING" and r["updated_at"])
                        or r["process_state"] == "FATAL"
                    ]
                    if len(ready) == n:
                        break
                except httpx.HTTPError:
                    pass
                if hub.poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
                    raise RuntimeError((folder / "hub.out").read_text()[-3000:])
                time.sleep(1)
            started_s = time.monotonic() - t0
            time.sleep(STEADY_AFTER_S)  # past the start-up burst (see STEADY_AFTER_S)
            hub_ps = psutil.Process(hub.pid)
            hub_ps.cpu_percent(None)
            time.sleep(CPU_WINDOW_S)  # nobody asks the hub anything: its own supervision cost
            hub_cpu = hub_ps.cpu_percent(None)
            floor, _ = _timed(http, "/livez", REQUESTS)
            api, bodies = _timed(http, "/api/instances", REQUESTS)
            page, _ = _timed(http, "/arb", PAGE_REQUESTS)
            ages = [
                age
                for answered, rows in bodies
                for r in rows
                if (age := _age_s(answered, r["updated_at"])) is not None
            ]
            final = http.get("/api/instances").json()
            rss = [r["rss_bytes"] / 2**20 for r in final if r["rss_bytes"]]
        finally:
            http.close()
            hub.send_signal(signal.SIGINT)  # stops the fleet, then the simulator
            try:
                hub.wait(180)
            except subprocess.TimeoutExpired:
                os.killpg(hub.pid, signal.SIGKILL)
        ages.sort()
        return {
            "n": n,
            "started_s": started_s,
            "floor": floor,
            "api": api,
            "page": page,
            "fresh_median_s": statistics.median(ages),
            "fresh_p99_s": ages[int(len(ages) * 0.99) - 1],
            "hub_cpu": hub_cpu,
            "halted": sum(1 for row in final if row["state"] == "halted"),
            "not_running": sum(1 for row in final if row["process_state"] != "RUNNING"),
            "rss_median_mb": statistics.median(rss),
            "rss_max_mb": max(rss),
        }


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description="the hub under 50, then 100 instances")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    print()
    print("arbhub hub bench (hub, simulator and every worker on this machine)")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
    for n in parser.parse_args().sizes:
        r = measure(n)
        api, page, floor = r["api"], r["page"], r["floor"]
        print()
        print(f"{r['n']} instances (all settled {r['started_s']:.0f} s after `hub serve --all`)")
        print(f"{'':34}{'median ms':>12}{'p99 ms':>12}{'× floor':>10}")
        for label, figures in (
            ("/livez (floor)", floor),
            ("/api/instances", api),
            ("/arb", page),
        ):
            print(
                f"  {label:32}{figures.median_us / 1000:12.2f}{figures.p99_us / 1000:12.2f}"
                f"{figures.median_us / floor.median_us:10.1f}"
            )
        print(
            f"  /api/instances p99 {_mark(api.p99_us / 1000 <= TARGET_API_P99_MS)} "
            f"(≤ {TARGET_API_P99_MS:.0f} ms)"
        )
        print(
            f"  status freshness: median {r['fresh_median_s']:.2f} s, p99 {r['fresh_p99_s']:.2f} s "
            f"{_mark(r['fresh_p99_s'] <= TARGET_FRESH_S)} (≤ {TARGET_FRESH_S:.0f} s)"
        )
        print(
            f"  hub CPU while nobody queries it: {r['hub_cpu']:.0f} % of one core "
            f"({CPU_WINDOW_S:.0f} s)"
        )
        print(
            f"  worker RSS: median {r['rss_median_mb']:.0f} MB, max {r['rss_max_mb']:.0f} MB "
            f"{_mark(r['rss_max_mb'] <= TARGET_RSS_MB)} (≤ {TARGET_RSS_MB:.0f} MB)"
        )
        print(
            f"  at the end: {r['not_running']} rows not RUNNING, {r['halted']} halted",
            flush=True,
        )


if __name__ == "__main__":
    main()

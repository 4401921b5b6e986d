"""``make run`` until the hub lands: the simulator and one worker per configured row.

It starts ``exchange-sim`` (with the config's ``sim.json`` beside it and its state in the
run folder) and every instance's ``spot-future-arb`` with ``ARBHUB_ENDPOINTS`` pointing at it,
each writing its JSON log to ``<run_dir>/<id>.log``, then follows the fleet's transitions and
cycles on the terminal. Ctrl-C stops the workers (SIGTERM: entries cancelled, never a market
unwind), then the simulator. The hub (issue 5) replaces this with supervision and ``/arb``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from worker.config_loader import load_config
from worker.core.config import ConfigError

_SHOWN = ("transition", "cycle", "halted", "venue_mismatch", "crash", "exited")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="algo/spot-future-arb/config.json")
    args = parser.parse_args()
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    config = Path(args.config).resolve()
    run_dir = Path(fleet.hub.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    sim_config = config.parent / "sim.json"
    sim_args = [str(bin_dir / "exchange-sim"), "--host", "127.0.0.1", "--port", "0"]
    sim_args += ["--seed", "1", "--state", str(run_dir / "sim-state")]
    if sim_config.exists():
        sim_args += ["--config", str(sim_config)]
    # own sessions: Ctrl-C reaches this launcher only, which then stops the fleet in order
    sim = subprocess.Popen(sim_args, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert sim.stdout is not None
    line = sim.stdout.readline().strip()
    if not line.startswith("listening on http://"):
        print(f"the simulator did not start: {line!r}", file=sys.stderr)
        return 1
    url = line.removeprefix("listening on ")
    ws = url.replace("http://", "ws://")
    endpoints = {"rest": url, "ws_public": f"{ws}/v5/public", "ws_private": f"{ws}/v5/private"}
    print(f"exchange simulator (Bybit V5 REST + WebSocket): {url}")
    env = {**os.environ, "ARBHUB_ENDPOINTS": json.dumps(endpoints)}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    for instance in fleet.instances:
        logs[instance.id] = run_dir / f"{instance.id}.log"
        command = [str(bin_dir / "spot-future-arb"), "--config", str(config)]
        with open(logs[instance.id], "ab") as out:
            workers[instance.id] = subprocess.Popen(
                [*command, "--instance", instance.id],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        print(f"worker {instance.id} ({instance.mode.value}): log {logs[instance.id]}")
    print("Not built yet: the hub and its /arb page (issue 5). Ctrl-C stops the fleet.\n")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    offsets = dict.fromkeys(logs, 0)
    while not stopping and any(w.poll() is None for w in workers.values()):
        for instance_id, path in logs.items():
            with open(path, "rb") as log:
                log.seek(offsets[instance_id])
                for raw in log:
                    offsets[instance_id] += len(raw)
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if record.get("event") in _SHOWN:
                        shown = {k: v for k, v in record.items() if k not in ("level", "instance")}
                        print(f"{instance_id}: {json.dumps(shown)}")
        time.sleep(0.5)
    print("stopping the workers …")
    for worker in workers.values():
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for instance_id, worker in workers.items():
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
        print(f"worker {instance_id} exited with {code}")
    sim.send_signal(signal.SIGTERM)
    sim.wait(30)
    print("simulator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

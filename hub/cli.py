"""``hub``: start, stop and inspect the fleet (ARCHITECTURE §7, §8).

``hub serve`` runs the hub in the foreground (``make run``, systemd); every other command
talks to the running hub over its control socket in ``run_dir``, found through ``--config``
(default ``$ARBHUB_CONFIG`` or ``algo/spot-future-arb/config.json``). ``hub start`` starts a
detached hub first when none runs. Exit codes: 0 ok, 1 failure, 2 usage or configuration
error, 3 the hub is not running; ``hub reconcile`` exits 1 when it finds differences.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from hub.control import ControlError, ask, serve_control
from hub.files import RunDir, tail_lines
from hub.service import Hub, HubRunningError
from hub.simulator import SimError, endpoints_for
from hub.web import create_app
from worker.config_loader import load_config_with_warnings
from worker.core.config import ConfigError, FleetConfig

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
DEFAULT_CONFIG = "algo/spot-future-arb/config.json"
HUB_START_TIMEOUT_S = 60.0
GRACEFUL_S = 3  # a web client still sending when the hub stops is cut off after this
_SETTLED = frozenset({"STOPPED", "EXITED", "FATAL"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def listen(host: str, port: int) -> socket.socket:
    """The web port, with TCP_NODELAY, which every accepted connection inherits: uvicorn
    writes a response's head and body separately, and with Nagle's algorithm the body waited
    for the client's delayed ACK, 40 ms on every request (docs/operations.md, Capacity)."""
    listening = socket.create_server((host, port))
    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listening


class _Quiet(uvicorn.Server):
    """uvicorn without its own signal handling: the hub stops the fleet first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Supervise the arbhub fleet.")
    parser.add_argument(
        "--config",
        default=os.environ.get("ARBHUB_CONFIG", DEFAULT_CONFIG),
        help=f"the fleet config (default: $ARBHUB_CONFIG or {DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start the hub (detached) and rows (default all)")
    start.add_argument("ids", nargs="*", metavar="ID")
    stop = commands.add_parser("stop", help="stop rows; with no ID every row, the sim, the hub")
    stop.add_argument("ids", nargs="*", metavar="ID")
    stop.add_argument("--yes", action="store_true", help="do not ask before stopping LIVE rows")
    status = commands.add_parser("status", help="every row's process and trading state")
    status.add_argument("--json", action="store_true")
    logs = commands.add_parser("logs", help="a worker's log (read from run_dir)")
    logs.add_argument("id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50)
    reconcile = commands.add_parser(
        "reconcile", help="compare stopped or halted rows with the exchange (never unwinds)"
    )
    reconcile.add_argument("ids", nargs="*", metavar="ID")
    reconcile.add_argument(
        "--cancel-orphans", action="store_true", help="cancel the row's unknown open orders"
    )
    reconcile.add_argument(
        "--resume", action="store_true", help="leave halted when snapshot and exchange agree"
    )
    reconcile.add_argument(
        "--clear", action="store_true", help="reset a row that is flat everywhere to a new state"
    )
    flatten = commands.add_parser("flatten", help="market-unwind a row to flat")
    flatten.add_argument("id", metavar="ID")
    flatten.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    serve = commands.add_parser("serve", help="run the hub in the foreground")
    serve.add_argument("ids", nargs="*", metavar="ID", help="rows to start (besides wanted ones)")
    serve.add_argument("--all", action="store_true", help="start every row")
    return parser


def _load(path: str) -> FleetConfig:
    fleet, warnings = load_config_with_warnings(path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return fleet


def _url(fleet: FleetConfig) -> str:
    host = fleet.hub.host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{fleet.hub.port}/arb"


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return True  # scripts and tests: the operator chose the command
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _rows(control: Path) -> list[dict[str, Any]]:
    answer = ask(control, {"op": "status"})
    return list(answer.get("rows", []))


def _wait_settled(control: Path, ids: list[str], timeout_s: float) -> list[str]:
    """Wait until these rows are stopped; returns the ones that are not."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [
            r["id"] for r in _rows(control) if r["id"] in ids and r["process_state"] not in _SETTLED
        ]
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(0.2)


# ------------------------------------------------------------------------------- commands


def _serve(fleet: FleetConfig, config: Path, ids: list[str], start_all: bool) -> int:
    hub_cfg = fleet.hub
    token = None
    if hub_cfg.token_file:
        token = Path(hub_cfg.token_file).read_text().strip()
        if not token:
            print(f"error: hub.token_file {hub_cfg.token_file} is empty", file=sys.stderr)
            return EXIT_USAGE
    if hub_cfg.host not in _LOOPBACK:
        if token is None:
            print(
                f"error: refusing to bind {hub_cfg.host}: a non-loopback address needs "
                "hub.token_file (a bearer token every request must carry)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        print(f"WARNING: the hub listens on {hub_cfg.host}, beyond this machine", file=sys.stderr)
    return asyncio.run(_serve_async(fleet, config, ids, start_all, token))


async def _serve_async(
    fleet: FleetConfig, config: Path, ids: list[str], start_all: bool, token: str | None
) -> int:
    hub = Hub(fleet, config_path=config)
    app = create_app(hub, token=token, enable_docs=fleet.hub.enable_docs)
    try:  # the port first: a hub that cannot serve must not have started anything
        listening = listen(fleet.hub.host, fleet.hub.port)
    except OSError as exc:
        print(f"error: cannot listen on {_url(fleet)}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        await hub.open()
    except (HubRunningError, SimError) as exc:
        listening.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    url = _url(fleet)
    server = _Quiet(
        uvicorn.Config(
            app,
            host=fleet.hub.host,
            port=fleet.hub.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_S,
        )
    )
    web = asyncio.create_task(server.serve(sockets=[listening]))
    control = await serve_control(hub, url, stopping.set)
    # what start-up built (FastAPI, pydantic, the rows: ≈ 90,000 objects) is permanent: a full
    # collection over it took 60 ms in a loop, a stall every request in flight would wait out
    gc.freeze()
    hub.start(list(hub.rows) if start_all else ids)
    print(f"arbhub: {url}  (Ctrl-C stops the fleet and the simulator)", flush=True)
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({web, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    code = EXIT_OK
    if web.done() and not stopping.is_set():
        print("error: the web server stopped; stopping the fleet", file=sys.stderr)
        code = EXIT_FAILURE
    print("stopping the fleet …", flush=True)
    control.close()
    await hub.close(stop_fleet=True)
    with contextlib.suppress(FileNotFoundError):
        hub.run.control_socket.unlink()
    server.should_exit = True  # open connections get GRACEFUL_S, then they are closed
    with contextlib.suppress(asyncio.CancelledError):
        await web
    stop_wait.cancel()
    hub.forget()
    print("stopped", flush=True)
    return code


def _start(fleet: FleetConfig, config: Path, ids: list[str]) -> int:
    run = RunDir(fleet.hub.run_dir)
    control = run.control_socket
    try:
        ask(control, {"op": "status"}, timeout_s=5)
    except ControlError:
        run.create()
        argv = [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"]
        with open(run.hub_log, "ab") as log:
            written = log.tell()
            hub = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + HUB_START_TIMEOUT_S
        while True:
            try:
                ask(control, {"op": "status"}, timeout_s=5)
                break
            except ControlError:
                if hub.poll() is not None:  # it gave up (port in use, another hub …): say why
                    with open(run.hub_log, "rb") as log:
                        log.seek(written)
                        sys.stderr.write(log.read().decode("utf-8", "replace"))
                    print(f"error: the hub exited with code {hub.returncode}", file=sys.stderr)
                    return EXIT_FAILURE
                if time.monotonic() > deadline:
                    print(f"error: the hub did not start; see {run.hub_log}", file=sys.stderr)
                    return EXIT_FAILURE
                time.sleep(0.2)
    answer = ask(control, {"op": "start", "ids": ids})
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)
        return EXIT_USAGE
    for note in answer.get("notes", []):
        print(note)
    print(answer.get("url", _url(fleet)))
    return EXIT_OK


def _stop(fleet: FleetConfig, ids: list[str], yes: bool) -> int:
    run = RunDir(fleet.hub.run_dir)
    rows = _rows(run.control_socket)
    known = {r["id"]: r for r in rows}
    missing = [i for i in ids if i not in known]
    if missing:
        print(f"error: no such instance: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    targets = ids or list(known)
    live = [
        i
        for i in targets
        if known[i]["mode"] == "LIVE" and known[i]["process_state"] not in _SETTLED
    ]
    if live and not yes and not _confirm(f"stop LIVE rows {', '.join(live)}?"):
        print("nothing stopped")
        return EXIT_FAILURE
    ask(run.control_socket, {"op": "stop", "ids": targets})
    pending = _wait_settled(run.control_socket, targets, float(fleet.hub.stop_grace_s) + 15)
    for row in _rows(run.control_socket):
        if row["id"] in targets:
            print(f"{row['id']}: {row['process_state']}")
    if pending:
        print(f"error: still stopping: {', '.join(pending)}", file=sys.stderr)
        return EXIT_FAILURE
    if ids:
        return EXIT_OK
    record = run.read_pid("hub")
    ask(run.control_socket, {"op": "shutdown"})
    deadline = time.monotonic() + 60
    while record is not None and record.alive():  # the process itself, not just its record
        if time.monotonic() > deadline:
            print("error: the hub did not exit", file=sys.stderr)
            return EXIT_FAILURE
        time.sleep(0.2)
    print("the simulator and the hub are stopped")
    return EXIT_OK


def _status(fleet: FleetConfig, as_json: bool) -> int:
    answer = ask(RunDir(fleet.hub.run_dir).control_socket, {"op": "status"})
    rows = answer.get("rows", [])
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{answer.get('url', '')}")
    print(
        f"{'ID':12} {'MODE':8} {'PROCESS':9} {'PID':>7} {'RESTARTS':>8} {'STATE':14} "
        f"{'BASIS':>8} {'PNL':>12}  ERROR"
    )
    for r in rows:
        basis = f"{r['basis_bps']:.2f}" if r["basis_bps"] is not None else "—"
        state = (r["state"] or "—") + (" (stale)" if r["stale"] else "")
        print(
            f"{r['id']:12} {r['mode']:8} {r['process_state']:9} {r['pid'] or '—':>7} "
            f"{r['restarts']:>8} {state:14} {basis:>8} {r['realized_pnl'] or '—':>12}  "
            f"{r['error'] or ''}"
        )
    return EXIT_OK


def _logs(fleet: FleetConfig, instance: str, follow: bool, lines: int) -> int:
    if instance not in fleet.ids:
        print(f"error: no such instance: {instance}", file=sys.stderr)
        return EXIT_USAGE
    path = RunDir(fleet.hub.run_dir).log(instance)
    for line in tail_lines(path, lines):
        print(line)
    if not follow:
        return EXIT_OK
    position = path.stat().st_size if path.exists() else 0
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            size = path.stat().st_size if path.exists() else 0
            if size < position:  # rotated (truncated): read the new content from the start
                position = 0
            if size > position:
                with open(path, "rb") as log:
                    log.seek(position)
                    data = log.read(size - position)
                position += len(data)
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
            time.sleep(0.25)
    return EXIT_OK


_ACTIVE = frozenset({"RUNNING", "STARTING", "UNKNOWN", "STOPPING", "BACKOFF"})


def _reconcile(fleet: FleetConfig, config: Path, ids: list[str], flags: list[str]) -> int:
    """A stopped row is reconciled by the worker's own tool under the instance lock
    (``spot-future-arb --reconcile``); a running halted row shows the difference its worker
    found, and ``--resume`` is sent to it; a running row that trades is left alone."""
    missing = [i for i in ids if i not in fleet.ids]
    if missing:
        print(f"error: no such instance: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    run = RunDir(fleet.hub.run_dir)
    try:
        rows = {r["id"]: r for r in _rows(run.control_socket)}
    except ControlError:
        rows = {}  # no hub: every row is stopped (the instance lock is checked anyway)
    env = dict(os.environ)
    sim = run.read_pid("sim")
    if sim is not None and sim.url and sim.alive():
        env["ARBHUB_ENDPOINTS"] = json.dumps(endpoints_for(sim.url))
    code = EXIT_OK
    for instance in ids or fleet.ids:
        row = rows.get(instance)
        if row is not None and row["process_state"] in _ACTIVE:
            code = max(code, _reconcile_running(run, row, flags))
            continue
        argv = [str(Path(sys.executable).parent / "spot-future-arb"), "--config", str(config)]
        done = subprocess.run(
            [*argv, "--instance", instance, "--reconcile", *flags],
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        code = max(code, EXIT_FAILURE if done.returncode else EXIT_OK)
    return code


def _reconcile_running(run: RunDir, row: dict[str, Any], flags: list[str]) -> int:
    instance = row["id"]
    if row["state"] != "halted":
        print(
            f"{instance}: {row['process_state']} and {row['state'] or 'starting'}: "
            "nothing to reconcile while it trades (stop it first)"
        )
        return EXIT_OK
    print(f"{instance}: halted while running: {row['error'] or 'no difference reported'}")
    if "--cancel-orphans" in flags or "--clear" in flags:
        print(
            f"{instance}: --cancel-orphans and --clear need the row stopped (hub stop {instance})"
        )
        return EXIT_FAILURE
    if "--resume" in flags:
        answer = ask(run.control_socket, {"op": "resume", "ids": [instance]})
        if not answer.get("ok"):
            print(f"{instance}: {answer.get('error')}")
            return EXIT_FAILURE
        print(f"{instance}: resume sent (the worker leaves halted only if it agrees)")
    return EXIT_FAILURE


def _flatten(fleet: FleetConfig, instance: str, yes: bool) -> int:
    if not yes and not _confirm(f"flatten {instance}: market-unwind both legs to flat?"):
        print("nothing sent")
        return EXIT_FAILURE
    answer = ask(RunDir(fleet.hub.run_dir).control_socket, {"op": "flatten", "ids": [instance]})
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILURE
    print(*answer.get("notes", []), sep="\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        fleet = _load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    config = Path(args.config).resolve()
    try:
        if args.command == "serve":
            return _serve(fleet, config, args.ids, args.all)
        if args.command == "start":
            return _start(fleet, config, args.ids)
        if args.command == "logs":
            return _logs(fleet, args.id, args.follow, args.lines)
        if args.command == "stop":
            return _stop(fleet, args.ids, args.yes)
        if args.command == "status":
            return _status(fleet, args.json)
        if args.command == "reconcile":
            flags = [
                flag
                for flag, on in (
                    ("--cancel-orphans", args.cancel_orphans),
                    ("--resume", args.resume),
                    ("--clear", args.clear),
                )
                if on
            ]
            return _reconcile(fleet, config, args.ids, flags)
        if args.command == "flatten":
            return _flatten(fleet, args.id, args.yes)
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())

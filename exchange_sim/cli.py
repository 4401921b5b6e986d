"""``exchange-sim``: the simulated Bybit V5 exchange as a process.

Prints ``listening on http://HOST:PORT`` as its first stdout line once the socket accepts
connections (``--port 0`` picks a free port). Exit codes: 0 after SIGINT/SIGTERM, 2 for a bad
configuration or state file, 3 when another simulator holds the state file.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from exchange_sim.config import SimConfigError, load_sim_config
from exchange_sim.engine import Exchange
from exchange_sim.journal import Journal, JournalError
from exchange_sim.server import (
    AbortableWebSocketProtocol,
    SimApp,
    StampedHttpProtocol,
    wall_clock_ms,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--config", help="simulator config JSON (instruments, accounts, fees, model)"
    )
    parser.add_argument("--state", help="journal file: accounts, orders and fills survive restarts")
    parser.add_argument(
        "--scripted", action="store_true", help="start with the market model frozen"
    )
    return parser


def _lock(state: Path) -> int | None:
    """Hold an exclusive lock beside the journal for the life of the process."""
    state.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{state}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_sim_config(args.config)
    except SimConfigError as exc:
        print(f"exchange-sim: {exc}", file=sys.stderr)
        return 2
    journal = None
    if args.state:
        state = Path(args.state)
        if _lock(state) is None:
            print(f"exchange-sim: {state} is in use by another simulator", file=sys.stderr)
            return 3
        journal = Journal(state)
    try:
        exchange = Exchange(
            config, seed=args.seed, clock=wall_clock_ms, journal=journal, frozen=args.scripted
        )
    except JournalError as exc:
        print(f"exchange-sim: {exc}", file=sys.stderr)
        return 2
    app = SimApp(exchange, subscribe_delay_ms=config.ws_subscribe_delay_ms)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"exchange-sim: cannot bind {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    sock.listen(1024)
    port = sock.getsockname()[1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http=StampedHttpProtocol,
            # idle keep-alive connections live 75 s, like common load balancers (uvicorn's
            # default is 5 s): a client reusing a warm connection must not race its close
            timeout_keep_alive=75,
            ws=AbortableWebSocketProtocol,
            ws_per_message_deflate=False,  # per-client compression would dominate fan-out cost
            loop="uvloop",
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handler that was installed before it; a no-op one makes that stop exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    server.run(sockets=[sock])
    return 0


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The signal that stopped the server, delivered again after its graceful shutdown."""


if __name__ == "__main__":
    raise SystemExit(main())

"""A real hub for tests: ``hub serve`` as a subprocess on a free port, with its own config,
run folder and simulator, driven through its HTTP API, its CLI and the simulator's admin API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "algo" / "spot-future-arb"
BIN = Path(sys.executable).parent
START_S = 60.0  # the acceptance bound for rows to be RUNNING with fresh books
ROWS = [
    {"id": "btc", "spot_symbol": "BTCUSDT", "future_symbol": "BTCUSDT", "order_qty": "0.002"},
    {"id": "eth", "spot_symbol": "ETHUSDT", "future_symbol": "ETHUSDT", "order_qty": "0.05"},
    {"id": "sol", "spot_symbol": "SOLUSDT", "future_symbol": "SOLUSDT", "order_qty": "1"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, rows: list[dict[str, Any]], **root: Any) -> Path:
    """A fleet config in ``folder`` (the shipped demo's settings and simulator config)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((SHIPPED / "config.json").read_text())
    shutil.copy(SHIPPED / "sim.json", folder / "sim.json")
    config["instances"] = [{"state_path": f"state/{r['id']}.json", **r} for r in rows]
    config["hub"] = {"host": "127.0.0.1", "port": free_port(), "run_dir": "run", "stop_grace_s": 15}
    hub = root.pop("hub", {})
    config["hub"].update(hub)
    config.update(root)
    path = folder / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class RunningHub:
    """``hub --config … serve --all`` in the background."""

    def __init__(self, config: Path, *, serve_args: tuple[str, ...] = ("--all",)) -> None:
        self.config = config
        self.folder = config.parent
        loaded = json.loads(config.read_text())
        settings = loaded["hub"]
        self.ids = [row["id"] for row in loaded["instances"]]
        self.port = int(settings["port"])
        self.run_dir = self.folder / settings.get("run_dir", "run")
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = self.folder / "serve.out"
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.proc: subprocess.Popen[bytes] | None = None
        self.serve(*serve_args)

    def serve(self, *args: str) -> None:
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "hub"), "--config", str(self.config), "serve", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.until(self._ready, "the hub to be ready", START_S)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hub exited {self.proc.returncode}:\n{self.out.read_text()}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    # ---------------------------------------------------------------- reading

    def rows(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.http.get("/api/instances").json()}

    def row(self, instance: str) -> dict[str, Any]:
        reply = self.http.get(f"/api/instances/{instance}")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def until(self, check: Callable[[], bool], what: str, timeout: float = START_S) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {what} within {timeout:g} s; rows: {self._rows_or_none()}"
                )
            time.sleep(0.2)

    def _rows_or_none(self) -> Any:
        try:
            return self.rows()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_state(
        self, instance: str, process_state: str, timeout: float = START_S
    ) -> dict[str, Any]:
        self.until(
            lambda: self.row(instance)["process_state"] == process_state,
            f"{instance} {process_state}",
            timeout,
        )
        return self.row(instance)

    def pid_record(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.run_dir / f"{name}.pid").read_text()))
        except (OSError, ValueError):
            return None

    @property
    def sim_url(self) -> str:
        record = self.pid_record("sim")
        assert record is not None and record.get("url"), "no simulator pid record"
        return str(record["url"])

    def sim_admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = httpx.request("POST" if body is not None else "GET", self.sim_url + path, json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def csrf(self) -> str:
        page = self.http.get("/arb").text
        marker = 'name="csrf-token" content="'
        start = page.index(marker) + len(marker)
        return page[start : page.index('"', start)]

    def post(self, path: str, *, csrf: bool = True) -> httpx.Response:
        headers = {"accept": "application/json"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf()
        return self.http.post(path, headers=headers)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "hub"), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    # ---------------------------------------------------------------- ending

    def kill_hub(self) -> None:
        """SIGKILL the hub alone: its workers and the simulator must live on."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """Stop everything this hub (or an adopted successor) started, whatever state it is in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.cli("stop", "--yes", timeout=90)  # a hub adopted by `hub start` in a test
        for name in [*self.ids, "sim", "hub"]:
            record = self.pid_record(name)
            if record is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(record["pid"]), signal.SIGKILL)
        self.http.close()


# ------------------------------------------------- helpers added for tests/integration/test_hub.py


class TokenHub(RunningHub):
    """A :class:`RunningHub` whose config names ``hub.token_file``: the harness's own client
    carries ``Authorization: Bearer <token>`` (``self.token``); other clients do not."""

    def __init__(self, config: Path, *, serve_args: tuple[str, ...] = ("--all",)) -> None:
        settings = json.loads(config.read_text())["hub"]
        token_file = Path(settings["token_file"])
        if not token_file.is_absolute():
            token_file = config.parent / token_file
        self.token = token_file.read_text().strip()
        super().__init__(config, serve_args=serve_args)

    def _ready(self) -> bool:
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return super()._ready()


def alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def workers_of(config: Path) -> dict[str, list[int]]:
    """Live ``spot-future-arb`` processes started with this config, by ``--instance`` id."""
    found: dict[str, list[int]] = {}
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or len(cmdline) < 2:
            continue
        if not any(Path(part).name == "spot-future-arb" for part in cmdline[:2]):
            continue
        if str(config) not in cmdline or "--instance" not in cmdline:
            continue
        at = cmdline.index("--instance")
        if at + 1 < len(cmdline):
            found.setdefault(cmdline[at + 1], []).append(int(process.info["pid"]))
    return found


def write_account_file(folder: Path, api_key: str, api_secret: str) -> Path:
    """``account.json`` (mode 0600) in ``folder``; name it with ``account_file="account.json"``."""
    path = folder / "account.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api_key": api_key, "api_secret": api_secret}))
    path.chmod(0o600)
    return path


def write_token_file(folder: Path, token: str) -> Path:
    """``token`` (mode 0600) in ``folder``; name it with ``hub={"token_file": "token"}``."""
    path = folder / "token"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path

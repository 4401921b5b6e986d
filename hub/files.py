"""The hub's folder (``hub.run_dir``): sockets, pid records and log files (ARCHITECTURE §6, §8).

Everything that must outlive a hub process is a file here, so a restarted hub can adopt what
is still running: ``hub.pid``, ``sim.pid`` (with the simulator's URL), ``<id>.pid`` per worker,
``wanted.json`` (which rows the operator wants running), and the log files the processes write
to directly. The folder is 0700 and the sockets 0600: only the operator's user may talk to the
hub or the workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import deque
from pathlib import Path

import msgspec
import psutil

__all__ = ["PidRecord", "RunDir", "log_too_big", "rotate_log", "tail_lines"]

LOG_MAX_BYTES = 10 << 20  # a worker's log is rotated (copy, then truncate) beyond this size
LOG_KEEP = 3  # <id>.log.1 … <id>.log.3


class PidRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A process the hub started: its pid and start time (a reused pid never matches both)."""

    pid: int
    create_time: float
    url: str | None = None  # the simulator's base URL

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return (
                abs(process.create_time() - self.create_time) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    @classmethod
    def of(cls, pid: int, url: str | None = None) -> PidRecord:
        return cls(pid=pid, create_time=psutil.Process(pid).create_time(), url=url)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    @property
    def ipc_socket(self) -> Path:
        return self.path / "ipc.sock"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    @property
    def hub_log(self) -> Path:
        return self.path / "hub.log"

    @property
    def sim_log(self) -> Path:
        return self.path / "sim.log"

    @property
    def sim_state(self) -> Path:
        return self.path / "sim-state"

    @property
    def wanted_file(self) -> Path:
        return self.path / "wanted.json"

    def log(self, instance: str) -> Path:
        return self.path / f"{instance}.log"

    def pid_file(self, name: str) -> Path:
        """``hub``, ``sim`` or an instance id."""
        return self.path / f"{name}.pid"

    def read_pid(self, name: str) -> PidRecord | None:
        try:
            return msgspec.json.decode(self.pid_file(name).read_bytes(), type=PidRecord)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def write_pid(self, name: str, record: PidRecord) -> None:
        _replace(self.pid_file(name), msgspec.json.encode(record))

    def forget_pid(self, name: str, record: PidRecord | None = None) -> None:
        """Remove a pid file (only if it still names ``record``, when given)."""
        if record is not None and self.read_pid(name) != record:
            return
        with contextlib.suppress(FileNotFoundError):
            self.pid_file(name).unlink()

    def read_wanted(self) -> set[str]:
        try:
            return set(msgspec.json.decode(self.wanted_file.read_bytes(), type=list[str]))
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return set()

    def write_wanted(self, wanted: set[str]) -> None:
        _replace(self.wanted_file, msgspec.json.encode(sorted(wanted)))


def _replace(path: Path, data: bytes) -> None:
    """Whole or not at all: a reader never sees half a pid file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def log_too_big(path: Path, max_bytes: int = LOG_MAX_BYTES) -> bool:
    try:
        return path.stat().st_size > max_bytes
    except FileNotFoundError:
        return False


def rotate_log(path: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
    """Copy-then-truncate rotation of a log a running process writes with ``O_APPEND``: the
    writer keeps its descriptor and goes on at the new end. Returns whether it rotated."""
    if not log_too_big(path, max_bytes):
        return False
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as log:
        log.truncate(0)
    return True


def tail_lines(path: Path, count: int, *, max_bytes: int = 256 << 10) -> list[str]:
    """The last ``count`` lines of a log (reading at most ``max_bytes`` from its end)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut
    return list(deque(lines, maxlen=count))

"""The instance's files: an exclusive lock and the atomically written snapshot (§6).

Only the process holding the lock may trade the instance or touch its snapshot, so two
workers (or a worker and ``hub reconcile``) can never act on one instance at once. The lock
is a ``flock`` on ``<state_path>.lock``, released by the kernel when the holder dies; the
file carries the holder's pid for the error message. A snapshot is written to a temporary
file, fsynced, renamed over the old one and the directory fsynced, so a crash at any point
leaves either the old or the new snapshot, whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from worker.core import snapshot
from worker.core.model import CoreState

__all__ = ["InstanceLock", "LockedError", "SnapshotStore"]


class LockedError(RuntimeError):
    """Another process holds the instance (worker exit code 3)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by another process (pid {holder or 'unknown'})")
        self.path = path
        self.holder = holder


class InstanceLock:
    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise LockedError(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SnapshotStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> CoreState | None:
        """The saved state, ``None`` for a first start; raises ``SnapshotError`` when the file
        is unreadable or newer than this build (the worker then refuses to start)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise snapshot.SnapshotError(f"cannot read {self.path}: {exc.strerror}") from None
        return snapshot.decode(data, source=str(self.path))

    def save(self, state: CoreState) -> None:
        write_atomically(self.path, snapshot.encode(state))


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory: old or new content survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

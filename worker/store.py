"""The instance's files: an exclusive lock and the atomically written snapshot (§6).

Only the process holding the lock may trade the instance or touch its snapshot, so two
workers (or a worker and ``hub reconcile``) can never act on one instance at once. The lock
is a ``flock`` on ``<state_path>.lock``, released by the kernel when the holder dies; the
file carries the holder's pid for the error message. A snapshot is written to a temporary
file, fsynced, renamed over the old one and the directory fsynced, so a crash at any point
leaves either the old or the new snapshot, whole.

Two cheaper writes serve the order path (§5.1). Before a step's orders are sent, the state is
*staged*: written in place, without fsync, into one of two checksummed slots of
``<state_path>.staged`` (a ``pwrite`` of a few kilobytes, microseconds; creating and renaming
a file costs hundreds of microseconds to milliseconds on ext4), which a killed process cannot
lose. The slots alternate, so a write cut short leaves the previous stage whole. The finished
orders, most of the state's bytes, are re-encoded only when the core's ``done_rev`` says they
may have changed, and the runtime does that after its steps, so a book-driven order pays only
for the rest. The durable snapshot follows off the hot path. Every copy carries a serial and
the newest readable one wins at start. Only a power loss can lose the staged copy, and then
the durable *id reservation* (one fsync per block of ids) tells the restarted worker which
ids to look up at the venue.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from pathlib import Path

import msgspec

from worker.core import snapshot
from worker.core.model import CoreState

__all__ = ["IdReservation", "InstanceLock", "LockedError", "SnapshotStore", "write_atomically"]

_SLOT = 4 << 20  # bytes per staging slot; a larger state is staged by write-and-rename
_SLOT_HEADER = struct.Struct("<QII")  # serial, payload length, crc32
_done_encoder = msgspec.json.Encoder()


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
        self.staged_path = path.with_name(path.name + ".staged")
        self.oversize_path = path.with_name(path.name + ".staged-big")
        self.serial = 0
        self._staged_fd: int | None = None
        self._done_key: tuple[int, int, int] | None = None
        self._done_raw = msgspec.Raw(b"{}")

    def load(self) -> CoreState | None:
        """The newest saved state, ``None`` for a first start; raises ``SnapshotError`` when
        the snapshot is unreadable or newer than this build (the worker then refuses to start).
        A staged copy that does not check out was cut short and is ignored."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise snapshot.SnapshotError(f"cannot read {self.path}: {exc.strerror}") from None
        found = None if data is None else snapshot.decode_with_serial(data, source=str(self.path))
        for staged in self._staged():
            if found is None or staged[1] > found[1]:
                found = staged
        if found is None:
            return None
        self.serial = found[1]
        return found[0]

    def _staged(self) -> list[tuple[CoreState, int]]:
        out = []
        with contextlib.suppress(OSError, snapshot.SnapshotError):
            out.append(snapshot.decode_with_serial(self.oversize_path.read_bytes()))
        try:
            raw = self.staged_path.read_bytes()
        except OSError:
            return out
        for offset in (0, _SLOT):
            header = raw[offset : offset + _SLOT_HEADER.size]
            if len(header) < _SLOT_HEADER.size:
                continue
            serial, length, crc = _SLOT_HEADER.unpack(header)
            start = offset + _SLOT_HEADER.size
            payload = raw[start : start + length]
            if serial == 0 or len(payload) != length or zlib.crc32(payload) != crc:
                continue
            with contextlib.suppress(snapshot.SnapshotError):
                out.append(snapshot.decode_with_serial(payload))
        return out

    def encode(self, state: CoreState) -> bytes:
        self.serial += 1
        return snapshot.encode(state, self.serial)

    def save(self, state: CoreState) -> None:
        self.write(self.encode(state))

    def write(self, data: bytes) -> None:
        """Durably write bytes from :meth:`encode` (callable from another thread)."""
        write_atomically(self.path, data)

    def finished_orders(self, state: CoreState) -> msgspec.Raw:
        """``state.done`` encoded, from the cache unless the core moved ``done_rev`` (or the
        dict is another one) since: what :meth:`stage` splices in."""
        key = (id(state.done), state.done_rev, len(state.done))
        if key != self._done_key:
            self._done_raw = msgspec.Raw(_done_encoder.encode(state.done))
            self._done_key = key
        return self._done_raw

    def stage(self, state: CoreState) -> None:
        """Survives the process being killed, not a power loss; no fsync, no new file."""
        data = self.encode(msgspec.structs.replace(state, done=self.finished_orders(state)))
        if len(data) + _SLOT_HEADER.size > _SLOT:
            write_atomically(self.oversize_path, data, durable=False)  # rare: slow but whole
            return
        if self._staged_fd is None:
            self._staged_fd = os.open(self.staged_path, os.O_RDWR | os.O_CREAT, 0o600)
        header = _SLOT_HEADER.pack(self.serial, len(data), zlib.crc32(data))
        os.pwrite(self._staged_fd, header + data, (self.serial % 2) * _SLOT)

    def close(self) -> None:
        if self._staged_fd is not None:
            os.close(self._staged_fd)
            self._staged_fd = None


class IdReservation:
    """``<state_path>.ids``: the highest ``orderLinkId`` sequence block durably reserved.

    The runtime reserves ahead in the background, so the core's own ``ReserveIds`` is nearly
    always covered already and costs no fsync on the order path. Writes are serialised and
    never lower what is on disk.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".ids")
        self._lock = threading.Lock()
        self._durable = self.saved()

    def saved(self) -> tuple[int, int] | None:
        """The recorded ``(epoch, block_end)``, if any."""
        try:
            epoch, block_end = (int(x) for x in self.path.read_text().split())
        except (OSError, ValueError):
            return None
        return epoch, block_end

    def load(self, epoch: int) -> int:
        """The reserved ``block_end`` for ``epoch`` (0 when none is recorded for it)."""
        saved = self.saved()
        return saved[1] if saved is not None and saved[0] == epoch else 0

    def covers(self, epoch: int, block_end: int) -> bool:
        durable = self._durable
        return durable is not None and durable[0] == epoch and durable[1] >= block_end

    def save(self, epoch: int, block_end: int) -> None:
        """Durable on return: every sequence below ``block_end`` of ``epoch`` is reserved."""
        with self._lock:
            if self.covers(epoch, block_end):
                return
            write_atomically(self.path, f"{epoch} {block_end}\n".encode())
            self._durable = (epoch, block_end)


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temp file, fsync, rename, fsync the directory: old or new content survives a crash
    (without ``durable``: a killed process, but not a power loss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

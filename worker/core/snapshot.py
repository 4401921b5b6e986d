"""Versioned snapshot encoding of :class:`CoreState` (ARCHITECTURE §6).

The snapshot is the whole core state, so a resumed worker decides exactly as one that never
stopped. Decoding refuses a snapshot written by a newer version instead of guessing at it.
"""

from __future__ import annotations

import msgspec

from worker.core.model import CoreState

SNAPSHOT_VERSION = 1


class SnapshotError(Exception):
    """The snapshot cannot be used; the message says what to do (worker exit code 4)."""


class Snapshot(msgspec.Struct, kw_only=True):
    version: int
    state: CoreState
    serial: int = 0  # rises with every write: the newer of two copies wins


class _Header(msgspec.Struct):
    version: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)
_header_decoder = msgspec.json.Decoder(_Header)


def encode(state: CoreState, serial: int = 0) -> bytes:
    return _encoder.encode(Snapshot(version=SNAPSHOT_VERSION, state=state, serial=serial))


def decode(data: bytes, *, source: str = "snapshot") -> CoreState:
    return decode_with_serial(data, source=source)[0]


def decode_with_serial(data: bytes, *, source: str = "snapshot") -> tuple[CoreState, int]:
    try:
        version = _header_decoder.decode(data).version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(
            f"{source} is unreadable ({exc}); restore it from a backup or "
            "reconcile and clear the instance"
        ) from None
    if version > SNAPSHOT_VERSION:
        raise SnapshotError(
            f"{source} was written by a newer arbhub (snapshot version "
            f"{version}; this build reads up to {SNAPSHOT_VERSION}): upgrade "
            "arbhub, never edit or delete the snapshot"
        )
    if version < 1:
        raise SnapshotError(f"{source} has an invalid version {version}")
    try:
        decoded = _decoder.decode(data)
        return decoded.state, decoded.serial
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(
            f"{source} is unreadable ({exc}); restore it from a backup or "
            "reconcile and clear the instance"
        ) from None

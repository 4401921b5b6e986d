"""The worker ↔ hub protocol (ARCHITECTURE §7), shared by both sides.

Frames are a 4-byte big-endian length followed by the msgpack encoding of one tagged msgspec
struct. Up (worker → hub): ``Hello`` once per connection, ``Status`` at least every second
and on every change, ``Heartbeat``. Down (hub → worker): ``Stop``, ``CancelEntry``,
``Flatten``, ``ClearRisk``, ``Resume``. Decimals travel as strings (msgspec's msgpack
encoding), never as floats. A frame over ``MAX_FRAME`` bytes or one that does not decode is
a protocol error: the receiver drops the connection rather than guess.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec

__all__ = [
    "MAX_FRAME",
    "SOCKET_NAME",
    "CancelEntry",
    "ClearRisk",
    "Down",
    "Flatten",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "ProtocolError",
    "Resume",
    "Status",
    "Stop",
    "Up",
    "decode_down",
    "decode_up",
    "encode",
    "read_frame",
]

MAX_FRAME = 1 << 20
_HEADER = 4
SOCKET_NAME = "ipc.sock"  # in the hub's run_dir; a worker started by hand finds it there


class ProtocolError(ValueError):
    """A frame the peer must not have sent: too large, truncated or undecodable."""


# --- worker → hub --------------------------------------------------------------------------


class Hello(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    instance: str
    pid: int
    mode: str  # SIM, DRY-RUN, DEMO, TESTNET, LIVE
    version: str


class Status(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Everything ``/api/instances`` shows about the worker's side of a row (§8)."""

    instance: str
    mode: str
    spot_symbol: str
    perp_symbol: str
    state: str  # flat, entry_working, race_exit, carry_hedged, unwinding, halted
    basis_bps: Decimal | None
    book_age_ms: int | None
    spot_position: Decimal
    perp_position: Decimal
    unhedged_qty: Decimal
    unhedged_age_ms: int | None
    working_orders: int
    orders: int
    fills: int
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    funding: Decimal
    risk_blocked: str | None
    error: str | None
    updated_ms: int
    blocked: str | None = None  # why an entry is held back (balance, notional), not an error
    syncing: bool = False  # resyncing with the venue after a start: not trading yet


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    instance: str
    ts_ms: int


Up = Hello | Status | Heartbeat


# --- hub → worker --------------------------------------------------------------------------


class Stop(msgspec.Struct, frozen=True, tag=True):
    """Stop as on SIGTERM: cancel the entry, leave hedges working, snapshot, exit 0."""


class CancelEntry(msgspec.Struct, frozen=True, tag=True):
    """Cancel a working entry and pause new entries until ``Resume``."""


class Flatten(msgspec.Struct, frozen=True, tag=True):
    """Market-unwind both legs to flat (operator-confirmed; allowed in ``halted``)."""


class ClearRisk(msgspec.Struct, frozen=True, tag=True):
    """Lift a risk block (the daily-loss window restarts now)."""


class Resume(msgspec.Struct, frozen=True, tag=True):
    """Allow entries again (after ``CancelEntry``, ``Flatten`` or a reconcile)."""


Down = Stop | CancelEntry | Flatten | ClearRisk | Resume

_encoder = msgspec.msgpack.Encoder()
_up: msgspec.msgpack.Decoder[Up] = msgspec.msgpack.Decoder(Up)
_down: msgspec.msgpack.Decoder[Down] = msgspec.msgpack.Decoder(Down)


def encode(message: Up | Down) -> bytes:
    """One frame: length prefix and payload."""
    payload = _encoder.encode(message)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"{type(message).__name__} frame of {len(payload)} bytes")
    return len(payload).to_bytes(_HEADER, "big") + payload


def decode_up(payload: bytes) -> Up:
    try:
        return _up.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"bad worker message: {exc}") from None


def decode_down(payload: bytes) -> Down:
    try:
        return _down.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"bad hub message: {exc}") from None


class FrameDecoder:
    """Splits a byte stream into frame payloads, however the bytes arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER:
            size = int.from_bytes(self._buffer[:_HEADER], "big")
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes announced (limit {MAX_FRAME})")
            if len(self._buffer) < _HEADER + size:
                break
            frames.append(bytes(self._buffer[_HEADER : _HEADER + size]))
            del self._buffer[: _HEADER + size]
        return frames


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's payload, or ``None`` at a clean end of stream between frames."""
    try:
        header = await reader.readexactly(_HEADER)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream ended inside a frame header") from None
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes announced (limit {MAX_FRAME})")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None

"""The worker ↔ hub frame protocol: round trips, framing, and refusal of bad frames."""

from __future__ import annotations

import asyncio
import os
import tempfile
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import ipc

STATUS = ipc.Status(
    instance="btc",
    mode="SIM",
    spot_symbol="BTCUSDT",
    perp_symbol="BTCUSDT",
    state="carry_hedged",
    basis_bps=Decimal("12.5"),
    book_age_ms=40,
    spot_position=Decimal("0.001998"),
    perp_position=Decimal("-0.002"),
    unhedged_qty=Decimal("0"),
    unhedged_age_ms=None,
    working_orders=0,
    orders=4,
    fills=3,
    realized_pnl=Decimal("-0.1"),
    unrealized_pnl=Decimal("0.05"),
    fees=Decimal("0.0001"),
    funding=Decimal("0"),
    risk_blocked=None,
    error=None,
    updated_ms=1_700_000_000_000,
)
UP: list[ipc.Up] = [
    ipc.Hello(instance="btc", pid=123, mode="SIM", version="0.1.0"),
    STATUS,
    ipc.Heartbeat(instance="btc", ts_ms=5),
]
DOWN: list[ipc.Down] = [ipc.Stop(), ipc.CancelEntry(), ipc.Flatten(), ipc.ClearRisk(), ipc.Resume()]


def test_every_message_round_trips_exactly() -> None:
    decoder = ipc.FrameDecoder()
    frames = decoder.feed(b"".join(ipc.encode(m) for m in UP))
    assert [ipc.decode_up(f) for f in frames] == UP
    frames = decoder.feed(b"".join(ipc.encode(m) for m in DOWN))
    assert [ipc.decode_down(f) for f in frames] == DOWN


def test_decimals_travel_as_strings_not_floats() -> None:
    payload = ipc.encode(STATUS)[4:]
    assert b"0.001998" in payload  # the exact text, not a binary float
    decoded = ipc.decode_up(payload)
    assert isinstance(decoded, ipc.Status)
    assert decoded.spot_position == Decimal("0.001998")


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_frames_survive_any_chunking(cuts: list[int]) -> None:
    stream = b"".join(ipc.encode(m) for m in [*UP, *DOWN])
    decoder = ipc.FrameDecoder()
    frames: list[bytes] = []
    offset = 0
    i = 0
    while offset < len(stream):
        size = cuts[i % len(cuts)]
        frames += decoder.feed(stream[offset : offset + size])
        offset += size
        i += 1
    assert len(frames) == len(UP) + len(DOWN)
    assert [ipc.decode_up(f) for f in frames[: len(UP)]] == UP


def test_a_direction_mix_up_and_garbage_are_protocol_errors() -> None:
    with pytest.raises(ipc.ProtocolError):
        ipc.decode_down(ipc.encode(STATUS)[4:])  # a worker message sent down
    with pytest.raises(ipc.ProtocolError):
        ipc.decode_up(b"\xff\x00garbage")


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    decoder = ipc.FrameDecoder()
    with pytest.raises(ipc.ProtocolError, match="limit"):
        decoder.feed((ipc.MAX_FRAME + 1).to_bytes(4, "big") + b"x")


def test_read_frame_over_a_real_unix_socket() -> None:
    async def run(path: str) -> list[bytes | None]:
        got: list[bytes | None] = []
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (frame := await ipc.read_frame(reader)) is not None:
                got.append(frame)
            got.append(None)
            writer.close()
            done.set()

        server = await asyncio.start_unix_server(serve, path)
        _, writer = await asyncio.open_unix_connection(path)
        for message in UP:
            frame = ipc.encode(message)
            writer.write(frame[:3])  # split mid-header
            await writer.drain()
            writer.write(frame[3:])
        await writer.drain()
        writer.close()
        await asyncio.wait_for(done.wait(), 10)
        server.close()
        return got

    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(run(os.path.join(tmp, "ipc.sock")))
    assert [ipc.decode_up(f) for f in got[:-1] if f is not None] == UP
    assert got[-1] is None


def test_a_stream_cut_inside_a_frame_is_an_error() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(ipc.encode(STATUS)[:10])
        reader.feed_eof()
        await ipc.read_frame(reader)

    with pytest.raises(ipc.ProtocolError, match="inside a frame"):
        asyncio.run(run())

"""The WebSocket client connection (``worker.venues.wsconn``) and the Bybit socket built on it
(``worker.venues.bybit.stream``), against servers on 127.0.0.1 run inside each test.

Two kinds of server: ``websockets``' own asyncio server, where a well-behaved peer is enough,
and :class:`RawServer`, an asyncio stream server whose script writes and reads WebSocket bytes
itself (fragmented frames, pings, protocol violations, refused or garbled handshakes, a Bybit
peer that never answers pings). Every test runs in a fresh event loop under an overall limit,
with a loop exception handler that fails the test if anything escapes to it.

``tests/integration/test_bybit_stream.py`` covers ``BybitSocket`` against the exchange
simulator (drop and reconnect, refused subscribe, auth); this file covers what the simulator
cannot do on purpose: silence, data before a reply, unprompted refusals, stops at awkward times.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gc
import hashlib
import json
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.integration.waiting import WAIT_S, until
from worker.venues.bybit.stream import BybitSocket
from worker.venues.wsconn import WsClosedError, WsConnection

P = ParamSpec("P")
TEST_LIMIT_S = 10.0  # the whole test

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def aio(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test in a fresh loop, at most ``TEST_LIMIT_S``, and fail it if
    anything reached the loop's exception handler (collected garbage included)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            escaped: list[dict[str, Any]] = []

            def record(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
                escaped.append(context)

            loop.set_exception_handler(record)
            await asyncio.wait_for(test(*args, **kwargs), TEST_LIMIT_S)
            await asyncio.sleep(0.01)  # callbacks that closes scheduled
            gc.collect()  # "exception was never retrieved" is reported on collection
            assert escaped == [], escaped

        asyncio.run(main())

    return run


class Inbox:
    """An ``on_message`` that keeps what it was given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.messages.append(data)


# --- frames as bytes -----------------------------------------------------------------------


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes = b""
) -> bytes:
    """One frame as a server writes it (unmasked unless ``mask`` is given)."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if mask:
        payload = mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass(frozen=True)
class Got:
    """A frame the server read from the client."""

    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def code(self) -> int | None:
        """A close frame's status code (None for an empty close frame)."""
        assert self.opcode == CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None

    def json(self) -> dict[str, Any]:
        assert self.opcode == TEXT, self
        message = json.loads(self.payload)
        assert isinstance(message, dict)
        return message


# --- the raw server ------------------------------------------------------------------------


@dataclass(eq=False)
class Peer:
    """The server's side of one TCP connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    request: list[str] = field(default_factory=list)  # the handshake request's lines
    got: list[Got] = field(default_factory=list)  # frames read from the client, in order
    eof: bool = False  # the client ended its side (EOF, reset)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    async def send_split(self, data: bytes, split: str) -> None:
        """``data`` in one write, or ("byte by byte") one byte per write and loop turn."""
        if split == "one write":
            self.send(data)
            return
        for byte in data:
            self.send(bytes([byte]))
            await self.writer.drain()
            await asyncio.sleep(0)

    async def read_request(self) -> list[str]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.request = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        return self.request

    def header(self, name: str) -> str:
        for line in self.request[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        raise AssertionError(f"no {name} in {self.request}")

    async def handshake(self, accept: str | None = None) -> None:
        """Read the client's upgrade request and switch protocols."""
        await self.read_request()
        assert self.request[0].startswith("GET /ws"), self.request
        assert self.header("Upgrade").lower() == "websocket"
        key = self.header("Sec-WebSocket-Key")
        if accept is None:
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
        )

    async def recv(self) -> Got | None:
        """The next frame from the client (unmasked), or None at its end."""
        try:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            assert head[1] & 0x80, "a client frame must be masked"
            mask = await self.reader.readexactly(4)
            data = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof = True
            return None
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        got = Got(head[0] & 0x0F, payload, fin=bool(head[0] & 0x80))
        self.got.append(got)
        return got

    async def recv_text(self) -> dict[str, Any]:
        """The next text message (a JSON object), skipping control frames."""
        while True:
            got = await self.recv()
            assert got is not None, "the client went away"
            if got.opcode == TEXT:
                return got.json()

    async def serve(self, answer: Callable[[Peer, dict[str, Any]], None] | None = None) -> None:
        """Read until the client goes: each text message goes to ``answer``; a close frame is
        echoed and the connection closed, as a well-behaved server does."""
        while True:
            got = await self.recv()
            if got is None:
                self.close()
                return
            if got.opcode == TEXT and answer is not None:
                answer(self, got.json())
            elif got.opcode == CLOSE:
                self.send(frame(CLOSE, got.payload))
                self.close()
                return

    async def ended(self, timeout: float = WAIT_S) -> bool:
        """Whether the client ends its side within ``timeout`` (reading, and dropping, data)."""
        try:
            async with asyncio.timeout(timeout):
                while not self.eof:
                    if await self.recv() is None:
                        break
        except TimeoutError:
            return False
        return True


Script = Callable[[Peer], Coroutine[Any, Any, None]]


class RawServer:
    """Runs ``script`` for every connection accepted on 127.0.0.1. An exception in a script is
    raised again from ``check()`` (and at the end of ``raw_server``)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.peers: list[Peer] = []
        self.tasks: list[asyncio.Task[None]] = []  # the scripts, one a connection
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.peers.append(peer)
        task = asyncio.create_task(self.script(peer))
        self.tasks.append(task)
        await asyncio.wait([task])  # its outcome is read from self.tasks

    async def check(self) -> None:
        """Wait for every script to finish and re-raise its failure."""
        async with asyncio.timeout(WAIT_S):
            for task in self.tasks:
                await task


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[RawServer]:
    server = RawServer(script)
    listener = await asyncio.start_server(server._accept, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        for task in server.tasks:
            task.cancel()
        for peer in server.peers:
            peer.writer.transport.abort()
        listener.close()
        if server.tasks:
            await asyncio.wait(server.tasks)
        for task in server.tasks:  # a failed script is the real cause; report it
            if not task.cancelled() and (error := task.exception()):
                raise error


async def forever(_: Peer) -> None:
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def ws_server(handler: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    """``websockets``' own server; yields its URL."""
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


async def opened(url: str, inbox: Inbox | None = None, timeout_s: float = WAIT_S) -> WsConnection:
    return await WsConnection.open(url, inbox or Inbox(), timeout_s=timeout_s)


# --- WsConnection: messages ----------------------------------------------------------------


@aio
async def test_text_and_binary_messages_arrive_as_bytes_in_order_and_send_text_arrives() -> None:
    heard: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        heard.append(await ws.recv())
        await ws.send("first")
        await ws.send(b"\x00\xff binary")
        await ws.send("dernière")
        await ws.send("x" * 70_000)  # a 64-bit length
        heard.append(await ws.recv())
        await ws.wait_closed()

    inbox = Inbox()
    async with ws_server(handler) as url:
        conn = await opened(url, inbox)
        try:
            assert conn.opened.done() and conn.opened.exception() is None
            assert conn.received == 0 and not conn.closed.done()
            conn.send_text('{"op":"hello"}')
            await until(lambda: len(inbox.messages) == 4, "four messages")
            assert inbox.messages == [
                b"first",
                b"\x00\xff binary",
                "dernière".encode(),
                b"x" * 70_000,
            ]
            assert conn.received == 4
            conn.send_text("bye")
            await until(lambda: len(heard) == 2, "the second client message")
            assert heard == ['{"op":"hello"}', "bye"]
        finally:
            await conn.close()


@pytest.mark.parametrize("split", ["one write", "byte by byte"])
@aio
async def test_a_fragmented_message_arrives_whole_once_then_the_next_one(split: str) -> None:
    stream = b"".join(
        [
            frame(TEXT, b'{"a":', fin=False),
            frame(CONT, b"[1,2,", fin=False),
            frame(PING, b"between fragments"),  # control frames may come in between
            frame(CONT, b"3]}", fin=True),
            frame(TEXT, b"next"),
            frame(BINARY, b"\x01", fin=False),
            frame(CONT, b"\x02", fin=True),
        ]
    )

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.send_split(stream, split)
        await peer.serve()

    inbox = Inbox()
    async with raw_server(script) as server:
        conn = await opened(server.url, inbox)
        try:
            await until(lambda: len(inbox.messages) >= 3, "three messages")
            await asyncio.sleep(0.05)  # nothing more may come
            assert inbox.messages == [b'{"a":[1,2,3]}', b"next", b"\x01\x02"]
            assert conn.received == 3
        finally:
            await conn.close()
        await server.check()
        assert Got(PONG, b"between fragments") in server.peers[0].got


@aio
async def test_a_ping_is_answered_with_a_pong_carrying_the_same_payload() -> None:
    pongs: list[Got] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        for payload in [b"abc123", b"", bytes(range(125))]:
            peer.send(frame(PING, payload))
            got = await peer.recv()
            assert got is not None
            pongs.append(got)
        peer.send(frame(TEXT, b"done"))
        await peer.serve()

    inbox = Inbox()
    async with raw_server(script) as server:
        conn = await opened(server.url, inbox)
        try:
            await until(lambda: inbox.messages == [b"done"], "the message after the pings")
            assert pongs == [Got(PONG, b"abc123"), Got(PONG, b""), Got(PONG, bytes(range(125)))]
            assert conn.received == 1  # pings are not messages
        finally:
            await conn.close()
        await server.check()


# --- WsConnection: closing -----------------------------------------------------------------


@aio
async def test_the_server_closes_with_1001_and_a_reason() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(1001, "maintenance")

    inbox = Inbox()
    async with ws_server(handler) as url:
        conn = await opened(url, inbox)
        reason = await asyncio.wait_for(conn.closed, WAIT_S)
    assert "1001" in reason and "maintenance" in reason, reason
    assert reason == "closed by the server (1001 maintenance)"
    assert inbox.messages == [b"last words"]
    assert conn.opened.done() and conn.opened.exception() is None  # it did open
    assert conn.transport is not None and conn.transport.is_closing()
    with pytest.raises(WsClosedError, match="not open"):
        conn.send_text("too late")
    await conn.close()  # a no-op once closed


@aio
async def test_a_close_without_a_reason_reads_cleanly() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close(1000)

    async with ws_server(handler) as url:
        conn = await opened(url)
        reason = await asyncio.wait_for(conn.closed, WAIT_S)
    assert reason == "closed by the server (1000)"


@aio
async def test_the_server_hangs_up_without_a_close_frame() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        peer.send(frame(TEXT, b"half of a", fin=False))
        await peer.writer.drain()
        peer.close()

    inbox = Inbox()
    async with raw_server(script) as server:
        conn = await opened(server.url, inbox)
        reason = await asyncio.wait_for(conn.closed, WAIT_S)
        await server.check()
    assert reason.startswith("connection lost"), reason
    assert inbox.messages == [] and conn.received == 0  # the half message is not delivered
    assert conn.opened.exception() is None


@aio
async def test_close_completes_the_closing_handshake() -> None:
    server_side: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        server_side.append(ws)
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        await ws.wait_closed()

    async with ws_server(handler) as url:
        conn = await opened(url)
        await until(lambda: bool(server_side), "the server's connection")
        await asyncio.wait_for(conn.close(), WAIT_S)
        assert conn.closed.done()
        reason = conn.closed.result()
        assert isinstance(reason, str) and reason
        assert conn.transport is not None and conn.transport.is_closing()
        await asyncio.wait_for(server_side[0].wait_closed(), WAIT_S)
        assert server_side[0].protocol.close_rcvd is not None  # a frame, not a dropped TCP
        assert server_side[0].protocol.close_sent is not None  # and the server answered
    with pytest.raises(WsClosedError, match="not open"):
        conn.send_text("too late")


@aio
async def test_close_sends_the_normal_closure_code() -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        codes.append(ws.close_code)

    async with ws_server(handler) as url:
        conn = await opened(url)
        await asyncio.wait_for(conn.close(), WAIT_S)
        await until(lambda: bool(codes), "the server's close code")
    assert codes == [1000]


# --- WsConnection: failing to open ---------------------------------------------------------


@pytest.mark.parametrize("status", ["403 Forbidden", "404 Not Found"])
@aio
async def test_a_refused_handshake_raises(status: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        body = b"go away"
        peer.send(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        )
        assert await peer.ended(), "the client kept the connection"

    async with raw_server(script) as server:
        with pytest.raises(WsClosedError, match="handshake") as raised:
            await opened(server.url)
        assert status.split(maxsplit=1)[0] in str(raised.value)
        await server.check()


@aio
async def test_a_wrong_accept_key_is_refused() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake(accept=base64.b64encode(b"x" * 20).decode())
        assert await peer.ended(), "the client kept the connection"

    async with raw_server(script) as server:
        with pytest.raises(WsClosedError, match=r"handshake refused.*Sec-WebSocket-Accept"):
            await opened(server.url)
        await server.check()


@aio
async def test_nothing_listening_cannot_connect() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WsClosedError, match="cannot connect"):
        await opened(f"ws://127.0.0.1:{port}/ws")


@aio
async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    async with raw_server(forever) as server:
        started = time.monotonic()
        with pytest.raises(WsClosedError, match="timed out"):
            await opened(server.url, timeout_s=0.5)
        assert time.monotonic() - started < WAIT_S
        assert len(server.peers) == 1


@aio
async def test_a_timed_out_open_closes_its_socket() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        assert await peer.ended(timeout=1.5), "the client's socket is still open"

    async with raw_server(script) as server:
        with pytest.raises(WsClosedError, match="timed out"):
            await opened(server.url, timeout_s=0.3)
        await server.check()


@aio
async def test_a_server_hanging_up_during_the_handshake() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        peer.close()

    async with raw_server(script) as server:
        with pytest.raises(WsClosedError) as raised:
            await opened(server.url, timeout_s=WAIT_S)
        assert "timed out" not in str(raised.value)  # it noticed, it did not wait
        await server.check()


@aio
async def test_an_extension_the_client_did_not_ask_for_is_refused() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        key = peer.header("Sec-WebSocket-Key")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        peer.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
            b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
        )
        assert await peer.ended(), "the client kept the connection"

    async with raw_server(script) as server:
        with pytest.raises(WsClosedError, match="handshake refused: an extension"):
            await opened(server.url)
        await server.check()


@pytest.mark.parametrize("split", ["one write", "byte by byte"])
@aio
async def test_frames_in_the_same_write_as_the_handshake_reply_are_delivered(split: str) -> None:
    """The reply and the first messages may share a TCP segment, or trickle in byte by byte:
    either way the handshake completes first and every message arrives once, in order."""

    async def script(peer: Peer) -> None:
        await peer.read_request()
        key = peer.header("Sec-WebSocket-Key")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        stream = (
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            + b"".join(frame(TEXT, b"m%d" % i) for i in range(3))
            + frame(TEXT, b"y" * 300)
        )
        await peer.send_split(stream, split)
        await peer.serve()

    inbox = Inbox()
    async with raw_server(script) as server:
        conn = await opened(server.url, inbox)
        try:
            await until(lambda: len(inbox.messages) == 4, "four messages")
            assert inbox.messages == [b"m0", b"m1", b"m2", b"y" * 300]
        finally:
            await conn.close()
        await server.check()
    assert server.peers[0].header("Sec-WebSocket-Version") == "13"
    assert server.peers[0].header("Host") == f"127.0.0.1:{server.port}"


@aio
async def test_a_garbage_handshake_reply_is_reported_as_such() -> None:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        peer.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await peer.ended()
        peer.close()

    async with raw_server(script) as server:
        with pytest.raises(WsClosedError, match=r"handshake|HTTP"):
            await opened(server.url)
        await server.check()


# --- WsConnection: protocol violations -----------------------------------------------------

VIOLATIONS = {
    "reserved bits": frame(TEXT, b"hi", rsv=0x40),
    "continuation without a start": frame(CONT, b"orphan"),
    "masked server frame": frame(TEXT, b"hi", mask=b"\x01\x02\x03\x04"),
    "fragmented ping": frame(PING, b"p", fin=False),
    "unknown opcode": frame(0x3, b"?"),
    "unknown control opcode": frame(0xB, b"?"),
    "control frame over 125 bytes": frame(PING, b"p" * 126),
    "one-byte close payload": frame(CLOSE, b"\x03"),
    "close reason not UTF-8": frame(CLOSE, close_payload(1000) + b"\xff\xfe"),
    "new message inside a fragmented one": frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
@aio
async def test_a_protocol_violation_fails_the_connection(violation: str) -> None:
    close_frames: list[Got] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        peer.send(frame(TEXT, b"fine"))
        peer.send(VIOLATIONS[violation])
        peer.send(frame(TEXT, b"never delivered"))
        got = await peer.recv()
        assert got is not None and got.opcode == CLOSE, got
        close_frames.append(got)
        peer.close()

    inbox = Inbox()
    async with raw_server(script) as server:
        conn = await opened(server.url, inbox)
        reason = await asyncio.wait_for(conn.closed, WAIT_S)
        await server.check()
    assert reason.startswith("protocol error: "), reason
    assert inbox.messages == [b"fine"]
    assert [got.code for got in close_frames] == [1002]
    assert conn.opened.exception() is None


@aio
async def test_after_a_violation_the_client_drops_a_server_that_stays() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        peer.send(frame(CONT, b"orphan"))
        assert await peer.ended(timeout=WAIT_S + 1), "the client never hung up"

    async with raw_server(script) as server:
        conn = await opened(server.url)
        reason = await asyncio.wait_for(conn.closed, WAIT_S + 1)
        await server.check()
        assert reason.startswith("protocol error: "), reason
        assert server.peers[0].got[0].opcode == CLOSE


# --- BybitSocket ---------------------------------------------------------------------------


class Bybit:
    """A ``BybitSocket`` running in a task, with what it reported."""

    def __init__(self, url: str, topics: list[str], **kwargs: Any) -> None:
        self.messages: list[bytes] = []
        self.states: list[tuple[bool, str]] = []
        options: dict[str, Any] = {
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.1,
            "rng": random.Random(1),
        }
        options.update(kwargs)
        self.socket = BybitSocket(
            url,
            topics,
            on_message=self.messages.append,
            on_state=lambda up, reason: self.states.append((up, reason)),
            **options,
        )
        self.task = asyncio.create_task(self.socket.run())

    async def stop(self, timeout: float = WAIT_S) -> None:
        await asyncio.wait_for(self.socket.stop(), timeout)
        await asyncio.wait_for(self.task, timeout)

    async def finish(self) -> None:
        """Cleanup: stop, or at worst cancel, so no test leaves a task behind."""
        if not self.task.done():
            with contextlib.suppress(TimeoutError, WsClosedError):
                await self.stop(1.0)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def bybit(url: str, topics: list[str], **kwargs: Any) -> AsyncIterator[Bybit]:
    client = Bybit(url, topics, **kwargs)
    try:
        yield client
    finally:
        await client.finish()


def subscribed(peer: Peer, message: dict[str, Any]) -> None:
    """Answer a subscribe with success; ignore everything else (pings included)."""
    if message.get("op") == "subscribe":
        peer.send(frame(TEXT, b'{"op":"subscribe","success":true}'))


@aio
async def test_a_silent_connection_is_dropped_after_two_ping_intervals_and_reconnects() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.serve(subscribed)

    async with (
        raw_server(script) as server,
        bybit(server.url, ["orderbook.1.BTCUSDT"], ping_interval_s=0.2) as client,
    ):
        await until(lambda: len(server.peers) == 2, "a second connection", timeout=5)
        await until(lambda: len(client.states) >= 3, "three states")
        assert client.states[:3] == [
            (True, "connected"),
            (False, "no message or pong for two ping intervals"),
            (True, "connected"),
        ]
        first = server.peers[0]
        assert first.eof, "the first connection is still open"
        texts = [got.json() for got in first.got if got.opcode == TEXT]
        assert texts[0] == {"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]}
        assert {"op": "ping"} in texts[1:]
        assert client.socket.connections == 2
        await client.stop()
        await server.check()


@aio
async def test_a_connection_that_answers_pings_stays_up() -> None:
    def answer(peer: Peer, message: dict[str, Any]) -> None:
        subscribed(peer, message)
        if message.get("op") == "ping":
            peer.send(frame(TEXT, b'{"success":true,"ret_msg":"pong","op":"ping"}'))

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.serve(answer)

    async with (
        raw_server(script) as server,
        bybit(server.url, ["orderbook.1.BTCUSDT"], ping_interval_s=0.15) as client,
    ):
        await until(lambda: client.states == [(True, "connected")], "the connection")
        await until(
            lambda: sum(got.opcode == TEXT for got in server.peers[0].got) >= 5,
            "four pings",
        )
        assert client.states == [(True, "connected")]
        assert len(server.peers) == 1
        assert client.messages == []  # pongs are control replies, not data
        await client.stop()
        await server.check()


@aio
async def test_data_before_the_subscribe_reply_is_delivered_and_an_unprompted_refusal_ends() -> (
    None
):
    early = [
        b'{"topic":"orderbook.1.BTCUSDT","type":"snapshot","data":{"u":1}}',
        b'{"topic":"orderbook.1.BTCUSDT","type":"delta","data":{"u":2}}',
    ]
    refuse = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.handshake()
        if len(server.peers) > 1:
            await peer.serve(subscribed)
            return
        assert await peer.recv_text() == {"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]}
        for message in early:
            peer.send(frame(TEXT, message))
        peer.send(frame(TEXT, b'{"op":"subscribe","success":true,"conn_id":"c1"}'))
        await refuse.wait()
        peer.send(frame(TEXT, b'{"op":"subscribe","success":false,"ret_msg":"bad"}'))
        assert await peer.ended(), "the client kept a refused connection"

    async with (
        raw_server(script) as server,
        bybit(server.url, ["orderbook.1.BTCUSDT"], ping_interval_s=5.0) as client,
    ):
        await until(lambda: client.states == [(True, "connected")], "the connection")
        assert client.messages == early
        refuse.set()
        await until(lambda: len(client.states) >= 2, "the end of the session")
        up, reason = client.states[1]
        assert not up and "subscribe refused" in reason and "bad" in reason, reason
        await until(lambda: len(client.states) >= 3, "the reconnection")
        assert client.states[2] == (True, "connected")
        assert client.messages == early
        await client.stop()
        await server.check()


@aio
async def test_resubscribe_sends_unsubscribe_then_subscribe_and_a_refusal_ends_the_session() -> (
    None
):
    async def script(peer: Peer) -> None:
        await peer.handshake()
        if len(server.peers) > 1:
            await peer.serve(subscribed)
            return
        assert (await peer.recv_text())["op"] == "subscribe"
        subscribed(peer, {"op": "subscribe"})
        ops = [await peer.recv_text(), await peer.recv_text()]
        assert ops == [
            {"op": "unsubscribe", "args": ["orderbook.1.ETHUSDT"]},
            {"op": "subscribe", "args": ["orderbook.1.ETHUSDT"]},
        ]
        peer.send(frame(TEXT, b'{"op":"unsubscribe","success":true}'))
        peer.send(frame(TEXT, b'{"op":"subscribe","success":false,"ret_msg":"no such topic"}'))
        assert await peer.ended(), "the client kept a refused connection"

    async with (
        raw_server(script) as server,
        bybit(
            server.url, ["orderbook.1.BTCUSDT", "orderbook.1.ETHUSDT"], ping_interval_s=5.0
        ) as client,
    ):
        await until(lambda: client.states == [(True, "connected")], "the connection")
        await client.socket.resubscribe("orderbook.1.ETHUSDT")
        await until(lambda: len(client.states) >= 2, "the end of the session")
        assert client.states[1] == (False, "subscribe refused: no such topic")
        await until(lambda: len(client.states) >= 3, "the reconnection")
        assert client.states[2] == (True, "connected")
        await client.stop()
        await server.check()


@aio
async def test_stop_during_a_live_session_closes_and_ends_run() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.serve(subscribed)

    async with (
        raw_server(script) as server,
        bybit(server.url, ["orderbook.1.BTCUSDT"], ping_interval_s=5.0) as client,
    ):
        await until(lambda: client.states == [(True, "connected")], "the connection")
        await client.stop(timeout=1.0)  # well under the 2 s close timeout: the peer answered
        assert client.task.done() and client.task.exception() is None
        await server.check()
        assert server.peers[0].got[-1].opcode == CLOSE
        assert client.states == [(True, "connected")]  # a stop is not a disconnection
        assert len(server.peers) == 1


@aio
async def test_stop_while_connecting_ends_run() -> None:
    answer = asyncio.Event()

    async def script(peer: Peer) -> None:
        await answer.wait()
        await peer.handshake()
        await peer.serve(subscribed)

    async with (
        raw_server(script) as server,
        bybit(server.url, ["orderbook.1.BTCUSDT"], ping_interval_s=5.0) as client,
    ):
        await until(lambda: len(server.peers) == 1, "the TCP connection")
        stopping = asyncio.create_task(client.socket.stop())
        await asyncio.sleep(0.05)
        answer.set()
        await asyncio.wait_for(stopping, 1.0)
        await asyncio.wait_for(asyncio.shield(client.task), 1.0)
        assert (True, "connected") not in client.states


@aio
async def test_stop_during_the_backoff_ends_run() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with bybit(
        f"ws://127.0.0.1:{port}/ws", ["orderbook.1.BTCUSDT"], backoff_min_s=3.0, backoff_max_s=3.0
    ) as client:
        await until(lambda: bool(client.states), "the failed connection")
        assert not client.states[0][0] and "cannot connect" in client.states[0][1]
        await client.stop(timeout=0.5)

"""A WebSocket client connection that hands each message over the moment it is parsed.

Book updates are the start of the tick-to-order path, so this is the RFC 6455 client side
written for that path: the frames of a chunk read from the socket are parsed in
``data_received`` with a few byte operations and every complete message goes straight to
``on_message``, in the same loop callback that read it. The ``websockets`` library's asyncio
client queues each message for a reader task, and even its sans-I/O parser (generators,
frame objects) costs ≈ 0.08 ms per message on the path when the process wakes from idle
(docs/venues.md has the measurements). What this client does: the opening handshake (the
server's ``Sec-WebSocket-Accept`` checked, no extensions), unmasked server frames with
fragmented messages, masked client frames, pings answered with pongs, the closing handshake
both ways, and a protocol violation failing the connection with close code 1002.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import os
import ssl
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["WsClosedError", "WsConnection"]

_CLOSE_TIMEOUT_S = 2.0
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_MAX_HANDSHAKE_BYTES = 64 * 1024
# opcodes (RFC 6455 §5.2)
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_PROTOCOL_ERROR = 1002
_NO_STATUS = 1005  # the peer's close frame carried no code


class WsClosedError(Exception):
    """The connection is gone (or never opened); the message says why."""


class _ProtocolViolationError(Exception):
    """The server broke RFC 6455; the message says how."""


class _State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"  # a close frame went out or came in
    CLOSED = "closed"


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key, as one big-integer operation."""
    if not payload:
        return payload
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, unfragmented client frame (a client must mask, RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class WsConnection(asyncio.Protocol):
    def __init__(self, url: str, on_message: Callable[[bytes], None]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a WebSocket URL: {url!r}")
        default_port = 443 if parts.scheme == "wss" else 80
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
        self.host_header = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()  # why it ended
        self.received = 0  # messages so far: a keepalive sees whether anything arrived
        self._state = _State.CONNECTING
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = b""  # bytes of an incomplete handshake reply or frame
        self._parts: list[bytes] | None = None  # a fragmented message so far
        self._close_sent = False
        self._close_rcvd: tuple[int, str] | None = None
        self._server_closed_first = False
        self._violation = ""
        self._close_deadline: asyncio.TimerHandle | None = None  # the peer must close by then

    @classmethod
    async def open(
        cls, url: str, on_message: Callable[[bytes], None], *, timeout_s: float = 10.0
    ) -> WsConnection:
        """Connect and complete the opening handshake, or raise ``WsClosedError``."""
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        context = ssl.create_default_context() if secure else None
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        loop = asyncio.get_running_loop()
        connection: WsConnection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: cls(url, on_message),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
                await connection.opened
        except BaseException as exc:  # timed out, refused, cancelled: never leave a socket
            if connection is not None:
                connection.abort()
            if isinstance(exc, TimeoutError):
                raise WsClosedError("timed out opening the connection") from None
            if isinstance(exc, OSError):
                raise WsClosedError(f"cannot connect ({type(exc).__name__})") from None
            raise
        return connection

    # ------------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.target.encode(), self.host_header.encode("idna"), self._key)
        )

    def data_received(self, data: bytes) -> None:
        if self._state is _State.CLOSED or self._violation:
            return  # refused, or failed: nothing more is read
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if self._state is _State.CONNECTING:
            data = self._handshake(data)
        try:
            self._frames(data)
        except _ProtocolViolationError as exc:
            self._fail(str(exc))

    def eof_received(self) -> bool:
        if self._state is _State.CONNECTING:
            self._refuse("the server closed the connection during the handshake")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self._reason(exc)
        self._state = _State.CLOSED
        if self._close_deadline is not None:
            self._close_deadline.cancel()
        if not self.opened.done():
            self.opened.set_exception(WsClosedError(reason))
        if not self.closed.done():
            self.closed.set_result(reason)

    # ------------------------------------------------------------------ use

    def send_text(self, text: str) -> None:
        if self._state is not _State.OPEN or self.transport is None:
            raise WsClosedError("the connection is not open")
        self.transport.write(_client_frame(_TEXT, text.encode()))

    async def close(self) -> None:
        """The closing handshake, then the TCP connection (abruptly if the peer is slow)."""
        if self.transport is None or self.closed.done():
            return
        if self._state is _State.OPEN:
            self._send_close(1000, b"")
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ the handshake

    def _handshake(self, data: bytes) -> bytes:
        """Read the server's reply to the upgrade; returns the bytes after it (frames)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HANDSHAKE_BYTES:
                self._refuse("the handshake reply is too large")
            elif not data.startswith(b"HTTP/"[: len(data)]):
                self._refuse(f"the reply is not HTTP: {data[:40]!r}")
            else:
                self._buffer = data
            return b""
        head, rest = data[:end].decode("latin-1"), data[end + 4 :]
        status_line, *lines = head.split("\r\n")
        version, _, status = status_line.partition(" ")
        if not version.startswith("HTTP/"):
            self._refuse(f"the reply is not HTTP: {status_line[:40]!r}")
            return b""
        if not status.startswith("101"):
            self._refuse(f"HTTP {status[:60]}")
            return b""
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
        problem = (
            "no Upgrade: websocket"
            if headers.get("upgrade", "").lower() != "websocket"
            else "no Connection: Upgrade"
            if "upgrade" not in headers.get("connection", "").lower()
            else "wrong Sec-WebSocket-Accept"
            if headers.get("sec-websocket-accept") != expected
            else "an extension nobody asked for"
            if "sec-websocket-extensions" in headers
            else ""
        )
        if problem:
            self._refuse(problem)
            return b""
        self._state = _State.OPEN
        self.opened.set_result(None)
        return rest

    def _refuse(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(WsClosedError(f"handshake refused: {why}"[:300]))
        self._state = _State.CLOSED
        self.abort()

    # ------------------------------------------------------------------ frames

    def _frames(self, data: bytes) -> None:
        """Every complete frame in ``data``; an incomplete one waits for the next chunk."""
        size = len(data)
        at = 0
        while self._state in (_State.OPEN, _State.CLOSING):
            if size - at < 2:
                break
            first, second = data[at], data[at + 1]
            length = second & 0x7F
            start = at + 2
            if length == 126:
                if size - at < 4:
                    break
                length = (data[at + 2] << 8) | data[at + 3]
                start = at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length = int.from_bytes(data[at + 2 : at + 10], "big")
                start = at + 10
            if second & 0x80:
                raise _ProtocolViolationError("a masked frame from the server")
            if first & 0x70:
                raise _ProtocolViolationError("reserved bits set without an extension")
            end = start + length
            if end > size:
                break
            self._frame(first & 0x80, first & 0x0F, data[start:end])
            at = end
        if at < size and self._state is not _State.CLOSED:
            self._buffer = data[at:]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (_TEXT, _BINARY):
            if self._parts is not None:
                raise _ProtocolViolationError("a new message before the last one finished")
            if fin:
                self._deliver(payload)
            else:
                self._parts = [payload]
        elif opcode == _CONT:
            if self._parts is None:
                raise _ProtocolViolationError("a continuation frame with no message to continue")
            self._parts.append(payload)
            if fin:
                data, self._parts = b"".join(self._parts), None
                self._deliver(data)
        elif opcode >= 0x8:
            if not fin:
                raise _ProtocolViolationError("a fragmented control frame")
            if len(payload) > 125:
                raise _ProtocolViolationError("a control frame longer than 125 bytes")
            if opcode == _PING:
                if self._state is _State.OPEN and self.transport is not None:
                    self.transport.write(_client_frame(_PONG, payload))
            elif opcode == _CLOSE:
                self._closing(payload)
            elif opcode != _PONG:
                raise _ProtocolViolationError(f"unknown control opcode {opcode:#x}")
        else:
            raise _ProtocolViolationError(f"unknown opcode {opcode:#x}")

    def _deliver(self, message: bytes) -> None:
        if self._state is _State.OPEN:  # nothing is delivered once closing
            self.received += 1
            self.on_message(message)

    # ------------------------------------------------------------------ closing

    def _closing(self, payload: bytes) -> None:
        """The server's close frame: answer it (once), then expect the TCP close."""
        if len(payload) == 1:
            raise _ProtocolViolationError("a close frame with a one-byte payload")
        code = struct.unpack("!H", payload[:2])[0] if payload else _NO_STATUS
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise _ProtocolViolationError("a close reason that is not UTF-8") from None
        if self._close_rcvd is None:
            self._close_rcvd = (code, reason)
            self._server_closed_first = not self._close_sent
        if not self._close_sent:
            self._send_close(code if payload else None, b"")
        self._expect_close()

    def _send_close(self, code: int | None, reason: bytes) -> None:
        self._close_sent = True
        self._state = _State.CLOSING
        if self.transport is not None and not self.transport.is_closing():
            payload = b"" if code is None else struct.pack("!H", code) + reason
            self.transport.write(_client_frame(_CLOSE, payload))
        self._expect_close()

    def _expect_close(self) -> None:
        """Once both close frames are out (or we fail), the server closes TCP; if it does
        not within the timeout, it is dropped."""
        if self._close_deadline is None:
            self._close_deadline = asyncio.get_running_loop().call_later(
                _CLOSE_TIMEOUT_S, self.abort
            )
        transport = self.transport
        if (
            self._close_rcvd is not None
            and self._close_sent
            and transport is not None
            and transport.can_write_eof()
            and not transport.is_closing()
        ):
            transport.write_eof()

    def _fail(self, why: str) -> None:
        """A protocol violation: close with 1002, deliver nothing more (RFC 6455 §7.1.7)."""
        self._violation = why
        self._parts = None
        self._buffer = b""
        if not self._close_sent:
            self._send_close(_PROTOCOL_ERROR, why.encode()[:123])
        self._state = _State.CLOSING
        transport = self.transport
        if transport is not None and transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()

    def _reason(self, exc: Exception | None) -> str:
        if self._violation:
            return f"protocol error: {self._violation}"[:300]
        if self._close_rcvd is not None:
            code, text = self._close_rcvd
            detail = " ".join(filter(None, [str(code), text]))
            by = "by the server " if self._server_closed_first else ""
            return f"closed {by}({detail})"[:300]
        if exc is not None:
            return f"connection lost ({type(exc).__name__})"
        return "connection lost"

"""A WebSocket client connection that hands each message over the moment it is parsed.

Book updates are the start of the tick-to-order path. The ``websockets`` library's asyncio
client queues each message and wakes a reader task for it; here the library's sans-I/O
protocol (``websockets.client.ClientProtocol``: handshake, framing, pings, closing) is driven
from ``data_received`` and every complete message goes straight to ``on_message``, in the same
loop callback that read it from the socket (docs/venues.md has the measurement).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

__all__ = ["WsClosedError", "WsConnection"]

_CLOSE_TIMEOUT_S = 2.0


class WsClosedError(Exception):
    """The connection is gone (or never opened); the message says why."""


class WsConnection(asyncio.Protocol):
    def __init__(self, url: str, on_message: Callable[[bytes], None]) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()  # why it ended
        self.received = 0  # messages so far: a keepalive sees whether anything arrived
        self._parts: list[bytes] = []  # a fragmented message so far
        self._close_deadline: asyncio.TimerHandle | None = None  # the peer must close by then

    @classmethod
    async def open(
        cls, url: str, on_message: Callable[[bytes], None], *, timeout_s: float = 10.0
    ) -> WsConnection:
        """Connect and complete the opening handshake, or raise ``WsClosedError``."""
        uri = parse_uri(url)
        context = ssl.create_default_context() if uri.secure else None
        loop = asyncio.get_running_loop()
        connection: WsConnection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: cls(url, on_message),
                    uri.host,
                    uri.port,
                    ssl=context,
                    server_hostname=uri.host if context else None,
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
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response):
                self._handshake_done()
        self._handshake_failed()
        self._flush()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._handshake_failed()
        self._flush()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self._reason(exc)
        if not self.opened.done():
            self.opened.set_exception(WsClosedError(reason))
        if not self.closed.done():
            self.closed.set_result(reason)

    # ------------------------------------------------------------------ use

    def send_text(self, text: str) -> None:
        if self.protocol.state is not State.OPEN:
            raise WsClosedError("the connection is not open")
        self.protocol.send_text(text.encode())
        self._flush()

    async def close(self) -> None:
        """The closing handshake, then the TCP connection (abruptly if the peer is slow)."""
        if self.transport is None or self.closed.done():
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ internals

    def _handshake_done(self) -> None:
        error = self.protocol.handshake_exc
        if error is not None:
            if not self.opened.done():
                text = str(error) if isinstance(error, InvalidHandshake) else repr(error)
                self.opened.set_exception(WsClosedError(f"handshake refused: {text}"[:300]))
            self.abort()
        elif not self.opened.done():
            self.opened.set_result(None)

    def _handshake_failed(self) -> None:
        """A reply that is not HTTP at all, or none before EOF, yields no ``Response``."""
        if not self.opened.done() and self.protocol.handshake_exc is not None:
            self._handshake_done()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            if frame.fin and not self._parts:
                self.received += 1
                self.on_message(bytes(frame.data))
                return
            self._parts.append(bytes(frame.data))
            if frame.fin:
                data, self._parts = b"".join(self._parts), []
                self.received += 1
                self.on_message(data)
        # pings are answered, pongs and closes are handled, by the sans-I/O protocol itself

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()  # the protocol's end of stream
            else:
                transport.close()
        if self.protocol.close_expected() and self._close_deadline is None:
            self._close_deadline = asyncio.get_running_loop().call_later(
                _CLOSE_TIMEOUT_S, self.abort
            )

    def _reason(self, exc: Exception | None) -> str:
        protocol = self.protocol
        if isinstance(protocol.parser_exc, ProtocolError):
            return f"protocol error: {protocol.parser_exc}"[:300]
        if protocol.close_rcvd is not None:
            close = protocol.close_rcvd
            detail = " ".join(filter(None, [str(close.code), close.reason]))
            by = "by the server " if protocol.close_rcvd_then_sent else ""
            return f"closed {by}({detail})"[:300]
        if exc is not None:
            return f"connection lost ({type(exc).__name__})"
        return "connection lost"

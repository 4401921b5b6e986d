"""A small keep-alive HTTP/1.1 client whose requests leave the moment they are made.

Order requests are on the tick-to-order path. With a connection idle in the pool,
:meth:`HttpClient.start` writes the request into the socket synchronously, inside the core's
step, so no task switch and no client-library machinery sits between a decision and its bytes
(``python -m bench.rest_clients`` measures it against aiohttp, httpx and pybit; see
docs/venues.md). Replies are parsed by httptools (C; Content-Length and chunked bodies).
One request at a time per connection (no pipelining); a few warm connections serve bursts.

Every failure (refused or dropped connection, malformed reply, timeout) raises
:class:`HttpError`. For a request that may have reached the server the caller must treat it as
an unknown outcome; a timed-out or broken connection is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpClient", "HttpError", "Reply"]

_USER_AGENT = "arbhub"


class HttpError(Exception):
    """The request got no complete reply; the message says why (no secrets in it)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.timer: asyncio.TimerHandle | None = None  # the reply's deadline, or the idle expiry
        self.closed = False
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._name = b""

    # ------------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed reply: {type(exc).__name__}"))

    def connection_lost(self, exc: Exception | None) -> None:
        dropped_warm = not self.closed and self.waiter is None  # the server closed an idle one
        self.closed = True
        self.client._forget(self)
        self._fail(HttpError(f"connection error: lost ({type(exc).__name__ if exc else 'closed'})"))
        if dropped_warm:  # have another ready
            self.client._replace_lost()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim 1xx reply; the real one follows
        waiter, self.waiter = self.waiter, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        reusable = self.parser.should_keep_alive()
        if waiter is None:  # a reply nobody asked for: the connection is out of step
            self.close()
            return
        if not waiter.done():
            waiter.set_result(Reply(status, self._headers, b"".join(self._body)))
        if reusable:
            self.client._release(self)
        else:
            self.close()

    # ------------------------------------------------------------------ use

    def send(self, data: bytes, timeout_s: float) -> asyncio.Future[Reply]:
        assert self.transport is not None and self.waiter is None
        if self.timer is not None:  # the idle expiry
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self.timer = loop.call_later(timeout_s, self._timed_out)
        self.transport.write(data)
        return waiter

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(HttpError("timed out"))

    def park(self, max_idle_s: float) -> None:
        """Idle in the pool until used or ``max_idle_s`` passes, then make way for a fresh one
        (a server may drop connections idle for long; an order must not find one dead)."""
        self.timer = asyncio.get_running_loop().call_later(max_idle_s, self._expire)

    def _expire(self) -> None:
        self.timer = None
        self.close()
        self.client._warm_up()

    def _fail(self, error: HttpError) -> None:
        waiter, self.waiter = self.waiter, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client._forget(self)
            if self.transport is not None:
                self.transport.abort()  # a half-read reply must never reach the next request


class HttpClient:
    """Keep-alive connections to one ``http://`` or ``https://`` origin."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        warm: int = 2,
        max_idle_s: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self.port == (443 if self._ssl else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        host_header = host if default_port else f"{host}:{self.port}"
        self._fixed = f"Host: {host_header}\r\nUser-Agent: {_USER_AGENT}\r\n".encode("latin-1")
        self.timeout_s = timeout_s
        self.warm = warm
        self.max_idle_s = max_idle_s
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self._warming: set[asyncio.Task[None]] = set()
        self._closed = False
        self._rewarm_after = 0.0

    def start(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> asyncio.Future[Reply] | None:
        """Write the request now on an idle connection and return its reply's future; ``None``
        when no connection is idle (then use :meth:`send`). Must run on the event loop."""
        return self._start(self.encode(method, target, headers, body))

    def send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Awaitable[Reply]:
        """Written now on an idle connection, or once awaited on a new one; await the reply."""
        return self.send_encoded(self.encode(method, target, headers, body))

    def send_encoded(self, data: bytes) -> Awaitable[Reply]:
        """:meth:`send` for a request :meth:`encode` built earlier."""
        pending = self._start(data)
        return pending if pending is not None else self._connect_and_send(data)

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        """Send the request (on a new connection if none is idle) and wait for the reply."""
        return await self.send(method, target, headers, body)

    def _start(self, data: bytes) -> asyncio.Future[Reply] | None:
        connection = self._take_idle()
        if not self._idle:
            self._warm_up()  # for the next request, after this one has left
        if connection is None:
            return None
        return connection.send(data, self.timeout_s)

    async def _connect_and_send(self, data: bytes) -> Reply:
        connection = await self._connect()
        if connection.closed:
            raise HttpError("connection error: closed by the server before the request")
        return await connection.send(data, self.timeout_s)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._warming):
            task.cancel()
        for connection in list(self._all):
            connection._fail(HttpError("client closed"))

    # ------------------------------------------------------------------ the pool

    def encode(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> bytes:
        """The request's bytes as they go on the wire (to build one ahead of sending it)."""
        head = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
        if body is None:
            return (
                f"{method} {self.prefix}{target} HTTP/1.1\r\n".encode()
                + self._fixed
                + (f"{head}\r\n".encode("latin-1"))
            )
        return b"".join(
            [
                f"{method} {self.prefix}{target} HTTP/1.1\r\n".encode(),
                self._fixed,
                f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1"),
                body,
            ]
        )

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()  # the most recently used is the most likely alive
            transport = connection.transport
            if not connection.closed and transport is not None and not transport.is_closing():
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self.timeout_s,
            )
        except TimeoutError:
            raise HttpError("timed out connecting") from None
        except OSError as exc:
            raise HttpError(f"connection error: cannot connect ({type(exc).__name__})") from None
        if self._closed:  # before or while connecting
            connection.close()
            raise HttpError("client closed")
        self._all.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        if self._closed or len(self._idle) >= self.warm:
            connection.close()
            return
        connection.park(self.max_idle_s)
        self._idle.append(connection)

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    def _replace_lost(self) -> None:
        """At most once a second, so a server that drops every connection is not hammered."""
        now = time.monotonic()
        if now >= self._rewarm_after:
            self._rewarm_after = now + 1.0
            self._warm_up()

    def _warm_up(self) -> None:
        """Open connections in the background so the next requests find one idle."""
        if self._closed:
            return
        missing = self.warm - len(self._all) - len(self._warming)  # busy ones come back
        for _ in range(max(0, missing)):
            task = asyncio.get_running_loop().create_task(self._open_idle())
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

    async def _open_idle(self) -> None:
        try:
            connection = await self._connect()
        except HttpError:
            return  # the next request will report the failure
        self._release(connection)

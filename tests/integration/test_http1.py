"""The keep-alive HTTP/1.1 client (``worker.venues.http1``) against small asyncio servers on
127.0.0.1 that answer raw bytes chosen by each test.

Every server connection is a :class:`Peer`: it records the requests it read (with their exact
bytes) and whether its read side has ended (the client closed it, or the server did). Each test
runs its own event loop under an overall 5 s limit; the client's own timeouts are short so a
hang turns into a failure, not a stuck run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec

import pytest

from tests.integration.waiting import WAIT_S, until
from worker.venues.http1 import HttpClient, HttpError, Reply

P = ParamSpec("P")
TEST_LIMIT_S = 5.0  # the whole test, event loop included


def aio(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test in a fresh event loop, at most ``TEST_LIMIT_S``."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TEST_LIMIT_S))

    return run


def idle(http: HttpClient) -> int:
    """Connections waiting in the client's pool. The one private peek of this file, used only
    to wait for background warm-up to finish (nothing public tells)."""
    return len(http._idle)


def response(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    """A complete HTTP/1.1 reply with a Content-Length body."""
    lines = "".join(f"{header}\r\n" for header in headers)
    return f"HTTP/1.1 {status}\r\n{lines}Content-Length: {len(body)}\r\n\r\n".encode() + body


# --- the server ----------------------------------------------------------------------------


@dataclass
class Request:
    peer: int  # the id of the connection that carried it
    head: bytes  # request line and header lines, without the blank line
    body: bytes = b""

    @property
    def lines(self) -> list[str]:
        return self.head.decode("latin-1").split("\r\n")

    @property
    def line(self) -> str:
        return self.lines[0]

    @property
    def target(self) -> str:
        return self.line.split(" ")[1]

    def header(self, name: str) -> str | None:
        found = [
            line.split(":", 1)[1].strip()
            for line in self.lines[1:]
            if line.split(":", 1)[0].lower() == name.lower()
        ]
        assert len(found) <= 1, f"{name} sent {len(found)} times: {self.lines}"
        return found[0] if found else None


@dataclass(eq=False)
class Peer:
    """The server's side of one TCP connection."""

    id: int
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)
    ended: bool = False  # its read side saw EOF or an error
    ended_at: float = 0.0

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        """Close with an RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def unread(self) -> bytes:
        """The bytes waiting in this socket's receive queue, read without running the event
        loop (so the server's own reader has not seen them yet)."""
        fd = self.writer.get_extra_info("socket").fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:
            try:
                return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return b""


Handler = Callable[[Peer, Request], Awaitable[None]]


async def echo(peer: Peer, request: Request) -> None:
    """Answer every request with its target as the body."""
    peer.write(response(request.target.encode()))


class Server:
    """An HTTP server on 127.0.0.1 that parses requests and lets ``handler`` answer."""

    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.peers: list[Peer] = []
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.transport.abort()
        if self._tasks:  # let every connection's task see its end (none is left to cancel)
            await asyncio.wait(self._tasks, timeout=WAIT_S)
        await self._server.wait_closed()
        if kind is None:
            assert not self.errors, f"the test server failed: {self.errors!r}"

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def open_peers(self) -> list[Peer]:
        return [peer for peer in self.peers if not peer.ended]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(len(self.peers), writer)
        self.peers.append(peer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request = Request(peer.id, head[:-4])
                length = request.header("Content-Length")
                if length is not None:
                    request.body = await reader.readexactly(int(length))
                peer.requests.append(request)
                self.requests.append(request)
                await self.handler(peer, request)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the connection ended
        except Exception as exc:  # a broken test server must fail the test, not hang it
            self.errors.append(exc)
        finally:
            peer.ended = True
            peer.ended_at = time.monotonic()
            writer.transport.abort()


@contextlib.asynccontextmanager
async def client(
    url: str, *, timeout_s: float = 2.0, warm: int = 2, max_idle_s: float = 30.0
) -> AsyncIterator[HttpClient]:
    http = HttpClient(url, timeout_s=timeout_s, warm=warm, max_idle_s=max_idle_s)
    try:
        yield http
    finally:
        await http.close()


async def warmed(http: HttpClient, server: Server) -> None:
    """Let the client open its warm connections before the first request (``start`` finds
    none idle, returns ``None`` and warms the pool)."""
    assert http.start("GET", "/never-sent", {}) is None
    await until(lambda: idle(http) == http.warm, "warm pool")
    assert len(server.peers) == http.warm
    assert server.requests == []


# --- replies and the request bytes -----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api", "/api/"])
@aio
async def test_content_length_reply_and_the_request_bytes(prefix: str) -> None:
    async def handler(peer: Peer, request: Request) -> None:
        body = b'{"retCode":0}'
        peer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            b"X-Bapi-Limit-Status: 19\r\nContent-Length: 13\r\n\r\n" + body
            if request.line.startswith("POST")
            else response(b"", status="404 Not Found")
        )

    async with Server(handler) as server, client(server.url(prefix)) as http:
        posted = await http.request(
            "POST",
            "/v5/order/create?x=1",
            {"Content-Type": "application/json", "X-BAPI-API-KEY": "key"},
            b'{"qty":"1"}',
        )
        got = await http.request("GET", "/v5/market/time", {"X-Test": "yes"})

    assert posted == Reply(
        201,
        {
            "content-type": "application/json",
            "x-bapi-limit-status": "19",
            "content-length": "13",
        },
        b'{"retCode":0}',
    )
    assert got == Reply(404, {"content-length": "0"}, b"")

    post, get = server.requests
    assert post.line == "POST /api/v5/order/create?x=1 HTTP/1.1"
    assert post.header("Host") == f"127.0.0.1:{server.port}"
    assert post.header("Content-Type") == "application/json"
    assert post.header("X-BAPI-API-KEY") == "key"
    assert post.header("Content-Length") == "11"
    assert post.body == b'{"qty":"1"}'

    assert get.line == "GET /api/v5/market/time HTTP/1.1"
    assert get.header("Host") == f"127.0.0.1:{server.port}"
    assert get.header("X-Test") == "yes"
    assert get.header("Content-Length") is None
    assert get.body == b""


@aio
async def test_chunked_reply_is_reassembled() -> None:
    pieces = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunks\r\n\r\n",
        b"5\r\nhello\r\n",
        b"1\r\n \r\n",
        b"6\r\nworld!\r\n",
        b"0\r\n\r\n",
    ]

    async def handler(peer: Peer, request: Request) -> None:
        if request.target == "/after":
            await echo(peer, request)
            return
        for piece in pieces:
            peer.write(piece)
            await peer.writer.drain()
            await asyncio.sleep(0.01)  # separate reads on the client's side

    async with Server(handler) as server, client(server.url()) as http:
        await warmed(http, server)
        reply = await http.request("GET", "/chunks", {})
        after = await http.request("GET", "/after", {})

    assert reply.status == 200
    assert reply.body == b"hello world!"
    assert reply.headers == {"transfer-encoding": "chunked", "x-kind": "chunks"}
    # the chunked framing was consumed to its end: the connection serves the next reply
    assert after.body == b"/after"
    assert [r.peer for r in server.requests] == [server.requests[0].peer] * 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@aio
async def test_reply_arriving_one_byte_at_a_time(chunked: bool) -> None:
    if chunked:
        raw = (
            b"HTTP/1.1 200 OK\r\nX-Long-Header-Name: some value\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
    else:
        raw = response(b"abcde", "X-Long-Header-Name: some value")

    async def handler(peer: Peer, request: Request) -> None:
        for i in range(len(raw)):
            peer.write(raw[i : i + 1])
            await peer.writer.drain()
            await asyncio.sleep(0.001)

    async with Server(handler) as server, client(server.url()) as http:
        reply = await http.request("GET", "/slowly", {})

    assert reply.body == b"abcde"
    assert reply.headers["x-long-header-name"] == "some value"


@pytest.mark.parametrize("separately", [False, True], ids=["one-write", "two-writes"])
@aio
async def test_interim_100_continue_then_the_real_reply(separately: bool) -> None:
    async def handler(peer: Peer, request: Request) -> None:
        peer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if separately:
            await peer.writer.drain()
            await asyncio.sleep(0.02)
        peer.write(response(b"final", "X-Final: yes"))

    async with Server(handler) as server, client(server.url()) as http:
        reply = await http.request("POST", "/order", {"Expect": "100-continue"}, b"{}")
        again = await http.request("POST", "/order", {}, b"{}")

    assert reply == Reply(200, {"x-final": "yes", "content-length": "5"}, b"final")
    assert again.body == b"final"


# --- keep-alive and the pool -----------------------------------------------------------------


@aio
async def test_keep_alive_reuses_one_connection_and_start_writes_at_once() -> None:
    async with Server() as server, client(server.url()) as http:
        # nothing idle on a new client: start() cannot send, and warms the pool instead
        assert http.start("GET", "/none", {}) is None
        first = await http.request("GET", "/one", {})
        assert first.body == b"/one"
        await until(lambda: len(server.open_peers()) == http.warm, "settled pool")
        peers = len(server.peers)

        pending = http.start("GET", "/two", {"X-N": "2"})
        assert pending is not None
        # No await since start(): the event loop has not run, yet the bytes are already in
        # the server's socket (its own reader has not seen them: one request so far).
        unread = {peer.id: peer.unread() for peer in server.open_peers()}
        written = [(pid, data) for pid, data in unread.items() if data]
        assert len(written) == 1, unread
        [(carrier, sent)] = written
        assert sent.startswith(b"GET /two HTTP/1.1\r\n")
        assert b"\r\nX-N: 2\r\n" in sent
        assert sent.endswith(b"\r\n\r\n")
        assert len(server.requests) == 1
        assert not pending.done()

        second = await pending
        third = await http.request("GET", "/three", {})

    assert (second.body, third.body) == (b"/two", b"/three")
    assert [r.peer for r in server.requests[1:]] == [carrier, carrier]
    assert len(server.peers) == peers  # no connection was opened for them


@aio
async def test_start_returns_none_while_every_connection_is_busy() -> None:
    release = asyncio.Event()

    async def handler(peer: Peer, request: Request) -> None:
        await release.wait()
        await echo(peer, request)

    async with Server(handler) as server, client(server.url()) as http:
        await warmed(http, server)
        a = http.start("GET", "/a", {})
        b = http.start("GET", "/b", {})
        assert a is not None and b is not None
        assert http.start("GET", "/c", {}) is None  # both are in flight
        await until(lambda: len(server.requests) == 2, "two requests")
        release.set()
        replies = await asyncio.gather(a, b)

    assert [reply.body for reply in replies] == [b"/a", b"/b"]
    assert server.requests[0].peer != server.requests[1].peer
    assert "/c" not in [r.target for r in server.requests]


@aio
async def test_concurrent_requests_each_get_their_own_reply() -> None:
    async def handler(peer: Peer, request: Request) -> None:
        # answer in the reverse order of arrival
        await asyncio.sleep(0.05 if request.target == "/first" else 0.0)
        await echo(peer, request)

    async with Server(handler) as server, client(server.url()) as http:
        replies = await asyncio.gather(
            http.request("GET", "/first", {}),
            http.request("GET", "/second", {}),
            http.request("GET", "/third", {}),
        )

    assert [reply.body for reply in replies] == [b"/first", b"/second", b"/third"]
    assert len({r.peer for r in server.requests}) == 3  # one request per connection


@pytest.mark.parametrize("server_closes", [False, True])
@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"HTTP/1.0 200 OK\r\n"],
    ids=["connection-close", "http-1.0"],
)
@aio
async def test_a_reply_that_ends_the_connection_is_not_reused(
    head: bytes, server_closes: bool
) -> None:
    async def handler(peer: Peer, request: Request) -> None:
        peer.write(head + b"Content-Length: 3\r\n\r\nbye")
        if server_closes:
            peer.close()

    async with Server(handler) as server, client(server.url(), warm=1) as http:
        replies = [await http.request("GET", f"/{n}", {}) for n in range(3)]
        carriers = [r.peer for r in server.requests]
        # the client closes its side itself even when the server keeps the socket open
        await until(lambda: all(server.peers[pid].ended for pid in carriers), "closed connections")

    assert [reply.body for reply in replies] == [b"bye"] * 3
    assert len(set(carriers)) == 3, carriers  # every request on a connection of its own


@aio
async def test_an_unsolicited_reply_is_never_taken_for_the_next_one() -> None:
    async def handler(peer: Peer, request: Request) -> None:
        if request.target == "/double":  # two replies to one request
            peer.write(response(b"first") + response(b"stale"))
        else:
            await echo(peer, request)

    async with Server(handler) as server, client(server.url(), warm=1) as http:
        await warmed(http, server)
        first = await http.request("GET", "/double", {})
        double = server.requests[0].peer
        await until(lambda: server.peers[double].ended, "the out-of-step connection closed")
        later = [await http.request("GET", f"/{n}", {}) for n in range(2)]

    assert first.body == b"first"
    assert [reply.body for reply in later] == [b"/0", b"/1"]
    assert double not in [r.peer for r in server.requests[1:]]


@aio
async def test_the_server_closing_idle_connections_is_survived() -> None:
    async with Server() as server, client(server.url()) as http:
        await warmed(http, server)
        await http.request("GET", "/one", {})
        dropped = server.open_peers()
        assert len(dropped) == 2 and len(server.peers) == 2
        for peer in dropped:
            peer.close()
        # a replacement is opened in the background, without a request
        await until(lambda: len(server.peers) > 2, "replacement connection")
        await until(lambda: idle(http) >= 1, "idle replacement")
        assert all(not peer.requests for peer in server.peers[2:])

        reply = await http.request("GET", "/two", {})  # raises nothing

    assert reply.body == b"/two"
    assert server.requests[-1].peer not in {peer.id for peer in dropped}


@aio
async def test_idle_connections_dropped_soon_after_a_cold_request_are_replaced() -> None:
    async with Server() as server, client(server.url()) as http:
        # A cold request opens its own connection plus the warm ones; when the pool is full
        # again the client closes the surplus connection itself.
        await http.request("GET", "/one", {})
        await until(lambda: len(server.open_peers()) == http.warm, "settled pool")
        opened = len(server.peers)
        for peer in server.open_peers():
            peer.close()
        await until(lambda: len(server.peers) > opened, "replacement connection", timeout=1.0)


@aio
async def test_idle_connections_expire_after_max_idle_and_are_replaced() -> None:
    began = time.monotonic()
    async with Server() as server, client(server.url(), warm=1, max_idle_s=0.2) as http:
        await warmed(http, server)
        [first] = server.peers
        await until(lambda: first.ended, "expiry of the idle connection")
        await until(lambda: len(server.peers) >= 2, "replacement connection")
        await until(lambda: idle(http) == 1, "idle replacement")
        reply = await http.request("GET", "/after", {})

    assert first.ended_at - began >= 0.15  # it idled ~0.2 s (timers never fire early)
    assert first.requests == []
    assert reply.body == b"/after"
    assert server.requests[0].peer != first.id


@aio
async def test_max_idle_does_not_cut_a_request_in_flight() -> None:
    async def handler(peer: Peer, request: Request) -> None:
        await asyncio.sleep(0.3)  # longer than max_idle_s
        await echo(peer, request)

    async with Server(handler) as server, client(server.url(), warm=1, max_idle_s=0.1) as http:
        await warmed(http, server)
        pending = http.start("GET", "/slow", {})
        assert pending is not None
        reply = await pending

    assert reply.body == b"/slow"


# --- failures ------------------------------------------------------------------------------


@aio
async def test_timeout_raises_and_the_connection_is_not_reused() -> None:
    async def handler(peer: Peer, request: Request) -> None:
        if request.target != "/silent":
            await echo(peer, request)

    async with Server(handler) as server, client(server.url(), timeout_s=0.3) as http:
        await warmed(http, server)
        began = time.monotonic()
        with pytest.raises(HttpError, match="timed out"):
            await http.request("GET", "/silent", {})
        took = time.monotonic() - began
        silent = server.peers[server.requests[0].peer]
        await until(lambda: silent.ended, "closed timed-out connection")
        after = [await http.request("GET", f"/{n}", {}) for n in range(3)]

    assert 0.25 <= took < 2.0
    assert [reply.body for reply in after] == [b"/0", b"/1", b"/2"]
    assert silent.id not in [r.peer for r in server.requests[1:]]
    assert silent.requests == [server.requests[0]]


@aio
async def test_a_malformed_reply_raises_and_the_next_request_works() -> None:
    async def handler(peer: Peer, request: Request) -> None:
        if request.target == "/garbage":
            peer.write(b"\x00\x01garbage, not HTTP\r\n\r\n")
        else:
            await echo(peer, request)

    async with Server(handler) as server, client(server.url()) as http:
        with pytest.raises(HttpError, match=r"^malformed reply"):
            await http.request("GET", "/garbage", {})
        bad = server.peers[server.requests[0].peer]
        await until(lambda: bad.ended, "closed connection")
        reply = await http.request("GET", "/fine", {})

    assert reply.body == b"/fine"
    assert server.requests[-1].peer != bad.id


@pytest.mark.parametrize(
    ("cut", "how"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", "reset"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", "close"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "reset"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "close"),
        (b"", "reset"),
    ],
    ids=["body-reset", "body-fin", "headers-reset", "chunk-fin", "nothing-reset"],
)
@aio
async def test_a_connection_lost_mid_reply_raises_connection_error(cut: bytes, how: str) -> None:
    async def handler(peer: Peer, request: Request) -> None:
        if request.target != "/cut":
            await echo(peer, request)
            return
        peer.write(cut)
        await peer.writer.drain()
        await asyncio.sleep(0.02)  # the client reads the part first
        if how == "reset":
            peer.reset()
        else:
            peer.close()

    async with Server(handler) as server, client(server.url()) as http:
        with pytest.raises(HttpError, match=r"^connection error"):
            await http.request("GET", "/cut", {})
        reply = await http.request("GET", "/fine", {})

    assert reply.body == b"/fine"
    assert server.requests[-1].peer != server.requests[0].peer


@aio
async def test_nothing_listening_raises_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the port is free now: nothing listens on it
    async with client(f"http://127.0.0.1:{port}", timeout_s=1.0) as http:
        assert http.start("GET", "/x", {}) is None
        for _ in range(2):
            with pytest.raises(HttpError) as raised:
                await http.request("GET", "/x", {})
            assert str(raised.value).startswith("connection error"), raised.value


@aio
async def test_close_fails_a_pending_request_and_refuses_later_ones() -> None:
    async def handler(peer: Peer, request: Request) -> None:
        pass  # never answers

    async with Server(handler) as server:
        http = HttpClient(server.url(), timeout_s=2.0)
        await warmed(http, server)
        pending = http.start("GET", "/pending", {})
        assert pending is not None
        await until(lambda: len(server.requests) == 1, "the request")
        await http.close()
        with pytest.raises(HttpError, match="client closed"):
            await pending
        assert http.start("GET", "/later", {}) is None
        with pytest.raises(HttpError, match="client closed"):
            await http.request("GET", "/later", {})
        await until(lambda: all(peer.ended for peer in server.peers), "closed connections")
        peers = len(server.peers)
        await asyncio.sleep(0.05)

    assert len(server.peers) == peers  # no warm-up after close()
    assert [r.target for r in server.requests] == ["/pending"]


@aio
async def test_close_fails_a_request_that_is_still_connecting() -> None:
    async with Server() as server:
        http = HttpClient(server.url(), timeout_s=2.0)
        task = asyncio.create_task(http.request("GET", "/connecting", {}))
        await asyncio.sleep(0)  # the request now waits for its connection
        await http.close()
        with pytest.raises(HttpError):
            await task
        await asyncio.sleep(0.05)
        assert server.requests == []

"""Bybit V5 REST and WebSocket over the in-process exchange, plus the ``/sim/`` admin API.

A raw ASGI application (no framework on the hot path) served by uvicorn: one port carries
REST, ``/v5/public/{spot,linear}``, ``/v5/private`` and ``/sim/``. The exchange runs on the
event loop's thread, so each request is applied whole before the next one starts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from exchange_sim.auth import check_rest, check_ws
from exchange_sim.engine import Exchange, Reply
from exchange_sim.errors import PARAMS, VenueError

__all__ = [
    "AbortableWebSocketProtocol",
    "Faults",
    "SimApp",
    "StampedHttpProtocol",
    "wall_clock_ms",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_ARRIVALS_KEPT = 10_000
_ORDER_PATHS = {"/v5/order/create", "/v5/order/amend", "/v5/order/cancel", "/v5/order/cancel-all"}
_PUBLIC_WS = {"/v5/public/spot": "spot", "/v5/public/linear": "linear"}
_PRIVATE_TOPICS = ("order", "execution", "position", "wallet")
_TICK_S = 0.02
_SLOW_CLIENT_BYTES = 32 * 1024 * 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, remembered so the ``drop_ws`` fault can cut the TCP
    connection without a close frame, as a network failure would."""

    live: ClassVar[weakref.WeakSet[AbortableWebSocketProtocol]] = weakref.WeakSet()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        AbortableWebSocketProtocol.live.add(self)

    @classmethod
    def abort_all(cls) -> int:
        protocols = list(cls.live)
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.abort()
        cls.live.clear()
        return len(protocols)


class StampedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, noting when each request's first bytes were read off the
    socket (``scope["arbhub.read_ns"]``, ``CLOCK_MONOTONIC``): the moment a client's request
    reached the simulator, before the simulator's own HTTP parsing and dispatch."""

    _read_ns = 0

    def data_received(self, data: bytes) -> None:
        self._read_ns = time.monotonic_ns()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["arbhub.read_ns"] = self._read_ns  # type: ignore[typeddict-unknown-key]


@dataclass
class Faults:
    """Injected faults (``POST /sim/faults``)."""

    rest_ms: int = 0
    ws_ms: int = 0
    rate_limit: int = 0
    http_503: int = 0
    lose_reply: int = 0
    paused: dict[tuple[str, str], int] = field(default_factory=dict)
    garbled: set[tuple[str, str]] = field(default_factory=set)  # next message cut in half

    def topic_paused(self, category: str, topic: str, now: int) -> bool:
        until = self.paused.get((category, topic))
        if until is None:
            return False
        if now >= until:
            del self.paused[(category, topic)]
            return False
        return True


class _RateLimiter:
    """Per api key, path and category: a fixed one-second window, as Bybit's headers show."""

    def __init__(self, limits: dict[str, dict[str, int]]) -> None:
        self.limits = limits
        self.windows: dict[tuple[str, str, str], tuple[int, int]] = {}

    def take(self, api_key: str, path: str, category: str, now: int) -> tuple[bool, int, int, int]:
        per_path = self.limits.get(path)
        if per_path is None:
            return True, 0, 0, now
        limit = per_path.get(category, per_path.get("*", 0))
        if limit <= 0:
            return True, 0, 0, now
        window_start = now - now % 1000
        key = (api_key, path, category)
        start, used = self.windows.get(key, (window_start, 0))
        if start != window_start:
            start, used = window_start, 0
        if used >= limit:
            return False, limit, 0, start + 1000
        used += 1
        self.windows[key] = (start, used)
        return True, limit, limit - used, now


class _Conn:
    """One WebSocket client.

    Data frames are written straight to the client's transport, built once per message for
    every subscriber (the fan-out's whole cost is one ``write`` per client). Control replies,
    and everything while the ``latency`` fault is on or earlier items are still queued, go
    through a queue drained by a writer task, so a client always sees messages in order.
    """

    def __init__(self, kind: str, category: str) -> None:
        self.kind = kind
        self.category = category
        self.conn_id = str(uuid.uuid4())
        self.api_key: str | None = None
        self.topics: set[str] = set()
        self.queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None

    def deliver(self, at: float, text: str, frame: bytes) -> None:
        transport = self.transport
        if transport is None or at or not self.queue.empty():
            self.queue.put_nowait((at, text))
            return
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > _SLOW_CLIENT_BYTES:
            transport.abort()  # a client this far behind is cut off, as Bybit does
            return
        transport.write(frame)


def _frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


_Handler = Callable[[Exchange, str, dict[str, Any]], Reply]
_PublicHandler = Callable[[Exchange, dict[str, Any]], Reply]

_PRIVATE: dict[str, tuple[str, _Handler]] = {
    "/v5/order/create": ("POST", Exchange.create_order),
    "/v5/order/amend": ("POST", Exchange.amend_order),
    "/v5/order/cancel": ("POST", Exchange.cancel_order),
    "/v5/order/cancel-all": ("POST", Exchange.cancel_all),
    "/v5/order/realtime": ("GET", Exchange.open_orders),
    "/v5/order/history": ("GET", Exchange.order_history),
    "/v5/execution/list": ("GET", Exchange.executions),
    "/v5/position/list": ("GET", Exchange.positions),
    "/v5/position/set-leverage": ("POST", Exchange.set_leverage),
    "/v5/account/info": ("GET", lambda ex, key, params: ex.account_info(key)),
    "/v5/account/wallet-balance": ("GET", Exchange.wallet_balance),
    "/v5/account/fee-rate": ("GET", Exchange.fee_rate),
}

_PUBLIC: dict[str, _PublicHandler] = {
    "/v5/market/instruments-info": Exchange.instruments_info,
    "/v5/market/orderbook": Exchange.orderbook,
    "/v5/market/tickers": Exchange.tickers,
    "/v5/market/time": lambda ex, params: ex.server_time(),
}

_encode = msgspec.json.Encoder().encode


class SimApp:
    """The ASGI application. ``run_market`` drives the market model off the wall clock."""

    def __init__(self, exchange: Exchange, *, subscribe_delay_ms: int = 30) -> None:
        self.exchange = exchange
        self.faults = Faults()
        self.limiter = _RateLimiter(exchange.config.rate_limits)
        self.subscribe_delay_s = subscribe_delay_ms / 1000
        self.public_subs: dict[tuple[str, str], set[_Conn]] = {}
        self.private_conns: set[_Conn] = set()
        self.secrets = {key: acct.api_secret for key, acct in exchange.accounts.items()}
        exchange.on_public = self._publish
        exchange.on_private = self._publish_private
        exchange.wants = self._wants
        exchange.wants_private = self._wants_private
        self._ticker: asyncio.Task[None] | None = None
        # when each order create arrived (CLOCK_MONOTONIC ns, shared by every process on the
        # host): benchmarks time a client's reaction against the publish time of /sim/book
        # orderLinkId → when its create was read off the socket, and when the handler got it
        self.arrivals: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # "category/symbol" → when /sim/book last published it (the delayed ones included):
        # the moment its first message was handed to the sockets, as a venue's gateway sends
        # it, so a benchmark does not count the simulator's own book-building against a client
        self.published: dict[str, int] = {}
        self._first_write_ns: int | None = None  # set by _publish while a /sim/book runs

    # --- market clock -------------------------------------------------------------------

    async def run_market(self) -> None:
        while True:
            self.exchange.advance()
            await asyncio.sleep(_TICK_S)

    # --- ASGI entry ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._ticker = asyncio.create_task(self.run_market())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._ticker is not None:
                    self._ticker.cancel()
                if self.exchange.journal is not None:
                    self.exchange.journal.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- HTTP ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        method: str = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        if path.startswith("/sim/"):
            client = scope.get("client")
            if client is None or client[0] not in _LOOPBACK:
                await _respond(send, 403, {"error": "the admin API is loopback only"})
                return
            status, reply = self._admin(method, path, body)
            await _respond(send, status, reply)
            return
        if path in _PUBLIC or path in _PRIVATE:
            await self._rest(scope, receive, send, path, method, query, body)
            return
        await _respond(
            send,
            404,
            {
                "retCode": 10017,
                "retMsg": "Route not found.",
                "result": {},
                "retExtInfo": {},
                "time": wall_clock_ms(),
            },
        )

    async def _rest(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        method: str,
        query: str,
        body: bytes,
    ) -> None:
        handled_ns = time.monotonic_ns()
        arrived_ns = (scope.get("arbhub.read_ns") or handled_ns, handled_ns)
        faults = self.faults
        if faults.rest_ms:
            await asyncio.sleep(faults.rest_ms / 1000)
        if faults.http_503 > 0:
            faults.http_503 -= 1
            await _raw(
                send,
                503,
                b"<html><body>503 Service Temporarily Unavailable</body></html>",
                b"text/html",
            )
            return
        now = self.exchange.clock()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        extra: list[tuple[bytes, bytes]] = [
            (b"traceid", uuid.uuid4().hex.encode()),
            (b"timenow", str(now).encode()),
        ]
        try:
            params = _params(method, query, body)
            if path in _PUBLIC:
                reply = _PUBLIC[path](self.exchange, params)
            else:
                expected_method, handler = _PRIVATE[path]
                if method != expected_method:
                    raise VenueError(10017, "Route not found.")
                api_key = check_rest(
                    headers, query if method == "GET" else body.decode(), self.secrets, now
                )
                category = str(params.get("category") or "")
                if faults.rate_limit > 0:
                    faults.rate_limit -= 1
                    ok, limit, remaining, reset = False, 1, 0, now + 1000
                else:
                    ok, limit, remaining, reset = self.limiter.take(api_key, path, category, now)
                if limit:
                    extra += [
                        (b"x-bapi-limit", str(limit).encode()),
                        (b"x-bapi-limit-status", str(remaining).encode()),
                        (b"x-bapi-limit-reset-timestamp", str(reset).encode()),
                    ]
                if not ok:
                    raise VenueError(10006, "Too many visits. Exceeded the API Rate Limit.")
                reply = handler(self.exchange, api_key, params)
                if path == "/v5/order/create":
                    self._arrived(str(params.get("orderLinkId") or ""), arrived_ns)
                if path in _ORDER_PATHS and faults.lose_reply > 0:
                    faults.lose_reply -= 1
                    await _never_answer(receive)
                    return
        except VenueError as exc:
            reply = Reply(exc.code, exc.message, {})
        envelope = {
            "retCode": reply.code,
            "retMsg": reply.msg,
            "result": reply.result,
            "retExtInfo": {},
            "time": self.exchange.clock(),
        }
        await _raw(send, 200, _encode(envelope), b"application/json", extra)

    # --- admin API ----------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        ex = self.exchange
        try:
            data = json.loads(body) if body else {}
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            if method == "GET" and path == "/sim/orders":
                return 200, {"orders": ex.all_orders()}
            if method == "GET" and path == "/sim/account":
                return 200, {"accounts": ex.all_accounts()}
            if method == "GET" and path == "/sim/arrivals":
                return 200, {
                    "arrivals": {k: read for k, (read, _) in self.arrivals.items()},
                    "handled": {k: handled for k, (_, handled) in self.arrivals.items()},
                    "published": self.published,
                }
            if method != "POST":
                return 404, {"error": f"no such admin route: {method} {path}"}
            if path == "/sim/book":
                book = (
                    str(data["category"]),
                    str(data["symbol"]),
                    _levels(data.get("bids", [])),
                    _levels(data.get("asks", [])),
                )
                ex.check_book(*book)
                delay_ms = float(data.get("delay_ms", 0))
                if not 0 <= delay_ms <= 60_000:
                    raise ValueError("delay_ms must be between 0 and 60000")
                if delay_ms:
                    # the caller is back asleep when the book goes out, so a benchmark's own
                    # wakeup does not compete with the client it times
                    asyncio.get_running_loop().call_later(delay_ms / 1000, self._set_book, *book)
                    return 200, {"ok": True}
                return 200, {"ok": True, "published_ns": self._set_book(*book)}
            elif path == "/sim/trade":
                fills = ex.print_trade(
                    str(data["category"]),
                    str(data["symbol"]),
                    str(data["side"]),
                    _dec(data["price"]),
                    _dec(data["qty"]),
                )
                return 200, {"ok": True, "filled": str(sum((f.qty for f in fills), Decimal(0)))}
            elif path == "/sim/adjust":
                if "coin" in data:
                    ex.adjust_balance(
                        _opt_str(data.get("apiKey")), str(data["coin"]), _dec(data["delta"])
                    )
                else:
                    ex.set_position(
                        _opt_str(data.get("apiKey")),
                        str(data["symbol"]),
                        str(data["side"]),
                        _dec(data["size"]),
                    )
            elif path == "/sim/freeze":
                ex.frozen = True
            elif path == "/sim/unfreeze":
                ex.frozen = False
                ex.model.resume(ex.clock())
            elif path == "/sim/faults":
                self._fault(data)
            else:
                return 404, {"error": f"no such admin route: {method} {path}"}
        except VenueError as exc:
            return 400, {"error": exc.message, "retCode": exc.code}
        except (KeyError, ValueError, TypeError, InvalidOperation) as exc:
            return 400, {"error": f"bad request: {exc!r}"}
        return 200, {"ok": True}

    def _set_book(
        self,
        category: str,
        symbol: str,
        bids: list[tuple[Decimal, Decimal]],
        asks: list[tuple[Decimal, Decimal]],
    ) -> int:
        """Publish a new book; returns (and keeps) the time its first message went out to
        the sockets (when the book changed, if no message went out)."""
        self._first_write_ns = 0
        try:
            self.exchange.set_book(category, symbol, bids, asks)
            published_ns = self._first_write_ns or time.monotonic_ns()
        finally:
            self._first_write_ns = None
        self.published[f"{category}/{symbol}"] = published_ns
        return published_ns

    def _arrived(self, link_id: str, arrived_ns: tuple[int, int]) -> None:
        if link_id:
            self.arrivals[link_id] = arrived_ns
            if len(self.arrivals) > _ARRIVALS_KEPT:
                self.arrivals.popitem(last=False)

    def _fault(self, data: dict[str, Any]) -> None:
        kind = data.get("kind")
        faults = self.faults
        if kind == "latency":
            faults.rest_ms = int(data.get("rest_ms", 0))
            faults.ws_ms = int(data.get("ws_ms", 0))
        elif kind == "drop_ws":
            AbortableWebSocketProtocol.abort_all()
        elif kind == "skip_u":
            symbol = str(data["topic"]).split(".")[-1]
            if (str(data["category"]), symbol) not in self.exchange.feeds:
                raise ValueError(f"unknown book {data['category']}/{symbol}")
            self.exchange.skip_u(str(data["category"]), symbol)
        elif kind == "pause_topic":
            faults.paused[(str(data["category"]), str(data["topic"]))] = (
                self.exchange.clock() + int(data["ms"])
            )
        elif kind == "garble":
            faults.garbled.add((str(data["category"]), str(data["topic"])))
        elif kind == "rate_limit":
            faults.rate_limit = int(data["count"])
        elif kind == "http_503":
            faults.http_503 = int(data["count"])
        elif kind == "lose_reply":
            faults.lose_reply = int(data["count"])
        elif kind == "clear":
            self.faults = Faults()
            for feed in self.exchange.feeds.values():
                feed.skip_next_u = False
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    # --- WebSocket ----------------------------------------------------------------------

    def _wants(self, category: str, topic: str) -> bool:
        return bool(self.public_subs.get((category, topic)))

    def _wants_private(self, api_key: str, topic: str) -> bool:
        return any(c.api_key == api_key and topic in c.topics for c in self.private_conns)

    def _delivery_time(self) -> float:
        """When a message may leave (the ``latency`` fault); 0.0 means at once."""
        return time.monotonic() + self.faults.ws_ms / 1000 if self.faults.ws_ms else 0.0

    def _publish(self, category: str, topic: str, message: bytes) -> None:
        subscribers = self.public_subs.get((category, topic))
        if not subscribers or self.faults.topic_paused(category, topic, self.exchange.clock()):
            return
        if (category, topic) in self.faults.garbled:  # a malformed message, once
            self.faults.garbled.discard((category, topic))
            message = message[: len(message) // 2]
        text = message.decode(errors="replace")
        at = self._delivery_time()
        frame = _frame(message)
        if self._first_write_ns == 0:
            self._first_write_ns = time.monotonic_ns()
        for conn in subscribers:
            conn.deliver(at, text, frame)

    def _publish_private(self, api_key: str, topic: str, message: bytes) -> None:
        at = self._delivery_time()
        for conn in self.private_conns:
            if conn.api_key == api_key and topic in conn.topics:
                conn.deliver(at, message.decode(), _frame(message))

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path in _PUBLIC_WS:
            conn = _Conn("public", _PUBLIC_WS[path])
        elif path == "/v5/private":
            conn = _Conn("private", "")
        else:
            await send({"type": "websocket.close", "code": 1008})
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        protocol = getattr(send, "__self__", None)  # uvicorn's protocol: write frames directly
        if isinstance(protocol, AbortableWebSocketProtocol) and not protocol.conn.extensions:
            conn.transport = protocol.transport
        writer = asyncio.create_task(_writer(conn, send))
        if conn.kind == "private":
            self.private_conns.add(conn)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text") or (message.get("bytes") or b"").decode()
                await self._on_ws_message(conn, text)
        finally:
            self._forget(conn)
            conn.queue.put_nowait(None)
            writer.cancel()

    def _forget(self, conn: _Conn) -> None:
        self.private_conns.discard(conn)
        for topic in conn.topics:
            subscribers = self.public_subs.get((conn.category, topic))
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.public_subs[(conn.category, topic)]

    def _reply(self, conn: _Conn, body: dict[str, Any]) -> None:
        conn.queue.put_nowait((0.0, json.dumps(body, separators=(",", ":"))))

    async def _on_ws_message(self, conn: _Conn, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._reply(
                conn,
                {"success": False, "ret_msg": "Params Error", "conn_id": conn.conn_id, "op": ""},
            )
            return
        op = request.get("op")
        req_id = request.get("req_id")
        if op == "ping":
            self._reply(conn, self._pong(conn, req_id))
        elif op == "auth" and conn.kind == "private":
            api_key = check_ws(request.get("args"), self.secrets, self.exchange.clock())
            conn.api_key = api_key
            body: dict[str, Any] = {
                "success": api_key is not None,
                "ret_msg": "" if api_key else "Params Error",
                "op": "auth",
                "conn_id": conn.conn_id,
            }
            if req_id:
                body = {"req_id": req_id, **body}
            self._reply(conn, body)
        elif op in ("subscribe", "unsubscribe"):
            await self._subscribe(conn, op, request.get("args"), req_id)
        else:
            self._reply(
                conn,
                {
                    "success": False,
                    "ret_msg": f"error:unknown op {op}",
                    "conn_id": conn.conn_id,
                    "op": str(op),
                },
            )

    def _pong(self, conn: _Conn, req_id: object) -> dict[str, Any]:
        if conn.kind == "private":
            return {
                "req_id": req_id or "",
                "op": "pong",
                "args": [str(self.exchange.clock())],
                "conn_id": conn.conn_id,
            }
        if conn.category == "spot":
            body: dict[str, Any] = {"success": True, "ret_msg": "pong", "conn_id": conn.conn_id}
            if req_id:
                body["req_id"] = req_id
            body["op"] = "ping"
            return body
        return {
            "success": True,
            "ret_msg": "pong",
            "conn_id": conn.conn_id,
            "req_id": req_id or "",
            "op": "ping",
        }

    def _ack(self, conn: _Conn, op: str, req_id: object, error: str) -> dict[str, Any]:
        success = not error
        if conn.kind == "private":
            body: dict[str, Any] = {
                "success": success,
                "ret_msg": error,
                "op": op,
                "conn_id": conn.conn_id,
            }
            if req_id:
                body["req_id"] = req_id
            return body
        ret_msg = error or (op if conn.category == "spot" else "")
        return {
            "success": success,
            "ret_msg": ret_msg,
            "conn_id": conn.conn_id,
            "req_id": req_id or "",
            "op": op,
        }

    async def _subscribe(self, conn: _Conn, op: str, args: object, req_id: object) -> None:
        topics = [str(a) for a in args] if isinstance(args, list) else []
        error = ""
        if not topics:
            error = "error:args is empty"
        elif conn.kind == "private":
            if conn.api_key is None:
                error = "Request not authorized"
            bad = [t for t in topics if t not in _PRIVATE_TOPICS]
            if bad and not error:
                error = f"error:handler not found,topic:{bad[0]}"
        else:
            bad = [t for t in topics if not self.exchange.has_topic(conn.category, t)]
            if bad:
                error = f"error:handler not found,topic:{bad[0]}"
            elif conn.category == "spot" and len(topics) > 10:
                error = "error:args count exceeds 10"
        # Real Bybit answers after a network round trip; pybit registers callbacks only after
        # sending, so an instant ack races it.
        await asyncio.sleep(self.subscribe_delay_s)
        if error:
            self._reply(conn, self._ack(conn, op, req_id, error))
            return
        if op == "unsubscribe":
            for topic in topics:
                conn.topics.discard(topic)
                subscribers = self.public_subs.get((conn.category, topic))
                if subscribers is not None:
                    subscribers.discard(conn)
            self._reply(conn, self._ack(conn, op, req_id, ""))
            return
        self._reply(conn, self._ack(conn, op, req_id, ""))
        for topic in topics:
            conn.topics.add(topic)
            if conn.kind == "public":
                self.public_subs.setdefault((conn.category, topic), set()).add(conn)
                first = self.exchange.snapshot_for(conn.category, topic)
                if first is not None:
                    conn.queue.put_nowait((0.0, first.decode()))


async def _writer(conn: _Conn, send: Send) -> None:
    queue = conn.queue
    try:
        while True:
            item = await queue.get()
            while True:  # drain what is queued without a task switch per message
                if item is None:
                    return
                at, text = item
                if at:
                    delay = at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await send({"type": "websocket.send", "text": text})
                if queue.empty():
                    break
                item = queue.get_nowait()
    except (OSError, RuntimeError):
        return  # the client went away; the reader loop cleans up


async def _never_answer(receive: Receive) -> None:
    """The "lost reply" fault: the change is applied, the client never hears back."""
    while True:
        message = await receive()  # ignore anything but the client giving up
        if message["type"] == "http.disconnect":
            return


def _params(method: str, query: str, body: bytes) -> dict[str, Any]:
    if method == "GET":
        return dict(parse_qsl(query, keep_blank_values=True))
    if not body:
        return {}
    try:
        params = json.loads(body)
    except ValueError:
        raise VenueError(PARAMS, "params error: the body is not JSON") from None
    if not isinstance(params, dict):
        raise VenueError(PARAMS, "params error: the body must be a JSON object")
    return params


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _dec(value: object) -> Decimal:
    if not isinstance(value, (str, int)):
        raise ValueError(f"decimal values are strings, got {value!r}")
    return Decimal(str(value))


def _levels(raw: object) -> list[tuple[Decimal, Decimal]]:
    if not isinstance(raw, list):
        raise ValueError("levels must be a list of [price, size]")
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("each level is [price, size]")
        out.append((_dec(item[0]), _dec(item[1])))
    return out


async def _raw(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    await _raw(send, status, _encode(payload), b"application/json")

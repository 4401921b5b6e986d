"""A Bybit V5 WebSocket that stays connected: subscribe, ping, reconnect, resubscribe.

One ``BybitSocket`` serves one URL (``/v5/public/spot``, ``/v5/public/linear`` or
``/v5/private``). On every (re)connection it authenticates (private), subscribes to its
topics (spot takes at most 10 per request), then reports ``connected``; the runtime must
resync by REST at that point before trusting the stream. Data messages go to ``on_message``
as raw bytes; control replies are handled here. A dropped connection, a failed auth or a
refused subscription reports ``disconnected`` with the reason, waits a capped exponential
backoff with jitter, and tries again, for as long as the socket runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping

from worker.config_loader import ApiCredentials
from worker.venues.bybit.rest import sign
from worker.venues.wsconn import WsClosedError, WsConnection

__all__ = ["BybitSocket"]

_SPOT_ARGS_PER_REQUEST = 10
_AUTH_EXPIRES_MS = 10_000
_REPLY_TIMEOUT_S = 10.0
_HEALTHY_AFTER_S = 30.0  # a connection that lived this long resets the backoff


class _RefusedError(Exception):
    """The venue answered an auth or subscribe with ``success: false``."""


class BybitSocket:
    def __init__(
        self,
        url: str,
        topics: list[str],
        *,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool, str], None],
        credentials: ApiCredentials | None = None,
        ping_interval_s: float = 20.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.topics = list(topics)
        self.on_message = on_message
        self.on_state = on_state
        self._credentials = credentials
        self.ping_interval_s = ping_interval_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._ws: WsConnection | None = None
        self._replies: dict[str, asyncio.Future[dict[str, object]]] = {}
        self._fault = ""  # why the session ended, when this side ended it
        self._stopping = False
        self._stop = asyncio.Event()  # wakes the backoff wait
        self.connections = 0

    async def run(self) -> None:
        """Keep the socket up until ``stop()``."""
        delay = self.backoff_min_s
        while not self._stopping:
            started = time.monotonic()
            reason = await self._session()
            if self.stopping:
                return
            self.on_state(False, reason)
            if time.monotonic() - started > _HEALTHY_AFTER_S:
                delay = self.backoff_min_s
            with contextlib.suppress(TimeoutError):  # jitter: 0.5–1.5×
                await asyncio.wait_for(self._stop.wait(), delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, self.backoff_max_s)

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        self._stop.set()
        if self._ws is not None:
            await self._ws.close()

    async def resubscribe(self, topic: str) -> None:
        """Unsubscribe and subscribe again: the venue answers with a fresh snapshot."""
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(WsClosedError):  # the reconnection subscribes afresh
            ws.send_text(json.dumps({"op": "unsubscribe", "args": [topic]}))
            ws.send_text(json.dumps({"op": "subscribe", "args": [topic]}))

    async def _session(self) -> str:
        """One connection's life; returns why it ended."""
        self._replies.clear()
        try:
            ws = await WsConnection.open(self.url, self._dispatch, timeout_s=_REPLY_TIMEOUT_S)
        except WsClosedError as exc:
            return str(exc)
        self._ws = ws
        self.connections += 1
        ws.closed.add_done_callback(self._closed)
        pinger = asyncio.create_task(self._ping(ws))
        try:
            await self._handshake(ws)
            if self._stopping:  # stopped while connecting: nobody may see it connected
                await ws.close()
                return "stopped"
            self.on_state(True, "connected")
            reason = await ws.closed
            return self._fault or reason
        except _RefusedError as exc:
            return str(exc)
        except (WsClosedError, TimeoutError) as exc:
            return f"connection lost: {exc or type(exc).__name__}"
        finally:
            pinger.cancel()
            self._ws = None
            self._fault = ""
            ws.abort()

    def _closed(self, closed: asyncio.Future[str]) -> None:
        """Nobody waits for a reply on a dead connection."""
        replies, self._replies = self._replies, {}
        for waiter in replies.values():
            if not waiter.done():
                waiter.set_exception(WsClosedError(closed.result()))

    def _dispatch(self, data: bytes) -> None:
        """Every message, as it is parsed: data to ``on_message``, replies to their waiter."""
        if b'"topic"' in data:
            self.on_message(data)
            return
        try:
            message = json.loads(data)
            op = message.get("op")
        except (ValueError, AttributeError):
            return  # not a control message we know; the data path reports bad data
        waiter = self._replies.pop(op, None) if isinstance(op, str) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        elif op == "subscribe" and not message.get("success"):  # a resubscription refused
            self._fault = f"subscribe refused: {message.get('ret_msg', '')}"[:200]
            if self._ws is not None:
                self._ws.abort()

    async def _handshake(self, ws: WsConnection) -> None:
        if self._credentials is not None:
            expires = time.time_ns() // 1_000_000 + _AUTH_EXPIRES_MS
            signature = sign(self._credentials, f"GET/realtime{expires}")
            auth = {"op": "auth", "args": [self._credentials.api_key, expires, signature]}
            await self._request(ws, "auth", auth)
        size = _SPOT_ARGS_PER_REQUEST if self.url.endswith("/spot") else len(self.topics) or 1
        for start in range(0, len(self.topics), size):
            chunk = self.topics[start : start + size]
            await self._request(ws, "subscribe", {"op": "subscribe", "args": chunk})

    async def _request(self, ws: WsConnection, op: str, message: Mapping[str, object]) -> None:
        """Send ``message`` and wait for the reply to ``op``; data meanwhile is delivered."""
        waiter: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._replies[op] = waiter
        ws.send_text(json.dumps(message))
        try:
            reply = await asyncio.wait_for(waiter, _REPLY_TIMEOUT_S)
        except TimeoutError:
            raise WsClosedError(f"no {op} reply") from None
        if not reply.get("success"):
            raise _RefusedError(f"{op} refused: {reply.get('ret_msg', '')}"[:200])

    async def _ping(self, ws: WsConnection) -> None:
        """Bybit's application ping; a connection silent for two intervals is dead."""
        seen = ws.received
        while True:
            await asyncio.sleep(self.ping_interval_s)
            with contextlib.suppress(WsClosedError):
                ws.send_text('{"op":"ping"}')
            await asyncio.sleep(self.ping_interval_s)
            if ws.received == seen:
                self._fault = "no message or pong for two ping intervals"
                ws.abort()
                return
            seen = ws.received

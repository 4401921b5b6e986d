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
import json
import random
import time
from collections.abc import Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect

from worker.config_loader import ApiCredentials
from worker.venues.bybit.rest import sign

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
        self._ws: ClientConnection | None = None
        self._stopping = False
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
            await asyncio.sleep(delay * (0.5 + self._rng.random()))  # jitter: 0.5–1.5×
            delay = min(delay * 2, self.backoff_max_s)

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()

    async def resubscribe(self, topic: str) -> None:
        """Unsubscribe and subscribe again: the venue answers with a fresh snapshot."""
        ws = self._ws
        if ws is None:
            return
        await ws.send(json.dumps({"op": "unsubscribe", "args": [topic]}))
        await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))

    async def _session(self) -> str:
        """One connection's life; returns why it ended."""
        try:
            async with connect(self.url, ping_interval=self.ping_interval_s, max_size=None) as ws:
                self._ws = ws
                self.connections += 1
                await self._handshake(ws)
                self.on_state(True, "connected")
                pinger = asyncio.create_task(self._ping(ws))
                try:
                    while True:
                        data = await ws.recv(decode=False)  # bytes: no decode and re-encode
                        assert isinstance(data, bytes)
                        if b'"topic"' in data:
                            self.on_message(data)
                        else:
                            self._control(data)
                except websockets.exceptions.ConnectionClosedOK:
                    return "connection closed"
                finally:
                    pinger.cancel()
        except _RefusedError as exc:
            return str(exc)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            return f"connection lost: {type(exc).__name__}"
        finally:
            self._ws = None

    async def _handshake(self, ws: ClientConnection) -> None:
        if self._credentials is not None:
            expires = time.time_ns() // 1_000_000 + _AUTH_EXPIRES_MS
            signature = sign(self._credentials, f"GET/realtime{expires}")
            await ws.send(
                json.dumps({"op": "auth", "args": [self._credentials.api_key, expires, signature]})
            )
            await self._await_reply(ws, "auth")
        size = _SPOT_ARGS_PER_REQUEST if self.url.endswith("/spot") else len(self.topics) or 1
        for start in range(0, len(self.topics), size):
            chunk = self.topics[start : start + size]
            await ws.send(json.dumps({"op": "subscribe", "args": chunk}))
            await self._await_reply(ws, "subscribe")

    async def _await_reply(self, ws: ClientConnection, op: str) -> None:
        """Wait for the reply to ``op``; data arriving meanwhile is delivered, not lost."""
        deadline = time.monotonic() + _REPLY_TIMEOUT_S
        while True:
            raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
            data = raw.encode() if isinstance(raw, str) else raw
            message = json.loads(data)
            if "topic" in message:
                self.on_message(data)
                continue
            if message.get("op") == op:
                if not message.get("success"):
                    raise _RefusedError(f"{op} refused: {message.get('ret_msg', '')}"[:200])
                return

    def _control(self, data: bytes) -> None:
        """Pongs and (re)subscription acks need nothing; a refused subscribe is a fault."""
        message = json.loads(data)
        if message.get("op") == "subscribe" and not message.get("success"):
            raise _RefusedError(f"subscribe refused: {message.get('ret_msg', '')}"[:200])

    async def _ping(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            await ws.send('{"op":"ping"}')

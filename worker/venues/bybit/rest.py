"""Bybit V5 REST: signing, and every reply sorted into one of three outcomes.

``Done`` carries the undecoded ``result``; ``Refused`` is a definitive refusal (its retCode is
on the allow-list in :mod:`worker.venues.bybit.errors`); ``Unknown`` is everything else — a
timeout, a dropped connection, an HTTP error, an unlisted retCode or a body that is not a V5
envelope. For an order request ``Unknown`` means *the order may exist*: the caller resolves
it by querying the ``orderLinkId`` and never sends it again. Nothing here raises for a venue
or network problem, and no message carries the API key or secret.

A POST is written to the socket when :meth:`BybitRest.post` is *called* (on an idle
keep-alive connection of :mod:`worker.venues.http1`), not when its result is awaited: the
order path sends inside the core's step. The client was chosen by measurement
(``python -m bench.rest_clients``, docs/venues.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msgspec

from worker.config_loader import ApiCredentials
from worker.core.model import RejectKind
from worker.venues.bybit.errors import classify
from worker.venues.bybit.parse import redact
from worker.venues.bybit.schemas import RestEnvelope
from worker.venues.http1 import HttpClient, HttpError, Reply

__all__ = [
    "BybitRest",
    "Done",
    "PreparedPost",
    "RateLimit",
    "Refused",
    "Unknown",
    "sign",
    "sign_headers",
]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The ``X-Bapi-Limit*`` headers of one reply."""

    limit: int
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Done:
    result: bytes
    body: bytes  # the whole envelope, for the parsers that take one
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    code: int
    message: str
    kind: RejectKind
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    reason: str
    code: int | None = None
    rate_limit: RateLimit | None = None


Outcome = Done | Refused | Unknown


@dataclass(frozen=True, slots=True)
class PreparedPost:
    """A signed POST ready for the wire, and when it was signed (the venue's clock)."""

    data: bytes
    signed_ms: int


def sign(credentials: ApiCredentials, text: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``text`` with the API secret (REST and WebSocket auth)."""
    mac = _keyed(credentials.api_secret).copy()
    mac.update(text.encode())
    return mac.hexdigest()


@functools.lru_cache(maxsize=4)
def _keyed(secret: str) -> hmac.HMAC:
    """The HMAC with the key already mixed in: each signature only hashes its text."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def sign_headers(
    credentials: ApiCredentials, ts_ms: int, recv_window_ms: int, payload: str
) -> dict[str, str]:
    """Bybit's HMAC headers over ``timestamp + key + recv_window + payload``."""
    text = f"{ts_ms}{credentials.api_key}{recv_window_ms}{payload}"
    return {
        "X-BAPI-API-KEY": credentials.api_key,
        "X-BAPI-TIMESTAMP": str(ts_ms),
        "X-BAPI-RECV-WINDOW": str(recv_window_ms),
        "X-BAPI-SIGN": sign(credentials, text),
        "X-BAPI-SIGN-TYPE": "2",
    }


def _rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """From the reply's lower-cased header names."""
    try:
        return RateLimit(
            limit=int(headers["x-bapi-limit"]),
            remaining=int(headers["x-bapi-limit-status"]),
            reset_ms=int(headers["x-bapi-limit-reset-timestamp"]),
        )
    except (KeyError, ValueError):
        return None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BybitRest:
    """Keep-alive connections to one Bybit REST base URL."""

    def __init__(
        self,
        base_url: str,
        credentials: ApiCredentials | None,
        *,
        recv_window_ms: int = 5000,
        timeout_s: float = 5.0,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self.recv_window_ms = recv_window_ms
        self.clock = clock
        self._http = HttpClient(self.base_url, timeout_s=timeout_s)

    async def __aenter__(self) -> BybitRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def get(self, path: str, params: Mapping[str, str], *, auth: bool = True) -> Outcome:
        query = urlencode(sorted(params.items()))
        headers = self._auth(query) if auth else {}
        target = f"{path}?{query}" if query else path
        return await self._outcome(self._http.send("GET", target, headers))

    def post(self, path: str, body: Mapping[str, object]) -> Coroutine[Any, Any, Outcome]:
        """Sends now when a connection is idle (otherwise once awaited); await the outcome."""
        return self.send_prepared(self.prepare_post(path, body))

    def prepare_post(self, path: str, body: Mapping[str, object]) -> PreparedPost:
        """The signed request, built now to be sent later (within the receive window of
        ``signed_ms``; the venue refuses it after that)."""
        payload = msgspec.json.encode(body)
        now = self.clock()
        headers = {"Content-Type": "application/json", **self._auth(payload.decode(), now)}
        return PreparedPost(self._http.encode("POST", path, headers, payload), now)

    def send_prepared(self, prepared: PreparedPost) -> Coroutine[Any, Any, Outcome]:
        """:meth:`post` for a request :meth:`prepare_post` built earlier."""
        return self._outcome(self._http.send_encoded(prepared.data))

    def _auth(self, payload: str, now_ms: int | None = None) -> dict[str, str]:
        if self._credentials is None:
            return {}
        ts = self.clock() if now_ms is None else now_ms
        return sign_headers(self._credentials, ts, self.recv_window_ms, payload)

    async def _outcome(self, pending: Awaitable[Reply]) -> Outcome:
        try:
            reply = await pending
        except HttpError as exc:
            return Unknown(str(exc))
        limits = _rate_limit(reply.headers)
        if reply.status != 200:
            return Unknown(f"HTTP {reply.status}", rate_limit=limits)
        try:
            envelope = msgspec.json.decode(reply.body, type=RestEnvelope)
        except msgspec.DecodeError:
            return Unknown("reply is not a V5 envelope", rate_limit=limits)
        if envelope.ret_code == 0:
            return Done(bytes(envelope.result), reply.body, rate_limit=limits)
        message = redact(envelope.ret_msg)
        kind = classify(envelope.ret_code)
        if kind is None:
            return Unknown(f"retCode {envelope.ret_code}: {message}", envelope.ret_code, limits)
        return Refused(envelope.ret_code, message, kind, rate_limit=limits)

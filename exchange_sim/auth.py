"""Bybit V5 request authentication: REST HMAC headers and the private WebSocket ``auth`` op.

REST signs ``timestamp + api_key + recv_window + payload`` where the payload is the raw query
string (GET) or the raw body (POST), exactly as received, never re-serialised. The timestamp
must satisfy ``server_time - recv_window <= timestamp < server_time + 1000``. WebSocket auth
signs ``"GET/realtime" + expires`` and needs ``expires`` in the future.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from exchange_sim.errors import VenueError

__all__ = ["check_rest", "check_ws", "sign"]

DEFAULT_RECV_WINDOW = 5000
FUTURE_TOLERANCE_MS = 1000


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def check_rest(
    headers: Mapping[str, str], payload: str, secrets: Mapping[str, str], now_ms: int
) -> str:
    """The api key of a correctly signed request, else the VenueError Bybit would return."""
    api_key = headers.get("x-bapi-api-key", "")
    secret = secrets.get(api_key)
    if not api_key or secret is None:
        raise VenueError(
            10003,
            "API key is invalid. Check whether the key and domain are matched, there are 4 "
            "env: mainnet, testnet, mainnet-demo, testnet-demo",
        )
    raw_ts = headers.get("x-bapi-timestamp", "")
    raw_window = headers.get("x-bapi-recv-window", "") or str(DEFAULT_RECV_WINDOW)
    try:
        timestamp = int(raw_ts)
        window = int(raw_window)
    except ValueError:
        raise VenueError(
            10001, "params error: X-BAPI-TIMESTAMP or X-BAPI-RECV-WINDOW invalid"
        ) from None
    if not now_ms - window <= timestamp < now_ms + FUTURE_TOLERANCE_MS:
        raise VenueError(
            10002,
            "invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{timestamp}],server_timestamp[{now_ms}],recv_window[{window}]",
        )
    expected = sign(secret, f"{raw_ts}{api_key}{raw_window}{payload}")
    if not hmac.compare_digest(expected, headers.get("x-bapi-sign", "").lower()):
        raise VenueError(10004, "Error sign, please check your signature generation algorithm.")
    return api_key


def check_ws(args: object, secrets: Mapping[str, str], now_ms: int) -> str | None:
    """The api key of a valid ``auth`` op's ``args`` (``[key, expires, signature]``), else None."""
    if not isinstance(args, list) or len(args) != 3:
        return None
    api_key, expires, signature = args
    secret = secrets.get(str(api_key))
    if secret is None:
        return None
    try:
        expires_ms = int(expires)
    except (TypeError, ValueError):
        return None
    if expires_ms <= now_ms:
        return None
    if not hmac.compare_digest(sign(secret, f"GET/realtime{expires}"), str(signature).lower()):
        return None
    return str(api_key)

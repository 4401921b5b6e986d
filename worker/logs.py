"""Structured JSON-lines logs on stdout, with secrets removed before anything is written.

Every record is one JSON object per line: ``ts`` (ISO 8601 UTC, milliseconds), ``level``,
``instance``, ``event`` (a short machine-readable name) and any fields the caller adds.
Decimals are written as strings. The values of the instance's API key and secret are
registered at start; any string field that contains one is rewritten with ``<redacted>``
(a venue error can echo what was signed), so no log line can carry them.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TextIO

import msgspec

__all__ = ["JsonLog"]

_REDACTED = "<redacted>"
_MIN_SECRET = 6  # shorter values would redact ordinary words
_LEVELS = ("debug", "info", "warning", "error")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


class JsonLog:
    def __init__(self, instance: str, *, stream: TextIO | None = None, level: str = "info") -> None:
        self.instance = instance
        self.stream = stream if stream is not None else sys.stdout
        self.threshold = _LEVELS.index(level)
        self._secrets: list[str] = []
        self._encoder = msgspec.json.Encoder(enc_hook=_default, decimal_format="string")

    def forget(self, secrets: Iterable[str]) -> None:
        """Never write these values (the API key and secret)."""
        for secret in secrets:
            if len(secret) >= _MIN_SECRET and secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, _REDACTED)
            return value
        if isinstance(value, dict):
            return {self._clean(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(v) for v in value]
        if isinstance(value, (int, float, bool, Decimal)) or value is None:
            return value
        return self._clean(str(value))

    def write(self, level: str, event: str, **fields: Any) -> None:
        if _LEVELS.index(level) < self.threshold:
            return
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {"ts": now, "level": level, "instance": self.instance, "event": event}
        record.update(self._clean(fields))
        self.stream.write(self._encoder.encode(record).decode() + "\n")
        self.stream.flush()

    def info(self, event: str, **fields: Any) -> None:
        self.write("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.write("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.write("error", event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self.write("debug", event, **fields)

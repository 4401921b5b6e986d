"""One order-rate budget per API key, shared by every worker process that uses the key.

Bybit limits order requests per account (UID), not per connection, so workers trading one
account must share the allowance (ARCHITECTURE §5.7). The budget is a token bucket kept in a
small file (``<dir>/<key digest>.budget``) and changed only under an exclusive ``flock``, so
any number of processes see one bucket. Requests that reduce risk (cancels, hedges,
unwinds) may spend every token; requests that add risk (entries and their amends) leave
``reserve`` tokens for them, so under a shortage hedges and cancels still go out first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["AccountBudget"]

_STATE = struct.Struct("<dd")  # tokens, last refill (monotonic-free wall seconds)


def _wall_s() -> float:
    return time.time()


class AccountBudget:
    def __init__(
        self,
        directory: Path,
        api_key: str,
        *,
        rate_per_s: float,
        burst: float,
        reserve: float,
        clock: Callable[[], float] = _wall_s,
    ) -> None:
        if not 0 <= reserve < burst or rate_per_s <= 0:
            raise ValueError("need rate_per_s > 0 and 0 <= reserve < burst")
        digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]  # never the key itself
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{digest}.budget"
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.reserve = reserve
        self.clock = clock

    def take(self, *, reduces_risk: bool) -> float:
        """Spend one token now and return 0, or return the seconds to wait before asking
        again (nothing is spent)."""
        floor = 0.0 if reduces_risk else self.reserve
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _STATE.size, 0)
            now = self.clock()
            tokens: float = self.burst
            last: float = now
            if len(raw) == _STATE.size:
                tokens, last = _STATE.unpack(raw)
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
            if tokens - 1 >= floor:
                os.pwrite(fd, _STATE.pack(tokens - 1, now), 0)
                return 0.0
            os.pwrite(fd, _STATE.pack(tokens, now), 0)
            return (floor + 1 - tokens) / self.rate_per_s
        finally:
            os.close(fd)  # closing releases the lock

    def penalise(self, reset_at_s: float) -> None:
        """The venue answered 10006: no tokens until its reset time, for every process."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            wait = max(0.0, reset_at_s - self.clock())
            # tokens go negative so that refilling reaches zero exactly at the reset time
            os.pwrite(fd, _STATE.pack(-wait * self.rate_per_s, self.clock()), 0)
        finally:
            os.close(fd)

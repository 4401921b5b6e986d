"""One order-rate budget per API key, shared by every worker process that uses the key.

Bybit limits order requests per account (UID), not per connection, so workers trading one
account must share the allowance (ARCHITECTURE §5.7). The budget is a token bucket kept in a
small file (``<dir>/<key digest>.budget``), mapped into every process that uses it and
changed only under an exclusive ``flock``, so any number of processes see one bucket.
Requests that reduce risk (cancels, hedges, unwinds) may spend every token; requests that add
risk (entries and their amends) leave ``reserve`` tokens for them, so under a shortage hedges
and cancels still go out first. The descriptor and the mapping live as long as the process,
so a budget file deleted under running workers splits the bucket until they restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
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
        # one descriptor and a shared mapping for the life of the budget: a take is a lock,
        # two memory accesses and an unlock, not five system calls (it is on the order path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked():
                if os.fstat(self._fd).st_size < _STATE.size:  # new: a full bucket
                    os.pwrite(self._fd, _STATE.pack(burst, clock()), 0)
            self._state = mmap.mmap(self._fd, _STATE.size)
        except BaseException:
            os.close(self._fd)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def take(self, *, reduces_risk: bool) -> float:
        """Spend one token now and return 0, or return the seconds to wait before asking
        again (nothing is spent)."""
        floor = 0.0 if reduces_risk else self.reserve
        state, fd = self._state, self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # no context manager: this is on the order path
        try:
            tokens: float
            last: float
            tokens, last = _STATE.unpack_from(state)
            now = self.clock()
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
            if tokens - 1 >= floor:
                _STATE.pack_into(state, 0, tokens - 1, now)
                return 0.0
            _STATE.pack_into(state, 0, tokens, now)
            return (floor + 1 - tokens) / self.rate_per_s
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def penalise(self, reset_at_s: float) -> None:
        """The venue answered 10006: no tokens until its reset time, for every process."""
        with self._locked():
            now = self.clock()
            wait = max(0.0, reset_at_s - now)
            # tokens go negative so that refilling reaches zero exactly at the reset time
            _STATE.pack_into(self._state, 0, -wait * self.rate_per_s, now)

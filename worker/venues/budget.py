"""One order-rate budget per API key, shared by every worker process that uses the key.

Bybit limits order requests per account (UID), not per connection, so workers trading one
account must share the allowance (ARCHITECTURE §5.7). The budget is a token bucket kept in a
small file (``<dir>/<key digest>.budget``), mapped into every process that uses it and
changed only under an exclusive ``flock``, so any number of processes see one bucket.
Requests that reduce risk (cancels, hedges, unwinds) may spend every token; requests that add
risk (entries and their amends) leave ``reserve`` tokens for them, so under a shortage hedges
and cancels still go out first.

Risk-adding requests that find no token queue for one: each is given its own turn, a token
interval after the one before, and is woken once at it. (When every waiter was told the same
time to ask again, a fleet whose books all moved at once woke every waiting worker for each
token: in a 100-row fleet a third of a worker's wake-ups.) A request whose turn came but whose
token a hedge took goes to the back of the queue.

The descriptor and the mapping live as long as the process, so a budget file deleted under
running workers splits the bucket until they restart.
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

# tokens, last refill, end of the queue of risk-adding requests (wall seconds: the processes
# share them); budget files from before the queue hold only the first two
_STATE = struct.Struct("<ddd")
_BUCKET_SIZE = struct.calcsize("<dd")
_QUEUE_HORIZON_S = 60.0  # a queue end further ahead than this is a wall-clock step: dropped
# A waiter woken a hair before its turn (timer rounding, the event loop's clock against the
# wall clock) may dip this far into the reserve rather than go to the back of the queue.
_TURN_SLACK = 0.05


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
                size = os.fstat(self._fd).st_size
                if size < _BUCKET_SIZE:  # new: a full bucket
                    os.pwrite(self._fd, _STATE.pack(burst, clock(), 0.0), 0)
                elif size < _STATE.size:  # from before the queue: keep the bucket
                    os.pwrite(self._fd, struct.pack("<d", 0.0), _BUCKET_SIZE)
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

    def take(self, *, reduces_risk: bool, turn: bool = False) -> float:
        """Spend one token now and return 0, or return the seconds to wait before asking
        again with ``turn=True`` (nothing is spent). A risk-adding request asking for the first
        time (``turn=False``) waits behind those already queued."""
        state, fd = self._state, self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # no context manager: this is on the order path
        try:
            tokens: float
            last: float
            queue_end: float
            tokens, last, queue_end = _STATE.unpack_from(state)
            now = self.clock()
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
            if not queue_end <= now + _QUEUE_HORIZON_S:  # also NaN from a damaged file
                queue_end = now
            if reduces_risk:
                granted = tokens >= 1
            elif turn:
                granted = tokens - 1 >= self.reserve - _TURN_SLACK
            else:
                granted = tokens - 1 >= self.reserve and queue_end <= now
            if granted:
                _STATE.pack_into(state, 0, tokens - 1, now, queue_end)
                return 0.0
            if reduces_risk:  # hedges and cancels never queue: the reserve is theirs
                _STATE.pack_into(state, 0, tokens, now, queue_end)
                return (1 - tokens) / self.rate_per_s
            # a turn of its own: when a token is back above the reserve, after the queue
            ready = now + (self.reserve + 1 - tokens) / self.rate_per_s
            turn_at = max(ready, queue_end + 1 / self.rate_per_s)
            _STATE.pack_into(state, 0, tokens, now, turn_at)
            return turn_at - now
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def penalise(self, reset_at_s: float) -> None:
        """The venue answered 10006: no tokens until its reset time, for every process."""
        with self._locked():
            now = self.clock()
            wait = max(0.0, reset_at_s - now)
            queue_end = _STATE.unpack_from(self._state)[2]
            # tokens go negative so that refilling reaches zero exactly at the reset time
            _STATE.pack_into(self._state, 0, -wait * self.rate_per_s, now, queue_end)

"""Waiting inside an async test for something that should happen within milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

WAIT_S = 3.0  # the longest a test waits for something that should take milliseconds


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``predicate`` every 5 ms; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.005)

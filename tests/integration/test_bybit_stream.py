"""The worker's Bybit WebSocket against the real simulator: subscribe, auth, reconnect."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.integration.conftest import (
    API_KEY,
    API_SECRET,
    Sim,
    resting_spot_buy,
    signed_request,
)
from worker.config_loader import ApiCredentials
from worker.venues.bybit.stream import BybitSocket

WAIT_S = 15.0


class Probe:
    """Runs a socket on its own event loop thread and records what it reports."""

    def __init__(self, url: str, topics: list[str], **kwargs: Any) -> None:
        self.messages: list[dict[str, Any]] = []
        self.states: list[tuple[bool, str]] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.socket = BybitSocket(
            url,
            topics,
            on_message=self._message,
            on_state=self._state,
            backoff_min_s=0.1,
            backoff_max_s=0.5,
            rng=random.Random(1),
            **kwargs,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.task = self.loop.create_task(self.socket.run())
        self.loop.run_forever()

    def _message(self, raw: bytes) -> None:
        with self.lock:
            self.messages.append(json.loads(raw))

    def _state(self, up: bool, reason: str) -> None:
        with self.lock:
            self.states.append((up, reason))

    def wait(self, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        raise AssertionError(f"timed out; states {self.states}, {len(self.messages)} messages")

    def close(self) -> None:
        async def finish() -> None:
            await self.socket.stop()
            await asyncio.wait_for(self.task, 10)

        asyncio.run_coroutine_threadsafe(finish(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_public_book_snapshot_then_reconnect_after_a_drop(sim: Sim) -> None:
    sim.book("linear", "ETHUSDT", bids=[("3199.99", "1")], asks=[("3200.01", "1")])
    probe = Probe(sim.ws_url("/v5/public/linear"), ["orderbook.50.ETHUSDT"])
    try:
        probe.wait(lambda: any(m["type"] == "snapshot" for m in probe.messages))
        assert probe.states[0] == (True, "connected")
        probe.messages.clear()
        sim.fault("drop_ws")
        probe.wait(lambda: [s[0] for s in probe.states][-2:] == [False, True])
        probe.wait(lambda: any(m["type"] == "snapshot" for m in probe.messages))
        assert probe.states[1][1].startswith("connection")
        assert probe.socket.connections == 2
    finally:
        probe.close()


def test_a_refused_subscription_backs_off_and_retries(sim: Sim) -> None:
    probe = Probe(sim.ws_url("/v5/public/linear"), ["orderbook.7.BTCUSDT"])
    try:
        probe.wait(lambda: len(probe.states) >= 3)
        assert all(not up for up, _ in probe.states)
        assert "subscribe refused" in probe.states[0][1]
    finally:
        probe.close()


def test_private_auth_and_order_pushes(sim: Sim) -> None:
    probe = Probe(
        sim.ws_url("/v5/private"),
        ["order", "execution", "wallet"],
        credentials=ApiCredentials(API_KEY, API_SECRET),
    )
    try:
        probe.wait(lambda: probe.states == [(True, "connected")])
        reply = signed_request(
            sim,
            "POST",
            "/v5/order/create",
            resting_spot_buy("stream-1"),
        ).json()
        assert reply["retCode"] == 0
        probe.wait(
            lambda: any(
                m["topic"] == "order" and m["data"][0]["orderLinkId"] == "stream-1"
                for m in probe.messages
            )
        )
        signed_request(
            sim,
            "POST",
            "/v5/order/cancel",
            {"category": "spot", "symbol": "BTCUSDT", "orderLinkId": "stream-1"},
        )
    finally:
        probe.close()


def test_a_bad_secret_never_reports_connected(sim: Sim) -> None:
    probe = Probe(
        sim.ws_url("/v5/private"), ["order"], credentials=ApiCredentials(API_KEY, "wrong")
    )
    try:
        probe.wait(lambda: len(probe.states) >= 2)
        assert [up for up, _ in probe.states] == [False] * len(probe.states)
        assert "auth refused" in probe.states[0][1]
        assert "wrong" not in probe.states[0][1]
    finally:
        probe.close()

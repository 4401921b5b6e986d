"""One account's private stream carries every instance's messages: each worker drops the
others' before parsing them, and still gets everything that concerns it.

Built on the official examples in fixtures/bybit, re-labelled for instance ``btc`` of the
shipped config (spot and perp BTCUSDT) and for another instance ``eth`` (ETHUSDT).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import FIXTURES, REPO
from worker.config_loader import load_config
from worker.core.events import Event, OrderUpdate, WalletBalance
from worker.core.model import Leg
from worker.venues.bybit.client import BybitVenue, Urls
from worker.venues.types import BookUpdate, PositionState

BYBIT = FIXTURES / "bybit"


class Heard:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.positions: list[PositionState] = []
        self.bad: list[str] = []

    def on_book(self, leg: Leg, update: BookUpdate) -> None:
        raise AssertionError("no book on the private stream")

    def on_events(self, events: list[Event]) -> None:
        self.events.extend(events)

    def on_position(self, position: PositionState) -> None:
        self.positions.append(position)

    def on_link(self, name: str, up: bool, reason: str) -> None:
        raise AssertionError("no link change here")

    def on_bad_message(self, source: str, detail: str, raw: bytes) -> None:
        self.bad.append(detail)


def _message(fixture: str, **fields: Any) -> bytes:
    message = json.loads((BYBIT / fixture).read_text())
    message["data"][0].update(fields)
    return json.dumps(message).encode()


def _heard(*messages: bytes) -> Heard:
    async def go() -> Heard:
        cfg = load_config(REPO / "algo/spot-future-arb/config.json").instance("btc")
        url = "http://127.0.0.1:9"
        venue = BybitVenue(cfg, Urls(url, url, url, url), None, budget=None, clock_ms=lambda: 0)
        heard = Heard()
        handle = venue._private_handler(heard)
        for raw in messages:
            handle(raw)
        await venue.rest.close()
        return heard

    return asyncio.run(go())


def test_this_instances_orders_executions_position_and_wallet_arrive() -> None:
    heard = _heard(
        _message("ws_private_order.json", orderLinkId="btc-1-7", symbol="BTCUSDT", category="spot"),
        _message("ws_private_execution.json", orderLinkId="", symbol="BTCUSDT"),  # its perp
        _message("ws_private_position.json", symbol="BTCUSDT"),
        _message("ws_private_wallet.json"),
    )
    assert [e.link_id for e in heard.events if isinstance(e, OrderUpdate)] == ["btc-1-7"]
    assert any(isinstance(e, WalletBalance) for e in heard.events)
    assert len(heard.events) > 2  # the execution on its perp is there too
    assert [p.symbol for p in heard.positions] == ["BTCUSDT"]
    assert heard.bad == []


def test_another_instances_messages_are_dropped_unread() -> None:
    heard = _heard(
        _message("ws_private_order.json", orderLinkId="eth-1-7", symbol="ETHUSDT", category="spot"),
        _message("ws_private_execution.json", orderLinkId="eth-1-8", symbol="ETHUSDT"),
        _message("ws_private_position.json", symbol="ETHUSDT"),
        # unread, so even a malformed one of theirs is not reported as this worker's problem
        b'{"topic":"order","data":[{"orderLinkId":"eth-1-9","qty":',
        # an instance whose id begins like this one's is another instance
        _message("ws_private_order.json", orderLinkId="btc2-1-1", symbol="ETHUSDT"),
    )
    assert heard.events == [] and heard.positions == [] and heard.bad == []


def test_a_malformed_message_of_this_instance_is_still_reported() -> None:
    heard = _heard(b'{"topic":"order","data":[{"orderLinkId":"btc-1-9","qty":')
    assert len(heard.bad) == 1

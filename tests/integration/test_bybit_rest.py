"""The worker's Bybit REST client against the real simulator: every reply lands in exactly
one outcome, and no network or venue problem escapes as an exception."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from tests.integration.conftest import API_KEY, API_SECRET, Sim, running_sim
from worker.config_loader import ApiCredentials
from worker.core.model import RejectKind
from worker.venues.bybit.parse import order_updates
from worker.venues.bybit.rest import BybitRest, Done, Refused, Unknown
from worker.venues.bybit.schemas import ListResult

T = TypeVar("T")
CREDS = ApiCredentials(API_KEY, API_SECRET)


def run(sim: Sim, action: Callable[[BybitRest], Awaitable[T]], **kwargs: Any) -> T:
    async def go() -> T:
        async with BybitRest(sim.url, CREDS, **kwargs) as rest:
            return await action(rest)

    return asyncio.run(go())


def _order(link: str, **extra: str) -> dict[str, str]:
    return {
        "category": "spot",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "orderType": "Limit",
        "qty": "0.001",
        "price": "30000",
        "timeInForce": "PostOnly",
        "orderLinkId": link,
        **extra,
    }


def test_create_then_query_by_link_id(sim: Sim) -> None:
    async def action(rest: BybitRest) -> tuple[Any, Any]:
        created = await rest.post("/v5/order/create", _order("rest-ok-1"))
        queried = await rest.get(
            "/v5/order/realtime", {"category": "spot", "orderLinkId": "rest-ok-1"}
        )
        return created, queried

    created, queried = run(sim, action)
    assert isinstance(created, Done)
    assert b'"orderLinkId":"rest-ok-1"' in created.result
    assert created.rate_limit is not None and created.rate_limit.limit == 20
    assert isinstance(queried, Done)
    [update] = order_updates(_list(queried.result))
    assert update.link_id == "rest-ok-1"
    run(sim, lambda r: r.post("/v5/order/cancel", {"category": "spot", "symbol": "BTCUSDT",
                                                   "orderLinkId": "rest-ok-1"}))  # fmt: skip


def test_the_simulator_stamps_a_create_when_it_is_read_and_when_it_is_handled(sim: Sim) -> None:
    """``/sim/arrivals`` (the tick-to-order bench's clock): the read stamp belongs to this
    request even on a reused keep-alive connection, and comes before the handler's."""

    async def action(rest: BybitRest) -> list[tuple[int, int]]:
        spans = []
        for link in ("rest-stamp-1", "rest-stamp-2"):  # the second reuses the connection
            await asyncio.sleep(0.05)
            sent = time.monotonic_ns()
            assert isinstance(await rest.post("/v5/order/create", _order(link)), Done)
            spans.append((sent, time.monotonic_ns()))
        return spans

    spans = run(sim, action)
    stamps = sim.admin("GET", "/sim/arrivals")
    for link, (sent, answered) in zip(("rest-stamp-1", "rest-stamp-2"), spans, strict=True):
        read, handled = stamps["arrivals"][link], stamps["handled"][link]
        assert sent <= read <= handled <= answered, (link, sent, read, handled, answered)


def test_a_delayed_book_goes_out_later_and_keeps_its_publish_time(sim: Sim) -> None:
    """``/sim/book`` with ``delay_ms`` (the bench sleeps through the publish): answered at
    once, published after the delay, its publish time kept for ``/sim/arrivals``; a bad
    level or delay is refused at once, never left to fail in the background."""

    def best_bid() -> str:
        query = {"category": "linear", "symbol": "ETHUSDT", "limit": "1"}
        return str(sim.http.get("/v5/market/orderbook", params=query).json()["result"]["b"][0][0])

    body: dict[str, Any] = {
        "category": "linear",
        "symbol": "ETHUSDT",
        "bids": [["3111.11", "2"]],
        "asks": [["3111.12", "2"]],
    }
    sim.admin("POST", "/sim/book", {**body, "bids": [["3100.00", "2"]]})
    asked = time.monotonic_ns()
    assert "published_ns" not in sim.admin("POST", "/sim/book", {**body, "delay_ms": 400})
    assert best_bid() == "3100.00"
    deadline = time.monotonic() + 5
    while best_bid() != "3111.11":
        assert time.monotonic() < deadline, "the delayed book never went out"
        time.sleep(0.02)
    published = sim.admin("GET", "/sim/arrivals")["published"]["linear/ETHUSDT"]
    assert asked + 400_000_000 <= published <= time.monotonic_ns()
    for bad in ({"bids": [["3111.115", "2"]], "delay_ms": 50}, {"delay_ms": -1}):
        assert sim.http.post("/sim/book", json={**body, **bad}).status_code == 400
    time.sleep(0.1)
    assert best_bid() == "3111.11"


def _list(result: bytes) -> bytes:
    return bytes(msgspec.json.decode(result, type=ListResult).items)


def test_definitive_refusals_are_refused_with_their_kind(sim: Sim) -> None:
    too_big = run(sim, lambda r: r.post("/v5/order/create", _order("rest-big", qty="80")))
    assert isinstance(too_big, Refused)
    assert (too_big.code, too_big.kind) == (170131, RejectKind.INSUFFICIENT_BALANCE)
    unknown = run(
        sim,
        lambda r: r.post(
            "/v5/order/cancel", {"category": "spot", "symbol": "BTCUSDT", "orderLinkId": "nope"}
        ),
    )
    assert isinstance(unknown, Refused) and unknown.kind is RejectKind.NOT_FOUND


def test_a_duplicate_link_id_is_an_unknown_outcome_to_query(sim: Sim) -> None:
    async def action(rest: BybitRest) -> Any:
        await rest.post("/v5/order/create", _order("rest-dup"))
        return await rest.post("/v5/order/create", _order("rest-dup"))

    second = run(sim, action)
    assert isinstance(second, Unknown) and second.code == 170141
    run(sim, lambda r: r.post("/v5/order/cancel", {"category": "spot", "symbol": "BTCUSDT",
                                                   "orderLinkId": "rest-dup"}))  # fmt: skip


def test_a_wrong_secret_is_refused_and_the_key_never_shows(sim: Sim) -> None:
    async def go() -> Any:
        async with BybitRest(sim.url, ApiCredentials(API_KEY, "wrong-secret")) as rest:
            return await rest.get("/v5/account/info", {})

    refused = asyncio.run(go())
    assert isinstance(refused, Refused) and refused.code == 10004
    assert API_KEY not in repr(refused) and "wrong-secret" not in repr(refused)


def test_http_503_and_timeouts_are_unknown(sim: Sim) -> None:
    sim.fault("http_503", count=1)
    try:
        outcome = run(sim, lambda r: r.get("/v5/account/info", {}))
    finally:
        sim.fault("clear")
    assert isinstance(outcome, Unknown) and outcome.reason == "HTTP 503"
    sim.fault("latency", rest_ms=1500, ws_ms=0)
    try:
        slow = run(sim, lambda r: r.get("/v5/account/info", {}), timeout_s=0.3)
    finally:
        sim.fault("clear")
    assert isinstance(slow, Unknown) and slow.reason == "timed out"


def test_a_lost_reply_is_unknown_but_the_order_exists(sim: Sim) -> None:
    sim.fault("lose_reply", count=1)
    try:
        lost = run(sim, lambda r: r.post("/v5/order/create", _order("rest-lost")), timeout_s=1.0)
    finally:
        sim.fault("clear")
    assert isinstance(lost, Unknown)
    order = sim.order("rest-lost")
    assert order is not None and order["orderStatus"] == "New"
    run(sim, lambda r: r.post("/v5/order/cancel", {"category": "spot", "symbol": "BTCUSDT",
                                                   "orderLinkId": "rest-lost"}))  # fmt: skip


def test_nothing_listening_is_unknown(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def go() -> Any:
        async with BybitRest(f"http://127.0.0.1:{port}", CREDS, timeout_s=2) as rest:
            return await rest.get("/v5/market/time", {}, auth=False)

    outcome = asyncio.run(go())
    assert isinstance(outcome, Unknown) and outcome.reason.startswith("connection error")


def test_public_orderbook_needs_no_key(tmp_path: Path) -> None:
    with running_sim(tmp_path / "state") as own:

        async def go() -> Any:
            async with BybitRest(own.url, None) as rest:
                return await rest.get(
                    "/v5/market/orderbook",
                    {"category": "linear", "symbol": "BTCUSDT", "limit": "5"},
                    auth=False,
                )

        outcome = asyncio.run(go())
    assert isinstance(outcome, Done)
    assert b'"s":"BTCUSDT"' in outcome.result

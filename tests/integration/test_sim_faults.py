"""Injected faults (``POST /sim/faults``) as a client sees them, and the default rate limit.

These tests run on a simulator of their own (one per xdist worker that runs any of them): a
fault is global to a simulator, so it must not leak into the shared one. Every test ends with
``clear`` and no open orders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
import requests
from pybit.exceptions import FailedRequestError

from tests.integration.conftest import (
    WAIT_S,
    Collector,
    ConnectionClosed,
    Json,
    Links,
    PybitWsFactory,
    RawWS,
    Sim,
    clean_orders,
    pybit_http,
    running_sim,
    signed_request,
)

RawFactory = Callable[[Sim, str], RawWS]
D = Decimal


@pytest.fixture(scope="module")
def fsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with running_sim(tmp_path_factory.mktemp("faults") / "state.jsonl") as sim:
        yield sim


@pytest.fixture(autouse=True)
def _cleared(fsim: Sim) -> Iterator[None]:
    yield
    fsim.fault("clear")
    clean_orders(fsim)


@pytest.fixture(scope="module")
def fhttp(fsim: Sim) -> Any:
    return pybit_http(fsim)


def _private_ok(sim: Sim) -> httpx.Response:
    return signed_request(sim, "GET", "/v5/order/realtime", {"category": "spot"})


def _topic(topic: str) -> Callable[[Json], bool]:
    return lambda m: m.get("topic") == topic


def test_latency_delays_rest_replies_and_ws_messages(
    fsim: Sim, fhttp: Any, raw_ws: RawFactory
) -> None:
    fsim.book("linear", "BTCUSDT", [("60000.0", "5")], [("60001.0", "5")])
    conn = raw_ws(fsim, "/v5/public/linear")
    conn.subscribe("publicTrade.BTCUSDT")
    fsim.fault("latency", rest_ms=500, ws_ms=700)

    started = time.monotonic()
    assert fhttp.get_server_time()["retCode"] == 0
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert fhttp.get_open_orders(category="spot")["retCode"] == 0
    assert time.monotonic() - started >= 0.5

    started = time.monotonic()
    fsim.trade("linear", "BTCUSDT", "Buy", "60001.0", "0.01")
    conn.recv_until(_topic("publicTrade.BTCUSDT"))
    assert time.monotonic() - started >= 0.7


def test_drop_ws_cuts_a_raw_connection(fsim: Sim, raw_ws: RawFactory) -> None:
    conn = raw_ws(fsim, "/v5/public/spot")
    conn.subscribe("publicTrade.BTCUSDT")
    conn.send({"op": "ping"})
    assert conn.recv()["ret_msg"] == "pong"
    fsim.fault("drop_ws")
    with pytest.raises(ConnectionClosed):
        conn.recv(timeout=WAIT_S)


def test_drop_ws_pybit_reconnects_resubscribes_and_keeps_receiving(
    fsim: Sim, fhttp: Any, pybit_ws: PybitWsFactory, links: Links
) -> None:
    fsim.book("linear", "BTCUSDT", [("60000.0", "5")], [("60001.0", "5")])
    public = pybit_ws(fsim, "linear")
    private = pybit_ws(fsim, "private")
    trades, orders = Collector(), Collector()
    public.ws.trade_stream("BTCUSDT", trades)
    private.ws.order_stream(orders)
    public.wait_acked("publicTrade.BTCUSDT")
    private.wait_acked("order")
    fsim.trade("linear", "BTCUSDT", "Buy", "60001.0", "0.01")
    trades.wait_for(lambda m: True)

    acks = public.ack_count(), private.ack_count()
    fsim.fault("drop_ws")
    public.wait_acked("publicTrade.BTCUSDT", start=acks[0])  # a new connection, resubscribed
    private.wait_acked("order", start=acks[1])  # re-authenticated too, or this is refused

    mark = trades.mark()
    fsim.trade("linear", "BTCUSDT", "Buy", "60001.0", "0.02")
    after = trades.wait_for(lambda m: True, start=mark)
    assert [D(t["v"]) for t in after["data"]] == [D("0.02")]
    fhttp.place_order(
        category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
        price="59000", timeInForce="PostOnly", orderLinkId=links("after-drop"),
    )  # fmt: skip
    orders.wait_for(lambda m: any(o["orderLinkId"] == links("after-drop") for o in m["data"]))


def _book_change(sim: Sim, size: str) -> None:
    sim.book("linear", "ETHUSDT", [("3000.00", size)], [("3001.00", "5")])


def test_skip_u_makes_the_next_delta_jump_by_two(fsim: Sim, raw_ws: RawFactory) -> None:
    _book_change(fsim, "1")
    conn = raw_ws(fsim, "/v5/public/linear")
    conn.subscribe("orderbook.50.ETHUSDT")
    is_book = _topic("orderbook.50.ETHUSDT")
    snapshot = conn.recv_until(is_book)
    assert snapshot["type"] == "snapshot"
    u = snapshot["data"]["u"]

    _book_change(fsim, "2")
    delta = conn.recv_until(is_book)
    assert (delta["type"], delta["data"]["u"]) == ("delta", u + 1)
    fsim.fault("skip_u", category="linear", topic="orderbook.50.ETHUSDT")
    _book_change(fsim, "3")
    delta = conn.recv_until(is_book)
    assert (delta["type"], delta["data"]["u"]) == ("delta", u + 3)
    _book_change(fsim, "4")
    assert conn.recv_until(is_book)["data"]["u"] == u + 4  # one-shot


def test_clear_cancels_a_pending_skip_u(fsim: Sim, raw_ws: RawFactory) -> None:
    _book_change(fsim, "1")
    conn = raw_ws(fsim, "/v5/public/linear")
    conn.subscribe("orderbook.50.ETHUSDT")
    is_book = _topic("orderbook.50.ETHUSDT")
    u = conn.recv_until(is_book)["data"]["u"]
    fsim.fault("skip_u", category="linear", topic="orderbook.50.ETHUSDT")
    fsim.fault("clear")
    _book_change(fsim, "2")
    assert conn.recv_until(is_book)["data"]["u"] == u + 1


def test_pause_topic_silences_a_topic_then_it_resumes(
    fsim: Sim, raw_ws: RawFactory, pybit_ws: PybitWsFactory
) -> None:
    fsim.book("spot", "SOLUSDT", [("150.00", "1000")], [("150.01", "1000")])
    conn = raw_ws(fsim, "/v5/public/spot")
    conn.subscribe("publicTrade.SOLUSDT", "orderbook.1.SOLUSDT")
    fsim.trade("spot", "SOLUSDT", "Buy", "150.01", "0.011")
    conn.recv_until(_topic("publicTrade.SOLUSDT"))

    pause_ms = 1500
    paused_at = time.time()
    fsim.fault("pause_topic", category="spot", topic="publicTrade.SOLUSDT", ms=pause_ms)
    fsim.trade("spot", "SOLUSDT", "Buy", "150.01", "0.012")  # inside the pause: never sent
    # other topics keep flowing: the paused trade shows in the top of book
    conn.recv_until(
        lambda m: (
            m.get("topic") == "orderbook.1.SOLUSDT"
            and D(m["data"]["a"][0][1]) == D("1000") - D("0.011") - D("0.012")
        )
    )

    received: list[Json] = []
    deadline = time.monotonic() + WAIT_S
    qty = 13
    while not received and time.monotonic() < deadline:
        fsim.trade("spot", "SOLUSDT", "Buy", "150.01", f"0.0{qty}")
        printed_at = time.time()
        try:
            received.append(conn.recv_until(_topic("publicTrade.SOLUSDT"), timeout=0.3))
        except AssertionError:
            qty += 1
    assert received, "publicTrade never resumed"
    sizes = [D(t["v"]) for t in received[0]["data"]]
    assert D("0.012") not in sizes
    assert sizes == [D(f"0.0{qty}")]
    assert printed_at >= paused_at + pause_ms / 1000  # nothing got through early


def test_rate_limit_fault_answers_10006_with_limit_headers(fsim: Sim, fhttp: Any) -> None:
    fsim.fault("rate_limit", count=3)
    assert fhttp.get_server_time()["retCode"] == 0  # public requests are not counted
    for _ in range(3):
        reply = _private_ok(fsim)
        assert reply.status_code == 200
        assert reply.json()["retCode"] == 10006
        assert reply.headers["X-Bapi-Limit-Status"] == "0"
        assert int(reply.headers["X-Bapi-Limit"]) >= 1
        assert int(reply.headers["X-Bapi-Limit-Reset-Timestamp"]) > 0
    reply = _private_ok(fsim)
    assert reply.json()["retCode"] == 0


def test_http_503_fault(fsim: Sim, fhttp: Any) -> None:
    fsim.fault("http_503", count=2)
    for _ in range(2):
        with pytest.raises(FailedRequestError) as raised:
            fhttp.get_open_orders(category="spot")
        assert raised.value.status_code == 503
    assert fhttp.get_open_orders(category="spot")["retCode"] == 0


def test_lose_reply_applies_the_order_but_never_answers(fsim: Sim, links: Links) -> None:
    fsim.book("spot", "ETHUSDT", [("3000.00", "5")], [("3001.00", "5")])
    impatient = pybit_http(fsim, timeout=2)
    fsim.fault("lose_reply", count=1)
    link = links("lost")
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.place_order(
            category="spot", symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.01",
            price="2990.00", timeInForce="PostOnly", orderLinkId=link,
        )  # fmt: skip
    order = fsim.order(link)
    assert order is not None
    assert order["orderStatus"] == "New"
    listed = impatient.get_open_orders(category="spot", orderLinkId=link)["result"]["list"]
    assert [(o["orderLinkId"], o["orderId"]) for o in listed] == [(link, order["orderId"])]
    # the fault was one-shot: the next create is answered
    reply = impatient.place_order(
        category="spot", symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.01",
        price="2990.00", timeInForce="PostOnly", orderLinkId=links("answered"),
    )  # fmt: skip
    assert reply["retCode"] == 0


def test_clear_removes_every_fault(fsim: Sim, fhttp: Any, raw_ws: RawFactory) -> None:
    fsim.book("spot", "SOLUSDT", [("150.00", "1000")], [("150.01", "1000")])
    conn = raw_ws(fsim, "/v5/public/spot")
    conn.subscribe("publicTrade.SOLUSDT")
    fsim.fault("http_503", count=5)
    fsim.fault("rate_limit", count=5)
    fsim.fault("lose_reply", count=5)
    fsim.fault("pause_topic", category="spot", topic="publicTrade.SOLUSDT", ms=600_000)
    fsim.fault("clear")
    reply = _private_ok(fsim)
    assert (reply.status_code, reply.json()["retCode"]) == (200, 0)
    placed = pybit_http(fsim, timeout=5).place_order(
        category="spot", symbol="SOLUSDT", side="Buy", orderType="Limit", qty="0.1",
        price="149.00", timeInForce="PostOnly",
    )  # fmt: skip
    assert placed["retCode"] == 0
    fsim.trade("spot", "SOLUSDT", "Buy", "150.01", "0.021")
    trade = conn.recv_until(_topic("publicTrade.SOLUSDT"))
    assert [D(t["v"]) for t in trade["data"]] == [D("0.021")]


def test_default_rate_limit_spot_create(fsim: Sim, links: Links) -> None:
    """More than 20 spot creates in one second: 10006, with X-Bapi-Limit-Status counting down.

    Creates go out in concurrent bursts (a loaded machine may not send 21 in a second one by
    one) until some second holds 20 accepted creates, statuses 19..0, and a refused one."""
    fsim.book("spot", "BTCUSDT", [("60000.0", "5")], [("60010.0", "5")])
    counter = iter(range(10_000))

    def create(_: int) -> httpx.Response:
        body = {
            "category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
            "qty": "0.0001", "price": "50000", "timeInForce": "PostOnly",
            "orderLinkId": links(f"burst{next(counter)}"),
        }  # fmt: skip
        return signed_request(fsim, "POST", "/v5/order/create", body)

    by_second: dict[int, list[httpx.Response]] = {}
    deadline = time.monotonic() + WAIT_S
    full: list[httpx.Response] | None = None
    with ThreadPoolExecutor(max_workers=30) as pool:
        while full is None and time.monotonic() < deadline:
            for reply in pool.map(create, range(30)):
                assert reply.headers["X-Bapi-Limit"] == "20"
                assert reply.json()["retCode"] in (0, 10006), reply.json()
                by_second.setdefault(int(reply.headers["Timenow"]) // 1000, []).append(reply)
            for replies in by_second.values():
                accepted = [r for r in replies if r.json()["retCode"] == 0]
                statuses = sorted(int(r.headers["X-Bapi-Limit-Status"]) for r in accepted)
                if statuses == list(range(20)) and len(accepted) < len(replies):
                    full = replies
    assert full is not None, "no second with 20 accepted creates and a refused one"
    for reply in full:
        if reply.json()["retCode"] == 10006:
            assert reply.headers["X-Bapi-Limit-Status"] == "0"
            assert int(reply.headers["X-Bapi-Limit-Reset-Timestamp"]) > int(
                reply.headers["Timenow"]
            )
    other = signed_request(fsim, "GET", "/v5/order/realtime", {"category": "spot"})
    assert other.json()["retCode"] == 0  # per endpoint: the read budget is separate


def test_unfreeze_moves_the_market_and_freeze_stops_it(fsim: Sim, fhttp: Any) -> None:
    fsim.book("spot", "BTCUSDT", [("1000.0", "1")], [("1000.1", "1")])

    def book() -> Json:
        result: Json = fhttp.get_orderbook(category="spot", symbol="BTCUSDT", limit=50)["result"]
        return {"b": result["b"], "a": result["a"]}

    assert book() == {"b": [["1000.0", "1.000000"]], "a": [["1000.1", "1.000000"]]}
    fsim.unfreeze()
    try:
        deadline = time.monotonic() + WAIT_S
        while book()["b"][0][0] == "1000.0":  # the model lays its own book out
            assert time.monotonic() < deadline, "the unfrozen model never moved the book"
            time.sleep(0.05)
    finally:
        fsim.freeze()
    frozen = book()
    time.sleep(0.5)  # the model steps every 100 ms: nothing may change while frozen
    assert book() == frozen

"""Every message the simulator emits has the keys of Bybit's official example of it.

The comparison is recursive: an object has exactly the example's keys at every level, a list
is compared through its first element when both are non-empty, and ``cumFeeDetail`` is a map
keyed by coin (its keys are data, not shape). REST replies come through the real pybit client
(it returns the whole envelope); WebSocket control replies come over raw connections so the
exact bytes the simulator sends are what is compared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.integration.conftest import (
    Json,
    Links,
    RawWS,
    Sim,
    clean_orders,
)

BYBIT = FIXTURES / "bybit"
FEE_MAPS = {"cumFeeDetail"}

RawFactory = Callable[[Sim, str], RawWS]


@pytest.fixture(autouse=True)
def _no_orders_left(sim: Sim) -> Iterator[None]:
    yield
    clean_orders(sim)


# --- loading and comparing ------------------------------------------------------------------


def _strip_jsonc(text: str) -> str:
    """Official ``.jsonc`` examples: drop ``//`` comments, ``...`` elisions, trailing commas."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("...", i):
            i += 3
            continue
        else:
            out.append(ch)
        i += 1
    cleaned = "".join(out)
    cleaned = re.sub(r"([\[{,])\s*,", r"\1", cleaned)  # an elided element left ", ,"
    cleaned = re.sub(r",\s*([\]}])", r"\1", cleaned)  # trailing commas
    return re.sub(r"\[\s*,", "[", cleaned)


def fixture(name: str) -> Any:
    path: Path = BYBIT / name
    text = path.read_text()
    return json.loads(_strip_jsonc(text) if name.endswith(".jsonc") else text)


def key_differences(actual: Any, expected: Any, path: str = "$") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        problems = []
        missing = sorted(expected.keys() - actual.keys())
        extra = sorted(actual.keys() - expected.keys())
        if missing:
            problems.append(f"{path}: missing {missing}")
        if extra:
            problems.append(f"{path}: extra {extra}")
        for key in sorted(expected.keys() & actual.keys()):
            if key in FEE_MAPS:
                if not isinstance(actual[key], dict):
                    problems.append(f"{path}.{key}: expected a map by coin, got {actual[key]!r}")
                continue
            problems += key_differences(actual[key], expected[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {actual!r}"]
        if expected and actual:
            return key_differences(actual[0], expected[0], f"{path}[0]")
    return []


def type_differences(actual: Any, expected: Any, path: str = "$") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(expected.keys() & actual.keys() - FEE_MAPS):
            out += type_differences(actual[key], expected[key], f"{path}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        return type_differences(actual[0], expected[0], f"{path}[0]") if expected and actual else []
    if type(actual) is not type(expected) and expected is not None:
        return [
            f"{path}: {type(actual).__name__} {actual!r} vs {type(expected).__name__} {expected!r}"
        ]
    return []


def assert_shape(actual: Any, name: str, expected: Any = None) -> None:
    """Same keys as the example (and, where both have a value, the same JSON types)."""
    example = fixture(name) if expected is None else expected
    problems = key_differences(actual, example) + type_differences(actual, example)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


def test_the_comparison_can_fail() -> None:
    example = fixture("rest_order_create_response.json")
    assert key_differences(example, example) == []
    assert key_differences({**example, "extra": 1}, example) == ["$: extra ['extra']"]
    broken = json.loads(json.dumps(example))
    del broken["result"]["orderLinkId"]
    assert key_differences(broken, example) == ["$.result: missing ['orderLinkId']"]
    snapshot = fixture("ws_orderbook_snapshot_linear_50.jsonc")
    assert snapshot["data"]["b"] == [["16493.50", "0.006"], ["16493.00", "0.100"]]
    assert snapshot["data"]["u"] == 18521288


# --- REST -------------------------------------------------------------------------------------


def _rest_book(sim: Sim, category: str) -> None:
    sim.book(category, "SOLUSDT", [("140.00", "50")], [("141.00", "50")])


def _resting(http: Any, category: str, link: str, price: str = "139.50") -> Json:
    reply: Json = http.place_order(
        category=category, symbol="SOLUSDT", side="Buy", orderType="Limit", qty="1",
        price=price, timeInForce="PostOnly", orderLinkId=link,
    )  # fmt: skip
    assert reply["retCode"] == 0, reply
    return reply


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_rest_order_create_amend_cancel_cancel_all(
    sim: Sim, http: Any, links: Links, category: str
) -> None:
    _rest_book(sim, category)
    assert_shape(_resting(http, category, links("a")), "rest_order_create_response.json")
    amended = http.amend_order(
        category=category, symbol="SOLUSDT", orderLinkId=links("a"), price="139.40"
    )
    assert_shape(amended, "rest_order_amend_response.json")
    cancelled = http.cancel_order(category=category, symbol="SOLUSDT", orderLinkId=links("a"))
    assert_shape(cancelled, "rest_order_cancel_response.json")
    _resting(http, category, links("b"))
    _resting(http, category, links("c"), price="139.00")
    every = http.cancel_all_orders(category=category, symbol="SOLUSDT")
    assert {o["orderLinkId"] for o in every["result"]["list"]} == {links("b"), links("c")}
    assert_shape(every, "rest_order_cancel_all_response.json")


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_rest_open_orders_and_history(sim: Sim, http: Any, links: Links, category: str) -> None:
    _rest_book(sim, category)
    _resting(http, category, links("open"))
    realtime = http.get_open_orders(category=category, symbol="SOLUSDT", orderLinkId=links("open"))
    assert len(realtime["result"]["list"]) == 1
    assert_shape(realtime, "rest_order_realtime_response.json")
    history = http.get_order_history(category=category, orderLinkId=links("open"))
    assert len(history["result"]["list"]) == 1
    assert_shape(history, "rest_order_history_response.json")


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_rest_execution_list(sim: Sim, http: Any, links: Links, category: str) -> None:
    sim.book(category, "SOLUSDT", [("140.00", "50")], [("141.00", "50")])
    http.place_order(
        category=category, symbol="SOLUSDT", side="Buy", orderType="Market", qty="1",
        marketUnit="baseCoin" if category == "spot" else None, orderLinkId=links("x"),
    )  # fmt: skip
    fills = http.get_executions(category=category, orderLinkId=links("x"))
    assert len(fills["result"]["list"]) == 1
    assert_shape(fills, "rest_execution_list_response.json")


def test_rest_position_list(http: Any) -> None:
    # The official example is an inverse (BTCUSD) position; linear has the same fields.
    assert_shape(
        http.get_positions(category="linear", symbol="SOLUSDT"), "rest_position_list_response.json"
    )


def test_rest_wallet_balance(http: Any) -> None:
    assert_shape(
        http.get_wallet_balance(accountType="UNIFIED"), "rest_wallet_balance_response.json"
    )


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_rest_instruments_info(http: Any, category: str) -> None:
    reply = http.get_instruments_info(category=category, symbol="BTCUSDT")
    assert_shape(reply, f"rest_instruments_info_{category}_response.json")


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_rest_orderbook(sim: Sim, http: Any, category: str) -> None:
    # The official example is spot; Bybit documents one response shape for every category.
    _rest_book(sim, category)
    reply = http.get_orderbook(category=category, symbol="SOLUSDT")
    assert_shape(reply, "rest_orderbook_spot_response.json")


def test_rest_tickers_spot(sim: Sim, http: Any) -> None:
    _rest_book(sim, "spot")
    assert_shape(
        http.get_tickers(category="spot", symbol="SOLUSDT"), "rest_tickers_spot_response.json"
    )


def test_rest_server_time(http: Any) -> None:
    assert_shape(http.get_server_time(), "rest_server_time_response.json")


# --- WebSocket: control messages ----------------------------------------------------------


def test_ws_public_spot_subscribe_ack_and_pong(sim: Sim, raw_ws: RawFactory) -> None:
    conn = raw_ws(sim, "/v5/public/spot")
    ack = conn.subscribe("publicTrade.BTCUSDT", req_id="10001")
    assert (ack["success"], ack["req_id"]) == (True, "10001")
    assert_shape(ack, "ws_subscribe_response_public_spot.json")
    conn.send({"op": "ping"})
    assert_shape(conn.recv_until(lambda m: m.get("ret_msg") == "pong"), "ws_pong_public_spot.json")


def test_ws_public_linear_subscribe_ack_and_pong(sim: Sim, raw_ws: RawFactory) -> None:
    conn = raw_ws(sim, "/v5/public/linear")
    ack = conn.subscribe("publicTrade.BTCUSDT")
    assert ack["success"] is True
    assert_shape(ack, "ws_subscribe_response_public_linear.json")
    conn.send({"op": "ping"})
    pong = conn.recv_until(lambda m: m.get("ret_msg") == "pong")
    assert_shape(pong, "ws_pong_public_linear.json")


def test_ws_private_auth_subscribe_ack_and_pong(sim: Sim, raw_ws: RawFactory) -> None:
    conn = raw_ws(sim, "/v5/private")
    auth = conn.auth()
    assert auth["success"] is True
    assert_shape(auth, "ws_auth_response_success.json")
    ack = conn.subscribe("order")
    assert ack["success"] is True
    assert_shape(ack, "ws_subscribe_response_private.json")
    conn.send({"req_id": "test", "op": "ping"})
    pong = conn.recv_until(lambda m: m.get("op") == "pong")
    assert pong["req_id"] == "test"
    assert_shape(pong, "ws_pong_private.json")


# --- WebSocket: public data -------------------------------------------------------------------


def test_ws_orderbook_50_snapshot_and_delta(sim: Sim, raw_ws: RawFactory) -> None:
    sim.book("linear", "BTCUSDT", [("60000.0", "1"), ("59999.0", "2")], [("60001.0", "1")])
    conn = raw_ws(sim, "/v5/public/linear")
    conn.subscribe("orderbook.50.BTCUSDT")
    snapshot = conn.recv_until(lambda m: m.get("topic") == "orderbook.50.BTCUSDT")
    assert snapshot["type"] == "snapshot"
    assert_shape(snapshot, "ws_orderbook_snapshot_linear_50.jsonc")
    sim.book("linear", "BTCUSDT", [("60000.0", "3")], [("60001.0", "1"), ("60002.0", "2")])
    delta = conn.recv_until(lambda m: m.get("topic") == "orderbook.50.BTCUSDT")
    assert delta["type"] == "delta"
    assert_shape(delta, "ws_orderbook_delta_linear_50.json")


def test_ws_public_trade_linear(sim: Sim, raw_ws: RawFactory) -> None:
    sim.book("linear", "BTCUSDT", [("60000.0", "1")], [("60001.0", "1")])
    conn = raw_ws(sim, "/v5/public/linear")
    conn.subscribe("publicTrade.BTCUSDT")
    sim.trade("linear", "BTCUSDT", "Buy", "60001.0", "0.5")
    trade = conn.recv_until(lambda m: m.get("topic") == "publicTrade.BTCUSDT")
    assert_shape(trade, "ws_publictrade_linear.json")


@pytest.mark.parametrize(
    ("category", "name"),
    [
        ("spot", "ws_tickers_spot_snapshot.json"),
        ("linear", "ws_tickers_linear_perpetual_snapshot.json"),
    ],
)
def test_ws_tickers_snapshot(sim: Sim, raw_ws: RawFactory, category: str, name: str) -> None:
    _rest_book(sim, category)
    conn = raw_ws(sim, f"/v5/public/{category}")
    conn.subscribe("tickers.SOLUSDT")
    ticker = conn.recv_until(lambda m: m.get("topic") == "tickers.SOLUSDT")
    assert ticker["type"] == "snapshot"
    assert_shape(ticker, name)


# --- WebSocket: private data ---------------------------------------------------------------


def _private_pushes(sim: Sim, http: Any, conn: RawWS, category: str, link: str) -> dict[str, Json]:
    """The first order, execution, position and wallet pushes around a maker fill."""
    assert conn.auth()["success"] is True
    assert conn.subscribe("order", "execution", "position", "wallet")["success"] is True
    sim.book(category, "SOLUSDT", [("140.00", "50")], [("141.00", "50")])
    _resting(http, category, link, price="140.50")
    assert sim.trade(category, "SOLUSDT", "Sell", "140.50", "1")["filled"] != "0"
    seen: dict[str, Json] = {}
    while "execution" not in seen:
        message = conn.recv_until(lambda m: "topic" in m)
        seen.setdefault(message["topic"], message)
    return seen


@pytest.mark.parametrize(
    ("category", "topic", "name"),
    [
        ("linear", "execution", "ws_private_execution.json"),
        ("linear", "position", "ws_private_position.json"),
        ("linear", "wallet", "ws_private_wallet.json"),
        ("spot", "execution", "ws_private_execution.json"),  # the example is a linear fill
        ("spot", "wallet", "ws_private_wallet.json"),
    ],
)
def test_ws_private_topics(
    sim: Sim, http: Any, raw_ws: RawFactory, links: Links, category: str, topic: str, name: str
) -> None:
    pushes = _private_pushes(sim, http, raw_ws(sim, "/v5/private"), category, links("fill"))
    assert_shape(pushes[topic], name)


# The official order push example is an OPTION order; the page's field table documents these
# fields for spot/linear orders too (createType: "Only for category=linear or inverse").
_ORDER_FIELDS_NOT_IN_OPTION_EXAMPLE = {
    "linear": {"isLeverage": "", "createType": "CreateByUser", "marketUnit": ""},
    "spot": {"isLeverage": "0", "marketUnit": "", "ocoTriggerBy": "OcoTriggerByUnknown"},
}
_ORDER_FIELDS_ALL = {"slippageToleranceType": "UNKNOWN", "slippageTolerance": ""}


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_ws_private_order(
    sim: Sim, http: Any, raw_ws: RawFactory, links: Links, category: str
) -> None:
    """The option example's keys plus the documented non-option fields (checked by the test
    below); no other extra key is allowed."""
    pushes = _private_pushes(sim, http, raw_ws(sim, "/v5/private"), category, links("fill"))
    order = pushes["order"]
    assert order["data"][0]["category"] == category
    documented = set(_ORDER_FIELDS_NOT_IN_OPTION_EXAMPLE[category]) | set(_ORDER_FIELDS_ALL)
    order["data"] = [{k: v for k, v in o.items() if k not in documented} for o in order["data"]]
    assert_shape(order, "ws_private_order.json")


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_ws_private_order_has_the_documented_fields(
    sim: Sim, http: Any, raw_ws: RawFactory, links: Links, category: str
) -> None:
    pushes = _private_pushes(sim, http, raw_ws(sim, "/v5/private"), category, links("fill"))
    example = fixture("ws_private_order.json")
    example["data"][0].update(_ORDER_FIELDS_NOT_IN_OPTION_EXAMPLE[category], **_ORDER_FIELDS_ALL)
    assert_shape(pushes["order"], "ws_private_order.json + documented fields", example)

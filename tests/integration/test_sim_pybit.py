"""The real pybit client against the real simulator: REST calls, error codes, WebSocket streams.

All tests share this xdist worker's simulator (``sim``); each sets the books it needs, uses its
own orderLinkIds and leaves no open orders behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pybit.exceptions import InvalidRequestError

from tests.integration.conftest import (
    API_KEY,
    Collector,
    Json,
    Links,
    PybitWsFactory,
    Sim,
    clean_orders,
    pybit_http,
    signed_request,
)

D = Decimal


@pytest.fixture(autouse=True)
def _no_orders_left(sim: Sim) -> Iterator[None]:
    yield
    clean_orders(sim)


def _one(rows: list[Json], link_id: str) -> Json:
    found = [row for row in rows if row["orderLinkId"] == link_id]
    assert len(found) == 1, (link_id, rows)
    return found[0]


def _history(http: Any, category: str, link_id: str) -> Json:
    rows = http.get_order_history(category=category, orderLinkId=link_id)["result"]["list"]
    return _one(rows, link_id)


def _signed_size(position: Json) -> Decimal:
    size = D(position["size"])
    return {"Buy": size, "Sell": -size, "": D(0)}[position["side"]]


def _position(http: Any, symbol: str) -> Json:
    rows: list[Json] = http.get_positions(category="linear", symbol=symbol)["result"]["list"]
    assert len(rows) == 1, rows
    return rows[0]


def _levels(side: list[list[str]]) -> dict[Decimal, Decimal]:
    return {D(price): D(size) for price, size in side}


def _has_order(message: Json, link_id: str, status: str) -> bool:
    return any(o["orderLinkId"] == link_id and o["orderStatus"] == status for o in message["data"])


def _order_in(message: Json, link_id: str, status: str) -> Json:
    return next(
        o for o in message["data"] if o["orderLinkId"] == link_id and o["orderStatus"] == status
    )


# --- A. REST ------------------------------------------------------------------------------


def test_instruments_info_spot_and_linear(http: Any) -> None:
    spot = http.get_instruments_info(category="spot", symbol="BTCUSDT")
    assert spot["retCode"] == 0
    [row] = spot["result"]["list"]
    assert (row["symbol"], row["baseCoin"], row["quoteCoin"]) == ("BTCUSDT", "BTC", "USDT")
    assert row["status"] == "Trading"
    assert D(row["lotSizeFilter"]["basePrecision"]) == D("0.000001")
    assert D(row["lotSizeFilter"]["minOrderAmt"]) == D("5")
    assert D(row["priceFilter"]["tickSize"]) == D("0.1")

    linear = http.get_instruments_info(category="linear", symbol="BTCUSDT")
    [row] = linear["result"]["list"]
    assert row["contractType"] == "LinearPerpetual"
    assert row["settleCoin"] == "USDT"
    assert D(row["lotSizeFilter"]["qtyStep"]) == D("0.001")
    assert D(row["lotSizeFilter"]["minNotionalValue"]) == D("5")
    assert D(row["priceFilter"]["tickSize"]) == D("0.1")

    every = http.get_instruments_info(category="linear")["result"]["list"]
    assert {r["symbol"] for r in every} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_server_time(http: Any) -> None:
    reply = http.get_server_time()
    assert reply["retCode"] == 0
    seconds = int(reply["result"]["timeSecond"])
    assert int(reply["result"]["timeNano"]) // 10**9 == seconds
    assert abs(seconds - time.time()) < 60  # same machine, same clock
    assert isinstance(reply["time"], int)


def test_orderbook_and_tickers(sim: Sim, http: Any) -> None:
    bids = [("3000.00", "1.5"), ("2999.99", "2")]
    asks = [("3000.05", "0.7"), ("3000.10", "3")]
    for category in ("spot", "linear"):
        sim.book(category, "ETHUSDT", bids, asks)
        book = http.get_orderbook(category=category, symbol="ETHUSDT", limit=5)["result"]
        assert book["s"] == "ETHUSDT"
        assert [D(p) for p, _ in book["b"]] == [D("3000.00"), D("2999.99")]  # descending
        assert [D(p) for p, _ in book["a"]] == [D("3000.05"), D("3000.10")]  # ascending
        assert _levels(book["b"]) == {D(p): D(s) for p, s in bids}
        assert _levels(book["a"]) == {D(p): D(s) for p, s in asks}
        [ticker] = http.get_tickers(category=category, symbol="ETHUSDT")["result"]["list"]
        assert ticker["symbol"] == "ETHUSDT"
        assert (D(ticker["bid1Price"]), D(ticker["bid1Size"])) == (D("3000.00"), D("1.5"))
        assert (D(ticker["ask1Price"]), D(ticker["ask1Size"])) == (D("3000.05"), D("0.7"))


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_postonly_limit_place_amend_list_cancel_history(
    sim: Sim, http: Any, links: Links, category: str
) -> None:
    sim.book(category, "SOLUSDT", [("140.00", "50")], [("141.00", "50")])
    link = links("po")
    placed = http.place_order(
        category=category,
        symbol="SOLUSDT",
        side="Buy",
        orderType="Limit",
        qty="1",
        price="139.50",
        timeInForce="PostOnly",
        orderLinkId=link,
    )
    assert placed["retCode"] == 0
    order_id = placed["result"]["orderId"]
    assert placed["result"]["orderLinkId"] == link

    rows = http.get_open_orders(category=category, symbol="SOLUSDT")["result"]["list"]
    order = _one(rows, link)
    assert order["orderId"] == order_id
    assert (order["orderStatus"], order["timeInForce"], order["side"]) == ("New", "PostOnly", "Buy")
    assert (D(order["price"]), D(order["qty"]), D(order["leavesQty"])) == (D("139.5"), 1, 1)

    amended = http.amend_order(
        category=category, symbol="SOLUSDT", orderLinkId=link, price="139.60", qty="2"
    )
    assert amended["retCode"] == 0
    assert amended["result"]["orderId"] == order_id
    rows = http.get_open_orders(category=category, symbol="SOLUSDT", orderLinkId=link)
    order = _one(rows["result"]["list"], link)
    assert (order["orderStatus"], D(order["price"]), D(order["qty"])) == ("New", D("139.6"), 2)

    cancelled = http.cancel_order(category=category, symbol="SOLUSDT", orderId=order_id)
    assert cancelled["retCode"] == 0
    assert cancelled["result"] == {"orderId": order_id, "orderLinkId": link}
    rows = http.get_open_orders(category=category, symbol="SOLUSDT")["result"]["list"]
    assert link not in [r["orderLinkId"] for r in rows]

    history = http.get_order_history(category=category, symbol="SOLUSDT")["result"]["list"]
    order = _one(history, link)
    assert (order["orderStatus"], order["cancelType"]) == ("Cancelled", "CancelByUser")
    assert (D(order["price"]), D(order["qty"]), D(order["cumExecQty"])) == (D("139.6"), 2, 0)


def test_linear_market_order(sim: Sim, http: Any, links: Links) -> None:
    sim.book("linear", "ETHUSDT", [("3000.00", "10")], [("3001.00", "10")])
    before = _signed_size(_position(http, "ETHUSDT"))
    link = links("mkt")
    placed = http.place_order(
        category="linear", symbol="ETHUSDT", side="Buy", orderType="Market", qty="0.5",
        orderLinkId=link,
    )  # fmt: skip
    assert placed["retCode"] == 0
    order = _history(http, "linear", link)
    assert (order["orderStatus"], order["orderType"]) == ("Filled", "Market")
    assert (D(order["cumExecQty"]), D(order["avgPrice"])) == (D("0.5"), D("3001"))
    assert _signed_size(_position(http, "ETHUSDT")) == before + D("0.5")
    fills = http.get_executions(category="linear", orderLinkId=link)["result"]["list"]
    assert [(D(f["execQty"]), D(f["execPrice"]), f["isMaker"]) for f in fills] == [
        (D("0.5"), D("3001"), False)
    ]


def test_spot_market_buy_by_quote_value_and_by_base_qty(sim: Sim, http: Any, links: Links) -> None:
    sim.book("spot", "BTCUSDT", [("60000.0", "1")], [("60010.0", "1")])
    btc_before = D(sim.account()["balances"]["BTC"]["walletBalance"])

    by_value = links("quote")
    reply = http.place_order(
        category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="100",
        orderLinkId=by_value,
    )  # fmt: skip
    assert reply["retCode"] == 0
    order = _history(http, "spot", by_value)
    assert order["orderStatus"] == "Filled"
    assert D(order["qty"]) == 100  # Bybit's default unit of a spot market buy is the quote coin
    assert D(order["cumExecQty"]) == D("0.001666")  # 100 / 60010, floored to basePrecision
    assert D(order["cumExecValue"]) == D("0.001666") * D("60010")

    by_qty = links("base")
    reply = http.place_order(
        category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.002",
        marketUnit="baseCoin", orderLinkId=by_qty,
    )  # fmt: skip
    assert reply["retCode"] == 0
    order2 = _history(http, "spot", by_qty)
    assert order2["orderStatus"] == "Filled"
    assert (D(order2["cumExecQty"]), D(order2["avgPrice"])) == (D("0.002"), D("60010"))

    # A spot buy pays its fee in the base coin.
    received = sum(D(o["cumExecQty"]) - D(o["cumExecFee"]) for o in (order, order2))
    assert D(sim.account()["balances"]["BTC"]["walletBalance"]) == btc_before + received


def test_wallet_balance_and_positions(sim: Sim, http: Any) -> None:
    wallet = http.get_wallet_balance(accountType="UNIFIED")["result"]["list"]
    assert len(wallet) == 1
    assert wallet[0]["accountType"] == "UNIFIED"
    coins = {c["coin"]: c for c in wallet[0]["coin"]}
    for name, balance in sim.account()["balances"].items():
        if D(balance["walletBalance"]) or D(balance["locked"]):
            assert D(coins[name]["walletBalance"]) == D(balance["walletBalance"]), name
            assert D(coins[name]["locked"]) == D(balance["locked"]), name
    only = http.get_wallet_balance(accountType="UNIFIED", coin="USDT")["result"]["list"][0]
    assert [c["coin"] for c in only["coin"]] == ["USDT"]
    sim.adjust(apiKey=API_KEY, coin="USDT", delta="12.5")  # behind the client's back
    try:
        again = http.get_wallet_balance(accountType="UNIFIED", coin="USDT")["result"]["list"][0]
        moved = D(again["coin"][0]["walletBalance"]) - D(only["coin"][0]["walletBalance"])
        assert moved == D("12.5")
    finally:
        sim.adjust(apiKey=API_KEY, coin="USDT", delta="-12.5")

    saved = _position(http, "SOLUSDT")
    try:
        sim.adjust(apiKey=API_KEY, symbol="SOLUSDT", side="Sell", size="3")
        position = _position(http, "SOLUSDT")
        assert (position["symbol"], position["side"], D(position["size"])) == ("SOLUSDT", "Sell", 3)
        listed = http.get_positions(category="linear", settleCoin="USDT")["result"]["list"]
        assert "SOLUSDT" in [p["symbol"] for p in listed]
    finally:
        sim.adjust(apiKey=API_KEY, symbol="SOLUSDT", side=saved["side"], size=saved["size"])
    assert _signed_size(_position(http, "SOLUSDT")) == _signed_size(saved)


def test_set_leverage_and_unchanged_is_110043(http: Any) -> None:
    current = D(_position(http, "BTCUSDT")["leverage"])
    wanted = "5" if current != 5 else "6"
    reply = http.set_leverage(
        category="linear", symbol="BTCUSDT", buyLeverage=wanted, sellLeverage=wanted
    )
    assert reply["retCode"] == 0
    assert D(_position(http, "BTCUSDT")["leverage"]) == D(wanted)
    with pytest.raises(InvalidRequestError) as raised:
        http.set_leverage(
            category="linear", symbol="BTCUSDT", buyLeverage=wanted, sellLeverage=wanted
        )
    assert raised.value.status_code == 110043


# --- A. error codes through pybit -----------------------------------------------------------


def _rest_buy(http: Any, category: str, link: str, qty: str = "1", price: str = "139.50") -> Json:
    reply: Json = http.place_order(
        category=category, symbol="SOLUSDT", side="Buy", orderType="Limit", qty=qty,
        price=price, timeInForce="PostOnly", orderLinkId=link,
    )  # fmt: skip
    return reply


@pytest.mark.parametrize(("category", "code"), [("linear", 110072), ("spot", 170141)])
def test_duplicate_order_link_id(
    sim: Sim, http: Any, links: Links, category: str, code: int
) -> None:
    sim.book(category, "SOLUSDT", [("140.00", "50")], [("141.00", "50")])
    link = links("dup")
    assert _rest_buy(http, category, link)["retCode"] == 0
    with pytest.raises(InvalidRequestError) as raised:
        _rest_buy(http, category, link)
    assert raised.value.status_code == code
    assert len([o for o in sim.orders() if o["orderLinkId"] == link]) == 1


@pytest.mark.parametrize(("category", "code"), [("linear", 110001), ("spot", 170213)])
def test_cancel_unknown_order(http: Any, links: Links, category: str, code: int) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        http.cancel_order(category=category, symbol="SOLUSDT", orderLinkId=links("nope"))
    assert raised.value.status_code == code


@pytest.mark.parametrize(("category", "code"), [("linear", 110007), ("spot", 170131)])
def test_insufficient_balance(sim: Sim, http: Any, links: Links, category: str, code: int) -> None:
    sim.book(category, "BTCUSDT", [("60000.0", "1")], [("60010.0", "1")])
    link = links("big")
    with pytest.raises(InvalidRequestError) as raised:  # 600k USDT (60k margin ×10) > 100k
        http.place_order(
            category=category, symbol="BTCUSDT", side="Buy", orderType="Limit",
            qty="100" if category == "linear" else "10", price="59000",
            timeInForce="PostOnly", orderLinkId=link,
        )  # fmt: skip
    assert raised.value.status_code == code
    assert sim.order(link) is None


def test_wrong_secret_is_10004(sim: Sim) -> None:
    session = pybit_http(sim, api_secret="not-the-secret")
    with pytest.raises(InvalidRequestError) as raised:
        session.get_open_orders(category="spot")
    assert raised.value.status_code == 10004


def test_unknown_key_is_10003(sim: Sim) -> None:
    session = pybit_http(sim, api_key="no-such-key")
    with pytest.raises(InvalidRequestError) as raised:
        session.get_wallet_balance(accountType="UNIFIED")
    assert raised.value.status_code == 10003


def test_timestamp_outside_recv_window_is_10002(sim: Sim) -> None:
    params = {"category": "spot"}
    now = int(time.time() * 1000)
    assert signed_request(sim, "GET", "/v5/order/realtime", params).json()["retCode"] == 0
    stale = signed_request(
        sim, "GET", "/v5/order/realtime", params, timestamp=now - 20_000, recv_window=5000
    ).json()
    assert stale["retCode"] == 10002, stale
    ahead = signed_request(sim, "GET", "/v5/order/realtime", params, timestamp=now + 20_000)
    assert ahead.json()["retCode"] == 10002
    # a wider recv_window admits the same old timestamp
    wide = signed_request(
        sim, "GET", "/v5/order/realtime", params, timestamp=now - 20_000, recv_window=60_000
    )
    assert wide.json()["retCode"] == 0


@pytest.mark.parametrize(("category", "status"), [("linear", "Cancelled"), ("spot", "Rejected")])
def test_postonly_that_would_cross(
    sim: Sim, http: Any, pybit_ws: PybitWsFactory, links: Links, category: str, status: str
) -> None:
    private = pybit_ws(sim, "private")
    orders = Collector()
    private.ws.order_stream(orders)
    private.wait_acked("order")
    sim.book(category, "ETHUSDT", [("3000.00", "5")], [("3001.00", "5")])
    link = links("cross")
    placed = http.place_order(
        category=category, symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.1",
        price="3001.00", timeInForce="PostOnly", orderLinkId=link,
    )  # fmt: skip
    assert placed["retCode"] == 0  # accepted, then cancelled/rejected asynchronously
    pushed = _order_in(orders.wait_for(lambda m: _has_order(m, link, status)), link, status)
    assert pushed["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
    assert D(pushed["cumExecQty"]) == 0
    order = _history(http, category, link)
    assert (order["orderStatus"], order["rejectReason"]) == (status, "EC_PostOnlyWillTakeLiquidity")
    assert http.get_executions(category=category, orderLinkId=link)["result"]["list"] == []


# --- B. WebSocket ---------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_ws_public_orderbook_and_trades(sim: Sim, pybit_ws: PybitWsFactory, category: str) -> None:
    symbol = "BTCUSDT"
    sim.book(
        category,
        symbol,
        [("60000.0", "1"), ("59999.9", "2")],
        [("60000.1", "0.5"), ("60000.2", "3")],
    )
    public = pybit_ws(sim, category)
    ob1, ob50, trades = Collector(), Collector(), Collector()
    public.ws.orderbook_stream(1, symbol, ob1)
    public.ws.orderbook_stream(50, symbol, ob50)
    public.ws.trade_stream(symbol, trades)

    first = ob50.wait_for(lambda m: True)["data"]
    assert _levels(first["b"]) == {D("60000.0"): 1, D("59999.9"): 2}
    assert _levels(first["a"]) == {D("60000.1"): D("0.5"), D("60000.2"): 3}
    top = ob1.wait_for(lambda m: True)["data"]
    assert (_levels(top["b"]), _levels(top["a"])) == ({D("60000.0"): 1}, {D("60000.1"): D("0.5")})
    public.wait_acked(f"publicTrade.{symbol}")

    mark1, mark50 = ob1.mark(), ob50.mark()
    sim.trade(category, symbol, "Buy", "60000.1", "0.2")
    trade = trades.wait_for(lambda m: True)
    assert trade["topic"] == f"publicTrade.{symbol}"
    assert [(t["S"], D(t["p"]), D(t["v"])) for t in trade["data"]] == [
        ("Buy", D("60000.1"), D("0.2"))
    ]
    ob50.wait_for(lambda m: _levels(m["data"]["a"]).get(D("60000.1")) == D("0.3"), start=mark50)

    sim.trade(category, symbol, "Buy", "60000.1", "0.3")  # takes the rest of the level
    book = ob50.wait_for(lambda m: D("60000.1") not in _levels(m["data"]["a"]), start=mark50)
    assert _levels(book["data"]["a"]) == {D("60000.2"): 3}
    top = ob1.wait_for(lambda m: D("60000.2") in _levels(m["data"]["a"]), start=mark1)["data"]
    assert (_levels(top["b"]), _levels(top["a"])) == ({D("60000.0"): 1}, {D("60000.2"): 3})
    second = trades.wait_for(lambda m: True, start=1)
    assert [(t["S"], D(t["p"]), D(t["v"])) for t in second["data"]] == [
        ("Buy", D("60000.1"), D("0.3"))
    ]


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_ws_tickers(sim: Sim, pybit_ws: PybitWsFactory, category: str) -> None:
    sim.book(category, "SOLUSDT", [("150.00", "10")], [("150.02", "10")])
    public = pybit_ws(sim, category)
    tickers = Collector()
    public.ws.ticker_stream("SOLUSDT", tickers)
    first = tickers.wait_for(lambda m: True)
    assert first["topic"] == "tickers.SOLUSDT"
    assert first["data"]["symbol"] == "SOLUSDT"
    if category == "linear":
        assert (D(first["data"]["bid1Price"]), D(first["data"]["ask1Price"])) == (
            D("150.00"),
            D("150.02"),
        )
    sim.trade(category, "SOLUSDT", "Buy", "150.02", "1")
    tickers.wait_for(lambda m: D(m["data"]["lastPrice"]) == D("150.02"))
    sim.trade(category, "SOLUSDT", "Sell", "150.00", "1")
    tickers.wait_for(lambda m: D(m["data"]["lastPrice"]) == D("150.00"))


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_ws_private_streams_after_a_maker_fill(
    sim: Sim, http: Any, pybit_ws: PybitWsFactory, links: Links, category: str
) -> None:
    private = pybit_ws(sim, "private")
    orders, executions, positions, wallets = Collector(), Collector(), Collector(), Collector()
    private.ws.order_stream(orders)
    private.ws.execution_stream(executions)
    private.ws.position_stream(positions)
    private.ws.wallet_stream(wallets)
    private.wait_acked("order", "execution", "position", "wallet")

    sim.book(category, "ETHUSDT", [("2990.00", "5")], [("3010.00", "5")])
    link = links("maker")
    placed = http.place_order(
        category=category, symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.1",
        price="3000.00", timeInForce="PostOnly", orderLinkId=link,
    )  # fmt: skip
    assert placed["retCode"] == 0
    orders.wait_for(lambda m: _has_order(m, link, "New"))

    marks = positions.mark(), wallets.mark()
    assert sim.trade(category, "ETHUSDT", "Sell", "3000.00", "0.1")["filled"] in ("0.1", "0.10")

    filled = _order_in(orders.wait_for(lambda m: _has_order(m, link, "Filled")), link, "Filled")
    assert (D(filled["cumExecQty"]), D(filled["avgPrice"]), D(filled["leavesQty"])) == (
        D("0.1"),
        D("3000"),
        0,
    )
    fill_message = executions.wait_for(lambda m: any(e["orderLinkId"] == link for e in m["data"]))
    [fill] = [e for e in fill_message["data"] if e["orderLinkId"] == link]
    assert (fill["isMaker"], fill["execType"], fill["category"]) == (True, "Trade", category)
    assert (D(fill["execQty"]), D(fill["execPrice"])) == (D("0.1"), D("3000"))

    # The fill's wallet (and, linear, position) pushes carry the balances the admin API shows.
    account = sim.account()["balances"]
    coins_moved = ["USDT"] if category == "linear" else ["USDT", "ETH"]

    def shows_fill(message: Json) -> bool:
        coins = {c["coin"]: c for c in message["data"][0]["coin"]}
        return all(
            name in coins and D(coins[name]["walletBalance"]) == D(account[name]["walletBalance"])
            for name in coins_moved
        )

    wallets.wait_for(shows_fill, start=marks[1])
    if category == "linear":
        now = _position(http, "ETHUSDT")
        positions.wait_for(
            lambda m: any(
                (p["symbol"], p["side"], D(p["size"])) == ("ETHUSDT", now["side"], D(now["size"]))
                for p in m["data"]
            ),
            start=marks[0],
        )

"""The in-process exchange simulator (``exchange_sim.engine.Exchange``), without HTTP.

Covers queue position and price-time priority, PostOnly, Bybit's error codes, fees and
balances, positions and realised PnL, amends, scripted books, private and public messages,
determinism, the journal (restart, torn and corrupt lines) and funding. Every expected value
is worked out by hand from the scripted book and the default fees (spot 0.1 %/0.1 %, linear
maker 0.02 %, taker 0.055 %).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exchange_sim.config import SimConfig, default_config
from exchange_sim.errors import VenueError
from exchange_sim.journal import JournalError
from tests.conftest import FIXTURES
from tests.unit.sim_helpers import OTHER, SYMBOL, T0, D, K, Sim, two_account_config

CATEGORIES = ("spot", "linear")
POST_ONLY_REASON = "EC_PostOnlyWillTakeLiquidity"
# Position fields that depend on the mark price (the model re-lays the book on restart).
MARK_FIELDS = ("markPrice", "unrealisedPnl", "positionMMByMp", "positionIMByMp")


def _status(sim: Sim, category: str, order_id: str) -> tuple[str, Decimal, Decimal]:
    """(orderStatus, cumExecQty, leavesQty) of one order."""
    row = sim.order(category, order_id)
    return row["orderStatus"], D(row["cumExecQty"]), D(row["leavesQty"])


def _venue_error(call: Callable[..., object], *args: Any, **kwargs: Any) -> VenueError:
    """The VenueError that ``call`` must raise."""
    with pytest.raises(VenueError) as info:
        call(*args, **kwargs)
    return info.value


def _with_model(**changes: Any) -> SimConfig:
    config = default_config()
    return msgspec.structs.replace(config, model=msgspec.structs.replace(config.model, **changes))


# === 1. queue position and price-time priority ==========================================


@pytest.mark.parametrize("category", CATEGORIES)
def test_post_only_bid_fills_only_after_the_background_ahead_has_traded(category: str) -> None:
    sim = Sim()
    sim.book(category)
    oid = sim.place(category, "Buy", "0.5", "64999.9", timeInForce="PostOnly")
    assert _status(sim, category, oid) == ("New", D("0"), D("0.5"))
    assert sim.top(category, "Buy", 1) == [(D("64999.9"), D("1.5"))]

    sim.trade(category, "Sell", "64999.9", "0.9")  # 0.9 of the 1.0 ahead of us
    assert _status(sim, category, oid) == ("New", D("0"), D("0.5"))
    assert sim.executions(category, oid) == []
    assert sim.top(category, "Buy", 1) == [(D("64999.9"), D("0.6"))]

    sim.trade(category, "Sell", "64999.9", "0.2")  # 0.1 background left, then 0.1 of ours
    assert _status(sim, category, oid) == ("PartiallyFilled", D("0.1"), D("0.4"))
    [fill] = sim.executions(category, oid)
    assert (D(fill["execQty"]), D(fill["execPrice"]), fill["isMaker"]) == (
        D("0.1"),
        D("64999.9"),
        True,
    )
    if category == "spot":  # a spot buy pays its fee in the base coin
        assert (fill["feeCurrency"], D(fill["execFee"])) == ("BTC", D("0.0001"))
    else:  # maker 0.02 % of 6499.99 USDT
        assert (fill["feeCurrency"], D(fill["execFee"])) == ("USDT", D("1.299998"))

    sim.trade(category, "Sell", "64999.9", "0.4")
    assert _status(sim, category, oid) == ("Filled", D("0.5"), D("0"))
    assert sim.top(category, "Buy", 1) == [(D("64999.8"), D("2.0"))]


def test_two_user_orders_at_one_price_fill_in_time_priority() -> None:
    sim = Sim()
    sim.book("linear")
    first = sim.place("linear", "Buy", "0.3", "64999.9")
    second = sim.place("linear", "Buy", "0.3", "64999.9")
    sim.trade("linear", "Sell", "64999.9", "1.4")  # 1.0 background, 0.3 first, 0.1 second
    assert _status(sim, "linear", first) == ("Filled", D("0.3"), D("0"))
    assert _status(sim, "linear", second) == ("PartiallyFilled", D("0.1"), D("0.2"))
    sim.trade("linear", "Sell", "64999.9", "0.2")
    assert _status(sim, "linear", second) == ("Filled", D("0.3"), D("0"))


def test_background_added_later_queues_behind_and_removed_background_moves_us_up() -> None:
    sim = Sim()
    sim.book("linear")
    first = sim.place("linear", "Buy", "0.3", "64999.9")  # 1.0 ahead
    sim.book("linear", bids=[("64999.9", "3.0"), ("64999.8", "2.0")])  # +2.0 behind `first`
    second = sim.place("linear", "Buy", "0.3", "64999.9")  # 3.0 ahead
    sim.trade("linear", "Sell", "64999.9", "1.3")
    assert _status(sim, "linear", first) == ("Filled", D("0.3"), D("0"))
    assert _status(sim, "linear", second) == ("New", D("0"), D("0.3"))
    # 2.0 background is left in front of `second`; cancellations shrink it to 0.5
    sim.book("linear", bids=[("64999.9", "0.5"), ("64999.8", "2.0")])
    sim.trade("linear", "Sell", "64999.9", "0.6")
    assert _status(sim, "linear", second) == ("PartiallyFilled", D("0.1"), D("0.2"))


def test_an_outside_trade_never_goes_beyond_its_limit_price() -> None:
    sim = Sim()
    sim.book("linear")
    behind = sim.place("linear", "Buy", "0.2", "64999.8")
    fills = sim.ex.print_trade("linear", SYMBOL, "Sell", D("64999.9"), D("5"))
    assert [(f.price, f.qty, f.maker) for f in fills] == [(D("64999.9"), D("1.0"), None)]
    assert sim.top("linear", "Buy") == [(D("64999.8"), D("2.2"))]
    assert _status(sim, "linear", behind) == ("New", D("0"), D("0.2"))


def test_a_limit_taker_fills_up_to_its_price_and_rests_the_rest() -> None:
    sim = Sim()
    sim.book("linear")
    oid = sim.place("linear", "Buy", "1.5", "65000.1")
    row = sim.order("linear", oid)
    assert (row["orderStatus"], row["cumExecQty"], row["leavesQty"], row["avgPrice"]) == (
        "PartiallyFilled",
        "1.000",
        "0.500",
        "65000.1",
    )
    [fill] = sim.executions("linear", oid)
    assert (fill["execPrice"], fill["execQty"], fill["isMaker"]) == ("65000.10", "1.000", False)
    assert sim.top("linear", "Sell") == [(D("65000.2"), D("2.0"))]
    assert sim.top("linear", "Buy", 1) == [(D("65000.1"), D("0.5"))]


def test_a_limit_taker_sweeps_levels_inside_its_price() -> None:
    sim = Sim()
    sim.book("linear")
    oid = sim.place("linear", "Buy", "2.0", "65000.2")
    row = sim.order("linear", oid)
    assert (row["orderStatus"], row["cumExecQty"], row["avgPrice"]) == (
        "Filled",
        "2.000",
        "65000.15",
    )
    fills = sim.executions("linear", oid)
    assert sorted((f["execPrice"], f["execQty"]) for f in fills) == [
        ("65000.10", "1.000"),
        ("65000.20", "1.000"),
    ]


@pytest.mark.parametrize(
    ("category", "status", "cum"),
    [("linear", "Cancelled", "1.000"), ("spot", "PartiallyFilledCanceled", "1.000000")],
)
def test_ioc_remainder_is_cancelled_at_the_limit(category: str, status: str, cum: str) -> None:
    sim = Sim()
    sim.book(category)
    oid = sim.place(category, "Sell", "1.5", "64999.9", timeInForce="IOC")
    row = sim.order(category, oid)
    assert (row["orderStatus"], row["cumExecQty"]) == (status, cum)
    assert D(row["leavesQty"]) == 0
    assert sim.top(category, "Buy") == [(D("64999.8"), D("2.0"))]
    assert sim.locked("BTC") == 0


@pytest.mark.parametrize("category", CATEGORIES)
def test_fok_that_cannot_fill_completely_is_cancelled_untouched(category: str) -> None:
    sim = Sim()
    sim.book(category)
    oid = sim.place(category, "Buy", "1.5", "65000.1", timeInForce="FOK")
    row = sim.order(category, oid)
    assert (row["orderStatus"], row["rejectReason"]) == ("Cancelled", "EC_CancelForNoFullFill")
    assert D(row["cumExecQty"]) == 0
    assert sim.executions(category) == []
    assert sim.top(category, "Sell", 1) == [(D("65000.1"), D("1.0"))]
    assert sim.locked("USDT") == 0
    filled = sim.place(category, "Buy", "1.0", "65000.1", timeInForce="FOK")
    assert _status(sim, category, filled) == ("Filled", D("1.0"), D("0"))


# === 2. PostOnly that would cross ========================================================


@pytest.mark.parametrize(("category", "status"), [("linear", "Cancelled"), ("spot", "Rejected")])
@pytest.mark.parametrize(("side", "price"), [("Buy", "65000.1"), ("Sell", "64999.9")])
def test_post_only_that_would_take_is_acked_then_killed(
    category: str, status: str, side: str, price: str
) -> None:
    sim = Sim()
    sim.book(category)
    sim.private.clear()
    reply = sim.ex.create_order(
        K,
        {
            "category": category,
            "symbol": SYMBOL,
            "side": side,
            "orderType": "Limit",
            "qty": "0.1",
            "price": price,
            "timeInForce": "PostOnly",
            "orderLinkId": "po-1",
        },
    )
    assert (reply.code, reply.msg, reply.result["orderLinkId"]) == (0, "OK", "po-1")
    row = sim.order(category, reply.result["orderId"])
    assert (row["orderStatus"], row["rejectReason"], row["cumExecQty"]) == (
        status,
        POST_ONLY_REASON,
        {"linear": "0.000", "spot": "0.000000"}[category],
    )
    assert sim.executions(category) == []
    assert "execution" not in sim.private_topics()
    [pushed] = [o for m in sim.private_msgs("order") for o in m["data"]]
    assert (pushed["orderStatus"], pushed["rejectReason"]) == (status, POST_ONLY_REASON)
    assert (sim.wallet("USDT"), sim.wallet("BTC")) == (D("100000"), D("2"))
    assert (sim.locked("USDT"), sim.locked("BTC")) == (0, 0)
    assert sim.top(category, "Buy", 1) == [(D("64999.9"), D("1.0"))]
    assert sim.top(category, "Sell", 1) == [(D("65000.1"), D("1.0"))]
    listed = sim.ex.open_orders(K, {"category": category, "symbol": SYMBOL}).result["list"]
    assert listed == []


# === 3. errors with Bybit's codes ========================================================


def _create(sim: Sim, category: str, **params: str) -> None:
    sim.ex.create_order(K, {"category": category, "symbol": SYMBOL, **params})


@pytest.mark.parametrize(
    ("category", "code", "text"),
    [("linear", 110072, "OrderLinkedID is duplicate"), ("spot", 170141, "Duplicate clientOrderId")],
)
def test_duplicate_order_link_id(category: str, code: int, text: str) -> None:
    sim = Sim()
    sim.book(category)
    sim.place(category, "Buy", "0.01", "60000.0", orderLinkId="dup-1")
    locked = sim.locked("USDT")
    params = {"side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "60000.0"}
    err = _venue_error(_create, sim, category, **params, orderLinkId="dup-1")
    assert (err.code, err.message) == (code, text)
    assert len(sim.ex.open_orders(K, {"category": category, "symbol": SYMBOL}).result["list"]) == 1
    assert sim.locked("USDT") == locked


@pytest.mark.parametrize(("category", "code"), [("linear", 110001), ("spot", 170213)])
def test_cancel_or_amend_of_an_unknown_or_closed_order(category: str, code: int) -> None:
    sim = Sim()
    sim.book(category)
    base = {"category": category, "symbol": SYMBOL}
    assert _venue_error(sim.ex.cancel_order, K, {**base, "orderId": "no-such"}).code == code
    assert _venue_error(sim.ex.cancel_order, K, {**base, "orderLinkId": "no-such"}).code == code
    amend = {**base, "orderLinkId": "no-such", "price": "60000.0"}
    assert _venue_error(sim.ex.amend_order, K, amend).code == code
    filled = sim.place(category, "Buy", "0.01", "65000.1", timeInForce="IOC")
    assert sim.order(category, filled)["orderStatus"] == "Filled"
    assert _venue_error(sim.ex.cancel_order, K, {**base, "orderId": filled}).code == code


@pytest.mark.parametrize(
    ("category", "side", "qty", "price", "code"),
    [
        ("linear", "Buy", "20", "65000.0", 110007),  # 130000 USDT margin at 10x > 100000
        ("spot", "Buy", "2", "60000.0", 170131),  # 120000 USDT > 100000
        ("spot", "Sell", "2.5", "70000.0", 170131),  # 2.5 BTC > 2
    ],
)
def test_insufficient_balance(category: str, side: str, qty: str, price: str, code: int) -> None:
    sim = Sim()
    sim.book(category)
    params = {"side": side, "orderType": "Limit", "qty": qty, "price": price}
    assert _venue_error(_create, sim, category, **params).code == code
    assert sim.ex.all_orders() == []
    assert (sim.locked("USDT"), sim.locked("BTC")) == (0, 0)


def test_spot_funds_locked_by_an_open_order_are_not_available() -> None:
    sim = Sim()
    sim.book("spot")
    sim.place("spot", "Buy", "1", "60000.0")
    assert sim.locked("USDT") == D("60000")
    params = {"side": "Buy", "orderType": "Limit", "qty": "1", "price": "60000.0"}
    assert _venue_error(_create, sim, "spot", **params).code == 170131


@pytest.mark.parametrize(
    ("category", "params", "code"),
    [
        # 0.001 × 1000 = 1 USDT < minNotionalValue 5
        ("linear", {"orderType": "Limit", "qty": "0.001", "price": "1000.0"}, 110094),
        # 0.00001 < minOrderQty 0.000011
        ("spot", {"orderType": "Limit", "qty": "0.00001", "price": "60000.0"}, 170136),
        # 0.00005 × 60000 = 3 USDT < minOrderAmt 5
        ("spot", {"orderType": "Limit", "qty": "0.00005", "price": "60000.0"}, 170140),
        # a market buy by value below minOrderAmt
        ("spot", {"orderType": "Market", "qty": "4"}, 170140),
        # tick 0.1
        ("spot", {"orderType": "Limit", "qty": "0.01", "price": "60000.05"}, 170134),
        # basePrecision 0.000001
        ("spot", {"orderType": "Limit", "qty": "0.0100001", "price": "60000.0"}, 170137),
    ],
)
def test_order_size_and_grid_errors(category: str, params: dict[str, str], code: int) -> None:
    sim = Sim()
    sim.book(category)
    assert _venue_error(_create, sim, category, side="Buy", **params).code == code
    assert sim.ex.all_orders() == []
    assert sim.locked("USDT") == 0


def test_set_leverage_to_the_current_value_is_110043() -> None:
    sim = Sim()
    params = {"category": "linear", "symbol": SYMBOL, "buyLeverage": "10", "sellLeverage": "10"}
    err = _venue_error(sim.ex.set_leverage, K, params)
    assert (err.code, err.message) == (110043, "Set leverage has not been modified.")
    five = {**params, "buyLeverage": "5", "sellLeverage": "5"}
    assert sim.ex.set_leverage(K, five).code == 0
    assert sim.position()["leverage"] == "5"
    assert _venue_error(sim.ex.set_leverage, K, five).code == 110043


# === 4. spot market orders, fees, positions, locked funds ================================


def test_spot_market_buy_is_by_quote_value_by_default_and_pays_fee_in_base() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Buy", "1000")  # 1000 USDT
    row = sim.order("spot", oid)
    # floor(1000 / 65000.1) to 0.000001 = 0.015384 BTC for 999.9615384 USDT
    assert (row["orderStatus"], row["qty"], row["cumExecQty"], row["cumExecValue"]) == (
        "Filled",
        "1000",
        "0.015384",
        "999.9615384",
    )
    [fill] = sim.executions("spot", oid)
    assert (fill["feeCurrency"], fill["execFee"], fill["execPrice"]) == (
        "BTC",
        "0.000015384",
        "65000.1",
    )
    assert sim.wallet("BTC") == D("2.015368616")  # 2 + 0.015384 − 0.015384 × 0.001
    assert sim.wallet("USDT") == D("99000.0384616")
    assert (sim.locked("USDT"), sim.locked("BTC")) == (0, 0)


def test_spot_market_buy_in_base_coin_with_market_unit() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Buy", "0.01", marketUnit="baseCoin")
    row = sim.order("spot", oid)
    assert (row["orderStatus"], row["qty"], row["cumExecQty"], row["cumExecValue"]) == (
        "Filled",
        "0.010000",
        "0.010000",
        "650.001",
    )
    assert sim.wallet("BTC") == D("2.00999")  # 2 + 0.01 − 0.00001 fee
    assert sim.wallet("USDT") == D("99349.999")
    assert (sim.locked("USDT"), sim.locked("BTC")) == (0, 0)


def test_spot_market_sell_is_in_base_and_pays_fee_in_quote() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Sell", "0.01")
    [fill] = sim.executions("spot", oid)
    assert (fill["execPrice"], fill["execValue"], fill["feeCurrency"], fill["execFee"]) == (
        "64999.9",
        "649.999",
        "USDT",
        "0.649999",
    )
    assert sim.wallet("BTC") == D("1.99")
    assert sim.wallet("USDT") == D("100649.349001")  # + 649.999 − 0.649999
    assert (sim.locked("USDT"), sim.locked("BTC")) == (0, 0)


def test_spot_limit_buy_locks_then_releases_its_quote() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Buy", "1.5", "65000.1")  # 1.0 takes, 0.5 rests
    assert sim.locked("USDT") == D("32500.05")  # 0.5 × 65000.1
    sim.trade("spot", "Sell", "65000.1", "0.2")  # our bid is alone at 65000.1
    assert _status(sim, "spot", oid) == ("PartiallyFilled", D("1.2"), D("0.3"))
    assert sim.locked("USDT") == D("19500.03")
    assert sim.ex.cancel_order(K, {"category": "spot", "symbol": SYMBOL, "orderId": oid}).code == 0
    assert _status(sim, "spot", oid) == ("PartiallyFilledCanceled", D("1.2"), D("0"))
    assert sim.locked("USDT") == 0
    assert sim.wallet("USDT") == D("21999.88")  # 100000 − 1.2 × 65000.1
    assert sim.wallet("BTC") == D("3.1988")  # 2 + 1.2 − 0.0012 fee
    row = sim.ex.wallet_balance(K, {"accountType": "UNIFIED", "coin": "USDT"}).result
    assert row["list"][0]["coin"][0]["locked"] == "0"


def test_spot_limit_sell_locks_base_until_cancelled() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Sell", "0.5", "66000.0")
    assert sim.locked("BTC") == D("0.5")
    sim.ex.cancel_all(K, {"category": "spot"})
    assert sim.order("spot", oid)["orderStatus"] == "Cancelled"
    assert sim.locked("BTC") == 0


def test_linear_fees_average_price_and_realised_pnl_through_a_flip() -> None:
    sim = Sim()

    def take(side: str, qty: str, price: str) -> dict[str, Any]:
        if side == "Buy":
            sim.book("linear", bids=[("60000.0", "5")], asks=[(price, "5")])
        else:
            sim.book("linear", bids=[(price, "5")], asks=[("70000.0", "5")])
        oid = sim.place("linear", side, qty, price, timeInForce="IOC")
        [fill] = sim.executions("linear", oid)
        return fill

    first = take("Buy", "0.1", "65000.0")
    assert (first["execFee"], first["feeCurrency"], first["feeRate"]) == (
        "3.575",
        "USDT",
        "0.00055",
    )
    take("Buy", "0.1", "65100.0")
    pos = sim.position()
    assert (pos["side"], pos["size"], pos["avgPrice"]) == ("Buy", "0.200", "65050.00")

    partial = take("Sell", "0.05", "65200.0")  # closes 0.05 at +150
    assert (partial["closedSize"], partial["execFee"]) == ("0.050", "1.793")
    pos = sim.position()
    assert (pos["side"], pos["size"], pos["avgPrice"]) == ("Buy", "0.150", "65050.00")
    assert pos["cumRealisedPnl"] == "-1.4485"  # −3.575 − 3.5805 + 7.5 − 1.793

    flip = take("Sell", "0.3", "64900.0")  # closes 0.15 at −150, opens 0.15 short
    assert (flip["closedSize"], flip["execFee"]) == ("0.150", "10.7085")
    pos = sim.position()
    assert (pos["side"], pos["size"], pos["avgPrice"]) == ("Sell", "0.150", "64900.00")
    assert pos["cumRealisedPnl"] == "-34.657"  # − 22.5 − 10.7085 more
    assert sim.wallet("USDT") == D("99965.343")
    assert sim.locked("USDT") == 0


# === 5. amend =============================================================================


def _amend(sim: Sim, order_id: str, **params: str) -> None:
    reply = sim.ex.amend_order(
        K, {"category": "linear", "symbol": SYMBOL, "orderId": order_id, **params}
    )
    assert reply.code == 0


def test_amend_price_requeues_at_the_back() -> None:
    sim = Sim()
    sim.book("linear")
    first = sim.place("linear", "Buy", "0.3", "64999.9")
    second = sim.place("linear", "Buy", "0.3", "64999.9")
    _amend(sim, first, price="64999.8")
    _amend(sim, first, price="64999.9")
    sim.trade("linear", "Sell", "64999.9", "1.4")  # 1.0 background, 0.3 second, 0.1 first
    assert _status(sim, "linear", second) == ("Filled", D("0.3"), D("0"))
    assert _status(sim, "linear", first) == ("PartiallyFilled", D("0.1"), D("0.2"))


def test_amend_qty_down_keeps_priority() -> None:
    sim = Sim()
    sim.book("linear")
    first = sim.place("linear", "Buy", "0.3", "64999.9")
    second = sim.place("linear", "Buy", "0.3", "64999.9")
    _amend(sim, first, qty="0.2")
    assert sim.order("linear", first)["qty"] == "0.200"
    assert sim.top("linear", "Buy", 1) == [(D("64999.9"), D("1.5"))]
    sim.trade("linear", "Sell", "64999.9", "1.3")  # 1.0 background, 0.2 first, 0.1 second
    assert _status(sim, "linear", first) == ("Filled", D("0.2"), D("0"))
    assert _status(sim, "linear", second) == ("PartiallyFilled", D("0.1"), D("0.2"))


def test_amend_qty_up_loses_priority() -> None:
    sim = Sim()
    sim.book("linear")
    first = sim.place("linear", "Buy", "0.3", "64999.9")
    second = sim.place("linear", "Buy", "0.3", "64999.9")
    _amend(sim, first, qty="0.4")
    sim.trade("linear", "Sell", "64999.9", "1.3")
    assert _status(sim, "linear", second) == ("Filled", D("0.3"), D("0"))
    assert _status(sim, "linear", first) == ("New", D("0"), D("0.4"))


def test_amend_post_only_to_a_crossing_price_cancels_it() -> None:
    sim = Sim()
    sim.book("linear")
    oid = sim.place("linear", "Buy", "0.3", "64999.9", timeInForce="PostOnly")
    _amend(sim, oid, price="65000.1")
    row = sim.order("linear", oid)
    assert (row["orderStatus"], row["rejectReason"], row["cumExecQty"]) == (
        "Cancelled",
        POST_ONLY_REASON,
        "0.000",
    )
    assert sim.executions("linear") == []
    assert sim.top("linear", "Buy", 1) == [(D("64999.9"), D("1.0"))]
    assert sim.top("linear", "Sell", 1) == [(D("65000.1"), D("1.0"))]
    cancel = {"category": "linear", "symbol": SYMBOL, "orderId": oid}
    assert _venue_error(sim.ex.cancel_order, K, cancel).code == 110001


def test_amend_spot_post_only_to_a_crossing_price_releases_its_funds() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Buy", "0.3", "64999.9", timeInForce="PostOnly")
    assert sim.locked("USDT") == D("19499.97")
    reply = sim.ex.amend_order(
        K, {"category": "spot", "symbol": SYMBOL, "orderId": oid, "price": "65000.1"}
    )
    assert reply.code == 0
    row = sim.order("spot", oid)
    assert row["orderStatus"] not in ("New", "PartiallyFilled")
    assert (row["rejectReason"], row["cumExecQty"]) == (POST_ONLY_REASON, "0.000000")
    assert sim.locked("USDT") == 0
    assert sim.executions("spot") == []


def test_amend_that_changes_nothing_is_refused() -> None:
    sim = Sim()
    sim.book("linear")
    oid = sim.place("linear", "Buy", "0.3", "64999.9")
    params = {"category": "linear", "symbol": SYMBOL, "orderId": oid, "price": "64999.9"}
    assert _venue_error(sim.ex.amend_order, K, params).code == 10001


# === 6. a scripted book that crosses resting user orders =================================


def test_set_book_through_a_resting_bid_fills_it_as_maker_at_its_price() -> None:
    sim = Sim()
    sim.book("linear")
    oid = sim.place("linear", "Buy", "0.3", "64999.9")
    sim.public.clear()
    sim.book(
        "linear",
        bids=[("64999.0", "1.0")],
        asks=[("64999.5", "0.2"), ("64999.8", "0.5"), ("65000.5", "1.0")],
    )
    row = sim.order("linear", oid)
    assert (row["orderStatus"], row["cumExecQty"], row["avgPrice"]) == (
        "Filled",
        "0.300",
        "64999.9",
    )
    fills = sim.executions("linear", oid)
    assert [(f["execPrice"], f["execQty"], f["isMaker"], f["feeRate"]) for f in fills] == [
        ("64999.90", "0.100", True, "0.0002"),  # newest first
        ("64999.90", "0.200", True, "0.0002"),
    ]
    assert sim.top("linear", "Sell") == [(D("64999.8"), D("0.4")), (D("65000.5"), D("1.0"))]
    assert sim.top("linear", "Buy") == [(D("64999.0"), D("1.0"))]
    pos = sim.position()
    assert (pos["side"], pos["size"], pos["avgPrice"]) == ("Buy", "0.300", "64999.90")
    trades = [e for m in sim.public_msgs("linear", f"publicTrade.{SYMBOL}") for e in m["data"]]
    assert [(e["S"], e["p"], e["v"]) for e in trades] == [
        ("Sell", "64999.90", "0.200"),
        ("Sell", "64999.90", "0.100"),
    ]


def test_set_book_through_a_resting_spot_ask_fills_it_as_maker_at_its_price() -> None:
    sim = Sim()
    sim.book("spot")
    oid = sim.place("spot", "Sell", "0.3", "65000.1")
    sim.book("spot", bids=[("65000.5", "0.5")], asks=[("65001.0", "1.0")])
    assert _status(sim, "spot", oid) == ("Filled", D("0.3"), D("0"))
    [fill] = sim.executions("spot", oid)
    assert (fill["execPrice"], fill["isMaker"], fill["feeCurrency"], fill["execFee"]) == (
        "65000.1",
        True,
        "USDT",
        "19.50003",  # 0.1 % of 19500.03
    )
    assert sim.top("spot", "Buy") == [(D("65000.5"), D("0.2"))]
    assert sim.locked("BTC") == 0
    assert sim.wallet("USDT") == D("100000") + D("19500.03") - D("19.50003")


def test_background_off_the_lot_grid_fills_a_user_order_in_whole_lots_only() -> None:
    """Bybit fills a linear order in multiples of qtyStep (0.001 here); a background level of
    0.0025 crossing a resting ask fills 0.002 of it and leaves the remnant (make chaos once
    met a 0.0025 fill, reported on the wire as 0.002 while the position moved by 0.0025)."""
    sim = Sim()
    sim.book("linear")
    oid = sim.place("linear", "Sell", "0.010", "65000.1")
    sim.book("linear", bids=[("65000.5", "0.0025")], asks=[("65001.0", "1.0")])
    [fill] = sim.executions("linear", oid)
    assert (fill["execQty"], D(fill["execValue"])) == ("0.002", D("0.002") * D("65000.1"))
    pos = sim.position()
    assert (pos["side"], pos["size"]) == ("Sell", "0.002")
    assert D(pos["positionValue"]) == D("0.002") * D("65000.1")  # the wire's size is rounded
    assert _status(sim, "linear", oid)[1] == D("0.002")
    assert sim.top("linear", "Buy") == []  # the 0.0005 left over does not cross the book


def test_a_taker_after_off_grid_background_fills_the_user_order_in_whole_lots() -> None:
    sim = Sim()
    sim.book("linear", bids=[("64999.0", "1.0")], asks=[("65000.1", "0.0025")])
    oid = sim.place("linear", "Sell", "0.010", "65000.1")  # queued behind 0.0025 background
    sim.trade("linear", "Buy", "65000.1", "0.010")
    [fill] = sim.executions("linear", oid)
    assert D(fill["execValue"]) == D("0.007") * D("65000.1")  # not the 0.0075 left over


# === 7. private messages ===================================================================


def test_a_fill_pushes_order_execution_position_and_wallet_to_both_accounts() -> None:
    sim = Sim(two_account_config())
    sim.book("linear")
    maker = sim.place("linear", "Sell", "0.1", "65000.0", key=OTHER)
    sim.private.clear()
    taker = sim.place("linear", "Buy", "0.1", "65000.0", timeInForce="IOC")

    assert sim.private_topics() == ["order", "execution", "position", "wallet"]
    assert sim.private_topics(key=OTHER) == ["order", "execution", "position", "wallet"]
    envelope = sim.private_msgs("order")[0]
    assert isinstance(envelope["id"], str)
    assert (envelope["topic"], envelope["creationTime"]) == ("order", T0)

    [order] = sim.private_msgs("order")[0]["data"]
    assert {k: order[k] for k in ("orderId", "category", "orderStatus", "timeInForce")} == {
        "orderId": taker,
        "category": "linear",
        "orderStatus": "Filled",
        "timeInForce": "IOC",
    }
    assert (order["price"], order["qty"], order["cumExecQty"], order["leavesQty"]) == (
        "65000.00",
        "0.100",
        "0.100",
        "0.000",
    )
    assert (order["avgPrice"], order["cumExecValue"], order["cumExecFee"]) == (
        "65000",
        "6500",
        "3.575",
    )
    assert order["createdTime"] == str(T0)

    [execution] = sim.private_msgs("execution")[0]["data"]
    assert (execution["orderId"], execution["execType"], execution["isMaker"]) == (
        taker,
        "Trade",
        False,
    )
    assert (execution["execPrice"], execution["execQty"], execution["execFee"]) == (
        "65000.00",
        "0.100",
        "3.575",
    )
    [maker_exec] = sim.private_msgs("execution", key=OTHER)[0]["data"]
    assert (maker_exec["orderId"], maker_exec["isMaker"], maker_exec["execFee"]) == (
        maker,
        True,
        "1.3",
    )

    [position] = sim.private_msgs("position")[0]["data"]
    assert (position["side"], position["size"], position["entryPrice"]) == (
        "Buy",
        "0.100",
        "65000.00",
    )
    [short] = sim.private_msgs("position", key=OTHER)[0]["data"]
    assert (short["side"], short["size"]) == ("Sell", "0.100")

    [wallet] = sim.private_msgs("wallet")[0]["data"]
    assert wallet["accountType"] == "UNIFIED"
    usdt = {c["coin"]: c for c in wallet["coin"]}["USDT"]
    assert usdt["walletBalance"] == "99996.425"
    [other_wallet] = sim.private_msgs("wallet", key=OTHER)[0]["data"]
    assert {c["coin"]: c for c in other_wallet["coin"]}["USDT"]["walletBalance"] == "49998.7"


def test_a_spot_fill_pushes_no_position_and_both_coins() -> None:
    sim = Sim()
    sim.book("spot")
    sim.private.clear()
    sim.place("spot", "Buy", "0.01", "65000.1", timeInForce="IOC")
    assert sim.private_topics() == ["order", "execution", "wallet"]
    [order] = sim.private_msgs("order")[0]["data"]
    assert (order["category"], order["feeCurrency"], order["cumExecFee"]) == (
        "spot",
        "BTC",
        "0.00001",
    )
    [wallet] = sim.private_msgs("wallet")[0]["data"]
    coins = {c["coin"]: c["walletBalance"] for c in wallet["coin"]}
    assert coins == {"BTC": "2.00999", "USDT": "99349.999"}


@pytest.mark.parametrize(
    ("topic", "fixture"),
    [
        ("order", "ws_private_order.json"),
        ("execution", "ws_private_execution.json"),
        ("position", "ws_private_position.json"),
        ("wallet", "ws_private_wallet.json"),
    ],
)
def test_private_messages_have_the_official_examples_keys(topic: str, fixture: str) -> None:
    example = json.loads((FIXTURES / "bybit" / fixture).read_text())
    sim = Sim()
    sim.book("linear")
    sim.place("linear", "Buy", "0.1", "65000.1", timeInForce="IOC")
    message = sim.private_msgs(topic)[-1]
    assert set(message) == set(example)
    expected = set(example["data"][0])
    if topic == "order":  # the only official example is an option order; the docs' field
        # table adds these for a linear order
        expected |= {"isLeverage", "marketUnit", "slippageToleranceType", "slippageTolerance"}
        expected |= {"createType"}
    assert set(message["data"][0]) == expected


# === 8. public feed ========================================================================


def test_orderbook50_snapshot_then_deltas_with_contiguous_u() -> None:
    sim = Sim()
    sim.book("linear")
    raw = sim.ex.snapshot_for("linear", f"orderbook.50.{SYMBOL}")
    assert raw is not None
    snap = json.loads(raw)
    assert (snap["topic"], snap["type"]) == (f"orderbook.50.{SYMBOL}", "snapshot")
    assert snap["data"]["b"] == [["64999.90", "1.000"], ["64999.80", "2.000"]]
    assert snap["data"]["a"] == [["65000.10", "1.000"], ["65000.20", "2.000"]]
    u0 = snap["data"]["u"]
    sim.public.clear()

    sim.book("linear", bids=[("64999.9", "1.5"), ("64999.8", "2.0")])
    sim.place("linear", "Buy", "0.2", "64999.7")
    sim.trade("linear", "Buy", "65000.1", "0.4")
    deltas = sim.public_msgs("linear", f"orderbook.50.{SYMBOL}")
    assert [d["type"] for d in deltas] == ["delta"] * 3
    assert [d["data"]["u"] for d in deltas] == [u0 + 1, u0 + 2, u0 + 3]
    assert (deltas[0]["data"]["b"], deltas[0]["data"]["a"]) == ([["64999.90", "1.500"]], [])
    assert (deltas[1]["data"]["b"], deltas[1]["data"]["a"]) == ([["64999.70", "0.200"]], [])
    assert (deltas[2]["data"]["b"], deltas[2]["data"]["a"]) == ([], [["65000.10", "0.600"]])


def test_orderbook50_delta_deletes_a_level_with_size_zero_string() -> None:
    sim = Sim()
    sim.book("linear")
    assert sim.ex.snapshot_for("linear", f"orderbook.50.{SYMBOL}") is not None
    sim.public.clear()
    sim.book("linear", bids=[("64999.9", "1.0")])  # 64999.8 goes away
    [delta] = sim.public_msgs("linear", f"orderbook.50.{SYMBOL}")
    assert (delta["data"]["b"], delta["data"]["a"]) == ([["64999.80", "0"]], [])


def test_orderbook50_delta_removing_a_level_sends_zero_size() -> None:
    sim = Sim()
    sim.book("linear")
    raw = sim.ex.snapshot_for("linear", f"orderbook.50.{SYMBOL}")
    assert raw is not None
    u0 = json.loads(raw)["data"]["u"]
    sim.public.clear()
    sim.book("linear", bids=[("64999.9", "1.0")])
    [delta] = sim.public_msgs("linear", f"orderbook.50.{SYMBOL}")
    assert delta["data"]["u"] == u0 + 1
    [[price, size]] = delta["data"]["b"]
    assert (price, D(size)) == ("64999.80", 0)


def test_orderbook1_is_resent_after_3_s_with_the_same_u() -> None:
    sim = Sim()
    sim.book("linear")
    topic = f"orderbook.1.{SYMBOL}"
    [first] = sim.public_msgs("linear", topic)
    assert (first["type"], first["data"]["b"], first["data"]["a"]) == (
        "snapshot",
        [["64999.90", "1.000"]],
        [["65000.10", "1.000"]],
    )
    sim.public.clear()
    sim.step(2999)
    assert sim.public_msgs("linear", topic) == []
    sim.step(1)
    [again] = sim.public_msgs("linear", topic)
    assert again["data"]["u"] == first["data"]["u"]
    assert (again["data"]["b"], again["data"]["a"]) == (first["data"]["b"], first["data"]["a"])
    assert again["ts"] == T0 + 3000
    sim.public.clear()
    sim.book("linear", bids=[("64999.9", "1.5")])
    [changed] = sim.public_msgs("linear", topic)
    assert changed["data"]["u"] == first["data"]["u"] + 1
    assert changed["data"]["b"] == [["64999.90", "1.500"]]


def test_skip_u_makes_the_next_delta_jump_by_two() -> None:
    sim = Sim()
    sim.book("linear")
    raw = sim.ex.snapshot_for("linear", f"orderbook.50.{SYMBOL}")
    assert raw is not None
    u0 = json.loads(raw)["data"]["u"]
    sim.public.clear()
    sim.ex.skip_u("linear", SYMBOL)
    sim.book("linear", bids=[("64999.9", "1.5"), ("64999.8", "2.0")])
    sim.book("linear", bids=[("64999.9", "1.6"), ("64999.8", "2.0")])
    deltas = sim.public_msgs("linear", f"orderbook.50.{SYMBOL}")
    assert [d["data"]["u"] for d in deltas] == [u0 + 2, u0 + 3]


def test_a_second_tickers_subscriber_does_not_hide_changes_from_the_first() -> None:
    sim = Sim()
    sim.book("linear")
    topic = f"tickers.{SYMBOL}"
    raw = sim.ex.snapshot_for("linear", topic)  # subscriber A
    assert raw is not None
    seen = dict(json.loads(raw)["data"])
    assert seen["bid1Size"] == "1.000"
    sim.book("linear", bids=[("64999.9", "1.5"), ("64999.8", "2.0")])
    assert sim.ex.snapshot_for("linear", topic) is not None  # subscriber B, before the push
    sim.public.clear()
    sim.step(100)  # the next tickers push
    for message in sim.public_msgs("linear", topic):
        seen.update(message["data"])
    assert seen["bid1Size"] == "1.500"


def test_market_data_queries_reflect_the_book_and_the_config() -> None:
    sim = Sim()
    sim.book("spot")
    sim.book("linear")
    sim.place("linear", "Buy", "0.5", "64999.9")  # user size shows in the aggregated level
    book = sim.ex.orderbook({"category": "linear", "symbol": SYMBOL}).result
    assert (book["s"], book["b"], book["a"], book["ts"]) == (
        SYMBOL,
        [["64999.90", "1.500"], ["64999.80", "2.000"]],
        [["65000.10", "1.000"], ["65000.20", "2.000"]],
        T0,
    )
    spot = sim.ex.orderbook({"category": "spot", "symbol": SYMBOL}).result  # depth 1 default
    assert (spot["b"], spot["a"]) == ([["64999.9", "1.000000"]], [["65000.1", "1.000000"]])
    assert sim.ex.server_time().result == {
        "timeSecond": str(T0 // 1000),
        "timeNano": str(T0 * 1_000_000),
    }
    fees = sim.ex.fee_rate(K, {"category": "linear", "symbol": SYMBOL}).result["list"]
    assert fees == [{"symbol": SYMBOL, "takerFeeRate": "0.00055", "makerFeeRate": "0.0002"}]
    [ticker] = sim.ex.tickers({"category": "linear", "symbol": SYMBOL}).result["list"]
    assert (ticker["bid1Price"], ticker["bid1Size"], ticker["ask1Price"], ticker["markPrice"]) == (
        "64999.90",
        "1.500",
        "65000.10",
        "65000.00",
    )


# === 9. determinism =======================================================================


def _small_config() -> SimConfig:
    config = default_config()
    return msgspec.structs.replace(
        config,
        instruments=config.instruments[:1],
        model=msgspec.structs.replace(config.model, depth_levels=10),
    )


def _run(seed: int) -> tuple[str, str, Sim]:
    sim = Sim(_small_config(), seed=seed, frozen=False)
    for step in range(200):  # 20 s of clock in 100 ms steps
        sim.step(100)
        if step == 20:
            bid = sim.top("linear", "Buy", 1)[0][0]
            sim.place("linear", "Buy", "0.05", str(bid), timeInForce="PostOnly")
            ask = sim.top("spot", "Sell", 1)[0][0]
            sim.place("spot", "Sell", "0.01", str(ask), orderLinkId="det-ask")
        elif step == 80:
            sim.place("linear", "Sell", "0.02")
        elif step == 150:
            sim.ex.cancel_all(K, {"category": "linear", "symbol": SYMBOL})

    def digest(stream: list[tuple[str, str, bytes]]) -> str:
        h = hashlib.sha256()
        for who, topic, message in stream:
            h.update(f"{who}|{topic}|".encode() + message + b"\n")
        return h.hexdigest()

    return digest(sim.public), digest(sim.private), sim


def test_same_seed_same_clock_same_actions_give_identical_streams() -> None:
    public_a, private_a, sim = _run(7)
    public_b, private_b, _ = _run(7)
    assert (public_a, private_a) == (public_b, private_b)
    topics = {topic for _, topic, _ in sim.public}
    assert {f"orderbook.1.{SYMBOL}", f"publicTrade.{SYMBOL}", f"tickers.{SYMBOL}"} <= topics
    assert len(sim.public) > 500
    assert len(sim.ex.accounts[K].executions) > 0
    public_c, _, _ = _run(8)
    assert public_c != public_a


# === 10. journal ==========================================================================


def _snapshot(sim: Sim) -> dict[str, Any]:
    """Everything a restart must keep (mark-dependent position fields aside)."""
    history = {
        c: sim.ex.order_history(K, {"category": c, "limit": "50"}).result["list"]
        for c in CATEGORIES
    }
    return {
        "orders": sim.ex.all_orders(),
        "accounts": sim.ex.all_accounts(),
        "history": history,
        "executions": {c: sim.executions(c) for c in CATEGORIES},
        "coins": msgspec.to_builtins(sim.ex.accounts[K].coins),
        "position": {k: v for k, v in sim.position().items() if k not in MARK_FIELDS},
    }


def _journal_scenario(path: Path) -> Sim:
    """Orders, fills, a cancel and a leverage change; two orders stay open far from 65000."""
    sim = Sim(journal_path=path)
    sim.book("spot")
    sim.book("linear")
    sim.place("spot", "Buy", "0.1", "60000.0", orderLinkId="spot-rest")
    sim.t[0] += 1000
    sim.place("spot", "Buy", "1000")
    sim.t[0] += 1000
    gone = sim.place("spot", "Sell", "0.01", "70000.0")
    sim.ex.cancel_order(K, {"category": "spot", "symbol": SYMBOL, "orderId": gone})
    sim.place("linear", "Buy", "0.2", "64999.9", timeInForce="PostOnly", orderLinkId="lin-bid")
    sim.t[0] += 1000
    sim.trade("linear", "Sell", "64999.9", "1.1")  # 0.1 of lin-bid fills
    sim.place("linear", "Buy", "0.1")
    sim.place("linear", "Sell", "0.05", "70000.0", orderLinkId="lin-ask")
    sim.ex.set_leverage(
        K, {"category": "linear", "symbol": SYMBOL, "buyLeverage": "5", "sellLeverage": "5"}
    )
    return sim


def test_a_restart_restores_orders_executions_balances_and_positions(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = _journal_scenario(path)
    before = _snapshot(first)
    assert len(before["executions"]["linear"]) == 2
    assert before["position"]["size"] == "0.200"
    first.close()

    second = Sim(journal_path=path)
    assert _snapshot(second) == before
    # it carries on: the open orders are live and new ids do not collide
    spot_rest = {"category": "spot", "symbol": SYMBOL, "orderLinkId": "spot-rest"}
    assert second.ex.cancel_order(K, spot_rest).code == 0
    assert second.locked("USDT") == 0
    second.book("linear")
    new = second.place("linear", "Buy", "0.1", "65000.1", timeInForce="IOC")
    assert new not in {row["orderId"] for row in before["orders"]}
    exec_ids = [ex.exec_id for ex in second.ex.accounts[K].executions]
    assert len(exec_ids) == len(set(exec_ids)) == 4
    second.close()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = _journal_scenario(path)
    before = _snapshot(first)
    first.close()
    with path.open("ab") as handle:
        handle.write(b'["o",{"order_id":"torn","link_id":"","api_key":"arbh')
    second = Sim(journal_path=path)
    assert _snapshot(second) == before
    second.close()


def test_a_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "state"
    _journal_scenario(path).close()
    lines = path.read_bytes().split(b"\n")
    lines[len(lines) // 2] = b'["o",{"not an order":1}]'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError):
        Sim(journal_path=path)


def test_a_torn_operation_is_not_half_applied(tmp_path: Path) -> None:
    path = tmp_path / "state"
    sim = Sim(journal_path=path)
    sim.book("spot")
    sim.place("spot", "Sell", "0.1", "65000.1")
    before = _snapshot(sim)
    size = path.stat().st_size
    sim.trade("spot", "Buy", "65000.1", "1.5")  # fills the ask: order, execution, coins
    sim.close()
    raw = path.read_bytes()
    first_line = raw.index(b"\n", size) + 1  # the operation's order record is complete
    path.write_bytes(raw[: first_line + 20])  # ... and the kill came during the next line
    again = Sim(journal_path=path)
    assert _snapshot(again) == before
    again.close()


def test_fills_made_while_starting_up_survive_the_next_restart(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = Sim(journal_path=path)
    first.book("spot", bids=[("63000.0", "1.0")], asks=[("63000.1", "1.0")])
    first.place("spot", "Sell", "0.1", "64000.0")  # below the model's 65000 start
    first.close()
    second = Sim(journal_path=path)  # its initial book crosses the resting ask
    second.place("spot", "Buy", "0.01", "50000.0")  # any acknowledged operation
    state = _snapshot(second)
    second.close()
    third = Sim(journal_path=path)
    assert _snapshot(third) == state
    third.close()


# === 11. funding ===========================================================================


@pytest.mark.parametrize(
    ("side", "price", "fee", "usdt"),
    [("Buy", "65000.1", "0.65", "-0.65"), ("Sell", "64999.9", "-0.65", "0.65")],
)
def test_funding_is_paid_at_the_interval_boundary(
    side: str, price: str, fee: str, usdt: str
) -> None:
    sim = Sim(_with_model(funding_interval_s=60))
    sim.book("linear")
    sim.place("linear", side, "0.1", price, timeInForce="IOC")
    sim.book("linear")  # mark back to 65000
    wallet = sim.wallet("USDT")
    boundary = (T0 // 60_000 + 1) * 60_000
    sim.t[0] = boundary - 1
    sim.ex.advance()
    assert sim.executions("linear", execType="Funding") == []
    sim.private.clear()
    sim.t[0] = boundary
    sim.ex.advance()
    [funding] = sim.executions("linear", execType="Funding")
    assert (funding["execType"], funding["side"], funding["execQty"]) == ("Funding", side, "0.100")
    assert (funding["execPrice"], funding["feeRate"], funding["execFee"]) == (
        "65000.00",
        "0.0001",
        fee,
    )  # 0.1 × 65000 × 0.0001
    assert funding["execTime"] == str(boundary)
    assert sim.wallet("USDT") == wallet + D(usdt)
    assert {"execution", "position", "wallet"} <= set(sim.private_topics())
    sim.t[0] = boundary + 60_000
    sim.ex.advance()
    assert len(sim.executions("linear", execType="Funding")) == 2
    assert sim.wallet("USDT") == wallet + 2 * D(usdt)


def test_no_funding_without_a_position() -> None:
    sim = Sim(_with_model(funding_interval_s=60))
    sim.book("linear")
    sim.t[0] = (T0 // 60_000 + 2) * 60_000
    sim.ex.advance()
    assert sim.executions("linear") == []
    assert sim.wallet("USDT") == D("100000")


# === reduce-only ==========================================================================


def test_reduce_only_without_a_position_opens_nothing() -> None:
    sim = Sim()
    sim.book("linear")
    try:
        sim.place("linear", "Sell", "0.1", "64999.9", timeInForce="IOC", reduceOnly="true")
    except VenueError as err:  # Bybit: 110017 "current position is zero, cannot fix ..."
        assert err.code == 110017
    assert sim.position()["size"] == "0.000"


def test_reduce_only_larger_than_the_position_only_closes_it() -> None:
    sim = Sim()
    sim.book("linear")
    sim.place("linear", "Buy", "0.1", "65000.1", timeInForce="IOC")
    sim.place("linear", "Sell", "0.3", "64999.9", timeInForce="IOC", reduceOnly="true")
    pos = sim.position()
    assert (pos["side"], pos["size"]) == ("", "0.000")

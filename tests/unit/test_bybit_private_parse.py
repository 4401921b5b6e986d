"""Bybit order, execution, position, wallet and order-book parsing, and retCode classification.

Values come from the official examples in fixtures/bybit; the PostOnly and funding cases,
which have no official example, come from the simulator's in-process engine (it speaks the
same wire), so parser and simulator are checked against each other.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.conftest import FIXTURES
from tests.unit.sim_helpers import Sim
from worker.core.events import Execution, FundingPayment
from worker.core.model import OrderStatus, RejectKind
from worker.venues.bybit import errors
from worker.venues.bybit.parse import (
    BybitError,
    executions,
    order_updates,
    parse_book,
    parse_list,
    parse_order_ack,
    parse_private,
    positions,
    wallet_balances,
)

BYBIT = FIXTURES / "bybit"
D = Decimal


def _body(name: str) -> bytes:
    return (BYBIT / name).read_bytes()


def test_order_ack() -> None:
    ack = parse_order_ack(_body("rest_order_create_response.json"))
    assert (ack.order_id, ack.order_link_id) == ("1321003749386327552", "spot-test-postonly")


def test_open_order_list_row() -> None:
    listed = parse_list(_body("rest_order_realtime_response.json"))
    assert listed.category == "linear"
    assert listed.next_page_cursor.startswith("page_args")
    [update] = order_updates(listed.items)
    assert update.link_id == "test-000005"
    assert update.order_id == "fd4300ae-7847-404e-b947-b46980a4d140"
    assert update.status is OrderStatus.OPEN
    assert (update.qty, update.price, update.cum_qty) == (D("0.10"), D("1600.00"), D("0.00"))
    assert update.cum_value == D("0")
    assert update.avg_price is None  # "0": nothing traded yet
    assert (update.cum_fee, update.fee_coin) == (D("0.00242968"), "MNT")  # cumFeeDetail wins
    assert update.updated_ms == 1684738540561
    assert update.reject is None


def test_history_row_of_a_post_only_cross_is_a_post_only_rejection() -> None:
    [update] = order_updates(parse_list(_body("rest_order_history_response.json")).items)
    assert update.status is OrderStatus.REJECTED
    assert update.reject is RejectKind.POST_ONLY
    assert update.reject_text == "EC_PostOnlyWillTakeLiquidity"


def test_order_topic_push() -> None:
    message = parse_private(_body("ws_private_order.json"))
    assert message.topic == "order"
    [update] = order_updates(message.data)
    assert update.status is OrderStatus.FILLED
    assert (update.cum_qty, update.cum_value, update.avg_price) == (D("1"), D("75"), D("75"))
    assert update.price == D("72.5")


def test_execution_list_and_topic() -> None:
    [fill] = executions(parse_list(_body("rest_execution_list_response.json")).items)
    assert isinstance(fill, Execution)
    assert (fill.exec_id, fill.qty, fill.price) == (
        "e0cbe81d-0f18-5866-9415-cf319b5dab3b",
        D("0.1"),
        D("1190.15"),
    )
    assert (fill.fee, fill.is_maker, fill.exec_ms) == (D("0.071409"), False, 1672282722429)
    [pushed] = executions(parse_private(_body("ws_private_execution.json")).data)
    assert isinstance(pushed, Execution)
    assert (pushed.qty, pushed.price, pushed.fee, pushed.fee_coin) == (
        D("0.5"),
        D("95900.1"),
        D("26.3725275"),
        "USDT",
    )


def test_positions_rest_and_topic() -> None:
    [short] = positions(parse_list(_body("rest_position_list_response.json")).items)
    assert (short.symbol, short.size, short.avg_price) == ("BTCUSD", D("-300"), D("27464.50441675"))
    [flat] = positions(parse_private(_body("ws_private_position.json")).data)
    assert (flat.symbol, flat.size, flat.avg_price) == ("BTCUSDT", D("0"), D("0"))


def test_wallet_rest_and_topic() -> None:
    rest = parse_list(_body("rest_wallet_balance_response.json")).items
    [btc] = wallet_balances(rest)
    assert (btc.coin, btc.total, btc.available) == ("BTC", D("0"), D("0"))
    [pushed] = wallet_balances(parse_private(_body("ws_private_wallet.json")).data)
    assert (pushed.coin, pushed.total, pushed.available) == (
        "BTC",
        D("0.00102964"),
        D("0.00102964"),
    )


def test_orderbook_delta_keeps_deletes_and_order() -> None:
    update = parse_book(_body("ws_orderbook_delta_linear_50.json"))
    assert (update.symbol, update.depth, update.snapshot) == ("BTCUSDT", 50, False)
    assert (update.update_id, update.seq, update.ts_ms) == (177400507, 66544703342, 1687940967464)
    assert update.bids[0] == (D("30247.20"), D("30.028"))
    assert (D("30240.00"), D("0")) in update.bids
    assert update.asks[0] == (D("30248.70"), D("0"))


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"X","b":[],"a":[],"u":1}}',
        b'{"topic":"orderbook.50.X","type":"delta","ts":1,"data":{"s":"X","b":[["1","x"]],"a":[],"u":1}}',
        b'{"topic":"orderbook.50.X","type":"delta","ts":1,"data":{"s":"X","b":[["-1","1"]],"a":[],"u":1}}',
    ],
)
def test_bad_book_messages_raise_bybit_error(raw: bytes) -> None:
    with pytest.raises(BybitError):
        parse_book(raw)


def test_unknown_order_status_and_two_fee_coins_raise() -> None:
    row = json.loads(_body("ws_private_order.json"))["data"][0]
    with pytest.raises(BybitError, match="unknown status"):
        order_updates(json.dumps([{**row, "orderStatus": "Teleported"}]).encode())
    with pytest.raises(BybitError, match="several coins"):
        order_updates(json.dumps([{**row, "cumFeeDetail": {"BTC": "1", "USDT": "2"}}]).encode())


# --- the simulator's pushes --------------------------------------------------------------------


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_simulator_post_only_cross_parses_as_post_only_rejection(category: str) -> None:
    sim = Sim()
    sim.book(category)
    ask = sim.top(category, "Sell", 1)[0][0]
    sim.place(category, "Buy", "0.01", str(ask), timeInForce="PostOnly", orderLinkId="po-1")
    pushes = [m for m in sim.private_msgs("order")]
    [update] = order_updates(json.dumps(pushes[-1]["data"]).encode())
    assert update.link_id == "po-1"
    assert (update.status, update.reject) == (OrderStatus.REJECTED, RejectKind.POST_ONLY)


def test_simulator_spot_buy_fee_is_in_the_base_coin() -> None:
    sim = Sim()
    sim.book("spot")
    bid = sim.top("spot", "Buy", 1)[0][0]
    sim.place("spot", "Buy", "0.01", str(bid), timeInForce="PostOnly", orderLinkId="fee-1")
    sim.trade("spot", "Sell", str(bid), "100")
    [update] = order_updates(json.dumps(sim.private_msgs("order")[-1]["data"]).encode())
    assert update.status is OrderStatus.FILLED
    assert (update.cum_fee, update.fee_coin) == (D("0.00001"), "BTC")
    fills = executions(json.dumps(sim.private_msgs("execution")[-1]["data"]).encode())
    assert [(f.qty, f.fee, f.fee_coin) for f in fills if isinstance(f, Execution)] == [
        (D("0.010000"), D("0.00001"), "BTC")
    ]


def test_simulator_funding_is_a_payment_with_the_venue_sign() -> None:
    sim = Sim()
    sim.book("linear")
    sim.place("linear", "Buy", "0.1", None)  # a long pays positive funding
    sim.step(8 * 3600 * 1000)
    pushes = [m for m in sim.private_msgs("execution") if m["data"][0]["execType"] == "Funding"]
    [payment] = executions(json.dumps(pushes[-1]["data"]).encode())
    assert isinstance(payment, FundingPayment)
    assert payment.amount < 0


# --- retCode classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (10006, RejectKind.RATE_LIMITED),
        (110001, RejectKind.NOT_FOUND),
        (170213, RejectKind.NOT_FOUND),
        (110007, RejectKind.INSUFFICIENT_BALANCE),
        (170131, RejectKind.INSUFFICIENT_BALANCE),
        (110094, RejectKind.BELOW_MINIMUM),
        (170136, RejectKind.BELOW_MINIMUM),
        (170140, RejectKind.BELOW_MINIMUM),
        (170134, RejectKind.INVALID),
        (170137, RejectKind.INVALID),
        (170142, RejectKind.FINISHED),
    ],
)
def test_definitive_refusals(code: int, kind: RejectKind) -> None:
    assert errors.classify(code) is kind


@pytest.mark.parametrize("code", [110072, 170141, 10000, 10016, 999999])
def test_duplicates_and_unlisted_codes_are_unknown_outcomes(code: int) -> None:
    """A duplicate orderLinkId may mean an earlier, unanswered attempt landed: query it."""
    assert errors.classify(code) is None

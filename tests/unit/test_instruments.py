"""Rounding helpers of ``worker.core.instruments``: every order's price and size pass here.

Directions matter more than values: a buy price never rises, a sell price never falls, a held
quantity is never exceeded, and a grossed-up buy always nets at least what the hedge needs.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.core.instruments import (
    Category,
    InstrumentRules,
    buy_price,
    ceil_to,
    floor_to,
    gross_up_buy,
    sell_price,
    tradeable,
    trunc_to,
)

D = Decimal


def _rules(
    *,
    tick: str = "0.1",
    step: str = "0.000001",
    min_qty: str = "0.000011",
    min_notional: str = "5",
) -> InstrumentRules:
    """Defaults are Bybit's official spot BTCUSDT example."""
    return InstrumentRules(
        symbol="BTCUSDT",
        category=Category.SPOT,
        base_coin="BTC",
        quote_coin="USDT",
        tick_size=D(tick),
        qty_step=D(step),
        min_qty=D(min_qty),
        min_notional=D(min_notional),
    )


# --- floor / ceil / trunc ---------------------------------------------------------------------

ROUNDING_TABLE = [
    # value, step, floor, ceil, trunc
    ("0.15", "0.1", "0.1", "0.2", "0.1"),
    ("-0.15", "0.1", "-0.2", "-0.1", "-0.1"),
    ("0.2", "0.1", "0.2", "0.2", "0.2"),
    ("-0.2", "0.1", "-0.2", "-0.2", "-0.2"),
    ("0", "0.001", "0", "0", "0"),
    ("0.0009", "0.001", "0", "0.001", "0"),
    ("-0.0009", "0.001", "-0.001", "0", "0"),
    ("1.0000001", "0.000001", "1", "1.000001", "1"),
    ("-1.0000001", "0.000001", "-1.000001", "-1", "-1"),
    ("12.34", "0.5", "12", "12.5", "12"),
    ("-12.34", "0.5", "-12.5", "-12", "-12"),
    ("7", "5", "5", "10", "5"),
    ("-7", "5", "-10", "-5", "-5"),
    ("65432.15", "0.10", "65432.1", "65432.2", "65432.1"),
    ("3", "1", "3", "3", "3"),
]


@pytest.mark.parametrize(("value", "step", "floor", "ceil", "trunc"), ROUNDING_TABLE)
def test_floor_ceil_trunc(value: str, step: str, floor: str, ceil: str, trunc: str) -> None:
    assert floor_to(D(value), D(step)) == D(floor)
    assert ceil_to(D(value), D(step)) == D(ceil)
    assert trunc_to(D(value), D(step)) == D(trunc)


prices = st.decimals(
    min_value=D("-100000"), max_value=D("100000"), places=8, allow_nan=False, allow_infinity=False
)
steps = st.sampled_from([D(s) for s in ("0.000001", "0.0001", "0.001", "0.01", "0.1", "0.5", "1")])


@given(value=prices, step=steps)
def test_rounding_properties(value: Decimal, step: Decimal) -> None:
    """On the grid, within one step, on the promised side; trunc never grows the magnitude."""
    low, high, toward_zero = floor_to(value, step), ceil_to(value, step), trunc_to(value, step)
    for rounded in (low, high, toward_zero):
        assert rounded % step == 0
    assert low <= value <= high
    assert value - low < step
    assert high - value < step
    assert abs(toward_zero) <= abs(value)
    assert abs(value) - abs(toward_zero) < step
    assert toward_zero == (low if value >= 0 else high)


# --- prices -----------------------------------------------------------------------------------

PRICE_TABLE = [
    # price, tick, buy, sell
    ("65000.05", "0.1", "65000", "65000.1"),
    ("65000.1", "0.1", "65000.1", "65000.1"),
    ("0.123456", "0.0001", "0.1234", "0.1235"),
    ("100", "0.10", "100", "100"),
    ("99.99", "0.5", "99.5", "100"),
]


@pytest.mark.parametrize(("price", "tick", "buy", "sell"), PRICE_TABLE)
def test_buy_and_sell_price_table(price: str, tick: str, buy: str, sell: str) -> None:
    rules = _rules(tick=tick)
    assert buy_price(D(price), rules) == D(buy)
    assert sell_price(D(price), rules) == D(sell)


positive_prices = st.decimals(
    min_value=D("0.00000001"), max_value=D("1000000"), places=8, allow_nan=False
)
ticks = st.sampled_from([D(s) for s in ("0.00001", "0.0001", "0.01", "0.1", "0.10", "0.5", "1")])


@given(price=positive_prices, tick=ticks)
def test_buy_price_never_above_sell_price_never_below(price: Decimal, tick: Decimal) -> None:
    rules = _rules(tick=str(tick))
    bid = buy_price(price, rules)
    ask = sell_price(price, rules)
    assert bid <= price <= ask
    assert price - bid < tick
    assert ask - price < tick
    assert bid % tick == 0
    assert ask % tick == 0


# --- tradeable --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "price", "expected"),
    [
        ("0.001", "5000", True),  # exactly min_qty and exactly min_notional
        ("0.001", "4999.9", False),  # notional just below
        ("0.0009", "100000", False),  # quantity just below
        ("0.002", "2500", True),  # notional exactly at the minimum
        ("0", "100000", False),
        ("-0.001", "100000", False),
    ],
)
def test_tradeable_at_and_around_the_minimums(qty: str, price: str, expected: bool) -> None:
    rules = _rules(step="0.001", min_qty="0.001", min_notional="5")
    assert tradeable(D(qty), D(price), rules) is expected


def test_tradeable_zero_is_never_tradeable_even_without_minimums() -> None:
    rules = _rules(min_qty="0", min_notional="0")
    assert tradeable(D(0), D(100), rules) is False
    assert tradeable(D("0.000001"), D(100), rules) is True


def test_tradeable_official_spot_minimums() -> None:
    """Spot BTCUSDT: minOrderQty 0.000011 and minOrderAmt 5, each hit exactly."""
    rules = _rules()
    assert tradeable(D("0.000011"), D(5) / D("0.000011"), rules) is True
    assert tradeable(D("0.0001"), D("50000"), rules) is True  # 5 USDT exactly
    assert tradeable(D("0.0001"), D("49999.9"), rules) is False
    assert tradeable(D("0.00001"), D("1000000"), rules) is False  # 10 USDT but below min_qty


# --- gross_up_buy -----------------------------------------------------------------------------


def _net_after_fee(qty: Decimal, rate: Decimal, fee_grid: Decimal | None) -> Decimal:
    """What the wallet receives when the fee is taken in the base coin.

    ``fee_grid`` models the venue rounding its fee up on a grid finer than the quantity step
    (``None`` = exact fee); rounding up is the worst case for the buyer.
    """
    fee = qty * rate
    if fee_grid is not None:
        fee = (fee / fee_grid).to_integral_value(rounding=ROUND_CEILING) * fee_grid
    return qty - fee


fee_rates = st.decimals(min_value=D("0.00001"), max_value=D("0.05"), places=6)
nets = st.decimals(min_value=D("0.000001"), max_value=D("1000"), places=6)
qty_steps = st.sampled_from([D(s) for s in ("0.000001", "0.00001", "0.001", "0.01", "1")])


@given(net=nets, rate=fee_rates, step=qty_steps, fee_grid_divisor=st.sampled_from([None, 10, 100]))
def test_gross_up_buy_nets_at_least_the_request(
    net: Decimal, rate: Decimal, step: Decimal, fee_grid_divisor: int | None
) -> None:
    rules = _rules(step=str(step))
    qty = gross_up_buy(net, rate, rules)
    fee_grid = None if fee_grid_divisor is None else step / fee_grid_divisor
    assert qty % step == 0
    assert _net_after_fee(qty, rate, fee_grid) >= net
    # Never more than two steps beyond the exact gross-up: the excess is only dust.
    assert qty - net / (1 - rate) <= 2 * step


@pytest.mark.parametrize(
    ("net", "rate", "step", "expected"),
    [
        ("0.001", "0.001", "0.000001", "0.001003"),  # ceil(0.001001001..) + one step
        ("1", "0.001", "0.000001", "1.001003"),  # ceil(1.001001001..) = 1.001002, + step
        ("0.5", "0.1", "0.01", "0.57"),  # ceil(0.5555..) = 0.56, + step
    ],
)
def test_gross_up_buy_table(net: str, rate: str, step: str, expected: str) -> None:
    assert gross_up_buy(D(net), D(rate), _rules(step=step)) == D(expected)


@given(
    net=nets,
    rate=st.one_of(st.just(D(0)), st.decimals(min_value=D("-0.001"), max_value=D(0), places=6)),
    step=qty_steps,
)
def test_gross_up_buy_without_fee_is_plain_ceil(net: Decimal, rate: Decimal, step: Decimal) -> None:
    """No fee (or a rebate, credited rather than deducted): exactly the ceil, no extra step."""
    rules = _rules(step=str(step))
    assert gross_up_buy(net, rate, rules) == ceil_to(net, step)


def test_gross_up_buy_zero_fee_on_grid_is_unchanged() -> None:
    assert gross_up_buy(D("0.001"), D(0), _rules(step="0.001")) == D("0.001")

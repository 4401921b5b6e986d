"""Venue-neutral trading rules of one instrument, and the rounding every order passes through.

The rules mirror Bybit's instruments-info (spot ``lotSizeFilter.basePrecision`` / ``minOrderAmt``,
linear ``qtyStep`` / ``minNotionalValue``), so a venue parser fills them without guessing.
Every helper rounds in the direction that can never overspend or oversell: a sell or a hedge is
never rounded up past what is held, a buy price is never rounded above the touch it aimed at.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

import msgspec

ZERO = Decimal(0)
ONE = Decimal(1)


class Category(StrEnum):
    SPOT = "spot"
    LINEAR = "linear"


class InstrumentRules(msgspec.Struct, frozen=True, kw_only=True):
    """What the venue accepts for one symbol; all sizes in base units, prices in quote."""

    symbol: str
    category: Category
    base_coin: str
    quote_coin: str  # the settle coin for a linear contract
    tick_size: Decimal
    qty_step: Decimal  # spot: basePrecision; linear: qtyStep
    min_qty: Decimal
    min_notional: Decimal  # spot: minOrderAmt; linear: minNotionalValue
    max_qty: Decimal | None = None  # largest limit order
    max_market_qty: Decimal | None = None
    status: str = "Trading"


class FeeRates(msgspec.Struct, frozen=True, kw_only=True):
    """Fee rates as fractions (0.001 = 0.1 %); negative means a rebate."""

    maker: Decimal
    taker: Decimal


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` that is <= ``value``.

    The quotient is rounded to 28 digits before it is floored, which for a value with more
    digits can land one multiple too high: the result is checked and stepped back, which is
    cheaper on the hot path than a wider decimal context.
    """
    result = (value / step).to_integral_value(rounding=ROUND_FLOOR) * step
    return result - step if result > value else result


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Smallest multiple of ``step`` that is >= ``value`` (checked like :func:`floor_to`)."""
    result = (value / step).to_integral_value(rounding=ROUND_CEILING) * step
    return result + step if result < value else result


def trunc_to(value: Decimal, step: Decimal) -> Decimal:
    """Round toward zero: the size a signed holding can cover without exceeding it."""
    return floor_to(value, step) if value >= ZERO else ceil_to(value, step)


def buy_price(price: Decimal, rules: InstrumentRules) -> Decimal:
    """A buy limit on the tick grid, never above ``price``."""
    return floor_to(price, rules.tick_size)


def sell_price(price: Decimal, rules: InstrumentRules) -> Decimal:
    """A sell limit on the tick grid, never below ``price``."""
    return ceil_to(price, rules.tick_size)


def tradeable(qty: Decimal, price: Decimal, rules: InstrumentRules) -> bool:
    """True when an order of ``qty`` at ``price`` clears the minimum quantity and notional."""
    return qty > ZERO and qty >= rules.min_qty and qty * price >= rules.min_notional


def gross_up_buy(net: Decimal, fee_rate: Decimal, rules: InstrumentRules) -> Decimal:
    """Spot buy quantity whose proceeds, after a fee charged in the base coin, are >= ``net``.

    Rounded up to the spot precision, plus one precision step when a fee is charged: the venue
    rounds its fee on a finer grid than the quantity, and the extra step keeps the net at or
    above ``net`` whatever that rounding does. The excess is tracked as dust.
    """
    if fee_rate <= ZERO:
        return ceil_to(net, rules.qty_step)
    return ceil_to(net / (ONE - fee_rate), rules.qty_step) + rules.qty_step

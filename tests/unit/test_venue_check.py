"""Stage-2 validation: each rule with its exact message, the valid case and the fee warning.

The instruments are the official Bybit BTCUSDT examples (spot: basePrecision 0.000001,
minOrderQty 0.000011, minOrderAmt 5, maxLimitOrderQty 83, maxMarketOrderQty 41.5; linear:
qtyStep 0.001, minOrderQty 0.001, minNotionalValue 5, maxOrderQty 1190, maxMktOrderQty 500).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from bench.common import PERP as BENCH_PERP
from bench.common import SPOT as BENCH_SPOT
from worker.core.instruments import FeeRates
from worker.core.venue_check import VenueCheck, check_instance_against_venue, round_trip_fee_bps

D = Decimal

# BTCUSDT as in the official instruments-info fixtures, with the market-order maximums too.
SPOT = msgspec.structs.replace(BENCH_SPOT, max_market_qty=D("41.5"))
PERP = msgspec.structs.replace(BENCH_PERP, max_market_qty=D("500.000"))
# Bybit's default non-VIP rates: spot 0.1 % / 0.1 %, perp maker 0.02 %, taker 0.055 %.
SPOT_FEES = FeeRates(maker=D("0.001"), taker=D("0.001"))
PERP_FEES = FeeRates(maker=D("0.0002"), taker=D("0.00055"))
# 10 + 2 + 10 + 5.5
ROUND_TRIP_BPS = D("27.5")


def check(**overrides: Any) -> VenueCheck:
    """A valid BTC instance unless a test overrides something."""
    kwargs: dict[str, Any] = {
        "path": "instances[0]",
        "spot_symbol": "BTCUSDT",
        "future_symbol": "BTCUSDT",
        "order_qty": D("0.01"),
        "quote_coin": "USDT",
        "entry_threshold_bps": D("30"),
        "spot": SPOT,
        "perp": PERP,
        "spot_fees": SPOT_FEES,
        "perp_fees": PERP_FEES,
        "spot_price": D("60000"),
        "perp_price": D("60010"),
    }
    kwargs.update(overrides)
    return check_instance_against_venue(**kwargs)


def test_valid_instance_has_no_errors_and_no_warnings() -> None:
    result = check()
    assert result == VenueCheck(errors=[], warnings=[])
    assert result.ok


def test_valid_at_the_exact_minimums() -> None:
    """0.001 BTC is the perp minimum; at 5000 the notional is exactly 5 USDT on both legs."""
    result = check(order_qty=D("0.001"), spot_price=D("5000"), perp_price=D("5000"))
    assert result.errors == []


def test_result_is_a_frozen_struct() -> None:
    result = check()
    with pytest.raises(AttributeError):
        result.errors = []  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(result), type=VenueCheck) == result


# --- listing, status, coins --------------------------------------------------------------------


def test_spot_symbol_not_found() -> None:
    result = check(spot_symbol="BTCUSDX", spot=None)
    assert result.errors == [
        "instances[0].spot_symbol: spot symbol 'BTCUSDX' was not found on the venue; set it "
        "to a symbol that /v5/market/instruments-info lists for category spot."
    ]


def test_perp_symbol_not_found() -> None:
    result = check(future_symbol="BTCPERPX", perp=None)
    assert result.errors == [
        "instances[0].future_symbol: linear perpetual 'BTCPERPX' was not found on the venue; "
        "set it to a symbol that /v5/market/instruments-info lists for category linear."
    ]


def test_both_symbols_missing_still_reports_both_and_no_fee_warning() -> None:
    result = check(spot=None, perp=None, spot_fees=None, perp_fees=None)
    assert [e.split(":")[0] for e in result.errors] == [
        "instances[0].spot_symbol",
        "instances[0].future_symbol",
    ]
    assert result.warnings == []


@pytest.mark.parametrize(
    ("leg", "key", "label"), [("spot", "spot_symbol", "spot"), ("perp", "future_symbol", "perp")]
)
def test_status_not_trading(leg: str, key: str, label: str) -> None:
    rules = msgspec.structs.replace(SPOT if leg == "spot" else PERP, status="PreLaunch")
    result = check(**{leg: rules})
    assert result.errors == [
        f"instances[0].{key}: {label} 'BTCUSDT' has status 'PreLaunch' on the venue, not "
        "'Trading'; choose a symbol that is trading, or wait until it is."
    ]


def test_base_coins_differ() -> None:
    eth = msgspec.structs.replace(PERP, symbol="ETHUSDT", base_coin="ETH")
    result = check(future_symbol="ETHUSDT", perp=eth, perp_price=D("3000"))
    assert result.errors == [
        "instances[0].future_symbol: perp 'ETHUSDT' is on ETH but spot 'BTCUSDT' is on BTC; "
        "use a perpetual on the same coin as the spot leg."
    ]


def test_spot_quote_coin_differs() -> None:
    usdc = msgspec.structs.replace(SPOT, symbol="BTCUSDC", quote_coin="USDC")
    result = check(spot_symbol="BTCUSDC", spot=usdc)
    assert result.errors == [
        "instances[0].spot_symbol: spot 'BTCUSDC' is quoted in USDC but quote_coin is USDT; "
        "use a USDT-quoted spot symbol or change quote_coin."
    ]


def test_perp_settle_coin_differs() -> None:
    usdc = msgspec.structs.replace(PERP, symbol="BTCPERP", quote_coin="USDC")
    result = check(future_symbol="BTCPERP", perp=usdc)
    assert result.errors == [
        "instances[0].future_symbol: perp 'BTCPERP' settles in USDC but quote_coin is USDT; "
        "use a USDT-settled perpetual or change quote_coin."
    ]


def test_configured_quote_coin_differs_from_both_legs() -> None:
    result = check(quote_coin="USDC")
    assert [e.split(":")[0] for e in result.errors] == [
        "instances[0].spot_symbol",
        "instances[0].future_symbol",
    ]


# --- order size --------------------------------------------------------------------------------


def test_not_a_multiple_of_the_perp_qty_step() -> None:
    result = check(order_qty=D("0.0105"))
    assert result.errors == [
        "instances[0].order_qty: 0.0105 is not a multiple of the perp qty step 0.001 of "
        "BTCUSDT; use a multiple of it, e.g. 0.01 or 0.011."
    ]


def test_more_decimals_than_the_spot_precision() -> None:
    """A perp with a coarse-enough step would accept it; the spot precision does not."""
    fine_perp = msgspec.structs.replace(PERP, qty_step=D("0.0000001"), min_qty=D("0.0000001"))
    result = check(order_qty=D("0.0100005"), perp=fine_perp)
    assert result.errors == [
        "instances[0].order_qty: 0.0100005 has more decimals than the spot precision "
        "0.000001 of BTCUSDT allows; round it, e.g. 0.01 or 0.010001."
    ]


def test_below_the_perp_minimum_quantity_also_reports_the_step() -> None:
    result = check(order_qty=D("0.0005"))
    assert result.errors == [
        "instances[0].order_qty: 0.0005 is not a multiple of the perp qty step 0.001 of "
        "BTCUSDT; use a multiple of it, e.g. 0.001.",
        "instances[0].order_qty: 0.0005 is below the perp minimum order quantity 0.001 of "
        "BTCUSDT; raise it to at least 0.001.",
    ]


def test_below_the_spot_minimum_quantity() -> None:
    spot = msgspec.structs.replace(SPOT, min_qty=D("0.02"))
    result = check(spot=spot)
    assert result.errors == [
        "instances[0].order_qty: 0.01 is below the spot minimum order quantity 0.02 of "
        "BTCUSDT; raise it to at least 0.02."
    ]


def test_below_the_spot_minimum_notional() -> None:
    result = check(order_qty=D("0.001"), spot_price=D("4000"), perp_price=D("6000"))
    assert result.errors == [
        "instances[0].order_qty: 0.001 × 4000 = 4 USDT is below the spot minimum order value "
        "5 USDT of BTCUSDT; raise it to at least 0.002 at the current price."
    ]


def test_below_the_perp_minimum_notional() -> None:
    result = check(order_qty=D("0.001"), spot_price=D("6000"), perp_price=D("4999.9"))
    assert result.errors == [
        "instances[0].order_qty: 0.001 × 4999.9 = 4.9999 USDT is below the perp minimum order "
        "value 5 USDT of BTCUSDT; raise it to at least 0.002 at the current price."
    ]


def test_notional_is_skipped_without_prices() -> None:
    result = check(order_qty=D("0.001"), spot_price=None, perp_price=None)
    assert result.errors == []


def test_above_the_spot_maximum_quantity() -> None:
    result = check(order_qty=D("100"), entry_threshold_bps=D("30"))
    assert result.errors == [
        "instances[0].order_qty: 100 is above the spot maximum order quantity 83 of BTCUSDT; "
        "lower it to at most 83."
    ]


def test_above_the_perp_maximum_quantity() -> None:
    spot = msgspec.structs.replace(SPOT, max_qty=None, max_market_qty=None)
    result = check(order_qty=D("1200"), spot=spot)
    assert result.errors == [
        "instances[0].order_qty: 1200 is above the perp maximum order quantity 1190 of "
        "BTCUSDT; lower it to at most 1190."
    ]
    assert result.warnings == []  # max_qty error replaces the market-size warning


def test_above_the_market_maximum_is_a_warning() -> None:
    """Unwinds are market orders (ARCHITECTURE §4.5); spot maxMarketOrderQty is 41.5."""
    result = check(order_qty=D("50"))
    assert result.errors == []
    assert result.warnings == [
        "instances[0].order_qty: 50 is above the spot maximum market order quantity 41.5 of "
        "BTCUSDT; an unwind by market order would be rejected, so lower it to at most 41.5."
    ]


def test_every_problem_is_reported_at_once() -> None:
    eth = msgspec.structs.replace(PERP, symbol="ETHUSDT", base_coin="ETH", status="Closed")
    result = check(
        future_symbol="ETHUSDT",
        perp=eth,
        order_qty=D("0.0000005"),
        entry_threshold_bps=D("1"),
    )
    prefixes = [e.split(":")[0] for e in result.errors]
    assert prefixes == [
        "instances[0].future_symbol",  # status
        "instances[0].future_symbol",  # base coin
        "instances[0].order_qty",  # perp step
        "instances[0].order_qty",  # spot precision
        "instances[0].order_qty",  # spot min qty
        "instances[0].order_qty",  # spot min notional
        "instances[0].order_qty",  # perp min qty
        "instances[0].order_qty",  # perp min notional
    ]
    assert len(result.warnings) == 1
    assert all(message.endswith(".") for message in result.errors + result.warnings)


# --- fees --------------------------------------------------------------------------------------


def test_round_trip_fee_bps() -> None:
    assert round_trip_fee_bps(SPOT_FEES, PERP_FEES) == ROUND_TRIP_BPS


def test_threshold_below_round_trip_fees_warns() -> None:
    result = check(entry_threshold_bps=D("20"))
    assert result.errors == []
    assert result.warnings == [
        "instances[0].entry_threshold_bps: 20 is below the round-trip fees of 27.5 bps (spot "
        "maker + perp maker + spot taker + perp taker), so a cycle can lose money; raise it "
        "above 27.5."
    ]


def test_threshold_equal_to_round_trip_fees_does_not_warn() -> None:
    assert check(entry_threshold_bps=ROUND_TRIP_BPS).warnings == []


def test_maker_rebates_lower_the_round_trip() -> None:
    spot_fees = FeeRates(maker=D("-0.0001"), taker=D("0.0005"))
    perp_fees = FeeRates(maker=D("-0.00005"), taker=D("0.0003"))
    assert round_trip_fee_bps(spot_fees, perp_fees) == D("6.5")
    result = check(entry_threshold_bps=D("6"), spot_fees=spot_fees, perp_fees=perp_fees)
    assert result.warnings == [
        "instances[0].entry_threshold_bps: 6 is below the round-trip fees of 6.5 bps (spot "
        "maker + perp maker + spot taker + perp taker), so a cycle can lose money; raise it "
        "above 6.5."
    ]


def test_missing_fee_rates_warn_that_the_check_was_skipped() -> None:
    result = check(perp_fees=None, entry_threshold_bps=D("1"))
    assert result.errors == []
    assert result.warnings == [
        "instances[0].entry_threshold_bps: the venue returned no fee rate for BTCUSDT, so the "
        "threshold was not compared with the round-trip fees; check it by hand."
    ]

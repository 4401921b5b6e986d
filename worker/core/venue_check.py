"""Stage-2 configuration validation: one instance's settings against the venue's rules.

Runs at worker start with the venue's instruments-info and fee rates (ARCHITECTURE §3). It is
pure so the same rules can be tested without a venue and shown by ``--check``. Every problem is
reported at once, each as ``instances[<n>].<key>: <what is wrong>; <what to do>.`` (the JSON
paths of stage 1), so an operator fixes the config in one pass; any error makes the start a
configuration error (exit code 2), warnings are shown and the worker starts.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from worker.core.instruments import FeeRates, InstrumentRules, ceil_to, floor_to

__all__ = ["VenueCheck", "check_instance_against_venue", "round_trip_fee_bps"]

_ZERO = Decimal(0)
_BPS = Decimal(10000)
_TRADING = "Trading"


class VenueCheck(msgspec.Struct, frozen=True):
    """The outcome of stage 2: errors stop the worker, warnings do not."""

    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """True when the instance may start."""
        return not self.errors


def _fmt(value: Decimal) -> str:
    """Plain notation without trailing zeros (``1190.000`` -> ``1190``, never ``1.19E+3``)."""
    text = f"{value.normalize():f}"
    return "0" if text in {"-0", ""} else text


def _on_grid(value: Decimal, step: Decimal) -> bool:
    return step <= _ZERO or floor_to(value, step) == value


def _grid_suggestion(value: Decimal, step: Decimal) -> str:
    """The nearest valid sizes on either side, skipping a zero size."""
    low, high = floor_to(value, step), ceil_to(value, step)
    if low > _ZERO:
        return f"e.g. {_fmt(low)} or {_fmt(high)}"
    return f"e.g. {_fmt(high)}"


def round_trip_fee_bps(spot_fees: FeeRates, perp_fees: FeeRates) -> Decimal:
    """Fees of one cycle in bps of notional: maker entry and hedge, taker unwind of both legs."""
    total = spot_fees.maker + perp_fees.maker + spot_fees.taker + perp_fees.taker
    return total * _BPS


def check_instance_against_venue(
    *,
    path: str,
    spot_symbol: str,
    future_symbol: str,
    order_qty: Decimal,
    quote_coin: str,
    entry_threshold_bps: Decimal,
    spot: InstrumentRules | None,
    perp: InstrumentRules | None,
    spot_fees: FeeRates | None,
    perp_fees: FeeRates | None,
    spot_price: Decimal | None,
    perp_price: Decimal | None,
) -> VenueCheck:
    """Check one instance; ``path`` is its row's JSON path (``FleetConfig.row_path``, empty for
    a single-strategy root). ``None`` rules mean the symbol is not listed, ``None`` prices skip
    the notional check, ``None`` fees skip the fee check (with a warning)."""
    prefix = f"{path}." if path else ""
    qty_path = f"{prefix}order_qty"
    qty = _fmt(order_qty)
    errors: list[str] = []
    warnings: list[str] = []

    # -- listing, status and coins ---------------------------------------------------------
    if spot is None:
        errors.append(
            f"{prefix}spot_symbol: spot symbol {spot_symbol!r} was not found on the venue; "
            "set it to a symbol that /v5/market/instruments-info lists for category spot."
        )
    if perp is None:
        errors.append(
            f"{prefix}future_symbol: linear perpetual {future_symbol!r} was not found on the "
            "venue; set it to a symbol that /v5/market/instruments-info lists for category "
            "linear."
        )
    for rules, key, leg in ((spot, "spot_symbol", "spot"), (perp, "future_symbol", "perp")):
        if rules is not None and rules.status != _TRADING:
            errors.append(
                f"{prefix}{key}: {leg} {rules.symbol!r} has status {rules.status!r} on the "
                f"venue, not {_TRADING!r}; choose a symbol that is trading, or wait until it is."
            )
    if spot is not None and perp is not None and spot.base_coin != perp.base_coin:
        errors.append(
            f"{prefix}future_symbol: perp {perp.symbol!r} is on {perp.base_coin} but spot "
            f"{spot.symbol!r} is on {spot.base_coin}; use a perpetual on the same coin as the "
            "spot leg."
        )
    if spot is not None and spot.quote_coin != quote_coin:
        errors.append(
            f"{prefix}spot_symbol: spot {spot.symbol!r} is quoted in {spot.quote_coin} but "
            f"quote_coin is {quote_coin}; use a {quote_coin}-quoted spot symbol or change "
            "quote_coin."
        )
    if perp is not None and perp.quote_coin != quote_coin:
        errors.append(
            f"{prefix}future_symbol: perp {perp.symbol!r} settles in {perp.quote_coin} but "
            f"quote_coin is {quote_coin}; use a {quote_coin}-settled perpetual or change "
            "quote_coin."
        )

    # -- order size --------------------------------------------------------------------------
    if perp is not None and not _on_grid(order_qty, perp.qty_step):
        errors.append(
            f"{qty_path}: {qty} is not a multiple of the perp qty step {_fmt(perp.qty_step)} of "
            f"{perp.symbol}; use a multiple of it, "
            f"{_grid_suggestion(order_qty, perp.qty_step)}."
        )
    if spot is not None and not _on_grid(order_qty, spot.qty_step):
        errors.append(
            f"{qty_path}: {qty} has more decimals than the spot precision "
            f"{_fmt(spot.qty_step)} of {spot.symbol} allows; round it, "
            f"{_grid_suggestion(order_qty, spot.qty_step)}."
        )
    # Suggested sizes land on the perp grid, which order_qty must respect anyway.
    size_step = perp.qty_step if perp is not None else spot.qty_step if spot is not None else None
    for rules, leg, price in ((spot, "spot", spot_price), (perp, "perp", perp_price)):
        if rules is None:
            continue
        if order_qty < rules.min_qty:
            errors.append(
                f"{qty_path}: {qty} is below the {leg} minimum order quantity "
                f"{_fmt(rules.min_qty)} of {rules.symbol}; raise it to at least "
                f"{_fmt(rules.min_qty)}."
            )
        if price is not None and price > _ZERO and order_qty * price < rules.min_notional:
            needed = rules.min_notional / price
            if size_step is not None and size_step > _ZERO:
                needed = ceil_to(needed, size_step)
            errors.append(
                f"{qty_path}: {qty} × {_fmt(price)} = {_fmt(order_qty * price)} "
                f"{rules.quote_coin} is below the {leg} minimum order value "
                f"{_fmt(rules.min_notional)} {rules.quote_coin} of {rules.symbol}; raise it to "
                f"at least {_fmt(needed)} at the current price."
            )
        if rules.max_qty is not None and order_qty > rules.max_qty:
            errors.append(
                f"{qty_path}: {qty} is above the {leg} maximum order quantity "
                f"{_fmt(rules.max_qty)} of {rules.symbol}; lower it to at most "
                f"{_fmt(rules.max_qty)}."
            )
        elif rules.max_market_qty is not None and order_qty > rules.max_market_qty:
            warnings.append(
                f"{qty_path}: {qty} is above the {leg} maximum market order quantity "
                f"{_fmt(rules.max_market_qty)} of {rules.symbol}; an unwind by market order "
                f"would be rejected, so lower it to at most {_fmt(rules.max_market_qty)}."
            )

    # -- fees ------------------------------------------------------------------------------
    if spot_fees is not None and perp_fees is not None:
        round_trip = round_trip_fee_bps(spot_fees, perp_fees)
        if entry_threshold_bps < round_trip:
            warnings.append(
                f"{prefix}entry_threshold_bps: {_fmt(entry_threshold_bps)} is below the "
                f"round-trip fees of {_fmt(round_trip)} bps (spot maker + perp maker + spot "
                f"taker + perp taker), so a cycle can lose money; raise it above "
                f"{_fmt(round_trip)}."
            )
    elif spot is not None and perp is not None:
        missing = " and ".join(
            symbol
            for symbol, fees in ((spot_symbol, spot_fees), (future_symbol, perp_fees))
            if fees is None
        )
        warnings.append(
            f"{prefix}entry_threshold_bps: the venue returned no fee rate for {missing}, so "
            "the threshold was not compared with the round-trip fees; check it by hand."
        )

    return VenueCheck(errors=errors, warnings=warnings)

"""Basis arithmetic (ARCHITECTURE §4.1).

``basis_bps = (future_mid / spot_mid − 1) × 10000``. Threshold tests are done by exact
cross-multiplication of the doubled mids, so a basis sitting exactly on a threshold is never
misjudged by a rounded division.
"""

from __future__ import annotations

from decimal import Decimal

BPS = Decimal(10000)
_CENT = Decimal("0.01")


def basis_bps(spot_bid: Decimal, spot_ask: Decimal, fut_bid: Decimal, fut_ask: Decimal) -> Decimal:
    """The basis for display, rounded to 0.01 bps."""
    return ((fut_bid + fut_ask) / (spot_bid + spot_ask) - 1) * BPS


def display_bps(value: Decimal) -> Decimal:
    return value.quantize(_CENT)


def at_least(spot_mid2: Decimal, fut_mid2: Decimal, bps: Decimal) -> bool:
    """``basis_bps >= bps`` exactly, from the doubled mids (bid + ask) of both legs."""
    return fut_mid2 * BPS >= spot_mid2 * (BPS + bps)


def at_most(spot_mid2: Decimal, fut_mid2: Decimal, bps: Decimal) -> bool:
    """``basis_bps <= bps`` exactly."""
    return fut_mid2 * BPS <= spot_mid2 * (BPS + bps)

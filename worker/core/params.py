"""Everything a decision depends on besides the state: configuration and venue rules."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from worker.core.config import HedgeMode, InstanceConfig
from worker.core.instruments import FeeRates, InstrumentRules
from worker.core.model import ZERO


class CoreParams(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the decisions depend on besides the state: configuration and venue rules."""

    instance_id: str
    spot: InstrumentRules
    perp: InstrumentRules
    spot_fees: FeeRates
    perp_fees: FeeRates
    order_qty: Decimal
    entry_threshold_bps: Decimal
    exit_threshold_bps: Decimal = ZERO
    emergency_unwind_bps: Decimal = ZERO
    chase_interval_ms: int = 200
    chase_max_slip_bps: Decimal = Decimal(3)
    max_unhedged_ms: int = 3000
    hedge_mode: HedgeMode = HedgeMode.RACE
    stale_book_ms: int = 5000
    max_notional_quote: Decimal | None = None
    max_daily_loss_quote: Decimal | None = None

    @classmethod
    def from_config(
        cls,
        cfg: InstanceConfig,
        *,
        spot: InstrumentRules,
        perp: InstrumentRules,
        spot_fees: FeeRates,
        perp_fees: FeeRates,
    ) -> CoreParams:
        return cls(
            instance_id=cfg.id,
            spot=spot,
            perp=perp,
            spot_fees=spot_fees,
            perp_fees=perp_fees,
            order_qty=cfg.order_qty,
            entry_threshold_bps=cfg.entry_threshold_bps,
            exit_threshold_bps=cfg.exit_threshold_bps,
            emergency_unwind_bps=cfg.emergency_unwind_bps,
            chase_interval_ms=cfg.chase_interval_ms,
            chase_max_slip_bps=cfg.chase_max_slip_bps,
            max_unhedged_ms=cfg.max_unhedged_ms,
            hedge_mode=cfg.hedge_mode,
            stale_book_ms=cfg.stale_book_ms,
            max_notional_quote=cfg.max_notional_quote,
            max_daily_loss_quote=cfg.max_daily_loss_quote,
        )

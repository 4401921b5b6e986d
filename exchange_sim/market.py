"""The seeded market model: a spot random walk, a mean-reverting basis and taker flow.

Per symbol the spot mid follows a geometric random walk and the perpetual's mid is
``spot × (1 + basis)``, the basis (in bps) an Ornstein-Uhlenbeck process. Each book's
background liquidity sits on the tick grid around its mid with sticky random sizes (a few
levels change per step, so deltas stay small), and Poisson taker flow trades through the
book, including user orders in queue position. Everything random comes from one
``random.Random(seed)`` and steps on a fixed grid of the injected clock, so a run is
reproducible. The model's own arithmetic uses floats; every price and size it hands to the
exchange is a Decimal on the instrument's grid.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from exchange_sim.config import ModelSpec
from exchange_sim.state import Instrument

if TYPE_CHECKING:
    from exchange_sim.engine import Exchange

__all__ = ["MarketModel"]

_MAX_CATCH_UP_STEPS = 50
_SIZE_CHANGES_PER_STEP = 0.05  # share of levels whose size is redrawn each step
_TAKER_REACH_TICKS = 5


@dataclass
class _Market:
    symbol: str
    spot_mid: float
    basis_bps: float
    volatility_bps: float
    level_size: float
    legs: list[Instrument] = field(default_factory=list)
    sizes: dict[str, dict[Decimal, Decimal]] = field(default_factory=dict)


class MarketModel:
    def __init__(self, exchange: Exchange, spec: ModelSpec, seed: int) -> None:
        self.exchange = exchange
        self.spec = spec
        self.rng = random.Random(seed)
        self.markets: list[_Market] = []
        for inst_spec in exchange.config.instruments:
            price = float(inst_spec.price)
            size = (
                float(inst_spec.level_size)
                if inst_spec.level_size is not None
                else float(spec.level_notional) / price
            )
            market = _Market(
                symbol=inst_spec.symbol,
                spot_mid=price,
                basis_bps=float(spec.basis_mean_bps),
                volatility_bps=float(inst_spec.volatility_bps),
                level_size=size,
            )
            for category in ("spot", "linear"):
                inst = exchange.instruments.get((category, inst_spec.symbol))
                if inst is not None:
                    market.legs.append(inst)
                    market.sizes[category] = {}
            self.markets.append(market)
        self.next_step_ms: int | None = None

    def reference_price(self, symbol: str) -> Decimal:
        for market in self.markets:
            if market.symbol == symbol:
                return Decimal(repr(market.spot_mid))
        return Decimal(0)

    def start(self, now: int) -> None:
        """Lay out the initial books (also in ``--scripted`` mode) and start the step grid."""
        for market in self.markets:
            for inst in market.legs:
                self._layout(market, inst)
        self.next_step_ms = now + self.spec.step_ms

    def resume(self, now: int) -> None:
        """After a freeze the model continues from now, without replaying the pause."""
        self.next_step_ms = now + self.spec.step_ms

    def run_until(self, now: int) -> None:
        if self.next_step_ms is None:
            return
        if now - self.next_step_ms > _MAX_CATCH_UP_STEPS * self.spec.step_ms:
            self.next_step_ms = now  # a stalled loop skips ahead rather than bursting
        while self.next_step_ms <= now:
            self.step()
            self.next_step_ms += self.spec.step_ms

    def step(self) -> None:
        dt = self.spec.step_ms / 1000
        theta = float(self.spec.basis_reversion_per_s)
        sigma = float(self.spec.basis_volatility_bps)
        mean = float(self.spec.basis_mean_bps)
        for market in self.markets:
            shock = self.rng.gauss(0.0, 1.0) * market.volatility_bps / 1e4 * math.sqrt(dt)
            market.spot_mid *= math.exp(shock)
            market.basis_bps += theta * (mean - market.basis_bps) * dt
            market.basis_bps += sigma * math.sqrt(dt) * self.rng.gauss(0.0, 1.0)
            for inst in market.legs:
                self._layout(market, inst)
                self._taker_flow(market, inst, dt)

    def _mid(self, market: _Market, inst: Instrument) -> float:
        if inst.category == "linear":
            return market.spot_mid * (1 + market.basis_bps / 1e4)
        return market.spot_mid

    def _layout(self, market: _Market, inst: Instrument) -> None:
        spec = self.spec
        tick = inst.tick_size
        mid = Decimal(repr(self._mid(market, inst)))
        half = tick * spec.spread_ticks / 2
        best_bid = ((mid - half) / tick).to_integral_value(ROUND_FLOOR) * tick
        best_ask = best_bid + tick * spec.spread_ticks
        spacing = tick * spec.level_spacing_ticks
        bids = [best_bid - spacing * i for i in range(spec.depth_levels)]
        asks = [best_ask + spacing * i for i in range(spec.depth_levels)]
        sizes = market.sizes[inst.category]
        wanted = set(bids) | set(asks)
        for price in [p for p in sizes if p not in wanted]:
            del sizes[price]
        ordered = sorted(wanted)
        for price in ordered:
            if price not in sizes:
                sizes[price] = self._draw_size(market, inst)
        changes = max(1, int(len(wanted) * _SIZE_CHANGES_PER_STEP))
        for _ in range(changes):
            sizes[ordered[self.rng.randrange(len(ordered))]] = self._draw_size(market, inst)
        self.exchange.replace_background(
            inst,
            [(p, sizes[p]) for p in bids if p > 0],
            [(p, sizes[p]) for p in asks],
        )

    def _draw_size(self, market: _Market, inst: Instrument) -> Decimal:
        raw = market.level_size * self.rng.uniform(0.3, 1.7)
        steps = max(1, int(raw / float(inst.qty_step)))
        return inst.qty_step * steps

    def _taker_flow(self, market: _Market, inst: Instrument, dt: float) -> None:
        book = self.exchange.books[(inst.category, inst.symbol)]
        for _ in range(self._poisson(float(self.spec.taker_rate_per_s) * dt)):
            side = "Buy" if self.rng.random() < 0.5 else "Sell"
            mean = market.level_size * float(self.spec.taker_size_levels)
            steps = max(1, int(self.rng.expovariate(1.0) * mean / float(inst.qty_step)))
            qty = inst.qty_step * steps
            reach = inst.tick_size * _TAKER_REACH_TICKS
            if side == "Buy":
                ask = book.best_ask()
                if ask is None:
                    continue
                limit = ask + reach
            else:
                bid = book.best_bid()
                if bid is None:
                    continue
                limit = bid - reach
            self.exchange.taker_trade(inst, side, limit, qty)

    def _poisson(self, lam: float) -> int:
        threshold = math.exp(-lam)
        count = 0
        product = self.rng.random()
        while product > threshold:
            count += 1
            product *= self.rng.random()
        return count

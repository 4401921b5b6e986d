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
_SIZE_CHANGES_PER_S = 0.5  # share of levels whose size is redrawn per second
_TAKER_REACH_TICKS = 5
_REFILL_LEVELS = 3
ZERO = Decimal(0)


@dataclass
class _Grid:
    """Where one book's background levels are, to change only what moved."""

    best_bid: Decimal
    bids: list[Decimal]
    asks: list[Decimal]
    bid_set: set[Decimal]
    ask_set: set[Decimal]


@dataclass
class _Market:
    symbol: str
    spot_mid: float
    basis_bps: float
    volatility_bps: float
    level_size: float
    legs: list[Instrument] = field(default_factory=list)
    sizes: dict[str, dict[Decimal, Decimal]] = field(default_factory=dict)
    grid: dict[str, _Grid] = field(default_factory=dict)
    offsets: dict[str, list[Decimal]] = field(default_factory=dict)


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

    def state(self) -> dict[str, tuple[float, float]]:
        """Each symbol's spot mid and basis, saved so a restarted simulator continues."""
        return {m.symbol: (m.spot_mid, m.basis_bps) for m in self.markets}

    def restore(self, state: dict[str, tuple[float, float]]) -> None:
        for market in self.markets:
            if market.symbol in state:
                market.spot_mid, market.basis_bps = state[market.symbol]

    def resume(self, now: int) -> None:
        """After a freeze the model continues from now, without replaying the pause, from
        the books as they are (a script may have moved them): each market re-anchors on its
        current mids and its next layout replaces the whole background."""
        for market in self.markets:
            spot = self.exchange.book_mid("spot", market.symbol)
            perp = self.exchange.book_mid("linear", market.symbol)
            if spot is not None:
                market.spot_mid = float(spot)
            if spot is not None and perp is not None:
                market.basis_bps = (float(perp) / float(spot) - 1) * 1e4
            elif perp is not None:
                market.spot_mid = float(perp) / (1 + market.basis_bps / 1e4)
            market.grid.clear()
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
        """Re-centre one book's background on its mid, changing only what moved."""
        spec = self.spec
        tick = inst.tick_size
        mid = Decimal(repr(self._mid(market, inst)))
        half = tick * spec.spread_ticks / 2
        best_bid = ((mid - half) / tick).to_integral_value(ROUND_FLOOR) * tick
        sizes = market.sizes[inst.category]
        previous = market.grid.get(inst.category)
        if previous is not None and previous.best_bid == best_bid:
            bids, asks = previous.bids, previous.asks
            updates: list[tuple[str, Decimal, Decimal]] = []
            self._churn(market, inst, bids, asks, updates)
            self.exchange.update_background(inst, updates)
            return
        best_ask = best_bid + tick * spec.spread_ticks
        offsets = market.offsets.get(inst.category)
        if offsets is None:
            spacing = tick * spec.level_spacing_ticks
            offsets = market.offsets[inst.category] = [
                spacing * i for i in range(spec.depth_levels)
            ]
        bids = [best_bid - o for o in offsets if best_bid - o > 0]
        asks = [best_ask + o for o in offsets]
        new_bids, new_asks = set(bids), set(asks)
        market.grid[inst.category] = _Grid(best_bid, bids, asks, new_bids, new_asks)
        if previous is None:
            # The first layout never trades: it stops short of user orders restored from the
            # journal (the market may have moved while the simulator was down).
            book = self.exchange.books[(inst.category, inst.symbol)]
            user_ask = book.best_user_price("Sell")
            user_bid = book.best_user_price("Buy")
            bids = [p for p in bids if user_ask is None or p < user_ask]
            asks = [p for p in asks if user_bid is None or p > user_bid]
            market.grid[inst.category] = _Grid(best_bid, bids, asks, set(bids), set(asks))
            for price in (*bids, *asks):
                sizes[price] = self._draw_size(market, inst)
            self.exchange.replace_background(
                inst, [(p, sizes[p]) for p in bids], [(p, sizes[p]) for p in asks]
            )
            return
        old_bids, old_asks = previous.bid_set, previous.ask_set
        removals: list[tuple[str, Decimal, Decimal]] = []
        updates = []
        for side, old, new in (("Buy", old_bids, new_bids), ("Sell", old_asks, new_asks)):
            for price in sorted(old - new):
                removals.append((side, price, ZERO))
                if price not in new_bids and price not in new_asks:
                    sizes.pop(price, None)
        for side, old, ordered in (("Buy", old_bids, bids), ("Sell", old_asks, asks)):
            for price in ordered:
                if price not in old:
                    size = sizes.get(price)
                    crossed_over = price in (old_asks if side == "Buy" else old_bids)
                    if size is None or crossed_over:  # a fresh level gets a fresh size
                        size = sizes[price] = self._draw_size(market, inst)
                    updates.append((side, price, size))
        self._churn(market, inst, bids, asks, updates)
        self.exchange.update_background(inst, removals + updates)

    def _churn(
        self,
        market: _Market,
        inst: Instrument,
        bids: list[Decimal],
        asks: list[Decimal],
        updates: list[tuple[str, Decimal, Decimal]],
    ) -> None:
        """Redraw a few random level sizes and refill what takers took at the touch."""
        sizes = market.sizes[inst.category]
        levels = len(bids) + len(asks)
        expected = levels * _SIZE_CHANGES_PER_S * self.spec.step_ms / 1000
        count = int(expected) + (1 if self.rng.random() < expected % 1 else 0)
        for _ in range(count):
            i = self.rng.randrange(levels)
            side, price = ("Buy", bids[i]) if i < len(bids) else ("Sell", asks[i - len(bids)])
            sizes[price] = self._draw_size(market, inst)
            updates.append((side, price, sizes[price]))
        book = self.exchange.books[(inst.category, inst.symbol)]
        for side, ordered in (("Buy", bids), ("Sell", asks)):
            for price in ordered[:_REFILL_LEVELS]:  # liquidity taken at the touch comes back
                level = book.side(side).levels.get(price)
                if level is None or level.background != sizes[price]:
                    updates.append((side, price, sizes[price]))

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

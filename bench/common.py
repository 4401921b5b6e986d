"""Bench plumbing: instrument setup, a synthetic two-leg market, a minimal venue that answers the
core's commands, and the timing / formatting helpers. Self-contained (nothing from ``tests/``)."""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from time import perf_counter_ns
from typing import Any

from worker.core.commands import AmendOrder, CancelOrder, Command, PlaceOrder, QueryOrder
from worker.core.config import HedgeMode
from worker.core.events import (
    Acknowledged,
    BookTop,
    Event,
    Execution,
    OrderNotFound,
    OrderUpdate,
    Rejected,
    Tick,
    WalletBalance,
)
from worker.core.instruments import Category, FeeRates, InstrumentRules
from worker.core.model import (
    CoreState,
    Leg,
    OrderStatus,
    OrderType,
    RejectKind,
    Request,
    Side,
)
from worker.core.params import CoreParams
from worker.core.strategy import Core

D = Decimal
ZERO = D(0)

# BTCUSDT with Bybit's instruments-info rules (spot basePrecision, linear qtyStep).
SPOT = InstrumentRules(
    symbol="BTCUSDT",
    category=Category.SPOT,
    base_coin="BTC",
    quote_coin="USDT",
    tick_size=D("0.1"),
    qty_step=D("0.000001"),
    min_qty=D("0.000011"),
    min_notional=D("5"),
    max_qty=D("83"),
)
PERP = InstrumentRules(
    symbol="BTCUSDT",
    category=Category.LINEAR,
    base_coin="BTC",
    quote_coin="USDT",
    tick_size=D("0.1"),
    qty_step=D("0.001"),
    min_qty=D("0.001"),
    min_notional=D("5"),
    max_qty=D("1190"),
)
SPOT_FEES = FeeRates(maker=D("0.001"), taker=D("0.001"))
PERP_FEES = FeeRates(maker=D("0.0002"), taker=D("0.00055"))
EPOCH = 1_700_000_000
T0 = 1_763_000_000_000  # far from a UTC day boundary for the length of any run here
UPDATE_MS = 5  # one book update every 5 ms, alternating legs: each leg's orderbook.1 at 10 ms


def params(**overrides: Any) -> CoreParams:
    base: dict[str, Any] = dict(
        instance_id="btc",
        spot=SPOT,
        perp=PERP,
        spot_fees=SPOT_FEES,
        perp_fees=PERP_FEES,
        order_qty=D("0.01"),
        entry_threshold_bps=D("10"),
        exit_threshold_bps=D("2"),
        emergency_unwind_bps=D("50"),
        chase_interval_ms=200,
        chase_max_slip_bps=D("3"),
        max_unhedged_ms=3000,
        hedge_mode=HedgeMode.RACE,
        stale_book_ms=5000,
    )
    base.update(overrides)
    return CoreParams(**base)


# ---------------------------------------------------------------------- the market


_PRICES: dict[int, Decimal] = {}
_QTYS = [D(q) for q in ("0.004", "0.118", "0.5", "0.731", "1.25", "2.006", "3.4", "7.95")]


def px(ticks: int) -> Decimal:
    """A price of ``ticks`` × 0.1, shared so pre-built events do not each own their Decimals."""
    p = _PRICES.get(ticks)
    if p is None:
        p = _PRICES[ticks] = D(ticks).scaleb(-1)
    return p


@dataclass
class Market:
    """A random walk of the spot mid and of the basis, sampled as alternating top-of-book updates.

    Prices are kept in integer ticks of 0.1; the basis (bps) is either a bounded random walk in
    ``band`` or, with ``period_ms``, a slow sinusoid through all the thresholds plus noise.
    """

    rng: random.Random
    band: tuple[float, float]
    basis: float
    spot_mid2: int = 2 * 300_000  # twice the mid, in ticks (30 000.0 USDT)
    period_ms: int = 0
    now: int = T0
    seq: int = 0
    spot_book: tuple[int, int] = (0, 0)
    perp_book: tuple[int, int] = (0, 0)

    def _basis_at(self) -> float:
        if self.period_ms:
            lo, hi = self.band
            mid, amp = (lo + hi) / 2, (hi - lo) / 2
            phase = 2 * math.pi * ((self.now - T0) % self.period_ms) / self.period_ms
            return mid + amp * math.sin(phase) + self.rng.uniform(-1.5, 1.5)
        lo, hi = self.band
        self.basis = min(hi, max(lo, self.basis + self.rng.uniform(-0.4, 0.4)))
        return self.basis

    def next(self) -> BookTop:
        """Advance the clock by one update and return the next leg's top of book."""
        self.now += UPDATE_MS
        self.seq += 1
        rng = self.rng
        if self.seq % 2:  # spot
            r = rng.random()
            if r < 0.15:
                self.spot_mid2 -= 2
            elif r > 0.85:
                self.spot_mid2 += 2
            spread = 1 if rng.random() < 0.8 else 2
            bid = (self.spot_mid2 - spread) // 2
            self.spot_book = (bid, bid + spread)
            leg = Leg.SPOT
        else:
            basis = self._basis_at()
            fut_mid2 = round(self.spot_mid2 * (1 + basis / 10_000))
            spread = 1 if rng.random() < 0.85 else 2
            bid = (fut_mid2 - spread) // 2
            self.perp_book = (bid, bid + spread)
            leg = Leg.PERP
        bid, ask = self.spot_book if leg is Leg.SPOT else self.perp_book
        return BookTop(
            leg=leg,
            bid=px(bid),
            ask=px(ask),
            bid_qty=rng.choice(_QTYS),
            ask_qty=rng.choice(_QTYS),
            ts_ms=self.now,
            update_id=self.seq,
        )

    def books(self, n: int) -> list[BookTop]:
        return [self.next() for _ in range(n)]


# ---------------------------------------------------------------------- the venue


@dataclass
class VenueOrder:
    link_id: str
    leg: Leg
    side: Side
    order_type: OrderType
    post_only: bool
    qty: Decimal
    price: Decimal | None
    order_id: str
    status: OrderStatus = OrderStatus.OPEN
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    fee_coin: str = ""
    updated_ms: int = 0

    @property
    def live(self) -> bool:
        return not self.status.terminal


@dataclass
class Sim:
    """One core and a cooperative venue: every order command is answered at once (acks, order
    updates, market fills), and maker orders fill when asked (:meth:`fill`) or when the book
    trades through them (:meth:`book`, with ``cross_fills``)."""

    core: Core
    state: CoreState
    now: int = T0
    venue: dict[str, VenueOrder] = field(default_factory=dict)  # every order, for queries
    resting: dict[str, VenueOrder] = field(default_factory=dict)  # live limit orders
    tops: dict[Leg, BookTop] = field(default_factory=dict)
    exec_seq: int = 0
    order_seq: int = 0
    cross_fills: bool = False
    partial_prob: float = 0.0  # per update of a leg: part-fill a resting maker order on it
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    # when set, every step is timed into ``samples`` (the mixed stream)
    samples: list[int] | None = None
    kinds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def make(cls, **overrides: Any) -> Sim:
        core = Core(params(**overrides))
        sim = cls(core=core, state=core.new_state(EPOCH))
        sim.run([Tick(), wallet("USDT", "100000"), wallet("BTC", "2")])
        return sim

    # -- driving
    def step(self, event: Event) -> list[Command]:
        if isinstance(event, BookTop):
            self.tops[event.leg] = event
        samples = self.samples
        if samples is None:
            return self.core.step(self.state, event, self.now)
        t0 = perf_counter_ns()
        cmds = self.core.step(self.state, event, self.now)
        samples.append(perf_counter_ns() - t0)
        kind = type(event).__name__
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return cmds

    def run(self, events: Iterable[Event]) -> int:
        """Feed events and every venue answer they provoke; returns how many steps ran."""
        queue: deque[Event] = deque(events)
        n = 0
        while queue:
            cmds = self.step(queue.popleft())
            n += 1
            queue.extend(self.answer(cmds))
        return n

    def book(self, event: BookTop) -> list[Command]:
        """A book update (untimed helper): its step, the answers, and the fills it causes."""
        self.now = event.ts_ms
        cmds = self.step(event)
        self.run(self.answer(cmds))
        if self.cross_fills:
            self.run(self.crossed(event.leg))
        if self.partial_prob:
            self.run(self.partials(event.leg))
        return cmds

    # -- the venue's side
    def answer(self, cmds: Iterable[Command]) -> list[Event]:
        out: list[Event] = []
        for c in cmds:
            if isinstance(c, PlaceOrder):
                out.extend(self._place(c))
            elif isinstance(c, AmendOrder):
                out.extend(self._amend(c))
            elif isinstance(c, CancelOrder):
                out.extend(self._cancel(c))
            elif isinstance(c, QueryOrder):
                vo = self.venue.get(c.link_id)
                out.append(OrderNotFound(link_id=c.link_id) if vo is None else self._update(vo))
        return out

    def _touch(self, leg: Leg, side: Side) -> Decimal:
        top = self.tops[leg]
        return top.ask if side is Side.BUY else top.bid

    def _would_take(self, leg: Leg, side: Side, price: Decimal) -> bool:
        top = self.tops[leg]
        return price >= top.ask if side is Side.BUY else price <= top.bid

    def _place(self, c: PlaceOrder) -> list[Event]:
        if c.post_only and c.price is not None and self._would_take(c.leg, c.side, c.price):
            return [
                Rejected(
                    link_id=c.link_id,
                    request=Request.CREATE,
                    kind=RejectKind.POST_ONLY,
                    code="170213",
                    message="post-only would take",
                )
            ]
        self.order_seq += 1
        vo = VenueOrder(
            link_id=c.link_id,
            leg=c.leg,
            side=c.side,
            order_type=c.order_type,
            post_only=c.post_only,
            qty=c.qty,
            price=c.price,
            order_id=f"v{self.order_seq}",
            updated_ms=self.now,
        )
        self.venue[c.link_id] = vo
        if c.order_type is OrderType.LIMIT:
            self.resting[c.link_id] = vo
        out: list[Event] = [
            Acknowledged(link_id=c.link_id, request=Request.CREATE, order_id=vo.order_id)
        ]
        if c.order_type is OrderType.MARKET:
            out.extend(self.fill(c.link_id, c.qty, self._touch(c.leg, c.side)))
        else:
            out.append(self._update(vo))
        return out

    def _amend(self, c: AmendOrder) -> list[Event]:
        vo = self.venue.get(c.link_id)
        if vo is None or vo.status.terminal or (c.qty is not None and c.qty <= vo.cum_qty):
            kind = RejectKind.INVALID if vo is not None and vo.live else RejectKind.FINISHED
            return [
                Rejected(
                    link_id=c.link_id, request=Request.AMEND, kind=kind, code="0", message="no"
                )
            ]
        if c.qty is not None:
            vo.qty = c.qty
        if c.price is not None:
            vo.price = c.price
        vo.updated_ms = self.now
        return [Acknowledged(link_id=c.link_id, request=Request.AMEND), self._update(vo)]

    def _cancel(self, c: CancelOrder) -> list[Event]:
        vo = self.venue.get(c.link_id)
        if vo is None or vo.status.terminal:
            return [
                Rejected(
                    link_id=c.link_id,
                    request=Request.CANCEL,
                    kind=RejectKind.FINISHED,
                    code="110001",
                    message="order does not exist or is finished",
                )
            ]
        vo.status = OrderStatus.CANCELLED
        vo.updated_ms = self.now
        self.resting.pop(c.link_id, None)
        return [Acknowledged(link_id=c.link_id, request=Request.CANCEL), self._update(vo)]

    def _update(self, vo: VenueOrder) -> OrderUpdate:
        return OrderUpdate(
            link_id=vo.link_id,
            status=vo.status,
            cum_qty=vo.cum_qty,
            cum_value=vo.cum_value,
            cum_fee=vo.cum_fee,
            fee_coin=vo.fee_coin,
            qty=vo.qty,
            price=vo.price,
            updated_ms=vo.updated_ms,
            order_id=vo.order_id,
        )

    def fill(
        self, link_id: str, qty: Decimal | None = None, price: Decimal | None = None
    ) -> list[Event]:
        """A fill of ``qty`` (default: all that is left) as the venue reports it: one execution,
        then the order stream's cumulative figures."""
        vo = self.venue[link_id]
        if not vo.live:
            return []
        q = vo.qty - vo.cum_qty if qty is None else min(qty, vo.qty - vo.cum_qty)
        p = price if price is not None else vo.price
        assert p is not None
        maker = vo.order_type is OrderType.LIMIT
        rates = SPOT_FEES if vo.leg is Leg.SPOT else PERP_FEES
        rate = rates.maker if maker else rates.taker
        base_fee = vo.leg is Leg.SPOT and vo.side is Side.BUY
        fee = q * rate if base_fee else q * p * rate
        coin = "BTC" if base_fee else "USDT"
        self.exec_seq += 1
        vo.cum_qty += q
        vo.cum_value += q * p
        vo.cum_fee += fee
        vo.fee_coin = coin
        vo.updated_ms = self.now
        if vo.cum_qty >= vo.qty:
            vo.status = OrderStatus.FILLED
            self.resting.pop(link_id, None)
        return [
            Execution(
                link_id=link_id,
                exec_id=f"x{self.exec_seq}",
                qty=q,
                price=p,
                fee=fee,
                fee_coin=coin,
                is_maker=maker,
                exec_ms=self.now,
            ),
            self._update(vo),
        ]

    def crossed(self, leg: Leg) -> list[Event]:
        """Fills of resting maker orders the new top of ``leg`` has traded through."""
        out: list[Event] = []
        top = self.tops[leg]
        for vo in list(self.resting.values()):
            if vo.leg is not leg or not vo.live or vo.price is None:
                continue
            through = top.ask < vo.price if vo.side is Side.BUY else top.bid > vo.price
            if through:
                out.extend(self.fill(vo.link_id))
        return out

    def partials(self, leg: Leg) -> list[Event]:
        """Now and then, part of a resting maker order on ``leg`` trades at its price."""
        out: list[Event] = []
        for vo in list(self.resting.values()):
            if vo.leg is not leg or not vo.live:
                continue
            if self.rng.random() >= self.partial_prob:
                continue
            step = SPOT.qty_step if leg is Leg.SPOT else PERP.qty_step
            half = ((vo.qty - vo.cum_qty) / 2 / step).to_integral_value() * step
            if half > ZERO:
                out.extend(self.fill(vo.link_id, half))
        return out


def wallet(coin: str, available: str) -> WalletBalance:
    return WalletBalance(coin=coin, available=D(available), total=D(available))


# ---------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Latency:
    n: int
    median_us: float
    p99_us: float
    max_us: float
    mean_us: float


def latency(samples_ns: list[int]) -> Latency:
    s = sorted(samples_ns)
    n = len(s)
    return Latency(
        n=n,
        median_us=statistics.median(s) / 1000,
        p99_us=s[min(n - 1, (99 * n) // 100)] / 1000,
        max_us=s[-1] / 1000,
        mean_us=sum(s) / n / 1000,
    )

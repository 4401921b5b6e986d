"""What the simulator's market model looks like to the spot/perp basis strategy.

``python -m bench.sim_model_stats [--config PATH] [--seconds N] [--seed N]`` builds an
in-process ``exchange_sim.engine.Exchange`` on a fake clock, steps it every 100 ms for the
given simulated time (no network, no wall clock) and measures, per symbol, from the books and
the public trade feed:

* the basis ``(perp_mid / spot_mid − 1) × 10000`` in bps: mean, standard deviation, p95 and
  maximum of ``|basis|``, and the share of time ``|basis|`` is at or beyond the entry threshold;
* entry cycles, as the strategy sees them: flat until ``basis ≥ +entry`` (or ``≤ −entry``),
  then in that cycle until the basis reverts to the exit threshold (``≤ +exit``, or ``≥ −exit``);
  cycles per minute on each side, the median time from the entry crossing to the revert, the
  median time the basis stays beyond the entry threshold after crossing it (how long a maker
  entry has to fill) and the mean basis captured between the two crossings;
* per leg: the spread in bps, public trades per second, and how soon a maker order resting
  at the touch would be reached. A *virtual* order (it never enters the book) joins the best
  bid, and one the best ask, every ``--probe-every`` seconds behind the background already at
  that price; it counts as reached when opposite-side trades at its price exceed the queue in
  front of it, when a trade prints through its price, or when the book moves through it (the
  simulator then fills resting user orders against the arriving background); and how often
  a spot and a perp order joining the same side at the same moment are both reached within
  300 ms of each other (what a race exit's two legs would do).

Thresholds: entry 12 bps for BTCUSDT and ETHUSDT, 15 for SOLUSDT (12 for any other symbol),
as in ``algo/spot-future-arb/config.json``; exit 2 bps (``--exit-bps``).

The fee lines compare the entry threshold with the round trip of two maker trades on each
leg, and with the round trip as the strategy trades it (maker entry and maker hedge, market
exits on both legs).

The output is a plain-text report; the exit code is 0, or 2 when the config cannot be loaded
or ``--seconds`` is not positive.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec

from exchange_sim.book import Book
from exchange_sim.config import SimConfig, SimConfigError, load_sim_config
from exchange_sim.engine import Exchange

__all__ = ["main", "run"]

STEP_MS = 100
START_MS = 1_700_000_000_000
ENTRY_BPS: dict[str, float] = {"BTCUSDT": 12.0, "ETHUSDT": 12.0, "SOLUSDT": 15.0}
DEFAULT_ENTRY_BPS = 12.0
EXIT_BPS = 2.0
PROBE_TIMEOUT_S = 60.0
TOGETHER_MS = 300
CATEGORIES = ("spot", "linear")


class _Trade(msgspec.Struct):
    S: str
    v: Decimal
    p: Decimal


class _TradeMessage(msgspec.Struct):
    data: list[_Trade]


_decode_trades = msgspec.json.Decoder(_TradeMessage).decode


# === measurements ========================================================================


@dataclass
class _Probe:
    """A virtual maker order: ``side`` ``Buy`` rests at the bid, ``Sell`` at the ask."""

    side: str
    price: Decimal
    ahead: Decimal
    born_ms: int


@dataclass
class LegStats:
    category: str
    symbol: str
    spreads_bps: list[float] = field(default_factory=list)
    trades: int = 0
    probes: list[_Probe] = field(default_factory=list)
    fill_s: list[float] = field(default_factory=list)
    by_move: int = 0
    unfilled: int = 0
    reached_ms: dict[tuple[str, int], int] = field(default_factory=dict)  # (side, born) → when

    def on_trades(self, trades: list[_Trade], now: int) -> None:
        self.trades += len(trades)
        for trade in trades:
            for probe in list(self.probes):
                # a taker Sell trades against bids, a taker Buy against asks
                if (probe.side == "Buy") != (trade.S == "Sell"):
                    continue
                through = trade.p < probe.price if probe.side == "Buy" else trade.p > probe.price
                if trade.p == probe.price:
                    probe.ahead -= trade.v
                    if probe.ahead < 0:
                        self._reached(probe, now, moved=False)
                elif through:
                    self._reached(probe, now, moved=False)

    def on_book(self, book: Book, now: int) -> None:
        """After a step: the book moving through a probe reaches it; redraws shrink queues."""
        bid, ask = book.best_bid(), book.best_ask()
        for probe in list(self.probes):
            crossed = (
                (ask is not None and ask <= probe.price)
                if probe.side == "Buy"
                else (bid is not None and bid >= probe.price)
            )
            if crossed:
                self._reached(probe, now, moved=True)
                continue
            level = book.side(probe.side).levels.get(probe.price)
            background = level.background if level is not None else Decimal(0)
            probe.ahead = min(probe.ahead, background)
            if (now - probe.born_ms) / 1000 >= PROBE_TIMEOUT_S:
                self.probes.remove(probe)
                self.unfilled += 1
        if bid is not None and ask is not None:
            mid = (bid + ask) / 2
            self.spreads_bps.append(float((ask - bid) / mid) * 1e4)

    def probe(self, book: Book, now: int) -> None:
        for side, price in (("Buy", book.best_bid()), ("Sell", book.best_ask())):
            if price is None:
                continue
            level = book.side(side).levels.get(price)
            ahead = level.background if level is not None else Decimal(0)
            self.probes.append(_Probe(side=side, price=price, ahead=ahead, born_ms=now))

    def _reached(self, probe: _Probe, now: int, *, moved: bool) -> None:
        self.probes.remove(probe)
        self.fill_s.append((now - probe.born_ms) / 1000)
        self.reached_ms[(probe.side, probe.born_ms)] = now
        if moved:
            self.by_move += 1


@dataclass
class BasisStats:
    """Basis samples and the strategy's entry → exit cycles of one symbol."""

    symbol: str
    entry_bps: float
    exit_bps: float
    samples: list[float] = field(default_factory=list)
    beyond_samples: int = 0
    side: int = 0  # 0 flat, +1 after crossing +entry, -1 after crossing -entry
    entered_ms: int = 0
    entered_bps: float = 0.0
    beyond: bool = False  # still beyond the entry threshold since the crossing
    up: int = 0
    down: int = 0
    revert_s: list[float] = field(default_factory=list)
    dwell_s: list[float] = field(default_factory=list)
    capture_bps: list[float] = field(default_factory=list)

    def add(self, basis: float, now: int) -> None:
        self.samples.append(basis)
        if abs(basis) >= self.entry_bps:
            self.beyond_samples += 1
        if self.side == 0:
            if abs(basis) >= self.entry_bps:
                self.side = 1 if basis > 0 else -1
                if self.side > 0:
                    self.up += 1
                else:
                    self.down += 1
                self.entered_ms = now
                self.entered_bps = basis
                self.beyond = True
            return
        signed = basis * self.side
        if self.beyond and signed < self.entry_bps:
            self.beyond = False
            self.dwell_s.append((now - self.entered_ms) / 1000)
        if signed <= self.exit_bps:
            if self.beyond:
                self.beyond = False
                self.dwell_s.append((now - self.entered_ms) / 1000)
            self.revert_s.append((now - self.entered_ms) / 1000)
            self.capture_bps.append((self.entered_bps - basis) * self.side)
            self.side = 0


@dataclass
class Result:
    config: SimConfig
    seconds: float
    seed: int
    basis: dict[str, BasisStats]
    legs: dict[tuple[str, str], LegStats]
    wall_s: float


# === the run =============================================================================


def _mid(book: Book) -> Decimal | None:
    bid, ask = book.best_bid(), book.best_ask()
    if bid is None or ask is None:
        return None
    return (bid + ask) / 2


def run(
    config: SimConfig,
    *,
    seconds: float,
    seed: int,
    probe_every_s: float = 1.0,
    entry_bps: Callable[[str], float] | None = None,
    exit_bps: float = EXIT_BPS,
) -> Result:
    started = time.perf_counter()
    clock = [START_MS]
    exchange = Exchange(config, seed=seed, clock=lambda: clock[0])
    exchange.wants = lambda category, topic: topic.startswith("publicTrade.")
    threshold = entry_bps or (lambda symbol: ENTRY_BPS.get(symbol, DEFAULT_ENTRY_BPS))

    legs = {key: LegStats(category=key[0], symbol=key[1]) for key in exchange.books}
    symbols = sorted(
        {
            s
            for _, s in exchange.books
            if ("spot", s) in exchange.books and ("linear", s) in exchange.books
        }
    )
    basis = {s: BasisStats(symbol=s, entry_bps=threshold(s), exit_bps=exit_bps) for s in symbols}

    def on_public(category: str, topic: str, message: bytes) -> None:
        if topic.startswith("publicTrade."):
            symbol = topic.split(".", 1)[1]
            legs[(category, symbol)].on_trades(_decode_trades(message).data, clock[0])

    exchange.on_public = on_public
    probe_every_ms = max(STEP_MS, round(probe_every_s * 1000))
    steps = round(seconds * 1000 / STEP_MS)
    for i in range(1, steps + 1):
        clock[0] = START_MS + i * STEP_MS
        exchange.advance()
        now = clock[0]
        for key, stats in legs.items():
            book = exchange.books[key]
            stats.on_book(book, now)
            if (now - START_MS) % probe_every_ms == 0:
                stats.probe(book, now)
        for symbol, stats_b in basis.items():
            spot = _mid(exchange.books[("spot", symbol)])
            perp = _mid(exchange.books[("linear", symbol)])
            if spot is None or perp is None or spot <= 0:
                continue
            stats_b.add(float(perp / spot - 1) * 1e4, now)
    for stats in legs.values():  # probes still waiting at the end never filled
        stats.unfilled += len(stats.probes)
        stats.probes.clear()
    return Result(
        config=config,
        seconds=steps * STEP_MS / 1000,
        seed=seed,
        basis=basis,
        legs=legs,
        wall_s=time.perf_counter() - started,
    )


# === the report ==========================================================================


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _f(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _bps(rate: Decimal) -> float:
    return float(rate * 10000)


def report(result: Result) -> str:
    config = result.config
    model = config.model
    minutes = result.seconds / 60
    fees = config.fees
    maker_rt = 2 * _bps(fees.spot.maker) + 2 * _bps(fees.linear.maker)
    strategy_rt = (
        _bps(fees.spot.maker)
        + _bps(fees.linear.maker)
        + _bps(fees.spot.taker)
        + _bps(fees.linear.taker)
    )
    theta = float(model.basis_reversion_per_s)
    sigma = float(model.basis_volatility_bps)
    stationary = sigma / math.sqrt(2 * theta) if theta > 0 else math.inf
    out: list[str] = []
    out.append(
        f"simulated {result.seconds:.0f} s, seed {result.seed}, step {model.step_ms} ms "
        f"(wall {result.wall_s:.1f} s)"
    )
    out.append(
        f"model: basis mean {model.basis_mean_bps} bps, reversion {model.basis_reversion_per_s}/s "
        f"(half-life {_f(math.log(2) / theta if theta > 0 else math.inf, 1)} s), "
        f"volatility {model.basis_volatility_bps} bps/√s → stationary std {_f(stationary)} bps; "
        f"taker {model.taker_rate_per_s}/s per book, size {model.taker_size_levels} levels; "
        f"spread {model.spread_ticks} tick(s), level notional {model.level_notional}"
    )
    out.append(
        f"fees (bps): spot maker {_f(_bps(fees.spot.maker))} taker {_f(_bps(fees.spot.taker))}, "
        f"perp maker {_f(_bps(fees.linear.maker))} taker {_f(_bps(fees.linear.taker))}"
    )
    out.append(
        f"round trip: all maker (2 × spot maker + 2 × perp maker) {_f(maker_rt)} bps; "
        f"as the strategy trades (maker entry + maker hedge + market exits) {_f(strategy_rt)} bps"
    )
    out.append("")
    rows: list[list[str]] = []
    for symbol, b in result.basis.items():
        cycles = b.up + b.down
        rows.append(
            [
                symbol,
                _f(b.entry_bps, 0),
                _f(b.entry_bps - maker_rt),
                _f(_mean(b.samples)),
                _f(statistics.pstdev(b.samples) if b.samples else math.nan),
                _f(_quantile([abs(x) for x in b.samples], 0.95)),
                _f(max((abs(x) for x in b.samples), default=math.nan), 1),
                _f(100 * b.beyond_samples / len(b.samples) if b.samples else math.nan, 1),
                _f(b.up / minutes),
                _f(b.down / minutes),
                _f(cycles / minutes),
                _f(_median(b.revert_s), 1),
                _f(_median(b.dwell_s), 1),
                _f(_mean(b.capture_bps), 1),
                _f(_mean(b.capture_bps) - strategy_rt, 1),
            ]
        )
    exits = sorted({b.exit_bps for b in result.basis.values()})
    out.append(f"basis (bps), exit threshold {', '.join(_f(x, 0) for x in exits) or '-'}:")
    out.append(
        _table(
            [
                "symbol",
                "entry",
                "entry-fees",
                "mean",
                "std",
                "p95|b|",
                "max|b|",
                "% beyond",
                "+x/min",
                "-x/min",
                "cycles/min",
                "revert s",
                "beyond s",
                "capture",
                "capt-strat",
            ],
            rows,
        )
    )
    out.append(
        "  entry-fees: entry threshold minus the all-maker round trip; +x/-x: entries above "
        "+entry / below -entry per minute; revert s: median time from the entry crossing to the "
        "exit threshold; % beyond: share of time with |basis| at or beyond the entry threshold; "
        "beyond s: median time the basis stays beyond the entry threshold; "
        "capture: mean basis between the two crossings (mid to mid, no fees); capt-strat: "
        "capture minus the strategy's round trip"
    )
    out.append("")
    rows = []
    for (category, symbol), leg in sorted(result.legs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        probes = len(leg.fill_s) + leg.unfilled
        within = sum(1 for s in leg.fill_s if s <= 5.0)
        rows.append(
            [
                f"{symbol} {category}",
                _f(_mean(leg.spreads_bps), 3),
                _f(leg.trades / result.seconds),
                str(probes),
                _f(_median(leg.fill_s), 1),
                _f(_quantile(leg.fill_s, 0.9), 1),
                _f(100 * within / probes if probes else math.nan, 0),
                _f(100 * leg.by_move / len(leg.fill_s) if leg.fill_s else math.nan, 0),
            ]
        )
    out.append("book and maker fills (virtual order joining the touch, bid and ask):")
    out.append(
        _table(
            [
                "leg",
                "spread bps",
                "trades/s",
                "probes",
                "fill med s",
                "fill p90 s",
                "% ≤5 s",
                "% by move",
            ],
            rows,
        )
    )
    out.append(
        "  % by move: share of fills where the book moved through the order rather than a trade "
        f"reaching it in the queue; unreached after {PROBE_TIMEOUT_S:.0f} s counts as not ≤5 s"
    )
    out.append("")
    out.append(
        "race: spot and perp orders joining the same side at the same moment, share of pairs "
        f"(with at least one reached) where both are reached within {TOGETHER_MS} ms of each other:"
    )
    for symbol in result.basis:
        spot = result.legs[("spot", symbol)].reached_ms
        perp = result.legs[("linear", symbol)].reached_ms
        pairs = set(spot) | set(perp)
        both = sum(
            1 for k in pairs if k in spot and k in perp and abs(spot[k] - perp[k]) <= TOGETHER_MS
        )
        share = 100 * both / len(pairs) if pairs else math.nan
        out.append(f"  {symbol}: {_f(share, 0)} % of {len(pairs)}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sim_model_stats",
        description="Basis, spread and maker-fill statistics of the simulator's market model.",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="simulator config (default: built-in)"
    )
    parser.add_argument(
        "--seconds", type=float, default=600.0, help="simulated seconds (default 600)"
    )
    parser.add_argument("--seed", type=int, default=1, help="market model seed (default 1)")
    parser.add_argument(
        "--probe-every",
        type=float,
        default=1.0,
        help="seconds between virtual maker orders per leg and side (default 1)",
    )
    parser.add_argument(
        "--exit-bps",
        type=float,
        default=EXIT_BPS,
        help=f"exit threshold in bps (default {EXIT_BPS:g})",
    )
    args = parser.parse_args(argv)
    try:
        config = load_sim_config(args.config)
    except SimConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.seconds <= 0:
        print("error: --seconds must be positive", file=sys.stderr)
        return 2
    print(f"config: {args.config if args.config is not None else '(built-in defaults)'}")
    result = run(
        config,
        seconds=args.seconds,
        seed=args.seed,
        probe_every_s=args.probe_every,
        exit_bps=args.exit_bps,
    )
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

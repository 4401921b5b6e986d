"""Decision latency of the pure core per book update, and its throughput on a mixed stream.

``make bench`` (``python -m bench.core``). Each scenario is reached by driving the core through
real events against a cooperative venue (``bench.common.Sim``), then timed one
``core.step(state, BookTop(...), now)`` at a time with ``time.perf_counter_ns``; the venue's
answers to any commands a timed step returns are fed back untimed. The cyclic garbage collector
is disabled during every timed section (after a ``gc.collect()``) and re-enabled afterwards.

A baseline measured in the same run, ``json.loads`` of one Bybit ``orderbook.1`` message, lets
figures from different machines be compared: read the ``× json`` columns.

Timing never fails the run: the targets are printed with PASS/MISS and the exit code is 0.

Options: ``--quick`` (fewer updates), ``--profile SCENARIO`` (cProfile of one scenario's timed
loop, top functions by own time; scenarios: flat, entry, race, carry, mixed).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import decimal
import gc
import json
import os
import platform
import pstats
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import Latency, Market, Sim, VenueOrder, latency
from worker.core import snapshot
from worker.core.commands import AmendOrder, CancelOrder, Command, PlaceOrder
from worker.core.events import BookTop, Event, Tick
from worker.core.model import CoreState, Leg, Phase, Purpose
from worker.core.strategy import Core

TARGET_MEDIAN_US = 20.0
TARGET_P99_US = 100.0
N_UPDATES = 200_000  # timed book updates per scenario
N_WARMUP = 10_000
N_BASELINE = 200_000
ROUNDS = 4  # each figure is measured in rounds, with a baseline round after each
RACE_EPISODE = 500  # updates (2.5 s) before the race state is restored; max_unhedged_ms is 3 s

# One Bybit v5 public ``orderbook.1`` push (linear BTCUSDT), the shape of the docs' example and
# of the orderbook fixtures in /work/shared/fixtures/bybit: level 1 is always a snapshot.
ORDERBOOK_1 = (
    '{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1687940967466,'
    '"data":{"s":"BTCUSDT","b":[["30247.20","30.028"]],"a":[["30247.30","0.892"]],'
    '"u":177400507,"seq":66544703342},"cts":1687940967464}'
)


# ---------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """A core driven to the state to measure, and the market that keeps moving around it."""

    name: str
    title: str
    phase: Phase
    sim: Sim
    market: Market
    episode: int | None = None  # restore the starting state every ``episode`` updates
    start: tuple[bytes, Market, dict[str, VenueOrder], dict[Leg, BookTop], int] | None = None

    def __post_init__(self) -> None:
        if self.episode:
            sim = self.sim
            self.start = (
                snapshot.encode(sim.state),
                copy.deepcopy(self.market),
                copy.deepcopy(sim.venue),
                dict(sim.tops),
                sim.now,
            )

    def restore(self) -> None:
        """Back to the state the scenario was built in, on a fresh path of the market."""
        assert self.start is not None
        blob, market, venue, tops, now = self.start
        sim = self.sim
        sim.state = snapshot.decode(blob)
        sim.venue = copy.deepcopy(venue)
        sim.resting = {k: v for k, v in sim.venue.items() if v.live and v.price is not None}
        sim.tops = dict(tops)
        sim.now = now
        rng = self.market.rng
        self.market = copy.deepcopy(market)
        self.market.rng = rng


def _sim_and_market(seed: int, band: tuple[float, float], basis: float) -> tuple[Sim, Market]:
    sim = Sim.make()
    market = Market(rng=random.Random(seed), band=band, basis=basis)
    for _ in range(4):
        sim.book(market.next())
    return sim, market


def _live(sim: Sim, purpose: Purpose) -> str:
    ids = [o.link_id for o in sim.state.orders.values() if o.purpose is purpose]
    assert len(ids) == 1, (purpose, sim.state.orders)
    return ids[0]


def flat() -> Scenario:
    sim, market = _sim_and_market(1, (-6.0, 6.0), 0.0)
    assert sim.state.phase is Phase.FLAT, sim.state.phase
    return Scenario("flat", "(a) flat, basis inside ±threshold", Phase.FLAT, sim, market)


def entry() -> Scenario:
    sim, market = _sim_and_market(2, (14.0, 26.0), 20.0)
    assert sim.state.phase is Phase.ENTRY_WORKING, sim.state.phase
    _live(sim, Purpose.ENTRY)
    return Scenario("entry", "(b) entry_working, entry chased", Phase.ENTRY_WORKING, sim, market)


def race() -> Scenario:
    sim, market = _sim_and_market(3, (14.0, 26.0), 20.0)
    sim.run(sim.fill(_live(sim, Purpose.ENTRY)))
    assert sim.state.phase is Phase.RACE_EXIT, sim.state.phase
    _live(sim, Purpose.HEDGE)
    _live(sim, Purpose.SPOT_EXIT)
    return Scenario(
        "race",
        "(c) race_exit, hedge + spot exit",
        Phase.RACE_EXIT,
        sim,
        market,
        episode=RACE_EPISODE,
    )


def carry() -> Scenario:
    sim, market = _sim_and_market(4, (14.0, 26.0), 20.0)
    sim.run(sim.fill(_live(sim, Purpose.ENTRY)))
    sim.run(sim.fill(_live(sim, Purpose.HEDGE)))
    assert sim.state.phase is Phase.CARRY_HEDGED, sim.state.phase
    assert not sim.state.orders
    market.band, market.basis = (4.0, 9.0), 6.0  # between exit (2) and emergency (50)
    return Scenario("carry", "(d) carry_hedged, watching exits", Phase.CARRY_HEDGED, sim, market)


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "flat": flat,
    "entry": entry,
    "race": race,
    "carry": carry,
}


@dataclass
class Run:
    """Samples of one figure, what the timed steps asked for, and the baseline measured beside."""

    samples: list[int] = field(default_factory=list)
    json: list[int] = field(default_factory=list)  # baseline samples taken between its rounds
    places: int = 0
    amends: int = 0
    cancels: int = 0
    off_phase: int = 0  # timed steps that started outside the scenario's phase
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def lat(self) -> Latency:
        return latency(self.samples)

    @property
    def json_lat(self) -> Latency:
        return latency(self.json)


def time_books(
    sc: Scenario, n: int, run: Run | None = None, *, profile: cProfile.Profile | None = None
) -> Run:
    """Time ``n`` book updates, one ``core.step`` each; answers to their commands run untimed.
    With ``profile``, the profiler is on during the core's steps only."""
    run = Run() if run is None else run
    sim = sc.sim
    step = sim.core.step
    perf = time.perf_counter_ns
    samples = run.samples
    episode = sc.episode or n
    gc.collect()
    gc.disable()
    try:
        done = 0
        while done < n:
            if sc.episode:
                sc.restore()
            books = sc.market.books(min(episode, n - done))
            state = sim.state
            for ev in books:
                now = ev.ts_ms
                sim.now = now
                sim.tops[ev.leg] = ev
                if state.phase is not sc.phase:
                    run.off_phase += 1
                if profile is None:
                    t0 = perf()
                    cmds = step(state, ev, now)
                    t1 = perf()
                    samples.append(t1 - t0)
                else:
                    profile.enable()
                    cmds = step(state, ev, now)
                    profile.disable()
                if cmds:
                    for c in cmds:
                        if isinstance(c, AmendOrder):
                            run.amends += 1
                        elif isinstance(c, CancelOrder):
                            run.cancels += 1
                        elif isinstance(c, PlaceOrder):
                            run.places += 1
                    sim.run(sim.answer(cmds))
            done += len(books)
    finally:
        gc.enable()
    return run


def mixed(n_books: int, *, profile: cProfile.Profile | None = None) -> Run:
    """Full cycles on a basis swinging through every threshold: book updates on both legs, a
    Tick every 100 ms, acks, order updates and executions (maker orders fill when the book
    trades through them, and partly now and then). Every core step is timed; the baseline is
    sampled at each quarter of the stream."""
    sim = Sim.make()
    sim.cross_fills = True
    sim.partial_prob = 0.01
    market = Market(rng=random.Random(5), band=(-16.0, 16.0), basis=0.0, period_ms=20_000)
    for _ in range(N_WARMUP):
        sim.book(market.next())
    run = Run()
    sim.samples = run.samples
    sim.kinds = {}
    if profile is not None:
        sim.samples = None
        sim.core = _profiled(sim.core, profile)
    phases: dict[str, int] = {}
    quarter = max(1, n_books // ROUNDS)
    wall = 0
    gc.collect()
    gc.disable()
    try:
        for i in range(n_books):
            if i % quarter == 0:
                run.json.extend(_time_json(N_BASELINE // (ROUNDS * 5)))
            t = time.perf_counter_ns()
            sim.book(market.next())
            if i % 20 == 19:
                sim.run([Tick()])
            wall += time.perf_counter_ns() - t
            phases[sim.state.phase] = phases.get(sim.state.phase, 0) + 1
    finally:
        gc.enable()
    sim.samples = None
    n = len(run.samples)
    core_ns = sum(run.samples)
    run.extra = {
        "events": float(n),
        "events_per_s": n / (core_ns / 1e9) if core_ns else 0.0,
        "wall_events_per_s": n / (wall / 1e9),
        "cycles": float(sim.state.cycles_done),
        "halted": float(sim.state.phase is Phase.HALTED),
        **{f"phase:{k}": v / n_books for k, v in phases.items()},
        **{f"kind:{k}": float(v) for k, v in sim.kinds.items()},
    }
    return run


def _profiled(core: Core, profile: cProfile.Profile) -> Core:
    """The same core with the profiler switched on around each of its steps."""
    step = core.step

    def profiled_step(state: CoreState, event: Event, now_ms: int) -> list[Command]:
        profile.enable()
        try:
            return step(state, event, now_ms)
        finally:
            profile.disable()

    core.step = profiled_step  # type: ignore[method-assign]
    return core


# ---------------------------------------------------------------------- baseline


def timer_overhead(n: int = 100_000) -> Latency:
    perf = time.perf_counter_ns
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            t0 = perf()
            t1 = perf()
            samples.append(t1 - t0)
    finally:
        gc.enable()
    return latency(samples)


def _time_json(n: int) -> list[int]:
    """``json.loads`` of the orderbook.1 message, timed per call like a core step (the caller
    owns the gc state)."""
    loads = json.loads
    msg = ORDERBOOK_1
    perf = time.perf_counter_ns
    for _ in range(min(n, 1000)):
        loads(msg)
    samples = []
    for _ in range(n):
        t0 = perf()
        loads(msg)
        t1 = perf()
        samples.append(t1 - t0)
    return samples


def json_round(run: Run, n: int) -> None:
    gc.collect()
    gc.disable()
    try:
        run.json.extend(_time_json(n))
    finally:
        gc.enable()


def measure(sc: Scenario, n: int) -> Run:
    """Warm up, then ``ROUNDS`` rounds of book updates, each followed by a baseline round, so a
    machine that slows down mid-run shows in both figures alike."""
    time_books(sc, N_WARMUP)
    run = Run()
    for _ in range(ROUNDS):
        time_books(sc, n // ROUNDS, run)
        json_round(run, N_BASELINE // (ROUNDS * 5))
    return run


# ---------------------------------------------------------------------- report


def _mark(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def _environment() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    c_decimal = hasattr(decimal, "__libmpdec_version__")
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load avg "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
        f"decimal: {'C (libmpdec)' if c_decimal else 'pure Python'}"
    )


def report(timer: Latency, runs: list[tuple[Scenario, Run]], mix: Run, elapsed: float) -> None:
    every = [r for _, r in runs] + [mix]
    pooled = Run(samples=[x for r in every for x in r.json])
    base = pooled.lat
    rounds = [latency(r.json).median_us for r in every]
    print()
    print("arbhub core bench: decision latency per book update (one core.step on a BookTop)")
    print(_environment())
    print(
        "gc: DISABLED during every timed section (gc.collect() before, re-enabled after); "
        f"timer: time.perf_counter_ns around each call, overhead median "
        f"{timer.median_us * 1000:.0f} ns (included, not subtracted)"
    )
    print(
        f"targets per book update: median <= {TARGET_MEDIAN_US:g} us, p99 <= {TARGET_P99_US:g} us"
    )
    print()
    print(
        f"baseline  json.loads(Bybit orderbook.1 message, {len(ORDERBOOK_1)} B): "
        f"median {base.median_us:.2f} us, p99 {base.p99_us:.2f} us, "
        f"{1e6 / base.mean_us:,.0f} msg/s (n={base.n:,}, in rounds between the figures; "
        f"round medians {min(rounds):.2f}..{max(rounds):.2f} us)"
    )
    print()
    head = (
        f"{'book update in':<36}{'updates':>9}{'median us':>11}{'':>5}{'× json':>8}"
        f"{'p99 us':>9}{'':>5}{'× json':>8}{'max us':>9}  {'amend/cancel/place per 1k':<25}"
    )
    print(head)
    print("-" * len(head))
    for sc, r in runs:
        lat, b = r.lat, r.json_lat.median_us
        per_k = 1000 / lat.n
        actions = f"{r.amends * per_k:.1f} / {r.cancels * per_k:.1f} / {r.places * per_k:.1f}"
        note = "" if not r.off_phase else f"  ({r.off_phase} steps outside {sc.phase}!)"
        print(
            f"{sc.title:<36}{lat.n:>9,}{lat.median_us:>11.2f} "
            f"{_mark(lat.median_us, TARGET_MEDIAN_US):>4}{lat.median_us / b:>8.1f}"
            f"{lat.p99_us:>9.2f} {_mark(lat.p99_us, TARGET_P99_US):>4}"
            f"{lat.p99_us / b:>8.1f}{lat.max_us:>9.0f}  {actions:<25}{note}"
        )
    print()
    x, lat = mix.extra, mix.lat
    eps, json_rate = x["events_per_s"], 1e6 / mix.json_lat.mean_us
    by_size = sorted(x.items(), key=lambda kv: -kv[1])
    kinds = ", ".join(f"{k[5:]} {int(v):,}" for k, v in by_size if k.startswith("kind:"))
    phases = ", ".join(f"{k[6:]} {v:.0%}" for k, v in by_size if k.startswith("phase:"))
    print(
        f"mixed stream: {int(x['events']):,} events, {eps:,.0f} events/s of core time "
        f"({eps / json_rate:.2f} × json.loads msg/s); "
        f"{x['wall_events_per_s']:,.0f} events/s wall including the simulated venue"
    )
    print(
        f"  per event: median {lat.median_us:.2f} us "
        f"{_mark(lat.median_us, TARGET_MEDIAN_US)}, p99 {lat.p99_us:.2f} us "
        f"{_mark(lat.p99_us, TARGET_P99_US)}, max {lat.max_us:.0f} us; "
        f"{int(x['cycles'])} cycles completed{'; ENDED HALTED' if x['halted'] else ''}"
    )
    print(f"  events: {kinds}")
    print(f"  time in phase (by book update): {phases}")
    print()
    print(
        "× json = figure / median json.loads time measured in rounds beside that figure; "
        "PASS/MISS are informational: the bench never fails on timing."
    )
    print(f"total {elapsed:.1f} s")


def profile_scenario(name: str, n: int) -> None:
    """cProfile of the core's steps only (the market and the venue are not profiled)."""
    prof = cProfile.Profile()
    if name == "mixed":
        mixed(n, profile=prof)
    else:
        sc = SCENARIOS[name]()
        time_books(sc, N_WARMUP)
        time_books(sc, n, profile=prof)
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k updates per figure (smoke run)")
    ap.add_argument("--profile", choices=[*SCENARIOS, "mixed"], help="cProfile one scenario")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else N_UPDATES
    if args.profile:
        profile_scenario(args.profile, min(n, 50_000))
        return 0
    started = time.perf_counter()
    print("running: flat, entry, race, carry, mixed ...", flush=True)
    timer = timer_overhead()
    runs: list[tuple[Scenario, Run]] = []
    for make in SCENARIOS.values():
        t = time.perf_counter()
        sc = make()
        runs.append((sc, measure(sc, n)))
        print(f"  {sc.name}: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    mix = mixed(n)
    print(f"  mixed: {time.perf_counter() - t:.1f} s", flush=True)
    report(timer, runs, mix, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

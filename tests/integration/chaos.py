"""Crash-recovery chaos: SIGKILL the worker at randomized points of its trading cycles.

One scripted ``exchange-sim`` and one ``spot-future-arb`` worker (in a fresh folder) trade
cycle after cycle: the driver plays the market through the simulator's admin API (``/sim/book``
for both sides of the basis, ``/sim/trade`` for the fills of entries, hedges and spot exits,
reverts and emergencies for the carry exits) and, at every *kill point*, SIGKILLs the worker
and restarts it on the same config and state.

Each point aims at one phase (``entry_working``, ``race_exit``, ``carry_hedged``,
``unwinding``; every round of four points covers all of them) with one of three kill modes:

- ``resting``: the worker is killed while it sits in the phase (after a random delay, or once
  its orders rest at the venue); ``unwinding`` is stretched by the simulator's latency fault;
- ``in_flight``: the simulator answers REST after ``LATENCY_MS``; the move that makes the
  worker send is played and the worker is killed at its ``send`` log line or up to 200 ms
  later, between "order sent" and "reply received" (a request that left still lands); an
  amend (logged at debug level only) is caught by time and confirmed at the venue;
- ``lost_reply``: the next order request is applied but never answered; the worker is killed
  a random moment after its ``send`` line, sometimes after its own 5 s request timeout.

The phase a kill lands in is the worker's own (its last logged transition); ``carry_hedged``
sends nothing of its own, so an in-flight kill aimed at it lands in ``race_exit`` with the
spot exit's cancel in flight. While the worker is down the driver sometimes plays the phase's
next move (a fill of a resting order, a basis revert), which the restarted worker must learn
from its resync, and sometimes kills it again right after it starts. After every restart
(``resynced``) and at the end (back to flat, SIGTERM, exit 0), the invariants are checked
against the simulator's own orders and account:

- no ``orderLinkId`` appears twice at the venue, and none was placed twice (``send`` lines);
- every ``btc-`` order at the venue is known to the worker's snapshot or journal, and the
  worker never halts (``unknown order``, ``venue mismatch``, or anything else) or crashes;
- once nothing is in doubt, the snapshot's spot and perp positions equal the account's
  changes (BTC wallet balance minus the starting balance, the signed BTCUSDT position), every
  order's applied fill equals the venue's ``cumExecQty``, and the live orders agree.

A broken invariant ends the run. Separately, the journal (SQLite, written on a thread) must
come to hold every order and every fill the venue has; its gaps are listed as ``JOURNAL GAPS``
without ending the run.

``python -m tests.integration.chaos --points 200 --seed 1`` prints a summary (kills per phase
and mode, failures with details; ``-v``: one line per kill) and exits 1 on any failure or
journal gap (a failed run keeps its folder: logs, snapshot, journal, simulator state). The
plan (targets, modes, random choices) is deterministic given the seed; the exact moments
depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec

from tests.integration.conftest import Json, Sim, start_sim
from tests.integration.worker_harness import Market, WorkerProc, own_orders, write_config
from worker.core.model import CoreState, Order, OrderType

__all__ = [
    "PHASES",
    "AbortError",
    "Chaos",
    "Failure",
    "Kill",
    "LogTail",
    "Summary",
    "main",
    "run_chaos",
]

D = Decimal
PREFIX = "btc-"
SYMBOL = "BTCUSDT"
PHASES = ("entry_working", "race_exit", "carry_hedged", "unwinding")
MODES = ("resting", "in_flight", "lost_reply")
MODE_WEIGHTS = (0.35, 0.45, 0.2)
# carry_hedged sends nothing of its own (its way in is the spot exit's cancel, confirmed before
# the transition): most kills there rest, or come while that cancel's reply is lost
CARRY_MODE_WEIGHTS = (0.5, 0.15, 0.35)
LIVE = ("New", "PartiallyFilled")
DEPTH = D("0.5")  # background size of every scripted level
ENTRY_BPS = 15  # above entry_threshold_bps (10)
EXIT_BPS = 0  # below exit_threshold_bps (2)
EMERGENCY_BPS = 80  # beyond emergency_unwind_bps (60)
LATENCY_MS = 300
RESYNC_TIMEOUT_S = 45.0  # an order in doubt that never landed is resolved after ~8 s
SETTLE_TIMEOUT_S = 25.0
JOURNAL_SHOWN = 10
JOURNAL_GRACE_S = 2.0  # the journal is written on a thread: this long behind at most
POINT_TIMEOUT_S = 90.0
REACT_S = 6.0  # how long the driver waits for the worker to react to a move
TRIGGER_TIMEOUT_S = 8.0  # a kill trigger (send line, phase) not seen by then: try again
PROGRESS_EVERY = 20  # without --verbose, a line every this many points
COVERAGE_POINTS = 20  # a run this long must have killed the worker in every phase
AGAIN_WHILE_RESYNCING = 0.1  # a second kill soon after the restart's started line
LOST_REPLY_TIMEOUT_SHARE = 0.2  # lost_reply kills after the worker's request timeout (5 s)
IN_FLIGHT_AT_ONCE = 0.3  # in_flight kills at the send line itself (the rest within 200 ms)


class AbortError(Exception):
    """A failure after which the run cannot go on meaningfully."""


@dataclass
class Failure:
    point: int
    phase: str
    mode: str
    invariant: str
    detail: str

    def render(self) -> str:
        return f"point {self.point} ({self.phase}, {self.mode}) [{self.invariant}]: {self.detail}"


@dataclass
class Kill:
    point: int
    target: str
    mode: str
    action: str
    phase: str = ""  # the worker's phase when it was killed (its last transition)
    snapshot_phase: str = ""  # the phase of the newest snapshot it left
    send: str = ""  # the request it had just sent (in_flight, lost_reply)
    in_flight: bool = False  # killed between a send line and the reply
    while_down: str = ""  # what the market did while it was down
    again: str = ""  # killed a second time, early in the restart
    restart_s: float = 0.0

    def render(self) -> str:
        parts = [f"#{self.point} {self.phase or '?'} ({self.mode}, {self.action})"]
        if self.send:
            parts.append(f"send {self.send}{' in flight' if self.in_flight else ''}")
        if self.snapshot_phase and self.snapshot_phase != self.phase:
            parts.append(f"snapshot {self.snapshot_phase}")
        if self.while_down:
            parts.append(f"while down: {self.while_down}")
        if self.again:
            parts.append(f"killed again {self.again}")
        parts.append(f"resynced in {self.restart_s:.1f} s")
        return "; ".join(parts)


@dataclass
class Summary:
    seed: int
    planned: int
    folder: Path
    kills: list[Kill] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # the recovery's invariants
    journal: list[Failure] = field(default_factory=list)  # gaps in the journal's record
    cycles: int = 0
    orders: int = 0
    fills: int = 0
    anomalies: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def recovered(self) -> bool:
        """Every point run and every recovery invariant held (the journal aside)."""
        return not self.failures and len(self.kills) == self.planned

    @property
    def ok(self) -> bool:
        return self.recovered and not self.journal

    def missing_phases(self) -> list[str]:
        hit = {k.phase for k in self.kills}
        return [p for p in PHASES if p not in hit]

    def render(self, *, verbose: bool = False) -> str:
        by_phase = Counter(k.phase for k in self.kills)
        by_mode = Counter(k.mode for k in self.kills)
        lines = [
            f"chaos seed {self.seed}: {len(self.kills)}/{self.planned} kill points in "
            f"{self.seconds:.0f} s; {self.cycles} cycles, {self.orders} orders, "
            f"{self.fills} fills at the venue",
            "  kills per phase: "
            + ", ".join(f"{p} {by_phase[p]}" for p in sorted(by_phase, key=_phase_order)),
            "  kills per mode: " + ", ".join(f"{m} {by_mode[m]}" for m in MODES),
            f"  killed between send and reply: {sum(k.in_flight for k in self.kills)}; "
            f"market moved while down: {sum(bool(k.while_down) for k in self.kills)}; "
            f"killed again while restarting: {sum(bool(k.again) for k in self.kills)}",
        ]
        if self.kills:
            slowest = max(k.restart_s for k in self.kills)
            lines.append(f"  restart to resynced: up to {slowest:.1f} s")
        if self.anomalies:
            lines.append(
                "  anomalies reported by the worker: "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.anomalies.items()))
            )
        if verbose:
            lines += ["  " + k.render() for k in self.kills]
        if self.failures:
            lines.append(f"FAILED ({len(self.failures)}):")
            lines += ["  " + f.render() for f in self.failures]
        else:
            lines.append(
                "RECOVERY OK: no fill lost or counted twice, no orderLinkId sent twice, "
                "snapshot positions equal the venue's after every restart"
            )
        if self.journal:
            kinds = Counter(f.invariant for f in self.journal)
            lines.append(
                f"JOURNAL GAPS ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}): "
                "orders or fills at the venue that the journal never recorded"
            )
            lines += ["  " + f.render() for f in self.journal[:JOURNAL_SHOWN]]
            if len(self.journal) > JOURNAL_SHOWN:
                lines.append(f"  … and {len(self.journal) - JOURNAL_SHOWN} more")
        if not self.ok:
            lines.append(f"files kept in {self.folder}")
        return "\n".join(lines)


def _phase_order(phase: str) -> int:
    order = ("flat", *PHASES, "halted")
    return order.index(phase) if phase in order else len(order)


class LogTail:
    """Reads the worker's JSON-lines log as it grows, tracking its phase and sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.phase = "flat"
        self.lines: list[Json] = []
        self.sends: list[Json] = []
        self.counts: Counter[str] = Counter()

    def poll(self) -> list[Json]:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        new = []
        for raw in complete:
            try:
                line = msgspec.json.decode(raw)
            except msgspec.DecodeError:  # a line cut by a kill, joined to the next one
                line = {"event": "<not json>", "raw": raw.decode(errors="replace")}
            if not isinstance(line, dict):
                continue
            event = line.get("event")
            if event in ("started", "resynced"):
                self.phase = str(line.get("phase"))
            elif event == "transition":
                self.phase = str(line.get("target"))
            line["_phase"] = self.phase
            line["_seen"] = time.monotonic()
            if event == "send":
                self.sends.append(line)
            self.counts[str(event)] += 1
            new.append(line)
        self.lines.extend(new)
        return new

    def count(self, event: str) -> int:
        return self.counts[event]


@dataclass
class Move:
    """One move of the market that leads the worker towards a kill target."""

    name: str
    play: Callable[[], None]
    silent: bool = False  # the request it causes is not logged at info level (an amend)


class Chaos:
    """One simulator, one worker, ``points`` kill-and-restart points; see the module doc."""

    def __init__(
        self,
        folder: Path,
        *,
        points: int,
        seed: int,
        progress: Callable[[int, float, Kill], None] | None = None,
    ) -> None:
        self.folder = folder
        self.points = points
        self.rng = random.Random(seed)
        self.progress = progress or (lambda _n, _elapsed, _kill: None)
        self.seed = seed
        self.summary = Summary(seed=seed, planned=points, folder=folder)
        self.plan = self._plan(points)
        self.sim: Sim | None = None
        self.worker: WorkerProc | None = None
        self.market: Market | None = None
        self.tail: LogTail | None = None
        self.btc_start = D(0)
        self.spot_bid = D("50000")
        self.basis = 0
        self.direction = 1  # +1: long-spot cycles (basis above), -1: short-spot
        self.known: set[str] = set()
        self.placed: set[str] = set()
        self.checked = 0  # log lines _health has looked at
        self.point = 0
        self.mode = "setup"
        self.started = time.monotonic()
        self.settle_s = SETTLE_TIMEOUT_S
        self.journal_reported: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ the whole run

    def _plan(self, points: int) -> list[tuple[str, str]]:
        plan: list[tuple[str, str]] = []
        while len(plan) < points:
            phases = list(PHASES)
            self.rng.shuffle(phases)
            for phase in phases:
                weights = CARRY_MODE_WEIGHTS if phase == "carry_hedged" else MODE_WEIGHTS
                plan.append((phase, self.rng.choices(MODES, weights)[0]))
        return plan[:points]

    def run(self) -> Summary:
        try:
            self.start()
            for n, (target, mode) in enumerate(self.plan, start=1):
                self.point, self.mode = n, mode
                self.rng = random.Random(f"{self.seed}:{n}")  # timing stays inside the point
                self._kill_point(target, mode)
                self.progress(n, time.monotonic() - self.started, self.summary.kills[-1])
            self.point, self.mode = len(self.plan) + 1, "final"
            self._finish()
            missing = self.summary.missing_phases()
            if self.points >= COVERAGE_POINTS and missing:
                self._record("coverage", f"no kill landed in {missing}")
        except AbortError:
            pass
        finally:
            self.close()
        return self.summary

    def start(self) -> None:
        """The simulator and the worker, resynced, checked once."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sim = sim = start_sim(self.folder / "sim-state")
        self.market = Market(sim, SYMBOL)
        self.market.depth = str(DEPTH)
        self._books(0)
        self.btc_start = self._btc()
        self.worker = WorkerProc(write_config(self.folder, sim))
        self.tail = LogTail(self.worker.log_path)
        self._wait_resynced(0)
        self.check()

    def _finish(self) -> None:
        """Back to flat without kills, a graceful stop, and the invariants once more."""
        self._drive("flat", lambda: not self._live())
        self.check()
        worker = self._worker()
        code = worker.stop()
        if code != 0:
            self._fail("exit", f"SIGTERM ended the worker with exit code {code}")
        self.check(stopped=True)
        if self._live():
            self._fail("flat", f"orders still live at the venue: {self._live()}")

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.tail is not None:
            self.tail.poll()
            self.summary.anomalies.update(
                str(line.get("kind")) for line in self.tail.lines if line.get("event") == "anomaly"
            )
            self.summary.cycles = self.tail.count("cycle")
        if self.sim is not None:
            with contextlib.suppress(Exception):
                mine = own_orders(self.sim, PREFIX)
                self.summary.orders = len(mine)
                self.summary.fills = sum(1 for o in mine if D(o["cumExecQty"]) > 0)
            self.sim.stop()
        self.summary.seconds = time.monotonic() - self.started

    # ------------------------------------------------------------------ one kill point

    def _kill_point(self, target: str, mode: str) -> None:
        deadline = time.monotonic() + POINT_TIMEOUT_S
        while time.monotonic() < deadline:
            move = self._setup_move(target)
            kill = Kill(point=self.point, target=target, mode=mode, action=move.name)
            if self._try_kill(kill, move, target, mode):
                self._down_and_back(kill)
                return
        self._fail("progress", f"could not reach a kill in {target} within {POINT_TIMEOUT_S} s")

    def _setup_move(self, target: str) -> Move:
        """Drive the cycle to where ``target`` is one move away, and return that move."""
        if target == "entry_working":
            pick = self.rng.random()
            if pick < 0.45:  # re-pricing a working entry
                self._drive("entry_working", lambda: self._entry() is not None)
                if pick < 0.25:
                    return Move("chase", self._chase_far)  # cancel and replace
                return Move("amend", self._chase_near, silent=True)
            self._drive("flat", lambda: not self._live())
            return Move("enter", self._enter)
        if target == "race_exit":
            self._drive("entry_working", lambda: self._entry() is not None)
            return Move("fill entry", self._fill_entry)
        if target == "carry_hedged":
            self._drive("race_exit", lambda: self._hedge() is not None, to_carry=True)
            if self.rng.random() < 0.15:
                return Move("unhedged too long", lambda: None)
            return Move("fill hedge", self._fill_hedge)
        self._drive("carry_hedged", lambda: not self._live(), to_carry=True)
        if self.rng.random() < 0.3:
            return Move("emergency", self._emergency)
        return Move("revert", self._revert)

    def _try_kill(self, kill: Kill, move: Move, target: str, mode: str) -> bool:
        sim, tail = self._sim(), self._tail()
        tail.poll()
        sends_before = len(tail.sends)
        if mode == "in_flight" or (mode == "resting" and target == "unwinding"):
            sim.fault("latency", rest_ms=LATENCY_MS)
        elif mode == "lost_reply":
            sim.fault("lose_reply", count=1)
        try:
            move.play()
            if mode == "resting":
                if not self._await(lambda: self._phase() == target, TRIGGER_TIMEOUT_S, 0.002):
                    return False
                if target != "unwinding" and self.rng.random() < 0.5:
                    self._await(lambda: self._settled_in(target), REACT_S)
                delay = self.rng.uniform(0, 0.25 if target == "unwinding" else 0.4)
                time.sleep(delay)
                tail.poll()
                if self._phase() != target:
                    return False  # it moved on meanwhile: try again
            elif move.silent:  # an amend at the next chase interval, not logged at info
                before = self._entry()
                time.sleep(self.rng.uniform(0.05, 1.0 if mode == "lost_reply" else 0.25))
                self._kill(kill)
                if mode == "in_flight":
                    time.sleep(LATENCY_MS / 1000 + 0.1)  # a request in flight lands
                after = self._sim().order(before["orderLinkId"]) if before else None
                if before and after and after["price"] != before["price"]:
                    kill.send = f"amend {before['orderLinkId']} {before['price']}→{after['price']}"
                    kill.in_flight = True  # the venue took it; its reply was not back
                return True
            else:
                sent = self._await(lambda: len(tail.sends) > sends_before, TRIGGER_TIMEOUT_S, 0.002)
                if not sent:
                    return False
                send = tail.sends[sends_before]
                kill.send = f"{send.get('request')} {send.get('purpose') or ''} " + str(
                    send.get("link_id")
                )
                if mode == "lost_reply" and self.rng.random() < LOST_REPLY_TIMEOUT_SHARE:
                    time.sleep(self.rng.uniform(5.2, 6.5))  # its 5 s timeout: asking by query
                elif mode == "lost_reply":
                    time.sleep(self.rng.uniform(0.05, 1.0))
                elif self.rng.random() < IN_FLIGHT_AT_ONCE:
                    pass  # at once: the step's other requests may not have left the process
                else:  # a little later: every request of the step is at the venue, waiting
                    time.sleep(self.rng.uniform(0.02, 0.2))
                kill.in_flight = True  # latency: answered after 300 ms; lost: never
            self._kill(kill)
            return True
        finally:
            sim.fault("clear")

    def _kill(self, kill: Kill) -> None:
        worker, tail = self._worker(), self._tail()
        worker.kill()
        tail.poll()
        kill.phase = tail.phase
        with contextlib.suppress(AssertionError):
            kill.snapshot_phase = worker.state().phase.value
        self.summary.kills.append(kill)

    def _down_and_back(self, kill: Kill) -> None:
        if kill.in_flight and kill.mode == "in_flight" and kill.action != "amend":
            time.sleep(LATENCY_MS / 1000 + 0.1)  # let the request land before the market moves
        if self.rng.random() < 0.3:
            kill.while_down = self._move_while_down(kill.phase)
        worker, tail = self._worker(), self._tail()
        if self.rng.random() < AGAIN_WHILE_RESYNCING:
            started, resynced = tail.count("started"), tail.count("resynced")
            worker.start()
            if not self._await(lambda: tail.count("started") > started, RESYNC_TIMEOUT_S, 0.002):
                self._fail("start", f"no started line within {RESYNC_TIMEOUT_S} s")
            time.sleep(self.rng.uniform(0, 0.08))
            worker.kill()
            tail.poll()
            done = tail.count("resynced") > resynced
            kill.again = "right after its resync" if done else "while resyncing"
        resynced = tail.count("resynced")
        began = time.monotonic()
        worker.start()
        self._wait_resynced(resynced)
        kill.restart_s = time.monotonic() - began
        self.check()

    def _move_while_down(self, phase: str) -> str:
        if phase == "entry_working" and (entry := self._entry()) is not None:
            self._trade_through(entry)
            return f"entry {entry['orderLinkId']} filled"
        if phase == "race_exit":
            if (hedge := self._hedge()) is not None and self.rng.random() < 0.6:
                self._trade_through(hedge)
                return f"hedge {hedge['orderLinkId']} filled"
            if (spot_exit := self._spot_order()) is not None:
                self._trade_through(spot_exit)
                return f"spot exit {spot_exit['orderLinkId']} filled"
        if phase == "carry_hedged":
            self._revert()
            return "basis reverted"
        return ""

    # ------------------------------------------------------------------ driving the cycle

    def _drive(self, goal: str, ready: Callable[[], bool], *, to_carry: bool = False) -> None:
        """Play the default moves of each phase until the worker is in ``goal`` and ``ready``
        holds; in ``goal`` itself the driver only waits (its orders may be on their way)."""
        deadline = time.monotonic() + POINT_TIMEOUT_S
        while time.monotonic() < deadline:
            self._health()
            phase = self._phase()
            if abs(self.basis) >= EMERGENCY_BPS and phase not in ("carry_hedged", "unwinding"):
                self._books(ENTRY_BPS * self.direction)  # the emergency is over: calm again
            if phase == goal:
                if ready():
                    return
                time.sleep(0.05)
                continue
            before = self._situation()
            wait = self._default_move(phase, goal, to_carry)
            if wait is None:
                time.sleep(0.05)
                continue
            self._await(functools.partial(self._changed, before), wait)
        self._fail(
            "progress",
            f"waiting for {goal}: stuck in {self._phase()} with live orders {self._live()}",
        )

    def _changed(self, before: tuple[str, tuple[str, ...]]) -> bool:
        return self._situation() != before

    def _situation(self) -> tuple[str, tuple[str, ...]]:
        return self._phase(), tuple(sorted(o["orderLinkId"] for o in self._live()))

    def _default_move(self, phase: str, goal: str, to_carry: bool) -> float | None:
        """One move that takes the cycle a step further, and how long the worker may take to
        react (its phase or live orders change); None: nothing to do but wait."""
        live = self._live()
        if phase == "flat":
            if live:
                return None
            self._enter()
            return REACT_S
        if phase == "entry_working":
            if goal == "flat":
                self._revert()  # the basis is gone: the entry is cancelled
                return REACT_S
            entry = self._entry()
            if entry is None:
                return None
            pick = self.rng.random()
            if pick < 0.15:
                self._chase_near()
                return 0.3
            if pick < 0.3:
                self._trade_through(entry, partial=True)
                return 0.3
            self._trade_through(entry)
            return REACT_S
        if phase == "race_exit":
            hedge, spot_exit = self._hedge(), self._spot_order()
            if hedge is not None and spot_exit is not None and self.rng.random() < 0.15:
                self._trade_through(hedge, partial=True)  # the spot exit is amended down
                return 0.3
            pick = 1.0 if to_carry else self.rng.random()
            if spot_exit is not None and (goal == "flat" or pick < 0.3):
                self._trade_through(spot_exit)
            elif hedge is not None and spot_exit is not None and pick < 0.4:
                self._trade_through(hedge)  # both fill: the excess perp is closed
                self._trade_through(spot_exit)
            elif hedge is not None:
                self._trade_through(hedge)
            else:
                return None
            return REACT_S
        if phase == "carry_hedged":
            if live:
                return None
            if goal != "flat" and self.rng.random() < 0.2:
                self._emergency()
            else:
                self._revert()
            return REACT_S
        return None  # unwinding: market orders at work

    def _enter(self) -> None:
        self.direction = self.rng.choice((1, -1))
        self.spot_bid = D("50000") + D(self.rng.randint(-300, 300)) * self._market().tick
        self._books(ENTRY_BPS * self.direction)

    def _chase_near(self) -> None:
        """A small move away from the entry: amended to the new touch."""
        self.spot_bid += self.direction * self._market().tick * self.rng.randint(1, 5)
        self._books(self.basis)

    def _chase_far(self) -> None:
        """A move beyond chase_max_slip_bps: the entry is cancelled and replaced."""
        self.spot_bid += self.direction * self._market().tick * self.rng.randint(200, 400)
        self._books(self.basis)

    def _fill_entry(self) -> None:
        entry = self._entry()
        if entry is not None:
            self._trade_through(entry)

    def _fill_hedge(self) -> None:
        hedge = self._hedge()
        if hedge is not None:
            self._trade_through(hedge)

    def _revert(self) -> None:
        self._books(EXIT_BPS)

    def _emergency(self) -> None:
        self._books(EMERGENCY_BPS * self.direction)

    def _books(self, basis: int) -> None:
        self.basis = basis
        self._market().at(self.spot_bid, D(basis))

    def _trade_through(self, order: Json, *, partial: bool = False) -> None:
        """An outside taker trades through the order's level (the background first)."""
        leaves = D(order["qty"]) - D(order["cumExecQty"])
        qty = DEPTH + (leaves / 2 if partial else leaves + D("0.01"))
        category = order["category"]
        taker = "Sell" if order["side"] == "Buy" else "Buy"
        self._sim().trade(category, SYMBOL, taker, order["price"], f"{qty:.6f}")
        self._books(self.basis)  # the trade emptied that side of the scripted book

    # ------------------------------------------------------------------ what is where

    def _phase(self) -> str:
        self._tail().poll()
        return self._tail().phase

    def _live(self) -> list[Json]:
        return [o for o in own_orders(self._sim(), PREFIX) if o["orderStatus"] in LIVE]

    def _entry(self) -> Json | None:
        spot = [o for o in self._live() if o["category"] == "spot"]
        return spot[0] if len(spot) == 1 and self._phase() == "entry_working" else None

    def _spot_order(self) -> Json | None:
        spot = [o for o in self._live() if o["category"] == "spot" and o["orderType"] == "Limit"]
        return spot[0] if len(spot) == 1 else None

    def _hedge(self) -> Json | None:
        perp = [o for o in self._live() if o["category"] == "linear" and o["orderType"] == "Limit"]
        return perp[0] if len(perp) == 1 else None

    def _settled_in(self, phase: str) -> bool:
        if phase == "entry_working":
            return self._entry() is not None
        if phase == "race_exit":
            return self._hedge() is not None and self._spot_order() is not None
        return not self._live()

    def _btc(self) -> Decimal:
        return D(self._sim().account()["balances"]["BTC"]["walletBalance"])

    def _perp_position(self, account: Json) -> Decimal:
        for pos in account["positions"]:
            if pos["symbol"] == SYMBOL:
                size = D(pos["size"])
                return size if pos["side"] == "Buy" else -size
        return D(0)

    def _journal(self) -> tuple[set[str], dict[str, list[tuple[str, Decimal]]]]:
        """The journal's order ids and fills per order (read-only; the worker writes in WAL)."""
        path = self.folder / "state" / "btc.journal.sqlite"
        if not path.exists():
            return set(), {}
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            orders = {row[0] for row in db.execute("SELECT link_id FROM orders")}
            fills: dict[str, list[tuple[str, Decimal]]] = {}
            for exec_id, link_id, qty in db.execute("SELECT exec_id, link_id, qty FROM fills"):
                fills.setdefault(link_id, []).append((exec_id, D(qty)))
        except sqlite3.OperationalError:  # created but no tables yet
            return set(), {}
        finally:
            db.close()
        return orders, fills

    # ------------------------------------------------------------------ invariants

    def check(self, *, stopped: bool = False) -> None:
        """Hard invariants at once, the settled ones within ``settle_s``; a broken one is
        recorded in the summary and raises ``AbortError``."""
        deadline = time.monotonic() + self.settle_s
        settled_at = None
        while True:
            self._health(alive=not stopped)
            problems, journal = self._problems()
            journal = [j for j in journal if j[:2] not in self.journal_reported]
            now = time.monotonic()
            if not problems:
                settled_at = settled_at or now
                if not journal or now > settled_at + JOURNAL_GRACE_S:
                    for invariant, link_id, detail in journal:  # recorded; the run goes on
                        self.journal_reported.add((invariant, link_id))
                        self._record(invariant, detail, journal=True)
                    return
            else:
                settled_at = None
            if now > deadline:
                for invariant, detail in problems:
                    self._record(invariant, detail)
                raise AbortError
            time.sleep(0.1)

    def _health(self, *, alive: bool = True) -> None:
        """The worker is alive, has not halted or crashed, and sent no id twice."""
        worker, tail = self._worker(), self._tail()
        tail.poll()
        proc = worker.proc
        if alive and proc is not None and proc.poll() is not None:
            self._fail("alive", f"the worker exited with code {proc.returncode}")
        fresh, self.checked = tail.lines[self.checked :], len(tail.lines)
        for line in fresh:
            event = line.get("event")
            if event == "halted":
                self._fail("halted", f"{line.get('reason')}: {line.get('detail')}")
            if event in ("crash", "crashed", "venue_mismatch"):
                self._fail(str(event), f"{line.get('error') or line.get('detail')}")
            if event == "anomaly" and line.get("kind") == "unknown_order":
                self._fail("unknown order", str(line.get("detail")))
            if event == "send" and line.get("request") == "place":
                link_id = str(line.get("link_id"))
                if link_id in self.placed:
                    self._fail("sent twice", f"a second place request for {link_id}")
                self.placed.add(link_id)

    def _problems(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
        """The settled invariants still broken, and the journal's gaps."""
        sim, worker = self._sim(), self._worker()
        venue = own_orders(sim, PREFIX)
        ids = Counter(o["orderLinkId"] for o in venue)
        twice = sorted(link for link, n in ids.items() if n > 1)
        if twice:
            self._fail("sent twice", f"the venue holds these orderLinkIds twice: {twice}")
        state = worker.state()
        account = sim.account()
        journal_orders, journal_fills = self._journal()
        ours: dict[str, Order] = {**state.done, **state.orders}
        self.known |= set(ours) | journal_orders
        unknown = [o["orderLinkId"] for o in venue if o["orderLinkId"] not in self.known]
        if unknown:
            self._fail(
                "unknown order",
                f"the venue holds {unknown}, unknown to the snapshot and the journal",
            )
        problems: list[tuple[str, str]] = []
        doubt = [
            f"{o.link_id} {o.status.value}"
            + (" amend pending" if o.amend is not None else "")
            + (" cancel unconfirmed" if o.cancel_sent_ms and not o.cancel_acked else "")
            for o in state.orders.values()
            if o.status.in_doubt or o.amend is not None or (o.cancel_sent_ms and not o.cancel_acked)
        ]
        if doubt:
            problems.append(("settled", f"orders still in doubt after {self.settle_s} s: {doubt}"))
        problems += self._position_problems(state, account)
        problems += self._order_problems(state, venue, ours)
        return problems, self._journal_problems(venue, journal_orders, journal_fills)

    def _journal_problems(
        self,
        venue: list[Json],
        journal_orders: set[str],
        journal_fills: dict[str, list[tuple[str, Decimal]]],
    ) -> list[tuple[str, str, str]]:
        """(invariant, orderLinkId, detail): the journal's record of the venue's orders."""
        out = []
        for row in venue:
            link_id, cum = row["orderLinkId"], D(row["cumExecQty"])
            if link_id not in journal_orders:
                detail = f"{link_id} ({row['category']} {row['side']} {row['orderType']}, "
                detail += f"{row['orderStatus']}) is at the venue, not in the journal's orders"
                out.append(("journal orders", link_id, detail))
            fills = journal_fills.get(link_id, [])
            journaled = sum((qty for _, qty in fills), D(0))
            if journaled != cum:
                detail = f"{link_id}: the journal holds {len(fills)} fill(s) of {journaled}, "
                detail += f"the venue filled {cum}"
                out.append(("journal fills", link_id, detail))
        return out

    def _position_problems(self, state: CoreState, account: Json) -> list[tuple[str, str]]:
        spot = D(account["balances"]["BTC"]["walletBalance"]) - self.btc_start
        perp = self._perp_position(account)
        out = []
        if state.spot.qty != spot:
            out.append(
                (
                    "spot position",
                    f"snapshot spot {state.spot.qty}, venue BTC change {spot} "
                    f"(difference {state.spot.qty - spot}); phase {state.phase.value}",
                )
            )
        if state.perp.qty != perp:
            out.append(
                (
                    "perp position",
                    f"snapshot perp {state.perp.qty}, venue position {perp}; "
                    f"phase {state.phase.value}",
                )
            )
        return out

    def _order_problems(
        self,
        state: CoreState,
        venue: list[Json],
        ours: dict[str, Order],
    ) -> list[tuple[str, str]]:
        out = []
        at_venue = {o["orderLinkId"]: o for o in venue}
        for link_id, row in at_venue.items():
            cum = D(row["cumExecQty"])
            mine = ours.get(link_id)
            live = row["orderStatus"] in LIVE
            if mine is None:
                if live:
                    out.append(
                        ("live orders", f"{link_id} works at the venue, not in the snapshot")
                    )
            else:
                if mine.applied_qty != cum:
                    out.append(
                        (
                            "order fills",
                            f"{link_id} ({mine.purpose.value}): the snapshot applied "
                            f"{mine.applied_qty}, the venue filled {cum} ({row['orderStatus']})",
                        )
                    )
                if live != mine.live:
                    out.append(
                        (
                            "live orders",
                            f"{link_id}: venue {row['orderStatus']}, snapshot {mine.status.value}",
                        )
                    )
        for o in state.orders.values():
            if o.link_id not in at_venue and not o.status.in_doubt:
                kind = "market " if o.order_type is OrderType.MARKET else ""
                out.append(
                    (
                        "live orders",
                        f"{kind}{o.link_id} is {o.status.value} in the snapshot, "
                        "unknown at the venue",
                    )
                )
        return out

    # ------------------------------------------------------------------ plumbing

    def _wait_resynced(self, seen: int) -> None:
        tail = self._tail()
        if not self._await(lambda: tail.count("resynced") > seen, RESYNC_TIMEOUT_S):
            self._health()
            self._fail("resync", f"no resynced line within {RESYNC_TIMEOUT_S} s")

    def _await(self, condition: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
        """Poll ``condition`` (log conditions fast, venue ones at ``every``) until it holds."""
        deadline = time.monotonic() + timeout
        while True:
            self._tail().poll()
            if condition():
                return True
            if time.monotonic() > deadline:
                return False
            self._health()
            time.sleep(every)

    def _record(self, invariant: str, detail: str, *, journal: bool = False) -> None:
        phase = self.summary.kills[-1].phase if self.summary.kills else "start"
        if self.mode == "final":
            phase = "final"
        failure = Failure(self.point, phase, self.mode, invariant, detail)
        (self.summary.journal if journal else self.summary.failures).append(failure)

    def _fail(self, invariant: str, detail: str) -> None:
        self._record(invariant, detail)
        worker = self.worker
        if worker is not None:
            self.summary.failures[-1].detail += "\n    log tail:\n      " + worker.tail(25).replace(
                "\n", "\n      "
            )
        raise AbortError

    def _sim(self) -> Sim:
        assert self.sim is not None
        return self.sim

    def _worker(self) -> WorkerProc:
        assert self.worker is not None
        return self.worker

    def _tail(self) -> LogTail:
        assert self.tail is not None
        return self.tail

    def _market(self) -> Market:
        assert self.market is not None
        return self.market


def run_chaos(
    folder: Path,
    *,
    points: int,
    seed: int,
    progress: Callable[[int, float, Kill], None] | None = None,
) -> Summary:
    return Chaos(folder, points=points, seed=seed, progress=progress).run()


@contextlib.contextmanager
def _folder(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="arbhub-chaos-"))
    ok = False
    try:
        yield path
        ok = True
    finally:
        if ok and not keep:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.integration.chaos",
        description="SIGKILL the worker at randomized points of its cycles and check recovery.",
    )
    parser.add_argument("--points", type=int, default=200, help="kill-and-restart points")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the folder on success too")
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per kill")
    args = parser.parse_args(argv)
    with _folder(args.keep) as folder:

        def progress(n: int, elapsed: float, kill: Kill) -> None:
            if args.verbose:
                print(f"[{elapsed:6.1f} s] {kill.render()}", flush=True)
            elif n % PROGRESS_EVERY == 0:
                print(f"[{elapsed:6.1f} s] {n}/{args.points} kill points", flush=True)

        summary = run_chaos(folder, points=args.points, seed=args.seed, progress=progress)
        print(summary.render())
        if not summary.ok:
            raise SystemExit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

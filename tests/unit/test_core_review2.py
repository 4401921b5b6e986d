"""Regressions from a second review of the core: each test pins down one defect found after
the first review's fixes (all fixed). Books are BTCUSDT as in test_core_rules.
"""

from __future__ import annotations

from tests.unit.core_harness import (
    CHEAP,
    NEUTRAL,
    D,
    Harness,
    enter,
    of,
    order_cmds,
    places,
    race,
    transitions,
)
from worker.core.commands import Command, QueryOrder, ReportHalt
from worker.core.events import CancelEntry, Tick
from worker.core.model import Leg, OrderStatus, Phase, Purpose
from worker.core.model import Request as Req
from worker.core.strategy import QUERY_AFTER_MS


def test_short_race_close_excess_never_exceeds_the_perp_position() -> None:
    """§4.4: when both exits fill, close *the excess perp*. A short-spot race: the spot buy-back
    (grossed up) overshoots zero to +0.000001988 and the perp hedge also fills +0.01. The excess
    is at most the 0.01 perp held, yet the core sends a reduce-only close of 0.011."""
    h = Harness.make()
    hedge, spot_exit = race(h, CHEAP)
    h.fill(spot_exit.link_id)
    cmds = h.fill(hedge.link_id)
    assert h.state.perp.qty == D("0.01")
    closes = [p for p in places(cmds) if p.purpose is Purpose.CLOSE_EXCESS]
    assert closes, "the over-hedge is closed at once"
    assert sum((p.qty for p in closes), D(0)) <= abs(h.state.perp.qty), closes


def test_over_hedge_with_the_spot_given_back_exactly_is_closed() -> None:
    """§4.4: both exits filled → close the excess perp at once; docs: the race ends only when
    nothing tradeable is open. An entry partly filled (0.005 gross, 0.004995 net) races; the
    spot exit gives back exactly 0.004995, so the spot is exactly 0 and its average price is
    reset to 0; then the 0.004 hedge fills too. ``_needs`` values the 0.004 excess at that
    average price (0), calls it dust, and the core sits in race_exit with a naked perp short,
    sending nothing, for ever (even after max_unhedged_ms forces the cycle)."""
    h = Harness.make()
    entry = enter(h)
    h.fill(entry.link_id, "0.005")
    h.book(Leg.PERP, *NEUTRAL)  # the basis falls back: cancel the rest, race the filled part
    h.cancelled(entry.link_id)
    hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
    h.ack(hedge.link_id)
    h.ack(spot_exit.link_id)
    h.fill(spot_exit.link_id)
    assert h.state.spot.qty == 0
    cmds: list[Command] = h.fill(hedge.link_id)
    assert h.state.perp.qty == D("-0.004")
    for _ in range(6):
        cmds += h.advance(1000)
    perp_orders = [p for p in places(cmds) if p.leg is Leg.PERP]
    assert perp_orders or h.phase is not Phase.RACE_EXIT, (h.phase, h.state.perp.qty)


def test_unwind_that_completes_on_its_third_short_order_ends_flat() -> None:
    """Transition table: unwinding → flat when both legs ended and nothing tradeable is left;
    MAX_MARKET_ATTEMPTS bounds orders that *may* end short before halting. The spot unwind ends
    short three times, the third leaving only 0.000009988 (below the spot minimum); the perp is
    closed. The core halts 'unwind could not complete' although nothing is left to unwind."""
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.fill(hedge.link_id)
    h.cancelled(spot_exit.link_id)
    assert h.phase is Phase.CARRY_HEDGED
    cmds = h.book(Leg.PERP, *NEUTRAL)  # carry exit: market-unwind both legs
    spot = next(p for p in places(cmds) if p.leg is Leg.SPOT)
    perp = next(p for p in places(cmds) if p.leg is Leg.PERP)
    h.ack(perp.link_id)
    h.fill(perp.link_id, price="65003.1")
    link = spot.link_id
    for share in ("0.005", "0.003", None):  # each IOC ends short; the last leaves dust only
        h.ack(link)
        qty = share or str(h.order(link).qty - D("0.000009"))
        h.execution(link, qty, "65000.0")
        cmds = h.update(link, OrderStatus.CANCELLED, qty, price="65000.0")
        again = [p for p in places(cmds) if p.leg is Leg.SPOT]
        if again:
            link = again[0].link_id
    assert h.state.perp.qty == 0 and h.state.spot.qty < h.core.p.spot.min_qty
    assert not of(cmds, ReportHalt), of(cmds, ReportHalt)
    assert transitions(cmds) == [("unwinding", "flat")], transitions(cmds)


def test_next_deadline_covers_the_query_of_an_unconfirmed_cancel() -> None:
    """next_deadline: 'the earliest time after now at which a Tick could change a decision'.
    An entry rested 4 s, then is cancelled; the venue acknowledges the cancel but its final
    status is lost (the stream is down, the books go stale). A Tick at cancel + QUERY_AFTER_MS
    sends the QueryOrder that resolves it, but a runtime sleeping until next_deadline wakes
    once at the book-staleness time and then sleeps until the next UTC day."""
    h = Harness.make()
    entry = enter(h)
    h.now += 4000
    assert order_cmds(h.send(CancelEntry()))
    cancel_ms = h.now
    h.ack(entry.link_id, Req.CANCEL)
    due = cancel_ms + QUERY_AFTER_MS
    queried = False
    deadline = h.core.next_deadline(h.state, h.now)
    while not queried and deadline is not None and deadline <= due:
        h.now = deadline
        queried = bool(of(h.send(Tick()), QueryOrder))
        deadline = h.core.next_deadline(h.state, h.now)
    assert queried, f"next wake {deadline and deadline - cancel_ms} ms after the cancel"

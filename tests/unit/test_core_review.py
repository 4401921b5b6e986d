"""Regressions from a review of the core: each test pins down one defect a reviewer
demonstrated (all fixed). Books are BTCUSDT as in test_core_rules.
"""

from __future__ import annotations

from tests.unit.core_harness import (
    CHEAP,
    NEUTRAL,
    RICH,
    SPOT_BOOK,
    D,
    Harness,
    enter,
    of,
    order_cmds,
    places,
    race,
    transitions,
)
from worker.core.commands import CancelOrder, ReportHalt, ReportStopped
from worker.core.events import CancelEntry, Execution, OrderUpdate, Resume, Stop
from worker.core.model import Leg, OrderStatus, OrderType, Phase, Purpose, RejectKind
from worker.core.model import Request as Req
from worker.core.strategy import MAX_MARKET_ATTEMPTS


def test_short_spot_buy_back_overshoot_is_not_an_over_hedge() -> None:
    """§4.3/§5.5: the gross-up excess of a buy is dust. A short-spot race: the perp hedge fills
    0.004, the spot buy-back is amended to gross_up(0.006) = 0.006008 and fills, so the spot
    short is 0.003998008 against a perp long of 0.004 (0.000001992 apart, far below any
    minimum). The core computes hedge need = trunc(0.003998008) - 0.004 = -0.001 and sends a
    0.001 market close; each later buy-back repeats it, unwinding the whole hedge at market."""
    h = Harness.make()
    hedge, spot_exit = race(h, CHEAP)
    assert spot_exit.side.value == "Buy"
    h.fill(hedge.link_id, "0.004")
    h.ack(spot_exit.link_id, Req.AMEND)
    assert h.order(spot_exit.link_id).qty == D("0.006008")
    cmds = h.fill(spot_exit.link_id)
    assert abs(h.state.spot.qty + h.state.perp.qty) < D("0.00001")  # balanced up to dust
    assert [p for p in places(cmds) if p.purpose is Purpose.CLOSE_EXCESS] == []


def test_close_excess_that_keeps_ending_short_is_bounded() -> None:
    """docs/state-machine.md: MAX_MARKET_ATTEMPTS bounds market orders per leg and purpose
    that end with a remainder; §5.7: never busy-loop."""
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.fill(spot_exit.link_id)
    (close,) = places(h.fill(hedge.link_id))  # both exits filled: close the excess perp
    assert close.purpose is Purpose.CLOSE_EXCESS
    link, resent = close.link_id, 0
    for _ in range(MAX_MARKET_ATTEMPTS + 3):
        h.ack(link)
        cmds = h.update(link, OrderStatus.CANCELLED, "0", price="65100.1")  # the IOC ran dry
        again = [p for p in places(cmds) if p.purpose is Purpose.CLOSE_EXCESS]
        if not again:
            break
        resent += 1
        link = again[0].link_id
    assert resent < MAX_MARKET_ATTEMPTS or h.phase is Phase.HALTED, (resent, h.phase)


def test_stop_in_race_waits_for_a_hedge_in_post_only_backoff() -> None:
    """§4.6: in race_exit Stop cancels the spot exit and leaves the perp hedge working. The
    hedge was just refused as PostOnly (re-quote at the next interval), so none rests; the core
    declares the stop complete at once and, stopped, never places the hedge."""
    h = Harness.make()
    entry = enter(h)
    h.fill(entry.link_id)
    hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
    h.ack(spot_exit.link_id)
    h.reject(hedge.link_id, RejectKind.POST_ONLY)
    h.send(Stop())
    cmds = h.cancelled(spot_exit.link_id)
    cmds += h.advance(h.core.p.chase_interval_ms)
    assert h.state.spot.qty > 0 and h.state.perp.qty == 0
    assert not of(cmds, ReportStopped) or h.live(Purpose.HEDGE), "stopped with the spot naked"


def test_resume_with_only_untradeable_spot_does_not_halt_again() -> None:
    """§4.2: flat includes spot that cannot be traded; Resume goes to flat 'according to the
    positions'. A late sub-minimum overfill on a finished order halted a flat instance; after
    reconcile the operator resumes, and the core re-halts with 'position while flat'."""
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.send(CancelEntry())  # keep the next cycle from starting
    h.fill(spot_exit.link_id)
    h.cancelled(hedge.link_id)
    assert h.phase is Phase.FLAT
    h.send(
        Execution(
            link_id=spot_exit.link_id,
            exec_id="late-overfill",
            qty=D("0.000005"),  # below the spot minimum (0.000011)
            price=D("65000"),
            fee=D("0"),
            fee_coin="USDT",
            is_maker=True,
            exec_ms=h.now,
        )
    )
    assert h.phase is Phase.HALTED
    cmds = h.send(Resume())
    assert transitions(cmds) == [("halted", "flat")], transitions(cmds)
    assert not of(cmds, ReportHalt)


def test_stream_rejected_market_unwind_is_not_resent_in_the_same_step() -> None:
    """§5.7 never busy-loop on a rejection; §5.9 an unclassified reject is not a licence to
    retry. The unwind's perp leg comes back Rejected on the order stream with no classified
    reason: the core re-sends it in the same millisecond, every time (no back-off, not counted
    as a market shortfall, no halt)."""
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.fill(hedge.link_id)
    h.cancelled(spot_exit.link_id)
    assert h.phase is Phase.CARRY_HEDGED
    cmds = h.book(Leg.PERP, *NEUTRAL)  # carry exit: market-unwind both legs
    (perp,) = [p for p in places(cmds) if p.leg is Leg.PERP]
    cmds = h.update(perp.link_id, OrderStatus.REJECTED, "0", price="65003.0")
    assert not places(cmds), "re-sent in the same millisecond"


def test_forced_race_sends_the_market_hedge_only_once_both_exits_are_final() -> None:
    """docs/state-machine.md (race_exit): when forced, both PostOnly exits are cancelled and,
    once they are final, the hedge need is sent at market. Here the hedge's cancel is confirmed
    first while the spot exit's cancel is still pending; the market hedge goes out at once, and
    if the spot exit then fills the instance is over-hedged and pays a second market order."""
    h = Harness.make()
    hedge, spot_exit = race(h)
    cmds = h.advance(h.core.p.max_unhedged_ms + 100)
    assert CancelOrder(link_id=spot_exit.link_id, leg=Leg.SPOT) in cmds
    cmds = h.cancelled(hedge.link_id)
    assert spot_exit.link_id in h.state.orders  # its cancel is not final yet
    assert [p for p in places(cmds) if p.order_type is OrderType.MARKET] == []


def test_duplicate_of_an_evicted_finished_order_does_not_halt() -> None:
    """docs/state-machine.md: a late, duplicated or reordered message that adds no quantity
    changes nothing (§5.4). A post-only entry re-quoted 70 times within one cycle (14 s) pushes
    the first entry out of ``done``; a duplicate of its (zero-fill) final status halts."""
    h = Harness.make()
    first = enter(h)
    h.update(first.link_id, OrderStatus.CANCELLED, "0", reject=RejectKind.POST_ONLY)
    for _ in range(70):
        h.now += h.core.p.chase_interval_ms
        h.books(SPOT_BOOK, RICH)
        entry = h.one_live(Purpose.ENTRY)
        h.ack(entry.link_id)
        h.update(entry.link_id, OrderStatus.CANCELLED, "0", reject=RejectKind.POST_ONLY)
    assert h.phase is Phase.ENTRY_WORKING
    h.send(
        OrderUpdate(
            link_id=first.link_id,
            status=OrderStatus.CANCELLED,
            cum_qty=D(0),
            cum_value=D(0),
            cum_fee=D(0),
            fee_coin="",
            qty=first.qty,
            price=first.price,
            updated_ms=h.now,
            reject=RejectKind.POST_ONLY,
        )
    )
    assert h.phase is Phase.ENTRY_WORKING, h.state.halt_reason


def test_next_deadline_is_in_the_future_when_a_tick_changed_nothing() -> None:
    """next_deadline is 'the earliest time a Tick could change a decision'. An entry resting at
    an unchanged touch: a Tick changes nothing, yet the deadline stays in the past, so a runtime
    that sleeps until it wakes at once, for ever (§5.7: never busy-loop)."""
    h = Harness.make()
    enter(h)
    cmds = h.advance(400)
    assert order_cmds(cmds) == []
    deadline = h.core.next_deadline(h.state, h.now)
    assert deadline is None or deadline > h.now, (deadline, h.now)

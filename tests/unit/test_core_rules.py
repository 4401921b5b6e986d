"""One named, table-driven test per rule of ARCHITECTURE §4.1–§4.7 and §5 items 1–5.

Books are BTCUSDT around 65,000: spot 65000.0/65000.1 and a perp 100 USDT above is a basis of
+15.38 bps (entry threshold 10, exit 2, emergency 50).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from bench.common import PERP
from tests.unit.core_harness import (
    CHEAP,
    NEUTRAL,
    RICH,
    SPOT_BOOK,
    D,
    Harness,
    carry,
    enter,
    of,
    order_cmds,
    places,
    race,
    transitions,
)
from worker.core import basis, snapshot
from worker.core.commands import (
    AmendOrder,
    CancelOrder,
    PlaceOrder,
    QueryOrder,
    ReportBlocked,
    ReportCycle,
    ReportHalt,
    ReportRefused,
    ReportRiskBlock,
    ReportStopped,
    ReserveIds,
)
from worker.core.config import HedgeMode
from worker.core.events import (
    BookInvalid,
    CancelEntry,
    Clear,
    ClearRisk,
    Execution,
    Flatten,
    FundingPayment,
    OrderNotFound,
    OutcomeUnknown,
    Restarted,
    Resume,
    Stop,
    Tick,
)
from worker.core.instruments import gross_up_buy, trunc_to
from worker.core.machine import TRANSITIONS, IllegalTransitionError, Trigger, next_phase
from worker.core.model import Leg, OrderStatus, OrderType, Phase, Purpose, RejectKind, Side
from worker.core.model import Request as Req


def by_leg(orders: list[PlaceOrder]) -> tuple[PlaceOrder, PlaceOrder]:
    """(spot, perp) of a two-leg unwind."""
    spot = next(o for o in orders if o.leg is Leg.SPOT)
    perp = next(o for o in orders if o.leg is Leg.PERP)
    assert len(orders) == 2
    return spot, perp


def unknown_order_fill(h: Harness) -> None:
    """A fill on an id of ours the core never handed out: it must halt."""
    ids = h.state.ids
    h.send(
        Execution(
            link_id=f"btc-{ids.epoch}-{ids.block_end + 100}",
            exec_id="stray",
            qty=D("1"),
            price=D("1"),
            fee=D("0"),
            fee_coin="USDT",
            is_maker=True,
            exec_ms=h.now,
        )
    )


# §4.1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spot", "perp", "expected"),
    [
        (("100", "100"), ("100.1", "100.1"), D("10")),
        (("100", "100"), ("99.9", "99.9"), D("-10")),
        (("65000.0", "65000.1"), RICH, D("15.38")),
    ],
    ids=["plus-10", "minus-10", "btc"],
)
def test_basis_formula(spot: tuple[str, str], perp: tuple[str, str], expected: Decimal) -> None:
    bps = basis.basis_bps(D(spot[0]), D(spot[1]), D(perp[0]), D(perp[1]))
    assert basis.display_bps(bps) == expected


@pytest.mark.parametrize(
    ("fut_mid2", "bps", "at_least", "at_most"),
    [("200.2", "10", True, True), ("200.19", "10", False, True), ("200.21", "10", True, False)],
    ids=["exactly-on", "below", "above"],
)
def test_basis_thresholds_are_exact(fut_mid2: str, bps: str, at_least: bool, at_most: bool) -> None:
    assert basis.at_least(D("200"), D(fut_mid2), D(bps)) is at_least
    assert basis.at_most(D("200"), D(fut_mid2), D(bps)) is at_most


# §4.2 ------------------------------------------------------------------------------------


def test_transition_table_rejects_illegal_edges() -> None:
    assert next_phase(Phase.FLAT, Trigger.ENTRY_SIGNAL) is Phase.ENTRY_WORKING
    with pytest.raises(IllegalTransitionError):
        next_phase(Phase.FLAT, Trigger.HEDGED)
    with pytest.raises(IllegalTransitionError):
        next_phase(Phase.HALTED, Trigger.ENTRY_SIGNAL)
    # only an operator leaves halted
    assert {t for (p, t) in TRANSITIONS if p is Phase.HALTED} == {
        Trigger.FLATTEN,
        Trigger.RESUME_FLAT,
        Trigger.RESUME_HEDGED,
        Trigger.RESUME_UNHEDGED,
        Trigger.CLEAR,
    }


# §4.3 entry chasing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("perp", "side", "price"),
    [(RICH, Side.BUY, D("65000.0")), (CHEAP, Side.SELL, D("65000.1"))],
    ids=["positive-basis-buys-at-bid", "negative-basis-sells-at-ask"],
)
def test_entry_side_follows_basis_sign(perp: tuple[str, str], side: Side, price: Decimal) -> None:
    h = Harness.make()
    cmds = h.books(SPOT_BOOK, perp)
    (order,) = places(cmds)
    assert (order.leg, order.side, order.price) == (Leg.SPOT, side, price)
    assert order.post_only and order.order_type is OrderType.LIMIT
    assert order.purpose is Purpose.ENTRY
    assert h.phase is Phase.ENTRY_WORKING


def test_no_entry_inside_threshold() -> None:
    h = Harness.make()
    assert places(h.books(SPOT_BOOK, NEUTRAL)) == []
    assert h.phase is Phase.FLAT


@pytest.mark.parametrize(
    ("new_bid", "expect"),
    [("65001.0", "amend"), ("65030.0", "replace")],  # 0.15 bps vs 4.6 bps with max slip 3
    ids=["small-move-amends", "large-move-cancels-and-replaces"],
)
def test_chase_amends_below_and_replaces_above_max_slip(new_bid: str, expect: str) -> None:
    h = Harness.make()
    entry = enter(h)
    h.now += 100
    assert order_cmds(h.book(Leg.SPOT, new_bid, "65030.1")) == []  # not before the interval
    h.now += 100
    cmds = h.book(Leg.SPOT, new_bid, "65030.1") + h.book(Leg.PERP, "65130.0", "65130.1")
    if expect == "amend":
        assert order_cmds(cmds) == [
            AmendOrder(link_id=entry.link_id, leg=Leg.SPOT, qty=None, price=D(new_bid))
        ]
        return
    assert order_cmds(cmds) == [CancelOrder(link_id=entry.link_id, leg=Leg.SPOT)]
    # the replacement waits for the cancel to be final: never two entries working
    assert places(h.advance(50)) == []
    (new,) = places(h.cancelled(entry.link_id))
    assert new.price == D(new_bid) and new.link_id != entry.link_id


def test_basis_falling_back_cancels_the_entry() -> None:
    h = Harness.make()
    entry = enter(h)
    cmds = h.book(Leg.PERP, *NEUTRAL)
    assert order_cmds(cmds) == [CancelOrder(link_id=entry.link_id, leg=Leg.SPOT)]
    assert transitions(h.cancelled(entry.link_id)) == [("entry_working", "flat")]
    assert h.state.cycle is None


@pytest.mark.parametrize(
    ("perp", "coin", "available", "message"),
    [
        (CHEAP, "BTC", "0.005", "spot sell blocked: available BTC 0.005 < required 0.01"),
        (RICH, "USDT", "100", "spot buy blocked: available USDT 100 < required 650.78"),
    ],
    ids=["sell-short-of-base", "buy-short-of-quote"],
)
def test_entry_blocked_when_balance_is_short(
    perp: tuple[str, str], coin: str, available: str, message: str
) -> None:
    h = Harness.make()
    h.wallet(coin, available)
    cmds = h.books(SPOT_BOOK, perp)
    assert places(cmds) == []
    assert of(cmds, ReportBlocked) == [ReportBlocked(reason=message)]
    # no retry loop: later ticks and books send nothing and report nothing new
    for _ in range(20):
        more = h.advance(250) + h.books(SPOT_BOOK, perp)
        assert order_cmds(more) == [] and of(more, ReportBlocked) == []
    assert h.phase is Phase.FLAT


def test_insufficient_balance_reject_waits_for_a_new_wallet() -> None:
    h = Harness.make()
    h.books(SPOT_BOOK, RICH)
    entry = h.one_live(Purpose.ENTRY)
    cmds = h.reject(entry.link_id, RejectKind.INSUFFICIENT_BALANCE)
    assert places(cmds) == [] and of(cmds, ReportBlocked)
    assert places(h.advance(1000) + h.books(SPOT_BOOK, RICH)) == []
    assert len(places(h.wallet("USDT", "100000"))) == 1  # a new wallet: the entry may go


@pytest.mark.parametrize(
    ("kind", "status"),
    [(RejectKind.POST_ONLY, OrderStatus.REJECTED), (RejectKind.POST_ONLY, OrderStatus.CANCELLED)],
    ids=["spot-rejected", "linear-style-cancelled"],
)
def test_post_only_reject_requotes_at_next_interval(kind: RejectKind, status: OrderStatus) -> None:
    h = Harness.make()
    entry = enter(h)
    cmds = h.update(entry.link_id, status, "0", reject=kind)
    assert places(cmds) == []  # not working, but not re-sent in a loop either
    assert places(h.advance(100)) == []
    (again,) = places(h.advance(100) + h.books(SPOT_BOOK, RICH))
    assert again.purpose is Purpose.ENTRY and again.post_only


def test_entry_partial_fill_keeps_chasing_the_remainder() -> None:
    h = Harness.make()
    entry = enter(h)
    assert order_cmds(h.fill(entry.link_id, "0.004")) == []
    assert h.phase is Phase.ENTRY_WORKING
    h.now += 250
    (cancel,) = order_cmds(
        h.book(Leg.SPOT, "65030.0", "65030.1")
        + h.books(("65030.0", "65030.1"), ("65130.0", "65130.1"))
    )
    assert isinstance(cancel, CancelOrder)
    (again,) = places(h.cancelled(entry.link_id))
    assert again.qty == entry.qty - D("0.004")  # only the remainder


def test_entry_partial_fill_then_fallback_race_exits_the_filled_part() -> None:
    h = Harness.make()
    entry = enter(h)
    h.fill(entry.link_id, "0.004")
    h.book(Leg.PERP, *NEUTRAL)
    cmds = h.cancelled(entry.link_id)
    assert ("entry_working", "race_exit") in transitions(cmds)
    hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
    net = D("0.004") * (1 - D("0.001"))
    assert hedge.qty == trunc_to(net, PERP.qty_step) == D("0.003")
    assert spot_exit.qty == D("0.003996")  # the spot exit races for all that is uncovered


def test_entry_fill_below_perp_minimum_keeps_chasing_then_unwinds_on_spot() -> None:
    h = Harness.make()
    entry = enter(h)
    h.fill(entry.link_id, "0.0005")  # below the perp's 0.001 minimum: cannot be hedged
    h.advance(3500)  # past max_unhedged_ms: still chasing, a hedge is impossible anyway
    assert h.phase is Phase.ENTRY_WORKING
    h.books(SPOT_BOOK, NEUTRAL)  # the basis goes
    h.cancelled(entry.link_id)
    assert h.phase is Phase.RACE_EXIT
    assert h.live(Purpose.HEDGE) == []
    spot_exit = h.one_live(Purpose.SPOT_EXIT)
    assert spot_exit.side is Side.SELL and spot_exit.qty == D("0.000499")


def test_spot_buy_is_grossed_up_and_the_excess_is_dust() -> None:
    h = Harness.make()
    entry = enter(h)
    gross = gross_up_buy(D("0.01"), D("0.001"), h.core.p.spot)
    assert entry.qty == gross == D("0.010012")
    h.fill(entry.link_id)
    net = gross * (1 - D("0.001"))
    assert h.state.spot.qty == net >= D("0.01")
    hedge = h.one_live(Purpose.HEDGE)
    assert hedge.qty == D("0.01")  # the hedge is order_qty; the excess is dust
    h.ack(hedge.link_id)
    spot_exit = h.one_live(Purpose.SPOT_EXIT)
    h.ack(spot_exit.link_id)
    h.fill(hedge.link_id)
    h.cancelled(spot_exit.link_id)
    assert h.phase is Phase.CARRY_HEDGED
    assert h.core.unhedged_qty(h.state) == net - D("0.01") == D("0.000001988")


# §4.4 race exit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("perp", "spot_after", "exit_side", "exit_price", "hedge_side", "hedge_price"),
    [
        (RICH, ("64990.0", "64990.1"), Side.SELL, D("65000.0"), Side.SELL, D("65100.1")),
        (RICH, ("65010.0", "65010.1"), Side.SELL, D("65010.1"), Side.SELL, D("65100.1")),
        (CHEAP, ("65010.0", "65010.1"), Side.BUY, D("65000.1"), Side.BUY, D("64900.0")),
        (CHEAP, ("64990.0", "64990.1"), Side.BUY, D("64990.0"), Side.BUY, D("64900.0")),
    ],
    ids=[
        "long-entry-above-ask",
        "long-ask-above-entry",
        "short-entry-below-bid",
        "short-bid-below-entry",
    ],
)
def test_race_exit_prices(
    perp: tuple[str, str],
    spot_after: tuple[str, str],
    exit_side: Side,
    exit_price: Decimal,
    hedge_side: Side,
    hedge_price: Decimal,
) -> None:
    """Spot exit at max(best ask, entry) after a buy, min(best bid, entry) after a sell."""
    h = Harness.make()
    entry = enter(h, perp)
    h.book(Leg.SPOT, *spot_after)
    cmds = h.fill(entry.link_id)
    hedge = next(p for p in places(cmds) if p.purpose is Purpose.HEDGE)
    spot_exit = next(p for p in places(cmds) if p.purpose is Purpose.SPOT_EXIT)
    assert (spot_exit.side, spot_exit.price, spot_exit.post_only) == (exit_side, exit_price, True)
    assert (hedge.leg, hedge.side, hedge.price, hedge.post_only) == (
        Leg.PERP,
        hedge_side,
        hedge_price,
        True,
    )


@pytest.mark.parametrize("winner", ["hedge", "spot_exit"])
def test_one_exit_fills_the_other_is_cancelled(winner: str) -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    won, lost = (hedge, spot_exit) if winner == "hedge" else (spot_exit, hedge)
    cmds = h.fill(won.link_id)
    assert order_cmds(cmds) == [CancelOrder(link_id=lost.link_id, leg=lost.leg)]
    assert h.phase is Phase.RACE_EXIT  # a cancel is a request: wait for the final count
    cmds = h.cancelled(lost.link_id)
    expected = ("race_exit", "carry_hedged") if winner == "hedge" else ("race_exit", "flat")
    assert transitions(cmds)[0] == expected


def test_both_exits_fill_the_excess_perp_is_closed_by_market() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.fill(spot_exit.link_id)
    cmds = h.fill(hedge.link_id)  # filled before its cancel landed: over-hedged
    (close,) = places(cmds)
    assert (close.purpose, close.order_type, close.side, close.qty, close.reduce_only) == (
        Purpose.CLOSE_EXCESS,
        OrderType.MARKET,
        Side.BUY,
        D("0.01"),
        True,
    )
    h.ack(close.link_id)
    cmds = h.fill(close.link_id, price="65100.1")
    assert ("race_exit", "flat") in transitions(cmds) and h.state.perp.qty == 0
    assert of(cmds, ReportCycle)[0].ended_by == "spot exit"
    # the basis still crosses: the next cycle starts at once
    assert transitions(cmds)[-1] == ("flat", "entry_working")


@pytest.mark.parametrize("partial", ["hedge", "spot_exit"])
def test_partial_exit_fill_amends_the_other_exit_down(partial: str) -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    if partial == "hedge":
        cmds = h.fill(hedge.link_id, "0.004")
        (amend,) = of(cmds, AmendOrder)
        assert amend.link_id == spot_exit.link_id
        assert amend.qty == spot_exit.qty - D("0.004")
    else:
        cmds = h.fill(spot_exit.link_id, "0.004")
        (amend,) = of(cmds, AmendOrder)
        assert (amend.link_id, amend.qty) == (hedge.link_id, D("0.006"))


def test_hedge_is_repriced_to_the_touch() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.now += 250
    cmds = h.book(Leg.PERP, "65120.0", "65120.1")
    assert AmendOrder(link_id=hedge.link_id, leg=Leg.PERP, qty=None, price=D("65120.1")) in cmds
    assert all(c.link_id != spot_exit.link_id for c in of(cmds, AmendOrder))


def test_max_unhedged_ms_hedges_with_a_market_order() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    assert order_cmds(h.advance(2900)) == []
    cmds = h.advance(200)
    assert set(order_cmds(cmds)) == {
        CancelOrder(link_id=hedge.link_id, leg=Leg.PERP),
        CancelOrder(link_id=spot_exit.link_id, leg=Leg.SPOT),
    }
    h.cancelled(spot_exit.link_id)
    (market,) = places(h.cancelled(hedge.link_id))
    assert (market.purpose, market.order_type, market.side, market.qty) == (
        Purpose.HEDGE,
        OrderType.MARKET,
        Side.SELL,
        D("0.01"),
    )
    h.ack(market.link_id)
    assert ("race_exit", "carry_hedged") in transitions(h.fill(market.link_id, price="65100.0"))


def test_hedge_mode_market_hedges_each_fill_at_once() -> None:
    h = Harness.make(hedge_mode=HedgeMode.MARKET)
    entry = enter(h)
    (hedge,) = places(h.fill(entry.link_id, "0.006"))
    assert (hedge.order_type, hedge.side, hedge.qty, hedge.leg) == (
        OrderType.MARKET,
        Side.SELL,
        D("0.005"),
        Leg.PERP,
    )
    assert h.phase is Phase.ENTRY_WORKING
    h.ack(hedge.link_id)
    h.fill(hedge.link_id, price="65100.0")
    cmds = h.fill(entry.link_id)
    (rest,) = [p for p in places(cmds) if p.purpose is Purpose.HEDGE]
    assert rest.order_type is OrderType.MARKET and rest.qty == D("0.005")
    assert not h.live(Purpose.SPOT_EXIT)  # no race in market mode
    h.ack(rest.link_id)
    assert ("race_exit", "carry_hedged") in transitions(h.fill(rest.link_id, price="65100.0"))


def test_fill_racing_a_cancel_is_still_hedged() -> None:
    h = Harness.make()
    entry = enter(h)
    h.book(Leg.PERP, *NEUTRAL)  # basis gone: the entry is cancelled …
    assert h.one_live(Purpose.ENTRY).cancel_sent_ms is not None
    h.book(Leg.PERP, *RICH)
    cmds = h.fill(entry.link_id)  # … but it filled before the cancel landed
    assert h.phase is Phase.RACE_EXIT
    assert any(p.purpose is Purpose.HEDGE for p in places(cmds))


def test_duplicate_exec_id_is_ignored() -> None:
    h = Harness.make()
    entry = enter(h)
    h.execution(entry.link_id, "0.004", exec_id="dup-1")
    before = (h.state.spot.qty, h.state.fees, h.order(entry.link_id).filled)
    cmds = h.execution(entry.link_id, "0.004", exec_id="dup-1")
    assert cmds == [] and h.state.duplicates_ignored == 1
    assert (h.state.spot.qty, h.state.fees, h.order(entry.link_id).filled) == before


# §4.5 carry and emergency ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("perp_entry", "perp_exit", "spot_side"),
    [(RICH, ("65013.0", "65013.1"), Side.SELL), (CHEAP, ("64987.0", "64987.1"), Side.BUY)],
    ids=["long-carry-at-plus-2", "short-carry-at-minus-2"],
)
def test_carry_exit_at_exit_threshold(
    perp_entry: tuple[str, str], perp_exit: tuple[str, str], spot_side: Side
) -> None:
    h = Harness.make()
    carry(h, perp_entry)
    cmds = h.book(Leg.PERP, *perp_exit)  # exactly 2.00 bps from the spot mid
    assert transitions(cmds) == [("carry_hedged", "unwinding")]
    spot, perp = by_leg(places(cmds))
    assert (perp.order_type, perp.reduce_only, perp.side) == (
        OrderType.MARKET,
        True,
        spot_side.opposite,
    )
    assert (spot.order_type, spot.side) == (OrderType.MARKET, spot_side)
    for p in (spot, perp):
        h.ack(p.link_id)
        h.fill(p.link_id, price="65000.0")
    assert h.phase is Phase.FLAT
    assert of(h.log, ReportCycle)[-1].ended_by == "carry exit"


@pytest.mark.parametrize(
    ("perp_entry", "perp_emergency"),
    [(RICH, ("65325.1", "65325.2")), (CHEAP, ("64674.9", "64675.0"))],
    ids=["long-spot-basis-widens", "short-spot-basis-widens"],
)
def test_emergency_unwind_at_threshold(
    perp_entry: tuple[str, str], perp_emergency: tuple[str, str]
) -> None:
    h = Harness.make()
    carry(h, perp_entry)
    assert transitions(h.book(Leg.PERP, *perp_entry)) == []  # still inside the emergency band
    cmds = h.book(Leg.PERP, *perp_emergency)  # 50 bps
    assert transitions(cmds) == [("carry_hedged", "unwinding")]
    assert all(p.order_type is OrderType.MARKET for p in places(cmds)) and len(places(cmds)) == 2
    assert h.state.cycle is not None and h.state.cycle.exit_reason == "emergency"


@pytest.mark.parametrize("threshold", ["0", "-5"])
def test_emergency_disabled_when_not_positive(threshold: str) -> None:
    h = Harness.make(emergency_unwind_bps=D(threshold))
    carry(h)
    assert transitions(h.book(Leg.PERP, "66000.0", "66000.1")) == []  # +153 bps
    assert h.phase is Phase.CARRY_HEDGED


def test_failed_unwind_leg_halts_cancels_and_then_sends_nothing() -> None:
    h = Harness.make()
    carry(h)
    cmds = h.book(Leg.PERP, *NEUTRAL)
    spot, perp = by_leg(places(cmds))
    h.ack(spot.link_id)
    cmds = h.reject(perp.link_id, RejectKind.INSUFFICIENT_BALANCE)
    assert h.phase is Phase.HALTED and of(cmds, ReportHalt)
    # the halted worker sends nothing new: the spot market order is left to end
    h.fill(spot.link_id, price="65000.0")
    later = h.advance(5000) + h.books(SPOT_BOOK, RICH) + h.books(SPOT_BOOK, CHEAP)
    assert order_cmds(later) == []
    assert h.phase is Phase.HALTED
    assert h.state.perp.qty == D("-0.01")  # shown, not acted on
    assert h.core.unhedged_qty(h.state) != 0


def test_halt_cancels_working_orders_and_records_racing_fills() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    unknown_order_fill(h)
    assert h.phase is Phase.HALTED
    cancels = of(h.log, CancelOrder)[-2:]
    assert {c.link_id for c in cancels} == {hedge.link_id, spot_exit.link_id}
    cmds = h.fill(hedge.link_id)  # raced the cancel: recorded …
    assert h.state.perp.qty == D("-0.01")
    assert order_cmds(cmds) == []  # … never acted on


# §4.6 stop and restart -------------------------------------------------------------------


def test_stop_when_flat_completes_at_once() -> None:
    h = Harness.make()
    assert of(h.send(Stop()), ReportStopped) == [ReportStopped()]


def test_stop_in_entry_cancels_the_entry_then_stops() -> None:
    h = Harness.make()
    entry = enter(h)
    cmds = h.send(Stop())
    assert order_cmds(cmds) == [CancelOrder(link_id=entry.link_id, leg=Leg.SPOT)]
    assert not of(cmds, ReportStopped)
    assert of(h.cancelled(entry.link_id), ReportStopped)


def test_stop_in_race_exit_leaves_only_the_perp_hedge() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    cmds = h.send(Stop())
    assert order_cmds(cmds) == [CancelOrder(link_id=spot_exit.link_id, leg=Leg.SPOT)]
    cmds = h.cancelled(spot_exit.link_id)
    assert of(cmds, ReportStopped)
    assert list(h.state.orders) == [hedge.link_id]
    # never market-unwinds on stop, however long it takes
    assert order_cmds(h.advance(60_000)) == []


def test_stop_in_carry_sends_nothing() -> None:
    h = Harness.make()
    carry(h)
    cmds = h.send(Stop())
    assert order_cmds(cmds) == [] and of(cmds, ReportStopped)


def test_stop_in_unwinding_waits_for_the_unwind() -> None:
    h = Harness.make()
    carry(h)
    legs = places(h.book(Leg.PERP, *NEUTRAL))
    assert not of(h.send(Stop()), ReportStopped)
    for p in legs:
        h.ack(p.link_id)
        cmds = h.fill(p.link_id, price="65000.0")
    assert of(cmds, ReportStopped) and h.phase is Phase.FLAT


def test_stop_in_halted_stops_once_cancels_are_confirmed() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    unknown_order_fill(h)
    assert h.phase is Phase.HALTED
    assert not of(h.send(Stop()), ReportStopped)  # the halt's cancels are not confirmed yet
    h.ack(spot_exit.link_id, Req.CANCEL)
    assert not of(h.advance(10), ReportStopped)
    cmds = h.ack(hedge.link_id, Req.CANCEL)
    assert of(cmds, ReportStopped) and order_cmds(cmds) == []


def test_stop_during_flatten_waits_for_the_unwind() -> None:
    h = Harness.make()
    carry(h)
    legs = places(h.send(Flatten()))
    assert not of(h.send(Stop()), ReportStopped)
    for p in legs:
        h.ack(p.link_id)
        cmds = h.fill(p.link_id, price="65000.0")
    assert of(cmds, ReportStopped) and h.phase is Phase.FLAT


def test_snapshot_round_trip_resumes_identically() -> None:
    h = Harness.make()
    _hedge, _ = race(h)
    restored = snapshot.decode(snapshot.encode(h.state))
    twin = Harness(core=h.core, state=restored, now=h.now)
    h.now += 250
    twin.now = h.now
    a = h.book(Leg.PERP, "65120.0", "65120.1")
    b = twin.book(Leg.PERP, "65120.0", "65120.1")
    assert a == b and snapshot.encode(h.state) == snapshot.encode(twin.state)


def test_snapshot_of_newer_version_is_refused() -> None:
    data = snapshot.encode(Harness.make().state).replace(b'"version":1', b'"version":7')
    with pytest.raises(snapshot.SnapshotError, match=r"newer arbhub.*version 7.*up to 1"):
        snapshot.decode(data)
    with pytest.raises(snapshot.SnapshotError, match="unreadable"):
        snapshot.decode(b"{not json")
    with pytest.raises(snapshot.SnapshotError, match="invalid version 0"):
        snapshot.decode(data.replace(b'"version":7', b'"version":0'))
    with pytest.raises(snapshot.SnapshotError, match="unreadable"):
        snapshot.decode(snapshot.encode(Harness.make().state)[:-40])  # cut off by a crash


# Operator commands (§7) --------------------------------------------------------------------


def test_flatten_from_halted_unwinds_to_flat() -> None:
    h = Harness.make()
    hedge, _spot_exit = race(h)
    h.fill(hedge.link_id, "0.004")
    h.send(OutcomeUnknown(link_id="btc-1700000000-1", request=Req.CANCEL, reason="t"))
    unknown_order_fill(h)
    assert h.phase is Phase.HALTED
    h.cancelled(h.one_live(Purpose.HEDGE).link_id)
    h.cancelled(h.one_live(Purpose.SPOT_EXIT).link_id)
    cmds = h.send(Flatten())
    assert transitions(cmds) == [("halted", "unwinding")]
    spot, perp = by_leg(places(cmds))
    assert (spot.side, spot.order_type, spot.qty) == (Side.SELL, OrderType.MARKET, D("0.010001"))
    assert (perp.side, perp.reduce_only, perp.qty) == (Side.BUY, True, D("0.004"))
    for p in (spot, perp):
        h.ack(p.link_id)
        cmds = h.fill(p.link_id, price="65000.0")
    assert transitions(cmds) == [("unwinding", "flat")]
    assert h.state.entries_paused  # waits for the operator's Resume
    assert places(h.books(SPOT_BOOK, RICH)) == []
    assert len(places(h.send(Resume()))) == 1


def test_cancel_entry_pauses_entries_until_resume() -> None:
    h = Harness.make()
    entry = enter(h)
    cmds = h.send(CancelEntry())
    assert order_cmds(cmds) == [CancelOrder(link_id=entry.link_id, leg=Leg.SPOT)]
    h.cancelled(entry.link_id)
    assert places(h.advance(500) + h.books(SPOT_BOOK, RICH)) == []
    assert places(h.send(Resume()))  # the basis still crosses: entries resume at once


def test_resume_from_halted_derives_the_phase_from_positions() -> None:
    h = Harness.make()
    carry(h)
    unknown_order_fill(h)
    assert h.phase is Phase.HALTED
    assert transitions(h.send(Resume())) == [("halted", "carry_hedged")]


def test_clear_only_when_nothing_is_held() -> None:
    h = Harness.make()
    carry(h)
    assert of(h.send(Clear(epoch=EPOCH_NEXT)), ReportRefused)
    h2 = Harness.make()
    cmds = h2.send(Clear(epoch=EPOCH_NEXT))
    assert transitions(cmds) == [("flat", "flat")] and h2.state.ids.epoch == EPOCH_NEXT
    (p,) = places(h2.books(SPOT_BOOK, RICH))
    assert p.link_id == f"btc-{EPOCH_NEXT}-1"


EPOCH_NEXT = 1_800_000_000


# §4.7 risk limits ---------------------------------------------------------------------------


def test_daily_loss_blocks_entries_but_the_position_still_exits() -> None:
    h = Harness.make(max_daily_loss_quote=D("5"))
    hedge, spot_exit = race(h)
    cmds = h.send(FundingPayment(amount=D("-6"), ts_ms=h.now))
    (block,) = of(cmds, ReportRiskBlock)  # 6 of funding plus the entry's 0.65 fee
    assert block == ReportRiskBlock(
        blocked=True, reason="daily loss 6.65078 USDT reached max_daily_loss_quote 5"
    )
    assert h.state.risk_blocked and h.phase is Phase.RACE_EXIT
    h.fill(hedge.link_id)
    h.cancelled(spot_exit.link_id)
    legs = places(h.book(Leg.PERP, *NEUTRAL))  # the carry still exits normally
    assert len(legs) == 2
    for p in legs:
        h.ack(p.link_id)
        h.fill(p.link_id, price="65000.0")
    assert h.phase is Phase.FLAT
    assert places(h.books(SPOT_BOOK, RICH)) == []  # but no new entry
    assert places(h.send(ClearRisk()))


def test_daily_loss_block_clears_at_utc_midnight() -> None:
    h = Harness.make(max_daily_loss_quote=D("5"))
    h.send(FundingPayment(amount=D("-6"), ts_ms=h.now))
    assert h.state.risk_blocked
    next_day = (h.now // 86_400_000 + 1) * 86_400_000
    cmds = h.advance(next_day - h.now)
    assert of(cmds, ReportRiskBlock) == [ReportRiskBlock(blocked=False, reason="new UTC day")]


def test_max_notional_blocks_the_entry() -> None:
    h = Harness.make(max_notional_quote=D("500"))
    cmds = h.books(SPOT_BOOK, RICH)
    assert places(cmds) == []
    assert "exceeds max_notional_quote 500" in of(cmds, ReportBlocked)[0].reason


# Market data integrity (§5.6, enforced by the core) -----------------------------------------


@pytest.mark.parametrize("fault", ["stale", "invalid", "crossed"])
def test_bad_books_block_entry_and_cancel_a_working_one(fault: str) -> None:
    h = Harness.make()
    h.books(SPOT_BOOK, RICH)
    entry = h.one_live(Purpose.ENTRY)
    h.ack(entry.link_id)
    if fault == "stale":
        cmds = h.advance(5001)
    elif fault == "invalid":
        cmds = h.send(BookInvalid(leg=Leg.PERP, reason="sequence gap"))
    else:
        cmds = h.book(Leg.SPOT, "65000.2", "65000.1")
    assert order_cmds(cmds) == [CancelOrder(link_id=entry.link_id, leg=Leg.SPOT)]
    h.cancelled(entry.link_id)
    assert h.phase is Phase.FLAT
    assert places(h.advance(1000)) == []


def test_older_book_message_is_ignored() -> None:
    h = Harness.make()
    h.books(SPOT_BOOK, NEUTRAL)
    h.now -= 10
    assert places(h.book(Leg.PERP, *RICH)) == []  # ts older than the book it would replace


# §5 items 1–5 ------------------------------------------------------------------------------


def test_rule_5_1_link_ids_and_reservation_before_send() -> None:
    h = Harness.make()
    cmds = h.books(SPOT_BOOK, RICH)
    reserve, place = cmds.index(of(cmds, ReserveIds)[0]), cmds.index(places(cmds)[0])
    assert reserve < place
    assert places(cmds)[0].link_id == "btc-1700000000-1"
    ids = set()
    for _ in range(100):  # chase with cancel+replace: every id new, blocks reserved in advance
        o = h.one_live(Purpose.ENTRY)
        h.ack(o.link_id)
        h.cancelled(o.link_id)
        h.advance(200)
        h.books(SPOT_BOOK, RICH)
        ids.add(o.link_id)
    assert len(ids) == 100
    reserved = max(r.block_end for r in of(h.log, ReserveIds))
    assert h.state.ids.next_seq <= reserved


def test_rule_5_2_unknown_outcome_blocks_new_risk_and_is_queried() -> None:
    h = Harness.make()
    h.books(SPOT_BOOK, RICH)
    entry = h.one_live(Purpose.ENTRY)
    cmds = h.send(OutcomeUnknown(link_id=entry.link_id, request=Req.CREATE, reason="timeout"))
    assert of(cmds, QueryOrder) == [QueryOrder(link_id=entry.link_id, leg=Leg.SPOT)]
    # the basis goes and comes back: nothing new while the first order may exist
    h.books(SPOT_BOOK, NEUTRAL)
    assert places(h.advance(300) + h.books(SPOT_BOOK, RICH)) == []
    assert of(h.advance(1000), QueryOrder)  # asked again at a bounded pace
    cmds = h.send(OrderNotFound(link_id=entry.link_id))
    assert places(h.advance(200) + h.books(SPOT_BOOK, RICH))


def test_rule_5_2_unknown_hedge_keeps_its_quantity_reserved() -> None:
    h = Harness.make()
    entry = enter(h)
    h.fill(entry.link_id)
    hedge = h.one_live(Purpose.HEDGE)
    h.send(OutcomeUnknown(link_id=hedge.link_id, request=Req.CREATE, reason="503"))
    assert places(h.advance(250) + h.book(Leg.PERP, "65120.0", "65120.1")) == []
    h.update(hedge.link_id, OrderStatus.OPEN, "0")  # the query found it working
    assert h.one_live(Purpose.HEDGE).status is OrderStatus.OPEN


def test_rule_5_3_cancel_is_a_request_not_a_state() -> None:
    h = Harness.make()
    entry = enter(h)
    h.book(Leg.PERP, *NEUTRAL)
    h.ack(entry.link_id, Req.CANCEL)
    assert h.phase is Phase.ENTRY_WORKING  # acknowledged is not final
    h.fill(entry.link_id, "0.003")  # a fill after the cancel was acknowledged
    h.update(entry.link_id, OrderStatus.CANCELLED, "0.003")
    assert h.phase is Phase.RACE_EXIT
    assert h.one_live(Purpose.HEDGE).qty == D("0.002")  # 0.003 gross less the fee, to the step


def test_rule_5_4_out_of_order_messages_and_overfills() -> None:
    h = Harness.make()
    entry = enter(h)
    # the order stream says Filled before any execution arrives
    h.update(entry.link_id, OrderStatus.FILLED, str(entry.qty), fee="0.000010012", fee_coin="BTC")
    assert h.phase is Phase.RACE_EXIT
    held = h.state.spot.qty
    # the executions arrive late and change nothing
    h.execution(entry.link_id, str(entry.qty), "65000.0", fee="0.000010012", fee_coin="BTC")
    assert h.state.spot.qty == held
    # an older PartiallyFilled arrives after the Filled: ignored
    h.update(entry.link_id, OrderStatus.OPEN, "0.005")
    assert h.state.spot.qty == held and h.order(entry.link_id).status is OrderStatus.FILLED


def test_rule_5_5_hedge_net_quantity_rounded_to_step() -> None:
    h = Harness.make(order_qty=D("0.0105"))
    entry = enter(h)
    h.fill(entry.link_id)
    net = h.state.spot.qty
    hedge = h.one_live(Purpose.HEDGE)
    assert hedge.qty == trunc_to(net, PERP.qty_step) == D("0.010")
    assert net - hedge.qty > D("0.0005")  # the rest is raced back on the spot


def test_amend_reject_of_a_shrinking_exit_cancels_it() -> None:
    h = Harness.make()
    hedge, spot_exit = race(h)
    h.fill(hedge.link_id, "0.004")
    amend = of(h.log, AmendOrder)[-1]
    cmds = h.reject(amend.link_id, RejectKind.INVALID, Req.AMEND)
    assert order_cmds(cmds) == [CancelOrder(link_id=spot_exit.link_id, leg=Leg.SPOT)]


def test_tick_only_changes_nothing_when_idle() -> None:
    h = Harness.make()
    assert h.send(Tick()) == []


def test_place_commands_carry_the_instance_prefix() -> None:
    h = Harness.make()
    _hedge, _spot_exit = race(h)
    for p in of(h.log, PlaceOrder):
        assert p.link_id.startswith("btc-") and len(p.link_id) <= 36


def test_stop_while_the_entry_fills_leaves_a_resting_hedge() -> None:
    h = Harness.make()
    entry = enter(h)
    h.send(Stop())
    cmds = h.fill(entry.link_id)  # filled before the cancel landed
    (hedge,) = places(cmds)
    assert hedge.purpose is Purpose.HEDGE and hedge.post_only
    assert not of(cmds, ReportStopped)
    assert of(h.ack(hedge.link_id), ReportStopped)
    assert list(h.state.orders) == [hedge.link_id]


def test_stream_reject_other_than_post_only_halts_instead_of_looping() -> None:
    h = Harness.make()
    entry = enter(h)
    cmds = h.update(entry.link_id, OrderStatus.REJECTED, "0", reject=RejectKind.OTHER)
    assert h.phase is Phase.HALTED and of(cmds, ReportHalt)
    assert places(h.advance(1000)) == []


def test_unwind_leg_ending_short_is_repeated_then_halts() -> None:
    h = Harness.make()
    carry(h)
    spot, perp = by_leg(places(h.book(Leg.PERP, *NEUTRAL)))
    h.ack(spot.link_id)
    h.fill(spot.link_id, price="65000.0")
    link = perp.link_id
    for attempt in range(3):
        h.ack(link)
        h.execution(link, "0.002", "65003.0")
        cmds = h.update(link, OrderStatus.CANCELLED, "0.002", price="65003.0")  # IOC ran dry
        if attempt < 2:
            (again,) = places(cmds)
            assert (again.leg, again.qty, again.reduce_only) == (
                Leg.PERP,
                D("0.01") - D("0.002") * (attempt + 1),
                True,
            )
            link = again.link_id
    assert h.phase is Phase.HALTED and of(cmds, ReportHalt)
    assert "3 market orders on the perp ended unfilled" in of(cmds, ReportHalt)[0].detail


def test_market_mode_hedges_many_partial_fills_without_halting() -> None:
    h = Harness.make(hedge_mode=HedgeMode.MARKET, order_qty=D("0.01"))
    entry = enter(h)
    for _ in range(5):
        (hedge,) = places(h.fill(entry.link_id, "0.002"))
        h.ack(hedge.link_id)
        h.fill(hedge.link_id, price="65100.0")
    assert h.phase is not Phase.HALTED
    assert h.state.perp.qty <= D("-0.009")


def test_restart_after_a_stop_resumes_trading_with_fresh_ids() -> None:
    h = Harness.make()
    h.send(Stop())
    assert h.state.stopped
    restored = snapshot.decode(snapshot.encode(h.state))
    again = Harness(core=h.core, state=restored, now=h.now + 60_000)
    assert places(again.books(SPOT_BOOK, RICH)) == []  # stopped: nothing until the restart
    cmds = again.send(Restarted())
    (entry,) = places(cmds)
    assert entry.link_id == "btc-1700000000-1"  # no block was open: nothing to skip
    assert not again.state.stopping


def test_restart_skips_the_open_id_block() -> None:
    h = Harness.make()
    entry = enter(h)  # seq 1 of the block reserved up to 64
    h.send(Stop())
    assert of(h.cancelled(entry.link_id), ReportStopped)
    again = Harness(core=h.core, state=snapshot.decode(snapshot.encode(h.state)), now=h.now + 1)
    (p,) = places(again.send(Restarted()) + again.books(SPOT_BOOK, RICH))
    assert p.link_id == "btc-1700000000-65"  # ids 2..64 may have been sent before a crash


def test_blank_fee_coin_of_a_spot_buy_is_the_base_coin() -> None:
    h = Harness.make()
    entry = enter(h)
    h.execution(entry.link_id, str(entry.qty), "65000.0", fee="0.00001", fee_coin="")
    assert h.state.spot.qty == entry.qty - D("0.00001")  # the fee was kept in BTC

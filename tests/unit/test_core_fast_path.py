"""A settled race skips decision passes on book updates until something is due; this must never
change a decision. A reference core with the shortcut disabled sees the same events."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.core_harness import D, Harness, race
from worker.core import snapshot
from worker.core.commands import AmendOrder, Command
from worker.core.events import Acknowledged, BookTop, Event, Tick
from worker.core.model import CoreState, Leg
from worker.core.model import Request as Req
from worker.core.strategy import Core


class AlwaysDecide(Core):
    """The reference: every event gets a full decision pass."""

    def _quiet_until(self, s: CoreState) -> int:
        return 0


steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=120),  # ms until the event
        st.sampled_from(["spot", "perp", "tick"]),
        st.integers(min_value=-30, max_value=30),  # ticks the touch moves
    ),
    min_size=1,
    max_size=150,
)


@given(steps)
def test_skipping_settled_book_updates_never_changes_a_decision(
    script: list[tuple[int, str, int]],
) -> None:
    h = Harness.make()
    race(h)
    ref_core = AlwaysDecide(h.core.p)
    ref_state = snapshot.decode(snapshot.encode(h.state))
    assert h.state.quiet_until > h.now  # the race is settled: the shortcut is in play
    mids = {Leg.SPOT: D("65000.05"), Leg.PERP: D("65100.05")}
    now = h.now
    skipped = 0
    for dt, what, move in [(1, "perp", 0), *script]:  # the first update is surely skipped
        now += dt
        event: Event
        if what == "tick":
            event = Tick()
        else:
            leg = Leg.SPOT if what == "spot" else Leg.PERP
            mids[leg] += Decimal(move) / 10
            event = BookTop(
                leg=leg,
                bid=mids[leg] - D("0.05"),
                ask=mids[leg] + D("0.05"),
                bid_qty=D(1),
                ask_qty=D(1),
                ts_ms=now,
                update_id=now,
            )
        skipped += isinstance(event, BookTop) and now < h.state.quiet_until
        fast: list[Command] = h.core.step(h.state, event, now)
        full: list[Command] = ref_core.step(ref_state, event, now)
        assert fast == full
        for cmd in fast:  # the venue accepts every amend at once
            if isinstance(cmd, AmendOrder):
                ack = Acknowledged(link_id=cmd.link_id, request=Req.AMEND)
                assert h.core.step(h.state, ack, now) == ref_core.step(ref_state, ack, now)
    positions = (h.state.spot.qty, h.state.perp.qty, h.state.phase)
    assert positions == (ref_state.spot.qty, ref_state.perp.qty, ref_state.phase)
    assert skipped >= 1

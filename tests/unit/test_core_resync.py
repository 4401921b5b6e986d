"""The core's side of a worker restart: the resync gate, a venue mismatch, funding once."""

from __future__ import annotations

from tests.unit.core_harness import RICH, SPOT_BOOK, D, Harness, carry, of, places
from worker.core.commands import CancelOrder, ReportHalt, ReportRefused
from worker.core.events import (
    Flatten,
    FundingPayment,
    Restarted,
    Resume,
    Resyncing,
    VenueMismatch,
)
from worker.core.model import Phase, Purpose


def test_no_decision_while_resyncing_and_trading_resumes_after_restarted() -> None:
    h = Harness.make()
    h.send(Resyncing())
    assert places(h.books(SPOT_BOOK, RICH)) == []  # an entry signal, but not yet
    assert h.phase is Phase.FLAT
    (entry,) = places(h.send(Restarted()))
    assert entry.purpose is Purpose.ENTRY


def test_a_mismatch_halts_cancels_and_flatten_unwinds_the_exchanges_position() -> None:
    h = Harness.make()
    carry(h)
    held = h.state.perp.qty
    h.send(Resyncing())
    cmds = h.send(VenueMismatch(detail="perp differs", perp_qty=held * 3, perp_avg_price=D(65000)))
    (halt,) = of(cmds, ReportHalt)
    assert halt.reason == "venue mismatch" and h.phase is Phase.HALTED
    assert h.state.perp.qty == held  # the snapshot's claim is kept until the operator acts
    h.send(Restarted())
    (refused,) = of(h.send(Resume()), ReportRefused)
    assert "differs" in refused.reason
    cmds = h.send(Flatten())
    assert h.phase is Phase.UNWINDING
    perp_unwind = [p for p in places(cmds) if p.leg.value == "perp"]
    assert perp_unwind and perp_unwind[0].qty == -held * 3  # what the exchange holds
    assert not of(cmds, CancelOrder)


def test_funding_counts_once_per_settlement_and_never_before_the_state_existed() -> None:
    h = Harness.make()
    origin_ms = h.state.ids.origin * 1000
    h.send(FundingPayment(amount=D("-1"), ts_ms=origin_ms - 1))
    assert h.state.funding == 0
    h.send(FundingPayment(amount=D("-1"), ts_ms=h.now))
    h.send(FundingPayment(amount=D("-1"), ts_ms=h.now))  # the REST resync saw it again
    assert h.state.funding == D("-1")
    h.send(FundingPayment(amount=D("2"), ts_ms=h.now + 1))
    assert h.state.funding == D("1")

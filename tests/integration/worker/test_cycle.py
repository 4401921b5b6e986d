"""Whole trading cycles: a real worker process against a real scripted exchange-sim.

Each test drives the simulator's books and trades through its admin API and checks three
independent views: the simulator's own orders and account (the truth), the worker's durable
snapshot, and its log.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.integration.conftest import Sim
from tests.integration.worker_harness import (
    Market,
    into_race,
    market_orders,
    open_order,
    own_orders,
    perp_position,
    running_worker,
    spot_balance,
    wait_for,
    write_config,
)
from worker.core.model import Phase

D = Decimal
QTY = D("0.01")


def test_long_cycle_chase_fill_race_hedge_carry_and_unwind(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    btc_before = spot_balance(sim)
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        # basis above the threshold: a PostOnly spot buy at the best bid
        market.at("50000", "15")
        entry = open_order(sim, "spot", "Buy")
        assert entry["timeInForce"] == "PostOnly" and D(entry["price"]) == D("50000")
        # a small move: the same order is amended to the new touch
        market.spot("50001", "50001.1")
        market.perp("50076", "50076.1")
        wait_for(
            lambda: D(sim.order(entry["orderLinkId"])["price"]) == D("50001"),  # type: ignore[index]
            message="entry amended to 50001",
        )
        assert open_order(sim, "spot", "Buy")["orderLinkId"] == entry["orderLinkId"]
        # a large move (6 bps > chase_max_slip_bps 3): cancel and replace
        market.spot("50030", "50030.1")
        market.perp("50106", "50106.1")
        replaced = wait_for(
            lambda: [
                o
                for o in own_orders(sim)
                if o["side"] == "Buy" and o["orderStatus"] == "New" and D(o["price"]) == D("50030")
            ],
            message="a replacing entry at 50030",
        )[0]
        assert replaced["orderLinkId"] != entry["orderLinkId"]
        assert sim.order(entry["orderLinkId"])["orderStatus"] == "Cancelled"  # type: ignore[index]
        # a trade through it: filled; the race starts
        sim.trade("spot", "BTCUSDT", "Sell", "50030", "0.52")
        hedge = open_order(sim, "linear", "Sell")
        spot_exit = open_order(sim, "spot", "Sell")
        assert hedge["timeInForce"] == "PostOnly" and D(hedge["price"]) == D("50106.1")
        assert D(spot_exit["price"]) == D("50030.1")  # max(best ask, entry price)
        assert D(hedge["qty"]) == QTY
        # the perp hedge fills first: the spot exit is cancelled, carry_hedged
        sim.trade("linear", "BTCUSDT", "Buy", "50106.1", "0.52")
        worker.wait_state(lambda s: s.phase is Phase.CARRY_HEDGED)
        wait_for(
            lambda: sim.order(spot_exit["orderLinkId"])["orderStatus"] == "Cancelled",  # type: ignore[index]
            message="spot exit cancelled",
        )
        assert perp_position(sim) == -QTY
        assert spot_balance(sim) - btc_before >= QTY  # bought, net of the base-coin fee
        state = worker.state()
        assert state.perp.qty == -QTY and state.spot.qty == spot_balance(sim) - btc_before
        # the basis reverts below the exit threshold (the trades emptied one side of each
        # book, so both are set again): both legs unwound by market orders
        market.spot("50030", "50030.1")
        market.perp("50030.5", "50030.6")
        worker.wait_state(lambda s: s.phase is Phase.FLAT and s.cycles_done == 1)
        assert perp_position(sim) == 0
        assert not [o for o in own_orders(sim) if o["orderStatus"] in ("New", "PartiallyFilled")]
        cycle = worker.wait_event("cycle")
        assert cycle["number"] == 1
        assert worker.stop() == 0


def test_short_cycle_mirror_spot_exit_wins_back_to_flat(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    """Negative basis: a spot sell at the best ask; the spot buy-back wins the race."""
    btc_before = spot_balance(sim)
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        market.at("50000", "-15")
        entry = open_order(sim, "spot", "Sell")
        assert entry["timeInForce"] == "PostOnly" and D(entry["price"]) == D("50000.1")
        assert D(entry["qty"]) == QTY  # a sell pays its fee in the quote coin: no gross-up
        sim.trade("spot", "BTCUSDT", "Buy", "50000.1", "0.52")
        market.spot("50000", "50000.1")
        hedge = open_order(sim, "linear", "Buy")
        spot_exit = open_order(sim, "spot", "Buy")
        assert D(hedge["price"]) == D(market.sim.order(hedge["orderLinkId"])["price"])  # type: ignore[index]
        assert D(spot_exit["price"]) == D("50000")  # min(best bid, entry price)
        # the spot exit fills first: the hedge is cancelled, the fill is given back
        sim.trade("spot", "BTCUSDT", "Sell", "50000", "0.52")
        worker.wait_state(lambda s: s.phase is Phase.FLAT and s.cycles_done == 1)
        wait_for(
            lambda: sim.order(hedge["orderLinkId"])["orderStatus"] == "Cancelled",  # type: ignore[index]
            message="hedge cancelled",
        )
        assert perp_position(sim) == 0
        state = worker.state()
        assert state.perp.qty == 0
        assert state.spot.qty == spot_balance(sim) - btc_before  # the buy-back's fee dust
        assert worker.stop() == 0


def test_both_exits_fill_and_the_excess_perp_is_closed_by_a_market_order(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        hedge, spot_exit = into_race(worker, sim, market)
        # both exits fill before the worker's cancel can land: its requests are slowed down
        sim.fault("latency", rest_ms=400)
        sim.trade("linear", "BTCUSDT", "Buy", hedge["price"], "0.52")
        sim.trade("spot", "BTCUSDT", "Buy", spot_exit["price"], "0.52")
        # liquidity back before the fault ends: the excess perp's market close, sent the moment
        # the private stream reports both fills, must find asks whenever it lands
        market.at("50000", "5")
        sim.fault("clear")
        closing = wait_for(
            lambda: market_orders(sim, "linear", "Buy"),
            message="a market perp buy closing the excess",
        )
        assert D(closing[0]["qty"]) == QTY
        worker.wait_state(lambda s: s.phase is Phase.FLAT and not s.orders)
        assert perp_position(sim) == 0
        assert worker.state().perp.qty == 0
        assert worker.stop() == 0


def test_emergency_unwind_from_carry(tmp_path: Path, sim: Sim, market: Market) -> None:
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        hedge, _ = into_race(worker, sim, market)
        sim.trade("linear", "BTCUSDT", "Buy", hedge["price"], "0.52")
        worker.wait_state(lambda s: s.phase is Phase.CARRY_HEDGED)
        # the basis widens past emergency_unwind_bps (60): both legs market-unwound at once
        market.at("50000", "80")
        line = worker.wait_event("transition", target="unwinding")
        assert line["trigger"] == "emergency"
        # (flat again, the wide basis is a new entry signal: only the unwind is checked)
        worker.wait_state(lambda s: s.cycles_done == 1 and s.perp.qty == 0)
        assert worker.wait_event("cycle")["ended_by"] == "emergency"
        assert perp_position(sim) == 0
        assert worker.stop() == 0


def test_max_unhedged_ms_forces_a_market_hedge(tmp_path: Path, sim: Sim, market: Market) -> None:
    config = write_config(tmp_path, sim, max_unhedged_ms=1000)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        into_race(worker, sim, market)
        # nobody trades against either exit: after max_unhedged_ms a market perp sell hedges
        market_hedge = wait_for(
            lambda: market_orders(sim, "linear", "Sell"),
            timeout=10,
            message="a market perp hedge",
        )
        assert D(market_hedge[0]["qty"]) == QTY
        worker.wait_state(lambda s: s.phase is Phase.CARRY_HEDGED)
        assert perp_position(sim) == -QTY
        assert worker.stop() == 0

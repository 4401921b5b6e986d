"""A worker's life around the trading: stop, restart, mismatch, hub commands, dry-run, exit
codes. Real worker processes, a real scripted simulator, and the real IPC protocol (a stub
stands in for the hub, which is not part of this tier)."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path

from tests.integration.conftest import Sim
from tests.integration.worker_harness import (
    HubStub,
    Market,
    WorkerProc,
    into_race,
    open_order,
    own_orders,
    perp_position,
    running_worker,
    wait_for,
    write_config,
)
from worker import ipc
from worker.core import snapshot
from worker.core.model import Phase
from worker.store import SnapshotStore

D = Decimal
QTY = D("0.01")


def log_lines(folder: Path, instance: str = "btc") -> int:
    """Lines in the instance's log so far (a restarted worker appends to it)."""
    return len((folder / f"{instance}.log").read_text().splitlines())


def test_stop_in_race_exit_cancels_the_spot_exit_and_leaves_the_hedge_working(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = write_config(tmp_path, sim)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        into_race(worker, sim, market)
        assert worker.stop() == 0
    working = [o for o in own_orders(sim) if o["orderStatus"] == "New"]
    assert [(o["category"], o["side"]) for o in working] == [("linear", "Sell")]
    assert not [o for o in own_orders(sim) if o["orderType"] == "Market"]  # never unwinds
    saved = SnapshotStore(tmp_path / "state" / "btc.json").load()
    assert saved is not None
    assert saved.phase is Phase.RACE_EXIT and saved.stopped
    assert [o.link_id for o in saved.orders.values()] == [working[0]["orderLinkId"]]
    # restarted: it resumes the race; the hedge fills while it runs → carry_hedged
    before = log_lines(tmp_path)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30, after=before)
        sim.trade("linear", "BTCUSDT", "Buy", working[0]["price"], "0.52")
        worker.wait_state(lambda s: s.phase is Phase.CARRY_HEDGED)
        assert perp_position(sim) == -QTY
        assert worker.stop() == 0


def test_a_fill_while_stopped_is_applied_at_restart(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = write_config(tmp_path, sim)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        into_race(worker, sim, market)
        assert worker.stop() == 0
    hedge = open_order(sim, "linear", "Sell")
    sim.trade("linear", "BTCUSDT", "Buy", hedge["price"], "0.52")  # fills while nobody runs
    before = log_lines(tmp_path)
    with running_worker(config) as worker:
        line = worker.wait_event("resynced", timeout=30, after=before)
        assert line["halted"] is False and line["perp"] == "-0.010"
        worker.wait_state(lambda s: s.phase is Phase.CARRY_HEDGED)
        assert worker.stop() == 0


def test_mismatch_at_start_halts_with_the_difference_then_flatten_brings_it_flat(
    tmp_path: Path, sim: Sim, market: Market, hub: HubStub
) -> None:
    config = write_config(tmp_path, sim)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        into_race(worker, sim, market)
        hedge = open_order(sim, "linear", "Sell")
        sim.trade("linear", "BTCUSDT", "Buy", hedge["price"], "0.52")
        worker.wait_state(lambda s: s.phase is Phase.CARRY_HEDGED)
        assert worker.stop() == 0
    # while it is stopped, someone changes the perp position on the account
    sim.adjust(symbol="BTCUSDT", side="Sell", size="0.03")
    with running_worker(config) as worker:
        mismatch = worker.wait_event("venue_mismatch", timeout=30)
        assert "exchange holds -0.03" in mismatch["detail"]
        assert "snapshot -0.01" in mismatch["detail"]
        halted = hub.wait_status(lambda s: s.state == "halted")
        assert halted.error is not None and "-0.03" in halted.error
        # the process stays up and keeps reporting
        hub.wait_status(lambda s: s.updated_ms > halted.updated_ms + 1000)
        worker.assert_alive()
        # Resume is refused while the exchange and the snapshot differ
        hub.send(ipc.Resume())
        refused = worker.wait_event("refused")
        assert refused["command"] == "resume"
        # Flatten unwinds what the exchange holds
        market.at("50000", "0")
        hub.send(ipc.Flatten())
        worker.wait_state(lambda s: s.phase is Phase.FLAT)
        wait_for(lambda: perp_position(sim) == 0, message="perp flat at the exchange")
        status = hub.wait_status(lambda s: s.state == "flat")
        assert status.perp_position == 0
        assert worker.stop() == 0


def test_hub_commands_cancel_entry_and_resume(
    tmp_path: Path, sim: Sim, market: Market, hub: HubStub
) -> None:
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        hello = wait_for(
            lambda: [m for m in hub.received if isinstance(m, ipc.Hello)], message="hello"
        )[0]
        assert hello.instance == "btc" and hello.pid == worker.pid and hello.mode == "SIM"
        market.at("50000", "15")
        entry = open_order(sim, "spot", "Buy")
        status = hub.wait_status(lambda s: s.state == "entry_working")
        assert status.working_orders == 1 and status.basis_bps is not None
        hub.send(ipc.CancelEntry())
        wait_for(
            lambda: sim.order(entry["orderLinkId"])["orderStatus"] == "Cancelled",  # type: ignore[index]
            message="entry cancelled",
        )
        worker.wait_state(lambda s: s.phase is Phase.FLAT and s.entries_paused)
        hub.send(ipc.Resume())
        wait_for(
            lambda: len([o for o in own_orders(sim) if o["orderStatus"] == "New"]) == 1,
            message="a new entry after Resume",
        )
        hub.send(ipc.Stop())
        assert worker.wait_exit() == 0


def test_dry_run_sends_nothing_and_logs_its_decisions(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = write_config(tmp_path, sim, execute=False)
    with running_worker(config) as worker:
        assert worker.wait_event("started", timeout=30)["mode"] == "DRY-RUN"
        worker.wait_event("resynced")
        market.at("50000", "15")
        place = worker.wait_event("would_send", request="place")
        assert place["side"] == "Buy" and place["purpose"] == "entry"
        market.at("50030", "15")  # re-priced: a would-be amend or replace
        worker.wait_log(
            lambda line: (
                line.get("event") == "would_send" and line.get("request") in ("amend", "cancel")
            )
        )
        market.at("50030", "0")  # the basis falls back: the paper entry is cancelled
        worker.wait_state(lambda s: s.phase is Phase.FLAT and not s.orders)
        assert sim.orders() == []  # the exchange never saw an order
        assert worker.events("send") == []
        assert worker.stop() == 0


def test_exit_codes_locked_and_unreadable_snapshot(tmp_path: Path, sim: Sim) -> None:
    config = write_config(tmp_path, sim)
    with running_worker(config) as first:
        first.wait_event("resynced", timeout=30)
        second = WorkerProc(config)
        assert second.wait_exit() == 3
        assert any(line.get("event") == "locked" for line in second.lines())
        first.signal(signal.SIGINT)
        assert first.wait_exit() == 0
    (tmp_path / "state" / "btc.json").write_text('{"version": 99, "state": {}}')
    newer = WorkerProc(config)
    assert newer.wait_exit() == 4
    refused = [line for line in newer.lines() if line.get("event") == "snapshot_refused"]
    assert "newer" in refused[-1]["detail"]


def test_a_symbol_unknown_to_the_venue_is_a_configuration_error(tmp_path: Path, sim: Sim) -> None:
    instances = [
        {
            "id": "nope",
            "spot_symbol": "NOPEUSDT",
            "future_symbol": "NOPEUSDT",
            "order_qty": "1",
            "state_path": "state/nope.json",
        }
    ]
    worker = WorkerProc(write_config(tmp_path, sim, instances=instances), "nope")
    assert worker.wait_exit(30) == 2
    failed = [line for line in worker.lines() if line.get("event") == "venue_check_failed"]
    assert failed and "NOPEUSDT" in json.dumps(failed[-1])


def test_a_second_signal_stops_at_once_and_the_restart_resolves_what_was_in_flight(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = write_config(tmp_path, sim)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        market.at("50000", "15")
        link = open_order(sim, "spot", "Buy")["orderLinkId"]
        sim.fault("lose_reply", count=1)  # the stop's cancel lands, its answer never comes
        worker.signal(signal.SIGTERM)
        worker.wait_event("send", request="cancel", link_id=link)
        worker.signal(signal.SIGTERM)  # the operator will not wait for the outcome
        assert worker.wait_exit() == 0
        assert worker.events("forced_stop")
    assert sim.order(link)["orderStatus"] == "Cancelled"  # type: ignore[index]
    before = log_lines(tmp_path)
    market.at("50000", "0")
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30, after=before)
        worker.wait_state(lambda s: s.phase is Phase.FLAT and not s.orders)
        assert not worker.events("halted")
        assert worker.stop() == 0


def test_a_stop_while_resyncing_exits_cleanly_without_trading(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    sim.fault("latency", rest_ms=1500)  # the resync's queries are slow to answer
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("started", timeout=30)
        market.at("50000", "15")
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0
        assert not worker.events("resynced") and not worker.events("send")
    sim.fault("clear")
    assert own_orders(sim) == []


def _saved_serial(folder: Path) -> int:
    """The serial of the durable snapshot (not the staged copy of the order path)."""
    return snapshot.decode_with_serial((folder / "state" / "btc.json").read_bytes())[1]


def test_a_wallet_update_alone_is_applied_but_writes_no_snapshot(
    tmp_path: Path, sim: Sim, market: Market, hub: HubStub
) -> None:
    """On an account shared by a fleet, every fill of any row moves the quote coin; a worker
    applies the balance (it decides entries by it) without an fsync of its own for it."""
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        btc = D(sim.account()["balances"]["BTC"]["walletBalance"])
        sim.adjust(coin="BTC", delta=str(D("0.001") - btc))
        market.at("50000", "-15")  # a sell entry of 0.01 BTC, held back by the balance
        hub.wait_status(lambda s: "available BTC 0.001 <" in (s.blocked or ""))
        wait_for(lambda: worker.state().blocked != "", message="the block saved")
        before = _saved_serial(tmp_path)
        for _ in range(3):  # each a wallet message with USDT only, which a sell does not need
            sim.adjust(coin="USDT", delta="-1")
            time.sleep(0.3)  # apart: each would have had a snapshot of its own
        sim.adjust(coin="BTC", delta="0.001")  # after them on the stream; changes the block
        hub.wait_status(lambda s: "available BTC 0.002 <" in (s.blocked or ""))
        wait_for(lambda: _saved_serial(tmp_path) > before, message="the new block saved")
        time.sleep(0.5)
        assert _saved_serial(tmp_path) == before + 1  # the block's change, not the balances
        usdt = D(sim.account()["balances"]["USDT"]["walletBalance"])
        assert worker.state().balances["USDT"].total == usdt  # all three applied, and saved
        assert worker.stop() == 0

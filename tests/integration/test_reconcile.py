"""``spot-future-arb --reconcile``: a stopped row's snapshot against a real exchange-sim.

Real processes and files only: the simulator, worker processes that write the snapshots and
journals, and the reconcile command run as the console script the hub will call. What the
exchange really holds is read through the simulator's admin API; changes behind the worker's
back (an orphan order, a foreign perp position, a smaller balance) are made through signed
REST requests and ``/sim/adjust``.

Most tests share one simulator per xdist worker; each starts from a flat account (no open
orders, no perp position, books at 50,000 with no basis) and runs an instance id of its own,
because the simulator's order history outlives the test. Tests that trade start their own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exchange_sim.config import InstrumentSpec, LegSpec, default_config
from tests.integration.conftest import (
    Json,
    Sim,
    clean_orders,
    resting_spot_buy,
    running_sim,
    signed_request,
)
from tests.integration.worker_harness import (
    Market,
    WorkerProc,
    into_race,
    open_order,
    own_orders,
    running_worker,
    spot_balance,
    wait_for,
    worker_command,
    write_config,
)
from worker.core.model import Phase

D = Decimal


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> Json:
        decoded: Json = json.loads(self.stdout)
        return decoded

    def kinds(self) -> list[str]:
        return [d["kind"] for d in self.report["differences"]]

    def action(self, name: str) -> Json:
        found: list[Json] = [a for a in self.report["actions"] if a["action"] == name]
        assert len(found) == 1, self.report
        return found[0]


def reconcile(config: Path, *flags: str, instance: str = "btc", as_json: bool = True) -> Outcome:
    argv = [*worker_command(), "--config", str(config), "--instance", instance, "--reconcile"]
    argv += [*flags, "--json"] if as_json else list(flags)
    done = subprocess.run(
        argv, capture_output=True, text=True, cwd=config.parent, timeout=60, check=False
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def journal_actions(folder: Path, instance: str = "btc") -> list[tuple[str, str]]:
    path = folder / "state" / f"{instance}.journal.sqlite"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT action, result FROM actions ORDER BY id").fetchall()
    return [(str(a), str(r)) for a, r in rows]


def journal_transitions(folder: Path, instance: str = "btc") -> list[tuple[str, str, str]]:
    path = folder / "state" / f"{instance}.journal.sqlite"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT source, target, trigger FROM transitions ORDER BY id").fetchall()
    return [(str(s), str(t), str(g)) for s, t, g in rows]


@contextlib.contextmanager
def started(config: Path, instance: str = "btc") -> Iterator[tuple[WorkerProc, Json]]:
    """A worker process and its own ``resynced`` log line (the log file is shared by every
    run of the instance, so earlier runs' lines are skipped)."""
    log = config.parent / f"{instance}.log"
    earlier = len(log.read_text().splitlines()) if log.exists() else 0
    with running_worker(config, instance) as worker:
        yield worker, worker.wait_event("resynced", timeout=30, after=earlier)


def run_and_stop(config: Path, instance: str = "btc") -> WorkerProc:
    """A worker started, resynced and stopped cleanly (exit 0): its snapshot is on disk."""
    with started(config, instance) as (worker, _):
        assert worker.stop() == 0, worker.tail()
    return worker


def set_perp(sim: Sim, size: str, symbol: str = "BTCUSDT") -> None:
    """The account's perp position, behind every client's back (``side`` Sell = short)."""
    qty = D(size)
    side = "" if qty == 0 else ("Buy" if qty > 0 else "Sell")
    sim.adjust(symbol=symbol, side=side, size=str(abs(qty)))


# --- the shared simulator -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with running_sim(tmp_path_factory.mktemp("reconcile-sim") / "state.jsonl") as own:
        yield own


@pytest.fixture
def sim(shared_sim: Sim) -> Iterator[Sim]:
    """The shared simulator, flat for this test and left flat after it."""

    def flatten() -> None:
        clean_orders(shared_sim)
        set_perp(shared_sim, "0")

    flatten()
    yield shared_sim
    flatten()


def flat_market(sim: Sim) -> Market:
    m = Market(sim)
    m.depth = "0.5"
    m.at("50000", "0")  # no basis: a started worker stays flat
    return m


@pytest.fixture
def market(sim: Sim) -> Market:
    return flat_market(sim)


@pytest.fixture
def own_sim(tmp_path: Path) -> Iterator[Sim]:
    """A simulator of the test's own, for tests that trade (the shared one keeps its order
    history: a later instance with the same id would find those orders and halt)."""
    with running_sim(tmp_path / "sim-state") as own:
        yield own


def one_row(folder: Path, sim: Sim, instance: str) -> Path:
    """A config whose single instance (on BTCUSDT) has its own orderLinkId prefix."""
    row = {
        "id": instance,
        "spot_symbol": "BTCUSDT",
        "future_symbol": "BTCUSDT",
        "order_qty": "0.01",
        "state_path": f"state/{instance}.json",
    }
    return write_config(folder, sim, instances=[row])


# --- the tests ------------------------------------------------------------------------------


def test_a_clean_stopped_row_exits_0_and_is_journaled(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = one_row(tmp_path, sim, "clean")
    worker = run_and_stop(config, "clean")
    before = worker.state()

    result = reconcile(config, instance="clean")
    assert result.code == 0, result
    assert result.report == {
        "instance": "clean",
        "state": "flat",
        "mode": "SIM",
        "differences": [],
        "actions": [],
        "notes": [],
        "clean": True,
    }
    human = reconcile(config, instance="clean", as_json=False)
    assert human.code == 0, human
    assert human.stdout.splitlines() == [
        "instance clean: state flat (SIM, spot BTCUSDT, perp BTCUSDT)",
        "clean: the snapshot and the exchange agree",
    ]
    assert "arbhub-sim" not in human.stdout + human.stderr  # the key and secret never show
    assert journal_actions(tmp_path, "clean")[-2:] == [("reconcile", "clean")] * 2
    assert worker.state() == before  # only looked: the snapshot is untouched


def test_a_running_worker_refuses_reconcile_with_exit_3(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = one_row(tmp_path, sim, "locked")
    with started(config, "locked") as (worker, _):
        result = reconcile(config, instance="locked")
        assert result.code == 3, result
        lock = tmp_path / "state" / "locked.json.lock"
        assert result.report["error"].startswith(f"{lock} is held by another process")
        assert f"pid {worker.pid}" in result.report["error"]
        assert result.report["clean"] is False
        human = reconcile(config, "--clear", instance="locked", as_json=False)
        assert human.code == 3 and "stop the worker first" in human.stderr, human
        worker.assert_alive()  # untouched by the refused reconcile
        assert worker.stop() == 0
    assert reconcile(config, instance="locked").code == 0  # the lock was the only obstacle


def test_an_orphan_order_is_reported_and_cancel_orphans_cancels_it(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = one_row(tmp_path, sim, "orphan")
    epoch = run_and_stop(config, "orphan").state().ids.epoch
    orphan = f"orphan-{epoch}-999"
    foreign = f"orphanb-{epoch}-1"  # another instance's order on the same account and symbol
    for link_id in (orphan, foreign):
        reply = signed_request(sim, "POST", "/v5/order/create", resting_spot_buy(link_id)).json()
        assert reply["retCode"] == 0, reply

    found = reconcile(config, instance="orphan")
    assert found.code == 1, found
    assert found.report["differences"] == [
        {
            "kind": "orphan_order",
            "detail": f"spot BTCUSDT order {orphan} (qty 0.001, price 30000, filled 0) is open "
            "on the exchange but unknown to the snapshot",
        }
    ]
    assert found.report["clean"] is False
    assert sim.order(orphan)["orderStatus"] == "New"  # type: ignore[index]  # only reported

    refused = reconcile(config, "--resume", instance="orphan")  # not halted, and they differ
    assert refused.code == 1 and refused.action("resume")["result"] == "refused"

    fixed = reconcile(config, "--cancel-orphans", instance="orphan")
    assert fixed.code == 0, fixed
    assert fixed.action("cancel") == {
        "action": "cancel",
        "result": "done",
        "target": orphan,
        "detail": "cancelled, nothing filled",
    }
    assert fixed.report["differences"] == [] and fixed.report["clean"] is True
    assert sim.order(orphan)["orderStatus"] == "Cancelled"  # type: ignore[index]
    assert sim.order(foreign)["orderStatus"] == "New"  # type: ignore[index]  # not ours
    assert reconcile(config, instance="orphan").code == 0
    assert ("reconcile cancel", f"done {orphan}: cancelled, nothing filled") in journal_actions(
        tmp_path, "orphan"
    )


def test_a_position_mismatch_is_reported_and_resume_waits_until_they_agree(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = one_row(tmp_path, sim, "mismatch")
    run_and_stop(config, "mismatch")
    set_perp(sim, "-0.01")  # a foreign short on the instance's perp

    found = reconcile(config, instance="mismatch")
    assert found.code == 1, found
    assert found.report["differences"] == [
        {
            "kind": "perp_position",
            "detail": "perp BTCUSDT: the exchange holds -0.01, the snapshot 0 (difference -0.01)",
        }
    ]

    # the worker's own resync finds the same difference and halts
    with started(config, "mismatch") as (worker, line):
        assert line["halted"] is True
        assert worker.stop() == 0
    assert worker.state().phase is Phase.HALTED
    snapshot = tmp_path / "state" / "mismatch.json"
    halted = snapshot.read_bytes()

    refused = reconcile(config, "--resume", instance="mismatch")
    assert refused.code == 1, refused
    assert refused.kinds() == ["perp_position"]
    resume = refused.action("resume")
    assert resume["result"] == "refused" and "differ" in resume["detail"], resume
    assert refused.report["state"] == "halted"
    assert snapshot.read_bytes() == halted  # refused: not even rewritten

    set_perp(sim, "0")  # the operator closed the foreign position by hand
    resumed = reconcile(config, "--resume", instance="mismatch")
    assert resumed.code == 0, resumed
    assert resumed.action("resume")["result"] == "done"
    assert resumed.report["state"] == "flat" and resumed.report["clean"] is True
    state = worker.state()
    assert state.phase is Phase.FLAT and state.perp.qty == 0
    assert ("halted", "flat", "resume_flat") in journal_transitions(tmp_path, "mismatch")

    with started(config, "mismatch") as (again, line):  # trades again from the resumed state
        assert line["halted"] is False and line["phase"] == "flat"
        assert again.stop() == 0


def test_clear_is_refused_with_exposure_and_a_stopped_race_is_clean(
    tmp_path: Path, own_sim: Sim
) -> None:
    sim, market = own_sim, flat_market(own_sim)
    config = write_config(tmp_path, sim)
    with started(config) as (worker, _):
        hedge, _ = into_race(worker, sim, market)
        market.at("50000", "0")
        assert worker.stop() == 0  # the spot exit is cancelled, the hedge stays working
    state = worker.state()
    assert state.phase is Phase.RACE_EXIT and list(state.orders) == [hedge["orderLinkId"]]
    spot_claim = state.spot.qty
    assert spot_claim > 0

    plain = reconcile(config)  # the snapshot knows its resting hedge: nothing differs
    assert plain.code == 0, plain
    assert plain.report["state"] == "race_exit"

    refused = reconcile(config, "--clear")
    assert refused.code == 1, refused
    assert refused.action("clear")["detail"] == (
        f"the instance is not flat on the exchange: 1 open order(s) ({hedge['orderLinkId']})"
    )
    resume = reconcile(config, "--resume")
    assert resume.code == 1 and "not halted" in resume.action("resume")["detail"]

    # the hedge cancelled behind the worker's back: the exchange is flat, the snapshot is not
    reply = signed_request(
        sim,
        "POST",
        "/v5/order/cancel",
        {"category": "linear", "symbol": "BTCUSDT", "orderLinkId": hedge["orderLinkId"]},
    ).json()
    assert reply["retCode"] == 0, reply
    refused = reconcile(config, "--clear")
    assert refused.code == 1, refused
    assert refused.kinds() == ["missing_order"]
    assert (
        "the exchange has it cancelled with 0 filled" in refused.report["differences"][0]["detail"]
    )
    detail = refused.action("clear")["detail"]
    assert detail == "the snapshot has exposure: 1 working order(s)", detail
    after = worker.state()
    assert after.phase is Phase.RACE_EXIT and after.spot.qty == spot_claim  # untouched
    assert after.ids == state.ids

    # a balance that no longer covers the claim is reported with both figures
    held = spot_balance(sim)
    sim.adjust(coin="BTC", delta=str(-(held - spot_claim / 2)))
    short = reconcile(config)
    assert short.code == 1
    assert [d for d in short.report["differences"] if d["kind"] == "spot_balance"] == [
        {
            "kind": "spot_balance",
            "detail": f"spot BTC: the snapshot claims {spot_claim.normalize():f}, "
            f"the account holds {(spot_claim / 2).normalize():f}",
        }
    ]


def test_clear_from_halted_when_flat_starts_the_next_run_in_a_new_epoch(
    tmp_path: Path, own_sim: Sim
) -> None:
    sim, market = own_sim, flat_market(own_sim)
    config = write_config(tmp_path, sim)
    run_and_stop(config)
    set_perp(sim, "0.01")
    with started(config) as (worker, line):
        assert line["halted"] is True
        assert worker.stop() == 0
    halted = worker.state()
    assert halted.phase is Phase.HALTED

    refused = reconcile(config, "--clear")
    assert refused.code == 1
    detail = refused.action("clear")["detail"]
    assert detail == "the instance is not flat on the exchange: a perp position of 0.01 BTCUSDT"
    assert worker.state().ids.epoch == halted.ids.epoch

    set_perp(sim, "0")
    cleared = reconcile(config, "--clear")
    assert cleared.code == 0, cleared
    action = cleared.action("clear")
    state = worker.state()
    assert state.phase is Phase.FLAT and state.ids.epoch > halted.ids.epoch
    assert action["result"] == "done"
    assert action["detail"] == (
        f"halted → flat, new id epoch {state.ids.epoch} (was {halted.ids.epoch}); saved"
    )
    # the journal keeps its history and records the transition and the operator action
    assert journal_transitions(tmp_path)[-2:] == [
        ("flat", "halted", "halt"),
        ("halted", "flat", "clear"),
    ]
    assert journal_actions(tmp_path)[-2:] == [
        ("reconcile", "clean"),
        ("reconcile clear", f"done: {action['detail']}"),
    ]

    with started(config) as (again, line):
        assert line["halted"] is False and line["phase"] == "flat"
        market.at("50000", "15")  # an entry: its orderLinkId carries the new epoch
        entry = open_order(sim, "spot", "Buy")
        assert entry["orderLinkId"].startswith(f"btc-{state.ids.epoch}-"), entry
        market.at("50000", "0")
        assert again.stop() == 0
    assert reconcile(config).code == 0


def test_start_up_refusals_use_the_worker_exit_codes(tmp_path: Path, sim: Sim) -> None:
    config = one_row(tmp_path, sim, "refusals")
    unknown = reconcile(config, instance="nope")
    assert unknown.code == 2 and 'no instance "nope"' in unknown.report["error"], unknown
    for flags, message in (
        (["--reconcile", "--resume", "--clear"], "not allowed with"),
        (["--cancel-orphans"], "only with --reconcile"),
        (["--check", "--reconcile"], "cannot be combined"),
    ):
        usage = subprocess.run(
            [*worker_command(), "--config", str(config), *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert usage.returncode == 2 and message in usage.stderr, (flags, usage.stderr)

    state = tmp_path / "state"
    state.mkdir()
    (state / "refusals.json").write_text('{"version": 99, "state": {}}')
    newer = reconcile(config, instance="refusals")
    assert newer.code == 4 and "newer arbhub" in newer.report["error"], newer
    (state / "refusals.json").write_text("{not json")
    unreadable = reconcile(config, instance="refusals", as_json=False)
    assert unreadable.code == 4 and "unreadable" in unreadable.stderr, unreadable
    assert (state / "refusals.json").read_text() == "{not json"  # never replaced


# --- claims of several instances on one base coin -------------------------------------------


def _two_btc_perps_config(folder: Path) -> Path:
    """A simulator config with a second perpetual on BTC (``BTCPERP``, linear only)."""
    instruments = list(default_config().instruments)
    btc = instruments[0]
    assert btc.symbol == "BTCUSDT" and btc.linear is not None
    perp: LegSpec = btc.linear
    instruments.append(
        InstrumentSpec(
            symbol="BTCPERP", base_coin="BTC", quote_coin="USDT", price=btc.price, linear=perp
        )
    )
    path = folder / "sim-config.json"
    path.write_bytes(msgspec.json.encode({"instruments": instruments}))
    return path


@pytest.fixture
def two_perp_sim(tmp_path: Path) -> Iterator[Sim]:
    with running_sim(tmp_path / "sim-state", config=_two_btc_perps_config(tmp_path)) as own:
        yield own


def test_the_spot_balance_must_cover_every_instance_on_the_coin(
    tmp_path: Path, two_perp_sim: Sim
) -> None:
    sim = two_perp_sim
    rows: list[dict[str, Any]] = [
        {
            "id": "btc",
            "spot_symbol": "BTCUSDT",
            "future_symbol": "BTCUSDT",
            "order_qty": "0.01",
            "state_path": "state/btc.json",
        },
        {
            "id": "btcb",
            "spot_symbol": "BTCUSDT",
            "future_symbol": "BTCPERP",
            "order_qty": "0.01",
            "state_path": "state/btcb.json",
        },
        {  # never started: no snapshot, no claim
            "id": "btcc",
            "spot_symbol": "BTCUSDT",
            "future_symbol": "ETHUSDT",
            "order_qty": "0.01",
            "state_path": "state/btcc.json",
        },
    ]
    config = write_config(tmp_path, sim, instances=rows)
    for symbol in ("BTCUSDT", "BTCPERP"):
        sim.book("linear", symbol, [("50000", "0.5")], [("50000.1", "0.5")])
    sim.book("spot", "BTCUSDT", [("50000", "0.5")], [("50000.1", "0.5")])
    run_and_stop(config, "btc")
    # btcb buys spot and races its exit against a hedge on BTCPERP, then stops: a spot claim
    with started(config, "btcb") as (other, _):
        sim.book("linear", "BTCPERP", [("50075", "0.5")], [("50075.1", "0.5")])
        wait_for(
            lambda: [o for o in own_orders(sim, "btcb-") if o["orderStatus"] == "New"],
            message="btcb's entry",
        )
        sim.trade("spot", "BTCUSDT", "Sell", "50000", "0.52")
        sim.book("spot", "BTCUSDT", [("50000", "0.5")], [("50000.1", "0.5")])
        other.wait_state(lambda s: s.phase is Phase.RACE_EXIT and len(s.orders) == 2)
        assert other.stop() == 0
    claim = other.state().spot.qty
    assert claim > 0

    assert reconcile(config, instance="btc").code == 0  # 2 BTC and more cover 0.01
    held = spot_balance(sim)
    sim.adjust(coin="BTC", delta=str(-(held - claim / 2)))
    short = reconcile(config, instance="btc")
    assert short.code == 1, short
    assert short.report["differences"] == [
        {
            "kind": "spot_balance",
            "detail": f"spot BTC: the snapshots claim {claim.normalize():f} in all (this "
            f"instance 0, btcb {claim.normalize():f}), the account holds "
            f"{(claim / 2).normalize():f}",
        }
    ]

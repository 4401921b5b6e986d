"""The API's rows are encoded once and reused while nothing they show has changed
(``Hub.view_json``): whatever happens to a row, the reused JSON is what encoding its view
afresh gives. A stale cache would show an operator a stopped worker as running."""

from __future__ import annotations

import os
import types
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import service
from hub.files import PidRecord
from hub.procs import Proc
from hub.service import Hub, worker_side
from hub.supervisor import ProcessState, Row
from tests.hub_harness import ROWS, write_config
from worker import ipc
from worker.config_loader import load_config


class Clock:
    """Both of the hub's clocks, moved by the test."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


def status(state: str, n: int) -> ipc.Status:
    return ipc.Status(
        instance="btc", mode="SIM", spot_symbol="BTCUSDT", perp_symbol="BTCUSDT",
        state=state, basis_bps=Decimal(n) / 7, book_age_ms=n, spot_position=Decimal(n),
        perp_position=-Decimal(n), unhedged_qty=Decimal(0), unhedged_age_ms=None,
        working_orders=n % 2, orders=n, fills=n // 2, realized_pnl=Decimal("0.1") * n,
        unrealized_pnl=Decimal(0), fees=Decimal("0.001"), funding=Decimal(0),
        risk_blocked="budget" if n % 3 == 0 else None, error=None, updated_ms=1_700_000_000_000 + n,
    )  # fmt: skip


def act(row: Row, clock: Clock, action: tuple[str, int]) -> None:
    """One thing that happens to a row in the hub (never a signal: the pid is this test's)."""
    what, n = action
    if what == "start":
        if row.proc is None:
            row.started(Proc(PidRecord.of(os.getpid()), None, None), clock.mono)
            row.started_wall = clock.wall
    elif what == "hello" and row.proc is not None:
        row.said_hello(ipc.Hello(instance="btc", pid=os.getpid(), mode="SIM", version="t"),
                       lambda command: True, clock.mono)  # fmt: skip
    elif what == "status":
        shown = status(["flat", "entry_working", "halted"][n % 3], n)
        row.reported(shown, clock.mono, worker_side(shown))
    elif what == "exit" and row.proc is not None:
        row.exited([0, 1, 2, -9][n % 4], clock.mono)
    elif what == "stop" and row.link is not None:  # by IPC, so no signal is sent
        row.stop(clock.mono)
    elif what == "restart_count":
        row.restarts += 1
    elif what == "usage":
        row.cpu_percent, row.rss_bytes = n / 10, n * 4096
    elif what == "error":
        row.error = f"error {n}" if n % 2 else None
    elif what == "time":
        clock.mono += n / 4  # past the stale threshold (3 s) after a few
        clock.wall += n / 4


ACTIONS = st.tuples(
    st.sampled_from(
        ["start", "hello", "status", "exit", "stop", "restart_count", "usage", "error", "time"]
    ),
    st.integers(0, 20),
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Hub:
    config = write_config(tmp_path_factory.mktemp("views"), ROWS)
    return Hub(load_config(config), config_path=config)


def fresh(hub: Hub) -> list[Any]:
    return [msgspec.json.decode(msgspec.json.encode(v)) for v in hub.views()]


@settings(max_examples=150, deadline=None)
@given(actions=st.lists(ACTIONS, max_size=40))
def test_reused_json_is_always_the_view_encoded_afresh(
    hub: Hub, actions: list[tuple[str, int]]
) -> None:
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "time", types.SimpleNamespace(monotonic=clock.monotonic,
                                                             time=clock.time))  # fmt: skip
        for row in hub.rows.values():
            hub.rows[row.id] = Row(row.cfg, row.policy)
        row = hub.rows["btc"]
        assert msgspec.json.decode(hub.views_json()) == fresh(hub)
        for action in actions:
            act(row, clock, action)
            assert msgspec.json.decode(hub.views_json()) == fresh(hub), action
            one = hub.view_json(row, clock.mono)
            assert msgspec.json.decode(one) == fresh(hub)[list(hub.rows).index("btc")]


def test_a_row_is_encoded_again_only_when_it_changed(hub: Hub) -> None:
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "time", types.SimpleNamespace(monotonic=clock.monotonic,
                                                             time=clock.time))  # fmt: skip
        row = hub.rows["btc"] = Row(hub.rows["btc"].cfg, hub.rows["btc"].policy)
        first = hub.view_json(row, clock.mono)
        assert hub.view_json(row, clock.mono) is first  # nothing changed: the same bytes
        act(row, clock, ("start", 0))
        act(row, clock, ("hello", 0))
        running = hub.view_json(row, clock.mono)
        assert running is not first
        assert msgspec.json.decode(running)["process_state"] == ProcessState.RUNNING.value
        act(row, clock, ("status", 4))
        reported = hub.view_json(row, clock.mono)
        assert msgspec.json.decode(reported)["state"] == "entry_working"
        assert hub.view_json(row, clock.mono) is reported
        clock.mono += 3.5  # no status for three intervals: stale, with no other change
        assert msgspec.json.decode(hub.view_json(row, clock.mono))["stale"] is True

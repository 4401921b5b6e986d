"""The hub end to end: real ``hub`` processes, real workers, the real simulator, real sockets.

Every hub here is ``hub serve`` (or the detached hub that ``hub start`` launches) on a free
port with its own config, run folder and simulator (``tests.hub_harness``). Read-only tests
share one three-row fleet per module (``fleet``; the xdist group keeps them on one worker
under ``--dist loadgroup``, and under plain ``load`` a second worker merely builds its own);
tests that kill, stop or misconfigure things get small hubs of their own (``make_hub``).
Every process a test started is gone at teardown: ``RunningHub.close`` first, then a sweep
that SIGKILLs anything whose command line names the test's folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from hub.service import Hub
from tests.hub_harness import (
    BIN,
    ROWS,
    START_S,
    RunningHub,
    TokenHub,
    alive,
    workers_of,
    write_account_file,
    write_config,
    write_token_file,
)
from worker import ipc
from worker.config_loader import SIM_CREDENTIALS, load_config

IDS = [row["id"] for row in ROWS]
PROCESS_STATES = {"STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"}
PROCESS_STATES |= {"UNKNOWN"}
FRESH_BOOK_MS = 5000
DECIMAL_FIELDS = (
    "spot_position",
    "perp_position",
    "unhedged_qty",
    "realized_pnl",
    "unrealized_pnl",
    "fees",
    "funding",
)
COUNT_FIELDS = ("working_orders", "orders", "fills")
# BTCUSDT's perp qtyStep in exchange_sim/config.py is 0.001: 0.0025 passes the static check (a
# positive decimal) and the spot precision (0.000001) but fails the venue check at start.
OFF_GRID_BTC = {**ROWS[0], "order_qty": "0.0025"}
LINK_ID = re.compile(r"^[a-z0-9]{1,12}-\d+-\d+$")  # btc-1796224467-130 (worker/core ids)
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')

pytestmark = pytest.mark.timeout(240)


# ------------------------------------------------------------------------------- helpers


def _kill_everything_under(folder: Path) -> None:
    """SIGKILL every process whose command line names something in ``folder`` (the hub, the
    detached hub of ``hub start``, workers, the simulator): the last line of every teardown."""
    mark = str(folder)
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["pid"] != os.getpid() and any(mark in part for part in cmdline):
            with contextlib.suppress(psutil.Error):
                process.kill()


def fleet_running(hub: RunningHub, ids: list[str] | None = None) -> bool:
    """Every row RUNNING, reporting (not stale), with a fresh book."""
    rows = hub.rows()
    return all(
        (row := rows.get(i)) is not None
        and row["process_state"] == "RUNNING"
        and not row["stale"]
        and row["book_age_ms"] is not None
        and row["book_age_ms"] < FRESH_BOOK_MS
        for i in (ids if ids is not None else hub.ids)
    )


def wait_running(hub: RunningHub, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    hub.until(lambda: fleet_running(hub, ids), "rows RUNNING with fresh books")
    return hub.rows()


def is_int(value: object) -> bool:
    return type(value) is int


def is_decimal_string(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def check_view(view: dict[str, Any], *, reporting: bool) -> None:
    """The §8 contract of one ``/api/instances`` object; ``reporting``: the worker has sent a
    status, so its fields must be filled in, not merely allowed to be null."""
    where = f"row {view.get('id')!r}: {view}"
    assert isinstance(view["id"], str), where
    assert isinstance(view["mode"], str) and view["mode"], where
    assert view["process_state"] in PROCESS_STATES, where
    assert view["state"] is None or isinstance(view["state"], str), where
    assert isinstance(view["stale"], bool), where
    assert view["pid"] is None or is_int(view["pid"]), where
    assert is_int(view["restarts"]) and view["restarts"] >= 0, where
    basis = view["basis_bps"]
    assert basis is None or (isinstance(basis, int | float) and not isinstance(basis, bool)), where
    for key in ("book_age_ms", "unhedged_age_ms", *COUNT_FIELDS):
        assert view[key] is None or is_int(view[key]), f"{key}: {where}"
    for key in DECIMAL_FIELDS:
        assert view[key] is None or is_decimal_string(view[key]), f"{key}: {where}"
    assert isinstance(view["risk_blocked"], bool), where
    assert view["error"] is None or isinstance(view["error"], str), where
    updated = view["updated_at"]
    if updated is not None:
        assert isinstance(updated, str), where
        parsed = dt.datetime.fromisoformat(updated)
        assert parsed.utcoffset() == dt.timedelta(0), f"updated_at is not UTC: {where}"
    if reporting:
        assert is_int(view["pid"]) and isinstance(view["state"], str), where
        assert is_int(view["book_age_ms"]), where
        for key in COUNT_FIELDS:
            assert is_int(view[key]), f"{key}: {where}"
        for key in DECIMAL_FIELDS:
            assert is_decimal_string(view[key]), f"{key}: {where}"
        assert isinstance(updated, str), where


def log_events(hub: RunningHub, instance: str) -> list[dict[str, Any]]:
    path = hub.run_dir / f"{instance}.log"
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                events.append(record)
    return events


def pids_of(hub: RunningHub) -> dict[str, int]:
    return {i: row["pid"] for i, row in hub.rows().items()}


@dataclass
class Fleet:
    hub: RunningHub
    up_after_s: float  # from launching `hub serve --all` to every row RUNNING with fresh books


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three rows (btc, eth, sol) trading with an account file that holds the simulator's
    default key and secret, so the secret has a chance to leak anywhere."""
    folder = tmp_path_factory.mktemp("fleet")
    write_account_file(folder, *SIM_CREDENTIALS)
    config = write_config(folder, ROWS, account_file="account.json")
    started = time.monotonic()
    hub: RunningHub | None = None
    try:
        hub = RunningHub(config)
        wait_running(hub)
        yield Fleet(hub, time.monotonic() - started)
    finally:
        if hub is not None:
            hub.close()
        _kill_everything_under(folder)


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., RunningHub]]:
    """``make_hub(rows, **root)`` → a hub of the test's own; ``hub_class=TokenHub`` for a
    token-protected one. All of them (and anything they started) are gone at teardown."""
    made: list[RunningHub] = []

    def make(
        rows: list[dict[str, Any]], *, hub_class: type[RunningHub] = RunningHub, **root: Any
    ) -> RunningHub:
        folder = tmp_path / f"hub{len(made)}"
        config = write_config(folder, rows, **root)
        hub = hub_class(config)
        made.append(hub)
        return hub

    try:
        yield make
    finally:
        for hub in made:
            with contextlib.suppress(Exception):
                hub.close()
        _kill_everything_under(tmp_path)


# ------------------------------------------------------------------- the shared fleet

shared = pytest.mark.xdist_group("hub_fleet")


@shared
def test_three_rows_run_with_fresh_books_within_60_s(fleet: Fleet) -> None:
    assert fleet.up_after_s < START_S
    rows = wait_running(fleet.hub)
    assert sorted(rows) == sorted(IDS)
    processes = workers_of(fleet.hub.config)
    for instance, row in rows.items():
        assert row["mode"] == "SIM"
        assert row["book_age_ms"] is not None and 0 <= row["book_age_ms"] < FRESH_BOOK_MS, row
        assert processes.get(instance) == [row["pid"]], (instance, processes)


@shared
def test_api_and_status_json_carry_every_field_with_its_type(fleet: Fleet) -> None:
    hub = fleet.hub
    wait_running(hub)
    listed = hub.http.get("/api/instances")
    assert listed.status_code == 200
    assert listed.headers["content-type"].startswith("application/json")
    views = listed.json()
    assert isinstance(views, list) and sorted(v["id"] for v in views) == sorted(IDS)
    for view in views:
        check_view(view, reporting=True)
        one = hub.http.get(f"/api/instances/{view['id']}")
        assert one.status_code == 200
        check_view(one.json(), reporting=True)
        assert one.json()["id"] == view["id"]

    status = hub.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert sorted(r["id"] for r in rows) == sorted(IDS)
    for row in rows:
        check_view(row, reporting=True)
        assert set(row) >= set(views[0])


@shared
def test_unknown_instance_is_404(fleet: Fleet) -> None:
    hub = fleet.hub
    assert hub.http.get("/api/instances/nope").status_code == 404
    assert hub.http.get("/arb/nope").status_code == 404
    assert hub.post("/arb/nope/stop").status_code == 404
    assert hub.post("/arb/nope/start").status_code == 404


@shared
def test_metrics_are_prometheus_text_with_arbhub_names_and_no_order_ids(fleet: Fleet) -> None:
    hub = fleet.hub
    wait_running(hub)
    reply = hub.http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    typed: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in reply.text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            assert parts[1] in ("HELP", "TYPE") and len(parts) >= 3, line
            assert parts[2].startswith("arbhub_"), line
            if parts[1] == "TYPE":
                assert parts[3] in ("gauge", "counter", "histogram", "summary", "untyped"), line
                typed[parts[2]] = parts[3]
            continue
        match = SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample: {line!r}"
        name = match["name"]
        assert name.startswith("arbhub_"), line
        assert name in typed, f"{name} has no # TYPE line"
        value = float(match["value"])  # Prometheus parses Go floats; so does float()
        labels: set[tuple[str, str]] = set()
        if match["labels"]:
            pairs = LABEL.findall(match["labels"])
            rebuilt = ",".join(f'{k}="{v}"' for k, v in pairs)
            assert rebuilt == match["labels"].rstrip(","), f"malformed labels: {line!r}"
            labels = set(pairs)
        for key, label_value in labels:
            assert not LINK_ID.match(label_value), f"an orderLinkId as a label: {line!r}"
            assert not label_value.startswith(tuple(f"{i}-" for i in IDS)), line
            if key == "instance":
                assert label_value in IDS, line
        samples[(name, frozenset(labels))] = value
    assert samples[("arbhub_up", frozenset())] == 1
    for instance in IDS:
        assert samples[("arbhub_instance_running", frozenset({("instance", instance)}))] == 1


@shared
def test_livez_and_readyz(fleet: Fleet) -> None:
    live = fleet.hub.http.get("/livez")
    assert live.status_code == 200 and live.json() == {"ok": True}
    ready = fleet.hub.http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


@shared
def test_posts_need_the_csrf_token_and_gets_change_nothing(fleet: Fleet) -> None:
    hub = fleet.hub
    before = wait_running(hub)
    wanted = (hub.run_dir / "wanted.json").read_bytes()
    seen = {i: len(log_events(hub, i)) for i in IDS}
    headers = {"accept": "application/json"}
    for path in ("/arb/btc/stop", "/arb/btc/start", "/arb/btc/flatten", "/arb/stop-all"):
        assert hub.http.post(path, headers=headers).status_code == 403, path
        wrong = {**headers, "X-CSRF-Token": "not-the-token"}
        assert hub.http.post(path, headers=wrong).status_code == 403, path
        form = hub.http.post(path, headers=headers, data={"csrf_token": "not-the-token"})
        assert form.status_code == 403, path
        assert hub.http.get(path).status_code >= 400, path
        assert hub.http.get(path, params={"csrf_token": hub.csrf()}).status_code >= 400, path
    after = hub.rows()
    for instance, row in before.items():
        assert after[instance]["process_state"] == "RUNNING", after[instance]
        assert after[instance]["pid"] == row["pid"]
        assert after[instance]["restarts"] == row["restarts"]
    assert (hub.run_dir / "wanted.json").read_bytes() == wanted
    for instance in IDS:  # no command reached a worker
        commands = [e for e in log_events(hub, instance)[seen[instance] :]]
        assert not [e for e in commands if e["event"] == "hub_command"], commands


@shared
def test_a_non_ascii_csrf_token_is_refused_with_403(fleet: Fleet) -> None:
    hub = fleet.hub
    wait_running(hub, ["btc"])
    pid = hub.row("btc")["pid"]
    with httpx.Client(base_url=hub.url, timeout=10) as client:  # a 500 may break the connection
        reply = client.post("/arb/btc/stop", headers={b"X-CSRF-Token": b"\xe9"})
    assert hub.row("btc")["pid"] == pid
    assert reply.status_code == 403


@shared
def test_stop_one_row_and_start_it_again_over_the_api(fleet: Fleet) -> None:
    hub = fleet.hub
    before = wait_running(hub)
    victim, others = "eth", [i for i in IDS if i != "eth"]
    old_pid = before[victim]["pid"]

    reply = hub.post(f"/arb/{victim}/stop")
    assert reply.status_code == 200 and reply.json()["ok"] is True, reply.text
    row = hub.wait_state(victim, "STOPPED", 60)
    assert row["pid"] is None and row["error"] is None, row
    assert not alive(old_pid)
    assert victim not in workers_of(hub.config)
    events = log_events(hub, victim)
    exited = [e for e in events if e["event"] == "exited"]
    assert exited and exited[-1]["crashed"] is False, exited  # the IPC Stop: a clean exit
    assert events[-1]["event"] == "exit" and events[-1]["code"] == 0, events[-1]
    rows = hub.rows()
    for other in others:
        assert rows[other]["process_state"] == "RUNNING", rows[other]
        assert rows[other]["pid"] == before[other]["pid"]
    assert victim not in json.loads((hub.run_dir / "wanted.json").read_text())

    # the page's own way: a form post with the csrf_token field, answered by a redirect
    page = hub.http.post(f"/arb/{victim}/start", data={"csrf_token": hub.csrf()})
    assert page.status_code == 303 and page.headers["location"] == "/arb", page.text
    wait_running(hub)
    rows = hub.rows()
    assert rows[victim]["pid"] not in (None, old_pid)
    assert workers_of(hub.config)[victim] == [rows[victim]["pid"]]
    for other in others:
        assert rows[other]["pid"] == before[other]["pid"]


@shared
def test_a_killed_worker_is_restarted_with_growing_backoff(fleet: Fleet) -> None:
    hub = fleet.hub
    victim = "sol"
    first = wait_running(hub)[victim]

    killed_at = time.monotonic()
    os.kill(first["pid"], signal.SIGKILL)
    hub.until(lambda: hub.row(victim)["pid"] not in (None, first["pid"]), "a new sol pid")
    # no restart before the backoff's first second is over (a lower bound: never flaky)
    assert time.monotonic() - killed_at >= 1.0
    wait_running(hub, [victim])
    second = hub.row(victim)
    assert second["restarts"] >= first["restarts"] + 1, second
    assert workers_of(hub.config)[victim] == [second["pid"]]

    # a second crash soon after the restart is another quick failure: 2 s this time
    quick = second["uptime_s"] is not None and second["uptime_s"] < 8
    killed_at = time.monotonic()
    os.kill(second["pid"], signal.SIGKILL)
    hub.until(lambda: hub.row(victim)["pid"] not in (None, second["pid"]), "another sol pid")
    assert time.monotonic() - killed_at >= (2.0 if quick else 1.0)
    wait_running(hub, [victim])
    third = hub.row(victim)
    assert third["restarts"] >= second["restarts"] + 1, third
    assert workers_of(hub.config)[victim] == [third["pid"]]


@shared
def test_cli_status_logs_and_unknown_ids(fleet: Fleet) -> None:
    hub = fleet.hub
    before = pids_of(hub)
    wait_running(hub)

    status = hub.cli("status")
    assert status.returncode == 0, status.stderr
    for instance in IDS:
        line = next(x for x in status.stdout.splitlines() if x.startswith(f"{instance} "))
        assert "RUNNING" in line, status.stdout

    logs = hub.cli("logs", "btc", "-n", "5")
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert 1 <= len(lines) <= 5, logs.stdout
    for line in lines:
        record = json.loads(line)
        assert record["instance"] == "btc" and isinstance(record["event"], str), record

    for args in (("stop", "nope"), ("logs", "nope")):
        refused = hub.cli(*args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert "nope" in refused.stderr, refused.stderr
    assert pids_of(hub) == before  # nothing was stopped or restarted by the refused commands
    assert fleet_running(hub)


@shared
def test_the_api_secret_appears_nowhere(fleet: Fleet) -> None:
    hub = fleet.hub
    secret = SIM_CREDENTIALS[1].encode()
    wait_running(hub)
    # let the fleet trade a little: order lines in the logs, the journal and the pages
    hub.until(lambda: any((r["orders"] or 0) > 0 for r in hub.rows().values()), "an order", 90)

    seen: dict[str, bytes] = {}
    paths = ["/arb", "/arb/rows", "/api/instances", "/api/account", "/metrics", "/readyz"]
    paths += [f"/arb/{i}" for i in IDS] + [f"/api/instances/{i}" for i in IDS]
    for path in paths:
        reply = hub.http.get(path)
        assert reply.status_code == 200, path
        seen[path] = reply.content
    status = hub.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    seen["hub status --json"] = (status.stdout + status.stderr).encode()
    state_dir = hub.folder / "state"
    files = [p for p in (*hub.run_dir.rglob("*"), *state_dir.rglob("*")) if p.is_file()]
    files.append(hub.out)
    assert any(p.name == "btc.log" for p in files) and any(p.suffix == ".sqlite" for p in files)
    for path in files:
        seen[str(path)] = path.read_bytes()
    logs = [seen[str(hub.run_dir / f"{i}.log")] for i in IDS]
    assert any(b'"event":"send"' in log for log in logs)  # the reads saw the orders go out
    leaks = [where for where, content in seen.items() if secret in content]
    assert not leaks, f"the API secret appears in {leaks}"


# ------------------------------------------------------------ hubs of their own: exits


def test_exit_code_2_is_fatal_and_never_restarted(make_hub: Callable[..., RunningHub]) -> None:
    hub = make_hub([OFF_GRID_BTC])
    row = hub.wait_state("btc", "FATAL", 60)
    check_view(row, reporting=False)
    assert row["exit_code"] == 2 and row["pid"] is None and row["restarts"] == 0, row
    assert isinstance(row["error"], str) and "2" in row["error"], row
    failures = [e for e in log_events(hub, "btc") if e["event"] == "venue_check_failed"]
    assert len(failures) == 1 and failures[0]["exit_code"] == 2, failures
    assert "qty step" in failures[0]["detail"], failures
    last = log_events(hub, "btc")[-1]
    assert last["event"] == "exit" and last["code"] == 2, last  # the worker's own word
    # long past the first backoff (1 s): still FATAL, never respawned
    time.sleep(3)
    row = hub.row("btc")
    assert row["process_state"] == "FATAL" and row["restarts"] == 0 and row["pid"] is None, row
    assert "btc" not in workers_of(hub.config)
    failures = [e for e in log_events(hub, "btc") if e["event"] == "venue_check_failed"]
    assert len(failures) == 1, failures
    assert 'data-id="btc" data-process-state="FATAL"' in hub.http.get("/arb").text
    # the operator starts it again: one more attempt, FATAL again, still no retries
    assert hub.post("/arb/btc/start").status_code == 200
    hub.until(
        lambda: len([e for e in log_events(hub, "btc") if e["event"] == "venue_check_failed"]) == 2,
        "a second start attempt",
    )
    row = hub.wait_state("btc", "FATAL")
    assert row["exit_code"] == 2 and row["restarts"] == 0, row


def test_a_clean_exit_nobody_asked_for_is_exited(make_hub: Callable[..., RunningHub]) -> None:
    hub = make_hub([ROWS[0]])
    pid = wait_running(hub)["btc"]["pid"]
    os.kill(pid, signal.SIGTERM)  # the worker's own clean stop: exit code 0
    hub.until(lambda: hub.row("btc")["pid"] != pid, "the exit to be seen")
    row = hub.row("btc")
    assert row["process_state"] == "EXITED" and row["exit_code"] == 0, row
    time.sleep(2.5)  # past the first backoff: an EXITED row is not restarted
    row = hub.row("btc")
    assert row["process_state"] == "EXITED" and row["restarts"] == 0 and row["pid"] is None, row
    assert "btc" not in workers_of(hub.config)


# ------------------------------------------------------- hubs of their own: hub death


def test_a_killed_hub_leaves_the_fleet_running_and_hub_start_adopts_it(
    make_hub: Callable[..., RunningHub],
) -> None:
    hub = make_hub(ROWS)
    rows = wait_running(hub)
    workers = {i: row["pid"] for i, row in rows.items()}
    sim = hub.pid_record("sim")
    old_hub = hub.pid_record("hub")
    assert sim is not None and old_hub is not None
    orders_before = len(hub.sim_admin("/sim/orders")["orders"])

    hub.kill_hub()
    assert not alive(old_hub["pid"])
    for pid in [*workers.values(), sim["pid"]]:
        assert alive(pid), pid
    assert workers_of(hub.config) == {i: [pid] for i, pid in workers.items()}
    status = hub.cli("status")
    assert status.returncode == 3 and "not running" in status.stderr, status
    # the workers trade on against the simulator with nobody listening
    hub.until(
        lambda: len(hub.sim_admin("/sim/orders")["orders"]) > orders_before,
        "an order placed while no hub runs",
        90,
    )
    for pid in [*workers.values(), sim["pid"]]:
        assert alive(pid), pid

    started = hub.cli("start")
    assert started.returncode == 0, (started.stdout, started.stderr)
    assert hub.url in started.stdout
    for instance in workers:
        assert f"{instance}: already " in started.stdout, started.stdout
    rows = wait_running(hub)
    for instance in workers:  # no second worker was ever tried (it would log "locked")
        events = [e["event"] for e in log_events(hub, instance)]
        assert events.count("started") == 1 and "locked" not in events, events
    assert {i: row["pid"] for i, row in rows.items()} == workers
    assert workers_of(hub.config) == {i: [pid] for i, pid in workers.items()}
    new_hub = hub.pid_record("hub")
    assert new_hub is not None and new_hub["pid"] != old_hub["pid"] and alive(new_hub["pid"])
    assert hub.pid_record("sim") == sim and alive(sim["pid"])
    sims = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(hub.run_dir / "sim-state") in (p.info["cmdline"] or [])
    ]
    assert len(sims) == 1 and sims[0].pid == sim["pid"]
    for row in rows.values():
        assert row["restarts"] == 0, row


def test_an_adopted_workers_clean_exit_is_not_restarted(
    make_hub: Callable[..., RunningHub],
) -> None:
    hub = make_hub([ROWS[0]])
    pid = wait_running(hub)["btc"]["pid"]
    hub.kill_hub()
    assert hub.cli("start").returncode == 0
    assert wait_running(hub)["btc"]["pid"] == pid  # adopted, not restarted

    # the worker's clean stop, exit code 0, as in the test above; the hub is not its parent
    # and reads the code from the worker's last log line
    os.kill(pid, signal.SIGTERM)
    hub.until(lambda: not alive(pid), "the adopted worker to exit", 30)
    last = log_events(hub, "btc")[-1]
    assert last["event"] == "exit" and last["code"] == 0, last
    hub.until(lambda: hub.row("btc")["pid"] != pid, "the exit to be seen")
    row = hub.row("btc")
    assert row["process_state"] == "EXITED" and row["exit_code"] == 0, row
    time.sleep(2.5)
    row = hub.row("btc")
    assert row["process_state"] == "EXITED" and row["restarts"] == 0, row
    assert "btc" not in workers_of(hub.config)


def test_an_adopted_worker_killed_soon_after_a_restart_is_restarted(
    make_hub: Callable[..., RunningHub],
) -> None:
    # a row that never enters, so its log stays short: the previous run's exit line is in view
    quiet = {**ROWS[0], "entry_threshold_bps": 1000, "emergency_unwind_bps": 0}
    hub = make_hub([quiet])
    wait_running(hub)
    assert hub.post("/arb/btc/stop").status_code == 200
    hub.wait_state("btc", "STOPPED")
    last = log_events(hub, "btc")[-1]
    assert last["event"] == "exit" and last["code"] == 0, last  # the line that misleads the hub
    assert hub.post("/arb/btc/start").status_code == 200
    pid = wait_running(hub)["btc"]["pid"]
    hub.kill_hub()
    assert hub.cli("start").returncode == 0
    assert wait_running(hub)["btc"]["pid"] == pid  # adopted

    os.kill(pid, signal.SIGKILL)  # no exit line of its own
    hub.until(lambda: hub.row("btc")["pid"] != pid, "the death to be seen")
    row = hub.row("btc")
    assert row["process_state"] != "EXITED" and row["exit_code"] != 0, row
    row = wait_running(hub)["btc"]
    assert row["restarts"] >= 1 and row["pid"] != pid, row


# ------------------------------------------------------------------ hubs of their own: CLI


def test_cli_without_a_hub_says_not_running(tmp_path: Path) -> None:
    config = write_config(tmp_path / "idle", [ROWS[0]])
    for args in (("status",), ("stop",)):
        result = subprocess.run(
            [str(BIN / "hub"), "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert "not running" in result.stderr, result.stderr
    assert not (tmp_path / "idle" / "run" / "hub.pid").exists()


def test_hub_stop_stops_every_row_then_the_simulator_and_the_hub(
    make_hub: Callable[..., RunningHub],
) -> None:
    hub = make_hub(ROWS[:2])
    rows = wait_running(hub)
    sim, hub_record = hub.pid_record("sim"), hub.pid_record("hub")
    assert sim is not None and hub_record is not None
    assert hub.proc is not None and hub_record["pid"] == hub.proc.pid
    workers = [row["pid"] for row in rows.values()]

    stopped = hub.cli("stop")
    assert stopped.returncode == 0, (stopped.stdout, stopped.stderr)
    for instance in rows:
        assert f"{instance}: STOPPED" in stopped.stdout, stopped.stdout
    assert "the simulator and the hub are stopped" in stopped.stdout
    for pid in [*workers, sim["pid"]]:
        assert not alive(pid), pid
    assert not alive(hub_record["pid"])  # hub stop returns once the hub process is gone
    assert hub.proc.wait(10) == 0
    for name in [*rows, "sim", "hub"]:
        assert hub.pid_record(name) is None, name
    assert workers_of(hub.config) == {}
    for instance in rows:  # each stopped cleanly on the IPC Stop, none was killed
        events = log_events(hub, instance)
        exited = [e for e in events if e["event"] == "exited"]
        assert exited and exited[-1]["crashed"] is False and exited[-1]["forced"] is False
        assert events[-1]["event"] == "exit" and events[-1]["code"] == 0, events[-1]
    status = hub.cli("status")
    assert status.returncode == 3 and "not running" in status.stderr


def test_hub_stop_leaves_no_hub_process_even_with_a_request_in_flight(
    make_hub: Callable[..., RunningHub],
) -> None:
    hub = make_hub([ROWS[0]])
    wait_running(hub)
    hub_record = hub.pid_record("hub")
    assert hub_record is not None
    # a client that sent a form post's headers and only part of its body
    stalled = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    try:
        stalled.sendall(
            b"POST /arb/btc/stop HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"csrf_token="
        )
        hub.until(lambda: hub.http.get("/livez").status_code == 200, "the hub to answer")
        stopped = hub.cli("stop")
        assert stopped.returncode == 0, (stopped.stdout, stopped.stderr)
        assert "the hub are stopped" in stopped.stdout
        assert not alive(hub_record["pid"]), "hub stop returned while the hub process still ran"
    finally:
        stalled.close()


# ---------------------------------------------------------------- hubs of their own: security


def test_a_non_loopback_bind_without_a_token_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    config = write_config(folder, [ROWS[0]], hub={"host": "0.0.0.0"})
    try:
        for command in ("serve", "start"):
            result = subprocess.run(
                [str(BIN / "hub"), "--config", str(config), command],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            assert "0.0.0.0" in result.stderr and "token_file" in result.stderr, result.stderr
        assert not (folder / "run" / "hub.pid").exists()
        assert not (folder / "run" / "sim.pid").exists()
        assert workers_of(config) == {}
    finally:
        _kill_everything_under(folder)


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenHub]:
    """One row behind a bearer token, bound to every interface."""
    folder = tmp_path_factory.mktemp("token")
    write_token_file(folder, "s3cret-bearer-token")
    config = write_config(folder, [ROWS[0]], hub={"host": "0.0.0.0", "token_file": "token"})
    hub: TokenHub | None = None
    try:
        hub = TokenHub(config)
        wait_running(hub)
        yield hub
    finally:
        if hub is not None:
            hub.close()
        _kill_everything_under(folder)


token = pytest.mark.xdist_group("hub_token")


@token
def test_with_a_token_every_request_without_it_gets_401(token_hub: TokenHub) -> None:
    hub = token_hub
    assert "WARNING" in hub.out.read_text() and "0.0.0.0" in hub.out.read_text()
    pid = hub.row("btc")["pid"]
    csrf = hub.csrf()
    gets = ["/arb", "/arb/rows", "/arb/btc", "/api/instances", "/api/instances/btc"]
    gets += ["/api/instances/nope", "/metrics", "/readyz", "/docs", "/openapi.json", "/nope"]
    posts = ["/arb/btc/stop", "/arb/btc/start", "/arb/btc/flatten", "/arb/stop-all"]
    wrong = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {hub.token}"},
        {"Authorization": f"Bearer {hub.token}x"},
    ]
    with httpx.Client(base_url=hub.url, timeout=10) as client:
        for headers in wrong:
            for path in gets:
                assert client.get(path, headers=headers).status_code == 401, (path, headers)
            for path in posts:
                reply = client.post(path, headers={**headers, "X-CSRF-Token": csrf})
                assert reply.status_code == 401, (path, headers)
        assert client.get("/livez").status_code == 200
        assert client.get("/arb", params={"token": "wrong"}).status_code == 401

        # /arb?token=… (a browser's way in) sets the token cookie and redirects
        entry = client.get("/arb", params={"token": hub.token})
        assert entry.status_code == 303 and entry.headers["location"] == "/arb"
        cookie = entry.headers["set-cookie"].lower()
        assert "arbhub_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/arb").status_code == 200  # the cookie jar now carries it

    authorized = {"Authorization": f"Bearer {hub.token}"}
    assert httpx.get(f"{hub.url}/api/instances", headers=authorized).status_code == 200
    assert httpx.get(f"{hub.url}/metrics", headers=authorized).status_code == 200
    # the token does not replace the CSRF token
    no_csrf = httpx.post(f"{hub.url}/arb/btc/stop", headers=authorized)
    assert no_csrf.status_code == 403
    row = hub.row("btc")
    assert row["process_state"] == "RUNNING" and row["pid"] == pid, row


@token
def test_a_non_ascii_bearer_token_gets_401(token_hub: TokenHub) -> None:
    with httpx.Client(base_url=token_hub.url, timeout=10) as client:
        reply = client.get("/api/instances", headers={b"Authorization": b"Bearer \xe9"})
    assert reply.status_code == 401


@token
def test_the_token_without_the_bearer_scheme_gets_401(token_hub: TokenHub) -> None:
    reply = httpx.get(f"{token_hub.url}/api/instances", headers={"Authorization": token_hub.token})
    assert reply.status_code == 401


def test_hub_reconcile_checks_stopped_rows_and_leaves_trading_rows_alone(
    make_hub: Callable[..., RunningHub],
) -> None:
    """``hub reconcile`` runs the worker's own tool for a stopped row (under its lock) and
    exits 1 while the snapshot and the exchange differ; a trading row is left alone."""
    quiet = {**ROWS[0], "entry_threshold_bps": 1000, "emergency_unwind_bps": 0}  # never enters
    hub = make_hub([quiet])
    wait_running(hub)
    trading = hub.cli("reconcile", "btc")
    assert trading.returncode == 0, trading.stderr
    assert "nothing to reconcile while it trades" in trading.stdout

    assert hub.post("/arb/btc/stop").status_code == 200
    hub.wait_state("btc", "STOPPED")
    clean = hub.cli("reconcile", "btc")
    assert clean.returncode == 0, (clean.stdout, clean.stderr)
    assert "clean" in clean.stdout

    hub.sim_admin("/sim/adjust", {"symbol": "BTCUSDT", "side": "Buy", "size": "0.003"})
    differs = hub.cli("reconcile", "btc")
    assert differs.returncode == 1, (differs.stdout, differs.stderr)
    assert "perp_position" in differs.stdout and "0.003" in differs.stdout
    for action in ("--resume", "--clear"):
        refused = hub.cli("reconcile", "btc", action)
        assert refused.returncode == 1, (action, refused.stdout)
        assert "refused" in refused.stdout, (action, refused.stdout)

    hub.sim_admin("/sim/adjust", {"symbol": "BTCUSDT", "side": "Buy", "size": "0"})
    again = hub.cli("reconcile")  # every row: the one stopped row, clean again
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert hub.cli("reconcile", "nope").returncode == 2


def test_a_hub_that_cannot_listen_starts_nothing(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path, [ROWS[0]], hub={"port": port})
        done = subprocess.run(
            [str(BIN / "hub"), "--config", str(config), "serve", "--all"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # `hub start` says why its detached hub gave up, instead of waiting out its timeout
        started = subprocess.run(
            [str(BIN / "hub"), "--config", str(config), "start"],
            capture_output=True,
            text=True,
            timeout=30,  # HUB_START_TIMEOUT_S is 60
            check=False,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"cannot listen on http://127.0.0.1:{port}/arb" in done.stderr
    assert started.returncode == 1, (started.stdout, started.stderr)
    assert "cannot listen" in started.stderr and "exited with code 1" in started.stderr
    assert not (tmp_path / "run" / "sim.pid").exists()
    assert workers_of(config) == {}


def test_a_fleet_starts_a_few_workers_at_a_time(tmp_path: Path) -> None:
    """Rows wait in STARTING (no pid) for a start slot: never more than ``starts_at_once``
    workers between spawn and Hello, however many rows start (real worker processes; without
    a simulator each ends with exit code 2, which frees its slot)."""
    config = write_config(tmp_path, ROWS)
    hub = Hub(load_config(config), config_path=config, starts_at_once=1)
    hub.run.create()
    hub.start(hub.fleet.ids)
    spawned: set[int] = set()
    deadline = time.monotonic() + 120
    while not all(row.state.value == "FATAL" for row in hub.rows.values()):
        assert time.monotonic() < deadline, hub.views()
        live = [row for row in hub.rows.values() if row.alive]
        assert len(live) <= 1, [row.id for row in live]
        spawned.update(row.proc.pid for row in live if row.proc is not None)
        queued = [row.id for row in hub.rows.values() if row.queued]
        assert all(view["pid"] is None for view in hub.views() if view["id"] in queued)
        hub._observe(time.monotonic())
        time.sleep(0.02)
    assert len(spawned) == len(ROWS)  # each row got its turn
    assert all(row.exit_code == 2 for row in hub.rows.values())


def _raw_unix(path: Path, data: bytes) -> bytes:
    """Send bytes to a Unix socket and read until the peer closes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_garbage_on_the_hubs_sockets_is_refused_and_changes_nothing(fleet: Fleet) -> None:
    """Bad input on the control socket gets an error answer; a peer on the IPC socket that
    is not a worker (garbage, a huge frame, a Hello for no row) is dropped. The hub and its
    rows carry on."""
    hub = fleet.hub
    before = pids_of(hub)
    control, ipc_socket = hub.run_dir / "control.sock", hub.run_dir / "ipc.sock"
    for request in (b"not json\n", b"[1, 2]\n", b'{"op": "start", "ids": "btc"}\n'):
        answer = json.loads(_raw_unix(control, request))
        assert answer["ok"] is False and answer["error"], (request, answer)
    assert json.loads(_raw_unix(control, b'{"op": "explode"}\n'))["ok"] is False
    unknown = json.loads(_raw_unix(control, b'{"op": "stop", "ids": ["nope"]}\n'))
    assert unknown == {"ok": False, "error": "no such instance: nope"}
    hello = ipc.encode(ipc.Hello(instance="nope", pid=os.getpid(), mode="SIM", version="x"))
    for frame in (b"\x00\x00\x00\x05garbage", b"\xff\xff\xff\xff", hello):
        assert _raw_unix(ipc_socket, frame) == b""  # dropped without a word
    assert pids_of(hub) == before
    assert all(row["process_state"] == "RUNNING" for row in hub.rows().values())
    assert hub.http.get("/readyz").status_code == 200


def test_a_killed_simulator_comes_back_on_its_port_and_the_rows_recover(
    make_hub: Callable[..., RunningHub],
) -> None:
    """The simulator dies under the fleet: the hub restarts it on the same port (the
    workers' endpoints stay right, its state file keeps the accounts) and the rows report
    fresh books again without being restarted."""
    hub = make_hub([ROWS[0]])
    before = wait_running(hub)["btc"]
    record = hub.pid_record("sim")
    assert record is not None

    def reconnected() -> int:
        return sum(1 for e in log_events(hub, "btc") if e["event"] == "stream_up")

    streams = reconnected()
    os.kill(int(record["pid"]), signal.SIGKILL)
    hub.until(
        lambda: (r := hub.pid_record("sim")) is not None and r["pid"] != record["pid"],
        "a new simulator",
    )
    again = hub.pid_record("sim")
    assert again is not None and again["url"] == record["url"]
    hub.until(
        lambda: reconnected() >= streams + 3 and fleet_running(hub),  # spot, perp, private
        "the worker's streams back on the new simulator, with fresh books",
    )
    after = hub.row("btc")
    assert after["pid"] == before["pid"] and after["restarts"] == 0, after
    assert after["state"] != "halted", after

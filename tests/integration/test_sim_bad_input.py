"""exchange-sim under bad input and at the edges of its life: a clear error or a safe state."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import (
    RawWS,
    Sim,
    _sim_command,
    resting_spot_buy,
    running_sim,
    signed_request,
)

TIMEOUT_S = 20


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_sim_command(), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_an_invalid_config_exits_2_and_says_where(tmp_path: Path) -> None:
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"model": {"step_ms": 0}, "surprise": 1}))
    done = _run("--config", str(config))
    assert done.returncode == 2
    assert done.stdout == ""  # never a "listening on" line
    assert str(config) in done.stderr
    assert "surprise" in done.stderr


def test_a_semantically_bad_config_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"model": {"step_ms": 0, "depth_levels": 0}}))
    done = _run("--config", str(config))
    assert done.returncode == 2
    assert "model.step_ms" in done.stderr
    assert "model.depth_levels" in done.stderr


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    done = _run("--config", str(tmp_path / "nope.json"))
    assert done.returncode == 2
    assert "cannot read simulator config" in done.stderr


def test_a_corrupt_state_file_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text('["n",{"orders":0,"execs":0,"seq":0,"trades":0,"messages":0}]\nnot json\n')
    done = _run("--state", str(state))
    assert done.returncode == 2
    assert "unreadable record" in done.stderr
    assert state.read_text().startswith('["n"')  # left as it was, for the operator


def test_a_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*_sim_command(), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    assert done.returncode == 2
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr


def test_sigterm_stops_cleanly_and_keeps_the_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_sim(state) as sim:
        reply = signed_request(
            sim,
            "POST",
            "/v5/order/create",
            resting_spot_buy("term-1"),
        ).json()
        assert reply["retCode"] == 0, reply
        sim.proc.send_signal(signal.SIGTERM)
        assert sim.proc.wait(timeout=TIMEOUT_S) == 0
    with running_sim(state) as again:
        order = again.order("term-1")
        assert order is not None
        assert order["orderStatus"] == "New"


def _admin(sim: Sim, method: str, path: str, body: Any = None) -> httpx.Response:
    content = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
    return sim.http.request(method, f"{sim.url}{path}", content=content)


def test_admin_api_rejects_bad_bodies_without_changing_anything(sim: Sim) -> None:
    before = sim.accounts()
    cases: list[tuple[str, Any]] = [
        ("/sim/book", b"{not json"),
        ("/sim/book", [1, 2]),
        ("/sim/book", {"category": "spot"}),
        ("/sim/book", {"category": "spot", "symbol": "NOPEUSDT", "bids": [], "asks": []}),
        ("/sim/book", {"category": "spot", "symbol": "BTCUSDT", "bids": [["1.05", "1"]]}),
        ("/sim/book", {"category": "spot", "symbol": "BTCUSDT", "bids": [[1.5, "1"]]}),
        ("/sim/trade", {"category": "spot", "symbol": "BTCUSDT", "side": "Up", "price": "1"}),
        ("/sim/adjust", {"apiKey": "nobody", "coin": "USDT", "delta": "5"}),
        ("/sim/adjust", {"coin": "USDT", "delta": "five"}),
        ("/sim/faults", {"kind": "earthquake"}),
    ]
    for path, body in cases:
        reply = _admin(sim, "POST", path, body)
        assert reply.status_code == 400, (path, body, reply.text)
        assert "error" in reply.json()
    assert sim.accounts() == before
    assert _admin(sim, "GET", "/sim/nothing").status_code == 404


def test_rest_rejects_unknown_routes_and_bad_bodies(sim: Sim) -> None:
    missing = sim.http.get(f"{sim.url}/v5/order/teleport")
    assert missing.status_code == 404
    assert missing.json()["retCode"] == 10017
    wrong_method = signed_request(sim, "GET", "/v5/order/create", {"category": "spot"})
    assert wrong_method.json()["retCode"] == 10017
    for params in (
        {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit"},
        {"category": "spot", "symbol": "BTCUSDT", "side": "Up", "orderType": "Limit"},
        {"category": "inverse", "symbol": "BTCUSD", "side": "Buy", "orderType": "Market"},
        {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
         "qty": "abc", "price": "30000"},
        {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
         "qty": "0.001", "price": "30000", "orderLinkId": "has spaces"},
    ):  # fmt: skip
        reply = signed_request(sim, "POST", "/v5/order/create", params).json()
        assert reply["retCode"] == 10001, (params, reply)
    bad_limit = signed_request(
        sim, "GET", "/v5/execution/list", {"category": "spot", "limit": "5000"}
    ).json()
    assert bad_limit["retCode"] == 10001


def test_websocket_refuses_unknown_topics_and_unauthenticated_private_topics(sim: Sim) -> None:
    public = RawWS(sim.ws_url("/v5/public/linear"))
    try:
        ack = public.subscribe("orderbook.7.BTCUSDT", req_id="bad")
        assert ack["success"] is False
        assert ack["ret_msg"] == "error:handler not found,topic:orderbook.7.BTCUSDT"
        public.send({"op": "dance"})
        reply = public.recv_until(lambda m: m.get("op") == "dance")
        assert reply["success"] is False
    finally:
        public.close()
    private = RawWS(sim.ws_url("/v5/private"))
    try:
        refused = private.subscribe("order")
        assert refused["success"] is False
        assert private.auth(api_secret="wrong")["success"] is False
        assert private.subscribe("order")["success"] is False
        assert private.auth()["success"] is True
        assert private.subscribe("order")["success"] is True
    finally:
        private.close()

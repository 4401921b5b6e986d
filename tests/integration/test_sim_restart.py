"""The state file: a ``kill -9`` loses no acknowledged order, fill, balance or position, and
two simulators cannot share one state file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.integration.conftest import (
    WAIT_S,
    Json,
    Links,
    Sim,
    pybit_http,
    running_sim,
    sim_argv,
    start_sim,
)


def _books(sim: Sim) -> None:
    # Far below the default model's BTC mid (65000) so the restarted layout crosses nothing.
    for category in ("spot", "linear"):
        sim.book(category, "BTCUSDT", [("50000.0", "1")], [("50010.0", "1")])


def _limit(http: Any, category: str, side: str, qty: str, price: str, link: str) -> None:
    reply = http.place_order(
        category=category, symbol="BTCUSDT", side=side, orderType="Limit", qty=qty,
        price=price, timeInForce="PostOnly", orderLinkId=link,
    )  # fmt: skip
    assert reply["retCode"] == 0, reply


def _market(http: Any, category: str, qty: str, link: str) -> None:
    extra = {"marketUnit": "baseCoin"} if category == "spot" else {}
    reply = http.place_order(
        category=category, symbol="BTCUSDT", side="Buy", orderType="Market", qty=qty,
        orderLinkId=link, **extra,
    )  # fmt: skip
    assert reply["retCode"] == 0, reply


def _client_view(http: Any) -> dict[str, Any]:
    """What a client reads back through pybit."""
    view: dict[str, Any] = {}
    for category in ("spot", "linear"):
        view[f"history.{category}"] = http.get_order_history(category=category, limit=50)["result"][
            "list"
        ]
        view[f"executions.{category}"] = http.get_executions(category=category, limit=100)[
            "result"
        ]["list"]
    position = http.get_positions(category="linear", symbol="BTCUSDT")["result"]["list"][0]
    view["position"] = {
        k: position[k]
        for k in ("side", "size", "avgPrice", "leverage", "curRealisedPnl", "cumRealisedPnl")
    }
    return view


def _by_link(orders: list[Json], link: str) -> Json:
    [order] = [o for o in orders if o["orderLinkId"] == link]
    return order


def test_kill_9_and_restart_keep_orders_fills_balances_and_positions(
    tmp_path: Path, links: Links
) -> None:
    state = tmp_path / "state.jsonl"
    first = start_sim(state)
    try:
        http = pybit_http(first)
        _books(first)
        # spot: resting, partially filled, market-filled and cancelled orders
        _limit(http, "spot", "Buy", "0.001", "49000.0", links("s-rest"))
        _limit(http, "spot", "Buy", "0.002", "50005.0", links("s-part"))
        assert first.trade("spot", "BTCUSDT", "Sell", "50005.0", "0.001")["filled"] != "0"
        _market(http, "spot", "0.001", links("s-mkt"))
        _limit(http, "spot", "Buy", "0.001", "48000.0", links("s-cxl"))
        http.cancel_order(category="spot", symbol="BTCUSDT", orderLinkId=links("s-cxl"))
        # linear: a leverage change, a market fill, a maker fill and a resting order
        http.set_leverage(category="linear", symbol="BTCUSDT", buyLeverage="4", sellLeverage="4")
        _market(http, "linear", "0.010", links("l-mkt"))
        _limit(http, "linear", "Buy", "0.005", "50005.0", links("l-fill"))
        assert first.trade("linear", "BTCUSDT", "Sell", "50005.0", "0.005")["filled"] != "0"
        _limit(http, "linear", "Sell", "0.002", "70000.0", links("l-rest"))

        orders = first.orders()
        accounts = first.accounts()
        view = _client_view(http)
    finally:
        first.kill()
    assert first.proc.returncode == -9

    statuses = {
        "s-rest": "New",
        "s-part": "PartiallyFilled",
        "s-mkt": "Filled",
        "s-cxl": "Cancelled",
        "l-mkt": "Filled",
        "l-fill": "Filled",
        "l-rest": "New",
    }
    assert {k: _by_link(orders, links(k))["orderStatus"] for k in statuses} == statuses
    assert view["position"]["size"] == "0.015"

    with running_sim(state) as second:
        assert second.orders() == orders
        assert second.accounts() == accounts
        http = pybit_http(second)
        after = _client_view(http)
        assert after == view
        # the restored resting orders are live: the partial one can still fill
        second.book("spot", "BTCUSDT", [("50000.0", "1")], [("50010.0", "1")])
        assert second.trade("spot", "BTCUSDT", "Sell", "50005.0", "0.001")["filled"] != "0"
        assert _by_link(second.orders(), links("s-part"))["orderStatus"] == "Filled"
        assert (
            http.cancel_order(category="linear", symbol="BTCUSDT", orderLinkId=links("l-rest"))[
                "retCode"
            ]
            == 0
        )


def test_a_second_simulator_on_the_same_state_exits_3(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    with running_sim(state) as first:
        second = subprocess.run(
            sim_argv(state), check=False, capture_output=True, text=True, timeout=WAIT_S * 2
        )
        assert second.returncode == 3, second
        assert "in use" in second.stderr
        assert first.proc.poll() is None
        assert pybit_http(first).get_server_time()["retCode"] == 0


def _crossed_by_the_restart_layout(state: Path, link: str) -> tuple[Json, Json]:
    """A spot sell resting at 60000 while the book is set lower; the restarted model lays
    BTC out around 65000 again, straight through it."""
    with running_sim(state) as first:
        first.book("spot", "BTCUSDT", [("59000.0", "1")], [("61000.0", "1")])
        _limit(pybit_http(first), "spot", "Sell", "0.01", "60000.0", link)
        before = (first.order(link), first.account())
        first.kill()
    assert before[0] is not None and before[0]["orderStatus"] == "New"
    return before[0], before[1]


def test_restart_does_not_fill_a_resting_order(tmp_path: Path, links: Links) -> None:
    state = tmp_path / "state.jsonl"
    order, account = _crossed_by_the_restart_layout(state, links("sell"))
    with running_sim(state) as second:
        assert second.order(links("sell")) == order
        assert second.account() == account


def test_restart_fills_are_durable_and_never_repeated(tmp_path: Path, links: Links) -> None:
    """Whatever the first books do to restored orders is journaled: a later restart replays
    it and never applies it twice (found unjournaled, fixed in d578721)."""
    state = tmp_path / "state.jsonl"
    _crossed_by_the_restart_layout(state, links("sell"))
    with running_sim(state) as second:
        served = second.account()
        second.adjust(coin="USDT", delta="0")  # any operation that journals the coins
        second.adjust(coin="BTC", delta="0")
        second.kill()
    with running_sim(state) as third:
        assert third.account() == served
        assert all(float(c["locked"]) >= 0 for c in third.account()["balances"].values())

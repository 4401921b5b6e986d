"""The worker's pre-trading checks against the simulator with the shipped configuration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.conftest import REPO
from tests.integration.conftest import API_KEY, API_SECRET, Sim, running_sim
from worker.config_loader import ApiCredentials, load_config
from worker.core.config import InstanceConfig
from worker.venues.bybit import setup
from worker.venues.bybit.rest import BybitRest, Outcome, Unknown
from worker.venues.bybit.setup import SetupError, VenueSetup, prepare

CONFIG = REPO / "algo" / "spot-future-arb" / "config.json"
SIM_JSON = REPO / "algo" / "spot-future-arb" / "sim.json"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """The demo's simulator: top-VIP fees, so the shipped thresholds clear the fees."""
    with running_sim(tmp_path_factory.mktemp("demo") / "state", config=SIM_JSON) as sim:
        yield sim


def _prepare(url: str, instance: InstanceConfig) -> VenueSetup:
    async def go() -> VenueSetup:
        creds = ApiCredentials(API_KEY, API_SECRET)
        async with BybitRest(url, creds) as rest:
            return await prepare(rest, instance, path="instances[0]", clock_ms=_now_ms)

    return asyncio.run(go())


def test_every_shipped_instance_is_ready_to_trade_on_the_demo_simulator(demo: Sim) -> None:
    fleet = load_config(CONFIG)
    for instance_id in fleet.ids:
        instance = fleet.instance(instance_id)
        ready = _prepare(demo.url, instance)
        assert ready.warnings == []  # top-VIP fees: the thresholds clear the round trip
        assert ready.spot.symbol == ready.perp.symbol == instance.spot_symbol
        assert ready.perp_fees.maker == 0
        assert abs(ready.skew_ms) < 1000
    positions = demo.admin("GET", "/sim/account")
    assert positions["accounts"]  # reachable; leverage was set without error
    again = _prepare(demo.url, fleet.instance("btc"))  # leverage unchanged → 110043 is fine
    assert again.spot.symbol == "BTCUSDT"


def test_base_tier_fees_below_the_threshold_are_a_warning(sim: Sim) -> None:
    ready = _prepare(sim.url, load_config(CONFIG).instance("btc"))
    [warning] = ready.warnings
    assert warning.startswith("instances[0].entry_threshold_bps: 20 is below the round-trip")


def test_an_unknown_symbol_is_a_configuration_error(demo: Sim) -> None:
    instance = msgspec.structs.replace(
        load_config(CONFIG).instance("btc"), future_symbol="DOGEUSDT"
    )
    with pytest.raises(SetupError) as caught:
        _prepare(demo.url, instance)
    assert caught.value.exit_code == 2


def test_an_unreachable_venue_is_a_retryable_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_sim(tmp_path / "state") as gone:
        url = gone.url  # nothing listens there once it has stopped
    monkeypatch.setattr(setup, "UNANSWERED_TRIES", 1)  # one retry after 0.5 s, not 7.5 s
    with pytest.raises(SetupError) as caught:
        _prepare(url, load_config(CONFIG).instance("btc"))
    assert caught.value.exit_code == 1
    assert "server time" in str(caught.value)


def test_unanswered_setup_requests_are_asked_again(demo: Sim) -> None:
    """On a host busy starting a fleet, a venue query may time out or meet a 5xx: the worker
    asks again (every setup request is a query or an idempotent setting) instead of exiting
    and being restarted, which costs the busy host a whole new start-up."""
    instance = load_config(CONFIG).instance("btc")
    demo.fault("http_503", count=3)
    try:
        assert _prepare(demo.url, instance).spot.symbol == "BTCUSDT"
    finally:
        demo.fault("clear")


def test_rate_limit_refusals_at_start_are_waited_out_never_a_configuration_error(
    demo: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet starting at once on one account meets 10006 on its setup queries: the worker
    waits until the venue's reset and asks again; if it persists it is a retryable failure
    (exit 1, the hub restarts it), never exit 2 (which would make the row FATAL)."""
    instance = load_config(CONFIG).instance("btc")
    demo.fault("rate_limit", count=3)
    assert _prepare(demo.url, instance).spot.symbol == "BTCUSDT"
    monkeypatch.setattr(setup, "RATE_LIMIT_TRIES", 1)
    demo.fault("rate_limit", count=5)
    try:
        with pytest.raises(SetupError) as caught:
            _prepare(demo.url, instance)
    finally:
        demo.fault("clear")
    assert caught.value.exit_code == 1
    assert "Too many visits" in str(caught.value)


def test_an_answer_with_an_unclassified_code_is_not_asked_again() -> None:
    """Only a request with no answer is repeated: Bybit's 110043 ("leverage not modified"),
    which every restart meets, came back as an unclassified code and was asked four more
    times over 7.5 s before it counted as done (restarts took 8.5 s instead of 0.6 s)."""
    asked: list[int] = []

    async def answered() -> Outcome:
        asked.append(1)
        return Unknown("retCode 110043: leverage not modified", setup.LEVERAGE_UNCHANGED)

    outcome = asyncio.run(setup._retried(answered))
    assert isinstance(outcome, Unknown) and outcome.code == setup.LEVERAGE_UNCHANGED
    assert len(asked) == 1

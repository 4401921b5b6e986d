"""Fixtures of the worker tests: a simulator of each test's own (workers change its account
and tests inject faults), scripted books around 50,000, and a hub stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Sim, running_sim
from tests.integration.worker_harness import HubStub, Market
from worker import ipc


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    with running_sim(tmp_path / "sim-state") as own:
        yield own


@pytest.fixture
def market(sim: Sim) -> Market:
    m = Market(sim)
    m.depth = "0.5"
    m.at("50000", "0")
    return m


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStub]:
    (tmp_path / "run").mkdir()
    stub = HubStub(tmp_path / "run" / ipc.SOCKET_NAME)
    yield stub
    stub.close()

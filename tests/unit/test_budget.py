"""The shared order-rate budget: one bucket across processes, risk-reducing requests first."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from worker.venues.budget import AccountBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _budget(tmp_path: Path, clock: Clock, **kwargs: float) -> AccountBudget:
    settings = {"rate_per_s": 10.0, "burst": 10.0, "reserve": 3.0, **kwargs}
    return AccountBudget(tmp_path, "key-1", clock=clock, **settings)


def test_risk_adding_requests_leave_the_reserve_to_hedges_and_cancels(tmp_path: Path) -> None:
    clock = Clock()
    budget = _budget(tmp_path, clock)
    assert [budget.take(reduces_risk=False) for _ in range(7)] == [0.0] * 7
    wait = budget.take(reduces_risk=False)
    assert wait == pytest.approx(0.1)  # one token must come back above the reserve
    assert [budget.take(reduces_risk=True) for _ in range(3)] == [0.0] * 3
    assert budget.take(reduces_risk=True) == pytest.approx(0.1)
    clock.now += 0.1
    assert budget.take(reduces_risk=True) == 0.0


def test_waiting_risk_adding_requests_each_get_their_own_turn(tmp_path: Path) -> None:
    """Told the same time, every waiting worker would wake for each token; each gets a turn a
    token interval after the one before, and a newcomer queues behind them."""
    clock = Clock()
    first, second = _budget(tmp_path, clock), _budget(tmp_path, clock)  # two processes
    assert [first.take(reduces_risk=False) for _ in range(7)] == [0.0] * 7
    waits = [b.take(reduces_risk=False) for b in (first, second, first)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])
    clock.now += 0.1
    assert second.take(reduces_risk=False) == pytest.approx(0.3)  # new: behind the queue
    assert first.take(reduces_risk=False, turn=True) == 0.0  # its turn: the token is its
    clock.now += 0.1
    assert second.take(reduces_risk=True) == 0.0  # a hedge takes the queued one's token
    assert second.take(reduces_risk=False, turn=True) == pytest.approx(0.3)  # to the back
    # hedges never queue: the reserve is theirs
    assert [first.take(reduces_risk=True) for _ in range(2)] == [0.0] * 2


def test_a_turn_woken_a_hair_early_still_gets_its_token(tmp_path: Path) -> None:
    clock = Clock()
    budget = _budget(tmp_path, clock)
    assert [budget.take(reduces_risk=False) for _ in range(7)] == [0.0] * 7
    assert budget.take(reduces_risk=False) == pytest.approx(0.1)
    clock.now += 0.099  # the timer fired a millisecond early
    assert budget.take(reduces_risk=False, turn=True) == 0.0
    assert budget.take(reduces_risk=False) == pytest.approx(0.1 + 0.001)  # the next turn


def test_a_queue_end_beyond_the_horizon_is_dropped(tmp_path: Path) -> None:
    """A wall clock set back an hour must not hold every entry for an hour."""
    clock = Clock()
    budget = _budget(tmp_path, clock)
    assert [budget.take(reduces_risk=False) for _ in range(7)] == [0.0] * 7
    assert budget.take(reduces_risk=False) == pytest.approx(0.1)
    clock.now -= 3600
    assert budget.take(reduces_risk=False) == pytest.approx(0.1)


def test_a_damaged_queue_end_neither_blocks_nor_frees_entries(tmp_path: Path) -> None:
    clock = Clock()
    path = _budget(tmp_path, clock).path
    path.write_bytes(struct.pack("<ddd", 4.0, clock.now, float("nan")))
    budget = _budget(tmp_path, clock)
    assert budget.take(reduces_risk=False) == 0.0  # 4 - 1 >= reserve 3
    assert budget.take(reduces_risk=False) == pytest.approx(0.1)  # no free token either


def test_a_budget_file_from_before_the_queue_keeps_its_bucket(tmp_path: Path) -> None:
    clock = Clock()
    path = _budget(tmp_path, clock).path
    path.write_bytes(struct.pack("<dd", 4.0, clock.now))  # 4 tokens, as an older worker left it
    budget = _budget(tmp_path, clock)
    assert budget.take(reduces_risk=False) == pytest.approx(0.0)  # 4 - 1 >= reserve 3
    assert budget.take(reduces_risk=False) == pytest.approx(0.1)


def test_two_budgets_on_one_key_share_one_bucket_and_the_key_is_not_in_the_name(
    tmp_path: Path,
) -> None:
    clock = Clock()
    first, second = _budget(tmp_path, clock), _budget(tmp_path, clock)
    spent = sum(1 for b in (first, second) * 10 if b.take(reduces_risk=True) == 0.0)
    assert spent == 10
    assert "key-1" not in first.path.name


def test_a_10006_empties_the_bucket_until_the_reset(tmp_path: Path) -> None:
    clock = Clock()
    budget = _budget(tmp_path, clock)
    budget.penalise(clock.now + 2.0)
    assert budget.take(reduces_risk=True) == pytest.approx(2.1)
    clock.now += 2.1
    assert budget.take(reduces_risk=True) == 0.0


SPEND = """
import sys
from pathlib import Path
from worker.venues.budget import AccountBudget
budget = AccountBudget(Path(sys.argv[1]), "shared", rate_per_s=0.001, burst=200, reserve=0)
print(sum(1 for _ in range(150) if budget.take(reduces_risk=True) == 0.0))
"""


def test_processes_racing_for_tokens_never_overspend(tmp_path: Path) -> None:
    workers = [
        subprocess.Popen([sys.executable, "-c", SPEND, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    granted = [int(w.communicate(timeout=60)[0]) for w in workers]
    assert sum(granted) == 200  # 450 asked, the burst is 200 and refill is negligible

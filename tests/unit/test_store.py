"""Instance lock and snapshot store: real files, real flock, a real second process."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bench.common import params
from worker.core import snapshot
from worker.core.model import (
    CoreState,
    Leg,
    Order,
    OrderStatus,
    OrderType,
    Phase,
    Purpose,
    Side,
)
from worker.core.strategy import Core
from worker.store import (
    IdReservation,
    InstanceLock,
    LockedError,
    SnapshotStore,
    write_atomically,
)


def new_state(epoch: int) -> CoreState:
    return Core(params()).new_state(epoch)


HOLD = """
import sys, time
from pathlib import Path
from worker.store import InstanceLock
lock = InstanceLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_cannot_take_the_lock_and_learns_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "btc.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as caught:
            InstanceLock(state).acquire()
        assert caught.value.holder == str(holder.pid)
    finally:
        holder.kill()
        holder.wait(10)
    with InstanceLock(state):  # the kernel released it with the dead holder
        pass


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    state = tmp_path / "eth.json"
    with InstanceLock(state), pytest.raises(LockedError):
        InstanceLock(state).acquire()
    InstanceLock(state).acquire()


def test_snapshot_round_trip_and_first_start(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "sub" / "btc.json")
    assert store.load() is None
    state = new_state(1_700_000_000)
    store.save(state)
    assert snapshot.encode(store.load() or new_state(0)) == snapshot.encode(state)
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_an_unreadable_snapshot_refuses_to_load_and_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "btc.json"
    path.write_bytes(b"{half a snap")
    with pytest.raises(snapshot.SnapshotError):
        SnapshotStore(path).load()
    assert path.read_bytes() == b"{half a snap"


def test_atomic_write_replaces_whole_content(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomically(path, b"old")
    write_atomically(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def phase_of(store: SnapshotStore) -> str:
    loaded = store.load()
    assert loaded is not None
    return loaded.phase.value


def test_a_staged_state_newer_than_the_snapshot_wins(tmp_path: Path) -> None:
    path = tmp_path / "btc.json"
    store = SnapshotStore(path)
    state = new_state(1_700_000_000)
    store.save(state)
    state.phase = Phase.ENTRY_WORKING
    store.stage(state)  # killed right after: only the staged copy has the new state
    store.close()
    assert phase_of(SnapshotStore(path)) == "entry_working"
    state.phase = Phase.RACE_EXIT
    later = SnapshotStore(path)
    later.load()  # carries on from the newest serial
    later.save(state)
    assert phase_of(SnapshotStore(path)) == "race_exit"


def _filled_entry() -> Order:
    return Order(
        link_id="btc-1700000000-1",
        leg=Leg.SPOT,
        side=Side.BUY,
        purpose=Purpose.ENTRY,
        order_type=OrderType.LIMIT,
        post_only=True,
        reduce_only=False,
        qty=Decimal("0.01"),
        price=Decimal("50000"),
        net_target=Decimal("0.01"),
        status=OrderStatus.FILLED,
        created_ms=1,
        cycle=1,
        exec_ids=["e-1"],
    )


def test_a_restart_from_the_staged_copy_knows_orders_finished_after_the_durable_save(
    tmp_path: Path,
) -> None:
    """Finished orders are staged too: an order the venue knows must never be unknown to the
    restarted worker, and a late fill of a finished order must still be recognised as seen
    (make chaos caught a staged copy that left them out)."""
    path = tmp_path / "btc.json"
    store = SnapshotStore(path)
    state = new_state(1_700_000_000)
    store.save(state)
    entry = _filled_entry()
    state.done[entry.link_id] = entry  # filled and retired after the durable save
    state.done_rev += 1
    state.phase = Phase.RACE_EXIT
    store.stage(state)
    store.close()
    loaded = SnapshotStore(path).load()
    assert loaded is not None and loaded.phase is Phase.RACE_EXIT
    assert loaded.done[entry.link_id].exec_ids == ["e-1"]


def test_a_finished_order_changed_by_the_core_is_staged_anew(tmp_path: Path) -> None:
    """The staged copy reuses the finished orders' encoding until ``done_rev`` moves."""
    path = tmp_path / "btc.json"
    store = SnapshotStore(path)
    state = new_state(1_700_000_000)
    entry = _filled_entry()
    state.done[entry.link_id] = entry
    state.done_rev += 1
    store.stage(state)
    entry.exec_ids.append("e-2")  # a late fill of the finished order, as the core records it
    state.done_rev += 1
    store.stage(state)
    store.close()
    loaded = SnapshotStore(path).load()
    assert loaded is not None and loaded.done[entry.link_id].exec_ids == ["e-1", "e-2"]


def test_a_torn_staging_write_falls_back_to_the_other_slot(tmp_path: Path) -> None:
    path = tmp_path / "btc.json"
    store = SnapshotStore(path)
    state = new_state(1_700_000_000)
    store.save(state)
    state.phase = Phase.ENTRY_WORKING
    store.stage(state)  # serial 2 → slot 0
    state.phase = Phase.RACE_EXIT
    store.stage(state)  # serial 3 → slot 1
    store.close()
    raw = bytearray(store.staged_path.read_bytes())
    slot = 4 << 20
    raw[slot + 40] ^= 0xFF  # the newest slot was cut short: its checksum fails
    store.staged_path.write_bytes(bytes(raw))
    assert phase_of(SnapshotStore(path)) == "entry_working"
    store.staged_path.write_bytes(b"\0" * 10)  # both slots gone: the durable snapshot
    assert phase_of(SnapshotStore(path)) == "flat"


def test_the_id_reservation_is_durable_monotone_and_per_epoch(tmp_path: Path) -> None:
    path = tmp_path / "btc.json"
    ids = IdReservation(path)
    assert ids.saved() is None and ids.load(5) == 0
    ids.save(5, 128)
    ids.save(5, 64)  # never lowered
    assert ids.covers(5, 100) and not ids.covers(5, 129) and not ids.covers(6, 1)
    again = IdReservation(path)
    assert again.saved() == (5, 128) and again.load(5) == 128 and again.load(6) == 0

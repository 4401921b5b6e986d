"""orderLinkId allocation and restart rules (ARCHITECTURE §5.1)."""

from __future__ import annotations

from worker.core.commands import ReserveIds
from worker.core.ids import ID_BLOCK, allocate, issued_before, skip_open_block, unaccounted_ids
from worker.core.model import IdState


def test_blocks_are_reserved_before_their_first_id() -> None:
    ids = IdState(epoch=1_763_000_000)
    first, reserve = allocate(ids, "sol")
    assert (first, reserve) == ("sol-1763000000-1", ReserveIds(epoch=1_763_000_000, block_end=65))
    for _ in range(ID_BLOCK - 1):
        _, reserve = allocate(ids, "sol")
        assert reserve is None
    _, reserve = allocate(ids, "sol")
    assert reserve == ReserveIds(epoch=1_763_000_000, block_end=65 + ID_BLOCK)


def test_restart_queries_the_open_block_and_never_reuses_it() -> None:
    ids = IdState(epoch=7)
    for _ in range(3):
        allocate(ids, "btc")
    # the snapshot knows ids 1..3; 4..64 may have been sent after it was written
    missing = unaccounted_ids(ids, "btc")
    assert missing[0] == "btc-7-4" and missing[-1] == "btc-7-64" and len(missing) == 61
    skip_open_block(ids)
    link_id, reserve = allocate(ids, "btc")
    assert link_id == "btc-7-65" and reserve == ReserveIds(epoch=7, block_end=65 + ID_BLOCK)


def test_longest_ids_fit_bybit_limit() -> None:
    ids = IdState(epoch=9_999_999_999, next_seq=999_999_999_999, block_end=10**12)
    link_id, _ = allocate(ids, "abcdefghijkl")
    assert len(link_id) == 36


def test_issued_before_knows_late_messages_from_unknown_ones() -> None:
    ids = IdState(epoch=7, origin=5)
    for _ in range(3):
        allocate(ids, "btc")
    assert issued_before(ids, "btc", "btc-7-2")
    assert issued_before(ids, "btc", "btc-6-99")  # an epoch this state cleared
    assert not issued_before(ids, "btc", "btc-4-1")  # older than the state: a lost state file
    assert issued_before(ids, "btc", "btc-7-3")
    assert not issued_before(ids, "btc", "btc-7-4")  # never handed out
    assert not issued_before(ids, "btc", "eth-7-1")
    assert not issued_before(ids, "btc", "btc-x-1")
    skip_open_block(ids)
    # the skipped range may hold orders sent just before a crash: never "late"
    assert not issued_before(ids, "btc", "btc-7-4")
    assert not issued_before(ids, "btc", "btc-7-64")
    assert issued_before(ids, "btc", "btc-7-3")

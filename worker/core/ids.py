"""``orderLinkId`` = ``<id>-<epoch>-<seq>`` (ARCHITECTURE §5.1).

The epoch starts at the wall-clock second the state was created and rises on every clear, so
ids never repeat at the venue even if a state file is lost. Sequence numbers are handed out
from blocks that are durably reserved *before* any id of the block is sent: after a crash,
every id of the open block that the snapshot does not account for is queried at the venue.
"""

from __future__ import annotations

import re

from worker.core.commands import ReserveIds
from worker.core.model import IdState

ID_BLOCK = 64
MAX_LEN = 36
LINK_ID_RE = re.compile(r"^[a-z0-9]{1,12}-[0-9]{1,10}-[0-9]{1,12}$")


def format_link_id(instance_id: str, epoch: int, seq: int) -> str:
    link_id = f"{instance_id}-{epoch}-{seq}"
    if len(link_id) > MAX_LEN or not LINK_ID_RE.match(link_id):
        raise ValueError(f"orderLinkId {link_id!r} breaks the <id>-<epoch>-<seq> format")
    return link_id


def link_prefix(instance_id: str) -> str:
    """How every ``orderLinkId`` of the instance begins, in any epoch."""
    return instance_id + "-"


def owns(instance_id: str, link_id: str) -> bool:
    """True for every order this instance can have sent, in any epoch."""
    return link_id.startswith(link_prefix(instance_id))


def issued_before(ids: IdState, instance_id: str, link_id: str) -> bool:
    """True for an id this state handed out earlier (an epoch it cleared, or a lower sequence in
    this one): a message about it is late, never about an order nobody knows."""
    prefix = instance_id + "-"
    if not link_id.startswith(prefix):
        return False
    epoch_text, _, seq_text = link_id[len(prefix) :].partition("-")
    if not (epoch_text.isdigit() and seq_text.isdigit()):
        return False
    epoch, seq = int(epoch_text), int(seq_text)
    if any(e == epoch and start <= seq < end for e, start, end in ids.skipped):
        return False  # skipped after a restart: it may be an order the snapshot never saw
    if epoch < ids.origin:
        return False  # older than this state (a lost or replaced state file): not known
    return epoch < ids.epoch or (epoch == ids.epoch and seq < ids.next_seq)


def allocate(ids: IdState, instance_id: str) -> tuple[str, ReserveIds | None]:
    """The next id, and the reservation that must be made durable before it is sent."""
    reserve = None
    if ids.next_seq >= ids.block_end:
        ids.block_end = ids.next_seq + ID_BLOCK
        reserve = ReserveIds(epoch=ids.epoch, block_end=ids.block_end)
    link_id = next_link_id(ids, instance_id)
    ids.next_seq += 1
    return link_id, reserve


def next_link_id(ids: IdState, instance_id: str) -> str:
    """The id :func:`allocate` hands out next (nothing is allocated)."""
    return format_link_id(instance_id, ids.epoch, ids.next_seq)


def unaccounted_ids(ids: IdState, instance_id: str) -> list[str]:
    """Ids of the open block a crashed worker may have sent without its snapshot knowing.

    After a restart each of them is queried at the venue before anything is sent (§5.1).
    """
    return [
        format_link_id(instance_id, ids.epoch, seq) for seq in range(ids.next_seq, ids.block_end)
    ]


SKIPPED_KEEP = 8


def skip_open_block(ids: IdState) -> None:
    """Never reuse an id of a block that was reserved before a restart; remember the skipped
    range, so a message about one of its ids is never mistaken for a late duplicate."""
    if ids.next_seq < ids.block_end:
        ids.skipped = [*ids.skipped, (ids.epoch, ids.next_seq, ids.block_end)][-SKIPPED_KEEP:]
        ids.next_seq = ids.block_end

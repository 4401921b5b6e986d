"""Bybit ``retCode``s by the action they call for, in one place.

A code listed here is a *definitive* refusal: the request did not take effect, and the core
gets a ``Rejected`` of that kind. Any other non-zero code is an unknown outcome (the request
may have landed): the runtime resolves it by querying the ``orderLinkId``, never by sending
it again. Texts are in ``docs/v5/error.mdx``; the list is kept short on purpose.
"""

from __future__ import annotations

from worker.core.model import RejectKind

__all__ = ["DUPLICATE_LINK_ID", "RATE_LIMIT", "TIME_WINDOW", "classify"]

RATE_LIMIT = 10006  # Too many visits: back off until X-Bapi-Limit-Reset-Timestamp
TIME_WINDOW = 10002  # timestamp outside recv_window: the request was not processed
# The orderLinkId is already taken: an earlier attempt (whose reply was lost) may have landed.
DUPLICATE_LINK_ID = frozenset({110072, 170141})

_DEFINITIVE: dict[int, RejectKind] = {
    RATE_LIMIT: RejectKind.RATE_LIMITED,
    TIME_WINDOW: RejectKind.RATE_LIMITED,  # not processed; try again at the next interval
    # order unknown to the venue (never placed, or gone from its active set)
    110001: RejectKind.NOT_FOUND,
    170213: RejectKind.NOT_FOUND,
    # amend/cancel of an order already filled or cancelled
    110008: RejectKind.FINISHED,
    110010: RejectKind.FINISHED,
    170142: RejectKind.FINISHED,
    170139: RejectKind.FINISHED,
    170190: RejectKind.FINISHED,
    # not enough funds or margin
    110004: RejectKind.INSUFFICIENT_BALANCE,
    110007: RejectKind.INSUFFICIENT_BALANCE,
    110012: RejectKind.INSUFFICIENT_BALANCE,
    110044: RejectKind.INSUFFICIENT_BALANCE,
    110045: RejectKind.INSUFFICIENT_BALANCE,
    170131: RejectKind.INSUFFICIENT_BALANCE,
    # below the instrument's minimums
    110094: RejectKind.BELOW_MINIMUM,
    170136: RejectKind.BELOW_MINIMUM,
    170140: RejectKind.BELOW_MINIMUM,
    # precision, range or parameters
    10001: RejectKind.INVALID,
    110017: RejectKind.INVALID,
    110003: RejectKind.INVALID,
    170134: RejectKind.INVALID,
    170137: RejectKind.INVALID,
    170193: RejectKind.INVALID,
    170194: RejectKind.INVALID,
    # refused for a standing reason of the account or venue
    10003: RejectKind.OTHER,
    10004: RejectKind.OTHER,
    10005: RejectKind.OTHER,
    10010: RejectKind.OTHER,
    110020: RejectKind.OTHER,
    170810: RejectKind.OTHER,
}


def classify(ret_code: int) -> RejectKind | None:
    """The reject kind of a definitive refusal, or ``None``: outcome unknown, query it."""
    return _DEFINITIVE.get(ret_code)

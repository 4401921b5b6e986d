"""Bybit V5 ``retCode``s the simulator returns, with Bybit's texts (``docs/v5/error.mdx``)."""

from __future__ import annotations

__all__ = ["VenueError", "by_category"]


class VenueError(Exception):
    """A business error: HTTP 200 with a non-zero ``retCode``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# (linear code, linear text), (spot code, spot text)
_BY_CATEGORY: dict[str, tuple[tuple[int, str], tuple[int, str]]] = {
    "duplicate": ((110072, "OrderLinkedID is duplicate"), (170141, "Duplicate clientOrderId")),
    "not_found": ((110001, "Order does not exist"), (170213, "Order does not exist.")),
    "balance": (
        (110007, "Available balance is insufficient"),
        (170131, "Insufficient balance."),
    ),
}


def by_category(kind: str, category: str) -> VenueError:
    linear, spot = _BY_CATEGORY[kind]
    code, text = spot if category == "spot" else linear
    return VenueError(code, text)


PARAMS = 10001

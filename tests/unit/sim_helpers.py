"""A small driver for the in-process exchange simulator (``exchange_sim.engine.Exchange``).

``Sim`` owns a settable clock, records every public and private message, and offers short
helpers to script books, place orders and read state back through the client operations, so
tests read as venue scenarios rather than as plumbing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from exchange_sim.config import DEFAULT_API_KEY, AccountSpec, SimConfig, default_config
from exchange_sim.engine import Exchange
from exchange_sim.journal import Journal

D = Decimal
K = DEFAULT_API_KEY
OTHER = "other-sim-key"
T0 = 1_700_000_000_000
SYMBOL = "BTCUSDT"

Level = tuple[str, str]

# The book most tests start from: one level of 1.0 at each side's best, 2.0 behind it.
BIDS: list[Level] = [("64999.9", "1.0"), ("64999.8", "2.0")]
ASKS: list[Level] = [("65000.1", "1.0"), ("65000.2", "2.0")]


def two_account_config() -> SimConfig:
    """The default config plus a second account (``OTHER``) with its own balances."""
    base = default_config()
    other = AccountSpec(
        api_key=OTHER,
        api_secret="other-sim-secret",
        balances={"USDT": D("50000"), "BTC": D("1")},
    )
    return msgspec.structs.replace(base, accounts=[*base.accounts, other])


class Sim:
    """One exchange with a manual clock and captured message streams."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        seed: int = 1,
        frozen: bool = True,
        journal_path: Path | None = None,
        t0: int = T0,
    ) -> None:
        self.t = [t0]
        self.journal = Journal(journal_path) if journal_path is not None else None
        self.ex = Exchange(
            config if config is not None else default_config(),
            seed=seed,
            clock=lambda: self.t[0],
            frozen=frozen,
            journal=self.journal,
        )
        self.public: list[tuple[str, str, bytes]] = []
        self.private: list[tuple[str, str, bytes]] = []
        self.ex.on_public = lambda category, topic, msg: self.public.append((category, topic, msg))
        self.ex.on_private = lambda key, topic, msg: self.private.append((key, topic, msg))

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    # --- time ----------------------------------------------------------------------------

    def step(self, ms: int) -> None:
        """Move the clock forward and let the exchange run what is due."""
        self.t[0] += ms
        self.ex.advance()

    # --- market scripting ----------------------------------------------------------------

    def book(
        self,
        category: str,
        bids: Sequence[Level] = BIDS,
        asks: Sequence[Level] = ASKS,
        symbol: str = SYMBOL,
    ) -> None:
        self.ex.set_book(
            category,
            symbol,
            bids=[(D(p), D(s)) for p, s in bids],
            asks=[(D(p), D(s)) for p, s in asks],
        )

    def trade(self, category: str, side: str, price: str, qty: str, symbol: str = SYMBOL) -> None:
        """An outside taker trade through the book up to ``price``."""
        self.ex.print_trade(category, symbol, side, D(price), D(qty))

    def top(self, category: str, side: str, depth: int = 5) -> list[tuple[Decimal, Decimal]]:
        """Aggregated (price, size) of one side of the book, best first."""
        return self.ex.books[(category, SYMBOL)].top(side, depth)

    # --- client operations ---------------------------------------------------------------

    def place(
        self,
        category: str,
        side: str,
        qty: str,
        price: str | None = None,
        *,
        key: str = K,
        **extra: str,
    ) -> str:
        """Create a Limit order (or Market when ``price`` is None); return its orderId."""
        params: dict[str, Any] = {
            "category": category,
            "symbol": SYMBOL,
            "side": side,
            "orderType": "Limit" if price is not None else "Market",
            "qty": qty,
            **extra,
        }
        if price is not None:
            params["price"] = price
        reply = self.ex.create_order(key, params)
        assert reply.code == 0, reply
        order_id = reply.result["orderId"]
        assert isinstance(order_id, str)
        return order_id

    def order(self, category: str, order_id: str, *, key: str = K) -> dict[str, Any]:
        """The order as ``/v5/order/history`` shows it."""
        reply = self.ex.order_history(key, {"category": category, "orderId": order_id})
        rows = reply.result["list"]
        assert len(rows) == 1, rows
        row = rows[0]
        assert isinstance(row, dict)
        return row

    def executions(
        self, category: str, order_id: str | None = None, *, key: str = K, **extra: str
    ) -> list[dict[str, Any]]:
        """Executions newest first, as ``/v5/execution/list`` returns them."""
        params: dict[str, Any] = {"category": category, "limit": "100", **extra}
        if order_id is not None:
            params["orderId"] = order_id
        rows = self.ex.executions(key, params).result["list"]
        assert isinstance(rows, list)
        return rows

    def position(self, *, key: str = K) -> dict[str, Any]:
        rows = self.ex.positions(key, {"category": "linear", "symbol": SYMBOL}).result["list"]
        assert len(rows) == 1
        row = rows[0]
        assert isinstance(row, dict)
        return row

    def wallet(self, coin: str, *, key: str = K) -> Decimal:
        return self.ex.accounts[key].coin(coin).wallet

    def locked(self, coin: str, *, key: str = K) -> Decimal:
        return self.ex.accounts[key].coin(coin).locked

    # --- captured messages ---------------------------------------------------------------

    def private_msgs(self, topic: str | None = None, *, key: str = K) -> list[dict[str, Any]]:
        return [
            json.loads(msg)
            for k, t, msg in self.private
            if k == key and (topic is None or t == topic)
        ]

    def private_topics(self, *, key: str = K) -> list[str]:
        return [t for k, t, _ in self.private if k == key]

    def public_msgs(self, category: str, topic: str) -> list[dict[str, Any]]:
        return [json.loads(msg) for c, t, msg in self.public if c == category and t == topic]

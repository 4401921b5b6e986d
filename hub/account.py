"""The account as a whole (ARCHITECTURE §8): per perp symbol, the rows' claims summed against
the exchange's position, so a difference no single worker can see (a manual trade, a row
whose snapshot was replaced) is flagged on ``/arb``.

A row's claim is its worker's last reported perp position, or, for a row that has not
reported since the hub started, the position in its snapshot (read only; the worker owns
it). Rows are grouped by API key: each account is asked for its own positions.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import msgspec

from hub.supervisor import Row
from worker.config_loader import ApiCredentials, load_credentials
from worker.core.config import ConfigError, Endpoints
from worker.core.ledger import fmt
from worker.core.snapshot import SnapshotError
from worker.store import SnapshotStore
from worker.venues.bybit import parse
from worker.venues.bybit.client import urls_for
from worker.venues.bybit.rest import BybitRest, Done
from worker.venues.bybit.schemas import ListResult

__all__ = ["AccountCheck", "SymbolCheck"]

CHECK_EVERY_S = 5.0


@dataclass(frozen=True)
class SymbolCheck:
    symbol: str
    claims: Decimal
    exchange: Decimal | None  # None: the exchange could not be asked
    rows: tuple[str, ...]
    # the same difference in two checks in a row: a fill landing between a row's last status
    # and the exchange's answer is not a mismatch
    differs: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "claims": fmt(self.claims),
            "exchange": None if self.exchange is None else fmt(self.exchange),
            "rows": list(self.rows),
            "differs": self.differs,
        }


def _claim(row: Row) -> Decimal:
    if row.status is not None:
        return row.status.perp_position
    try:
        state = SnapshotStore(Path(row.cfg.state_path)).load()
    except SnapshotError:
        return Decimal(0)  # its worker refuses to start anyway (exit 4), shown on the row
    return state.perp.qty if state is not None else Decimal(0)


class AccountCheck:
    def __init__(
        self,
        rows: list[Row],
        *,
        default_credentials: ApiCredentials | None,
        endpoints: Endpoints | None,
    ) -> None:
        self.rows = rows
        self.default_credentials = default_credentials
        self.endpoints = endpoints
        self.results: list[SymbolCheck] = []
        self._seen: dict[str, tuple[Decimal, Decimal | None]] = {}

    def _accounts(self) -> dict[str, tuple[ApiCredentials, str, list[Row]]]:
        """API key → (credentials, REST URL, rows); the key only ever groups, never shows."""
        accounts: dict[str, tuple[ApiCredentials, str, list[Row]]] = {}
        for row in self.rows:
            try:
                credentials = load_credentials(row.cfg) or self.default_credentials
            except ConfigError:
                continue  # the row's own start reports the unreadable account file
            if credentials is None:
                continue  # a dry run without keys: nothing to compare with
            rest = urls_for(row.cfg, self.endpoints or row.cfg.endpoints).rest
            entry = accounts.setdefault(credentials.api_key, (credentials, rest, []))
            entry[2].append(row)
        return accounts

    async def check_once(self) -> list[SymbolCheck]:
        results = []
        for credentials, url, rows in self._accounts().values():
            async with BybitRest(url, credentials, timeout_s=5) as rest:
                for symbol in sorted({r.cfg.future_symbol for r in rows}):
                    on_symbol = [r for r in rows if r.cfg.future_symbol == symbol]
                    claims = sum((_claim(r) for r in on_symbol), Decimal(0))
                    exchange = await self._position(rest, symbol)
                    ids = tuple(r.id for r in on_symbol)
                    now = (claims, exchange)
                    differs = exchange is not None and exchange != claims
                    steady = self._seen.get(symbol) == now
                    self._seen[symbol] = now
                    results.append(SymbolCheck(symbol, claims, exchange, ids, differs and steady))
        self.results = results
        return results

    @staticmethod
    async def _position(rest: BybitRest, symbol: str) -> Decimal | None:
        outcome = await rest.get("/v5/position/list", {"category": "linear", "symbol": symbol})
        if not isinstance(outcome, Done):
            return None
        try:
            rows = msgspec.json.decode(outcome.result, type=ListResult).items
            found = [p.size for p in parse.positions(rows) if p.symbol == symbol]
        except (msgspec.DecodeError, parse.BybitError):
            return None
        return found[0] if found else Decimal(0)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                await self.check_once()
            await asyncio.sleep(CHECK_EVERY_S)

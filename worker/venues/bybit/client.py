"""The Bybit V5 venue as the runtime sees it: streams in, orders out, facts on request.

This module only wires the Bybit pieces together (REST, WebSockets, the parsers, orders, the
pre-trading checks) behind the venue-neutral :class:`worker.venues.types.Listener` callbacks
and the query methods the runtime's resync uses. Every query answers ``None`` when the venue
could not be asked (timeout, 5xx, refusal): the caller tries again and never guesses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from worker.config_loader import ApiCredentials
from worker.core.commands import AmendOrder, CancelOrder, PlaceOrder, QueryOrder
from worker.core.config import Endpoints, InstanceConfig
from worker.core.events import Event, Execution, FundingPayment, OrderUpdate, WalletBalance
from worker.core.ids import link_prefix
from worker.core.model import Leg, Purpose
from worker.venues.budget import AccountBudget
from worker.venues.bybit import parse
from worker.venues.bybit.orders import BybitOrders
from worker.venues.bybit.rest import BybitRest, Done
from worker.venues.bybit.schemas import ListResult
from worker.venues.bybit.setup import prepare
from worker.venues.bybit.stream import BybitSocket
from worker.venues.types import Listener, PositionState, VenueSetup

__all__ = ["BybitVenue", "Urls", "urls_for"]

_CATEGORY = {Leg.SPOT: "spot", Leg.PERP: "linear"}
_PRIVATE_TOPICS = ["order", "execution", "position", "wallet"]
_ORDER_PAGE = 50  # Bybit's maxima per page
_EXECUTION_PAGE = 100
_MAX_PAGES = 20


@dataclass(frozen=True)
class Urls:
    rest: str
    ws_spot: str
    ws_linear: str
    ws_private: str


def urls_for(cfg: InstanceConfig, endpoints: Endpoints | None) -> Urls:
    """``endpoints`` (the hub's ``ARBHUB_ENDPOINTS`` or the config's) win; otherwise Bybit's
    mainnet, testnet or demo hosts. Demo trading has private streams only: its public data
    is mainnet's."""
    if endpoints is not None:
        public = endpoints.ws_public.rstrip("/")
        return Urls(endpoints.rest, f"{public}/spot", f"{public}/linear", endpoints.ws_private)
    if cfg.testnet:
        rest, public, private = (
            "https://api-testnet.bybit.com",
            "wss://stream-testnet.bybit.com/v5/public",
            "wss://stream-testnet.bybit.com/v5/private",
        )
    elif cfg.demo:
        rest, public, private = (
            "https://api-demo.bybit.com",
            "wss://stream.bybit.com/v5/public",
            "wss://stream-demo.bybit.com/v5/private",
        )
    else:
        rest, public, private = (
            "https://api.bybit.com",
            "wss://stream.bybit.com/v5/public",
            "wss://stream.bybit.com/v5/private",
        )
    return Urls(rest, f"{public}/spot", f"{public}/linear", private)


class BybitVenue:
    def __init__(
        self,
        cfg: InstanceConfig,
        urls: Urls,
        credentials: ApiCredentials | None,
        *,
        budget: AccountBudget | None,
        clock_ms: Callable[[], int],
        recv_window_ms: int = 5000,
    ) -> None:
        self.cfg = cfg
        self.urls = urls
        self.credentials = credentials
        self.symbols = {Leg.SPOT: cfg.spot_symbol, Leg.PERP: cfg.future_symbol}
        self.rest = BybitRest(urls.rest, credentials, recv_window_ms=recv_window_ms)
        self.orders = BybitOrders(
            self.rest,
            spot_symbol=cfg.spot_symbol,
            perp_symbol=cfg.future_symbol,
            budget=budget,
            clock_ms=clock_ms,
        )
        self.clock_ms = clock_ms
        self.sockets: dict[str, BybitSocket] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- setup and streams

    async def prepare(self, path: str) -> VenueSetup:
        return await prepare(
            self.rest,
            self.cfg,
            path=path,
            clock_ms=self.clock_ms,
            private=self.credentials is not None,
            trading=self.cfg.execute,
        )

    def book_topic(self, leg: Leg, depth: int) -> str:
        return f"orderbook.{depth}.{self.symbols[leg]}"

    def start(self, listener: Listener, *, private: bool) -> None:
        """Open the public sockets (and the private one) and keep them up until ``close``."""
        for leg, url in ((Leg.SPOT, self.urls.ws_spot), (Leg.PERP, self.urls.ws_linear)):
            self.sockets[leg.value] = BybitSocket(
                url,
                [self.book_topic(leg, 1), self.book_topic(leg, 50)],
                on_message=self._public_handler(leg, listener),
                on_state=self._state_handler(leg.value, listener),
                ping_interval_s=self.cfg.ws_ping_interval_s,
            )
        if private and self.credentials is not None:
            self.sockets["private"] = BybitSocket(
                self.urls.ws_private,
                _PRIVATE_TOPICS,
                on_message=self._private_handler(listener),
                on_state=self._state_handler("private", listener),
                credentials=self.credentials,
                ping_interval_s=self.cfg.ws_ping_interval_s,
            )
        self._tasks = [asyncio.create_task(s.run()) for s in self.sockets.values()]

    async def resubscribe_book(self, leg: Leg, depth: int) -> None:
        await self.sockets[leg.value].resubscribe(self.book_topic(leg, depth))

    def _public_handler(self, leg: Leg, listener: Listener) -> Callable[[bytes], None]:
        def on_message(raw: bytes) -> None:
            try:
                update = parse.parse_book(raw)
            except parse.BybitError as exc:
                listener.on_bad_message(leg.value, str(exc), raw)
                return
            listener.on_book(leg, update)

        return on_message

    def _private_handler(self, listener: Listener) -> Callable[[bytes], None]:
        perp = self.symbols[Leg.PERP]
        # One account's private stream carries every instance's orders, executions and
        # positions. A message that names none of this instance's order ids, not its perp
        # (positions, funding) and is not a wallet update cannot concern it, and is dropped
        # before it is parsed: 100 rows on one key spent most of their CPU parsing the
        # others' messages. (A false match only costs the parse; the runtime filters again.)
        marks = (f'"{link_prefix(self.cfg.id)}'.encode(), f'"{perp}"'.encode(), b'"wallet"')

        def on_message(raw: bytes) -> None:
            if not any(mark in raw for mark in marks):
                return
            try:
                message = parse.parse_private(raw)
                topic = message.topic
                events: list[Event] = []
                if topic == "order":
                    events.extend(parse.order_updates(message.data))
                elif topic == "execution":
                    events.extend(parse.executions(message.data, funding_symbol=perp))
                elif topic == "wallet":
                    events.extend(parse.wallet_balances(message.data))
                elif topic == "position":
                    for position in parse.positions(message.data):
                        if position.symbol == perp:
                            listener.on_position(position)
            except parse.BybitError as exc:
                listener.on_bad_message("private", str(exc), raw)
                return
            listener.on_events(events)

        return on_message

    def _state_handler(self, name: str, listener: Listener) -> Callable[[bool, str], None]:
        def on_state(up: bool, reason: str) -> None:
            listener.on_link(name, up, reason)

        return on_state

    async def close(self) -> None:
        for socket in self.sockets.values():
            await socket.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.rest.close()

    # ---------------------------------------------------------------- orders

    def remember(self, link_id: str, purpose: Purpose) -> None:
        self.orders.remember(link_id, purpose)

    def submit(
        self, command: PlaceOrder | AmendOrder | CancelOrder | QueryOrder
    ) -> Awaitable[list[Event]]:
        return self.orders.submit(command)

    def sign_ahead(self, likely: Sequence[PlaceOrder]) -> None:
        self.orders.sign_ahead(likely)

    # ---------------------------------------------------------------- facts for the resync

    async def _pages(self, path: str, params: dict[str, str], limit: int) -> list[bytes] | None:
        """Every page's raw ``list`` (following ``nextPageCursor``), or None on any failure."""
        pages: list[bytes] = []
        query = {**params, "limit": str(limit)}
        for _ in range(_MAX_PAGES):
            outcome = await self.rest.get(path, query)
            if not isinstance(outcome, Done):
                return None
            try:
                listed = msgspec.json.decode(outcome.result, type=ListResult)
            except msgspec.DecodeError:
                return None
            pages.append(bytes(listed.items))
            if not listed.next_page_cursor:
                break
            query = {**query, "cursor": listed.next_page_cursor}
        return pages

    async def open_orders(self, leg: Leg) -> list[OrderUpdate] | None:
        params = {"category": _CATEGORY[leg], "symbol": self.symbols[leg], "openOnly": "0"}
        return await self._orders("/v5/order/realtime", params)

    async def order_history(self, leg: Leg, since_ms: int) -> list[OrderUpdate] | None:
        """Orders of the leg's symbol created since ``since_ms``, finished ones included."""
        params = {
            "category": _CATEGORY[leg],
            "symbol": self.symbols[leg],
            "startTime": str(since_ms),
        }
        return await self._orders("/v5/order/history", params)

    async def _orders(self, path: str, params: dict[str, str]) -> list[OrderUpdate] | None:
        pages = await self._pages(path, params, _ORDER_PAGE)
        if pages is None:
            return None
        try:
            return [u for page in pages for u in parse.order_updates(page)]
        except parse.BybitError:
            return None

    async def executions(self, leg: Leg, since_ms: int) -> list[Execution | FundingPayment] | None:
        params = {
            "category": _CATEGORY[leg],
            "symbol": self.symbols[leg],
            "startTime": str(since_ms),
        }
        pages = await self._pages("/v5/execution/list", params, _EXECUTION_PAGE)
        if pages is None:
            return None
        funding = self.symbols[Leg.PERP] if leg is Leg.PERP else ""
        try:
            return [e for page in pages for e in parse.executions(page, funding_symbol=funding)]
        except parse.BybitError:
            return None

    async def perp_position(self) -> PositionState | None:
        symbol = self.symbols[Leg.PERP]
        outcome = await self.rest.get("/v5/position/list", {"category": "linear", "symbol": symbol})
        if not isinstance(outcome, Done):
            return None
        try:
            rows = msgspec.json.decode(outcome.result, type=ListResult).items
            found = [p for p in parse.positions(rows) if p.symbol == symbol]
        except (msgspec.DecodeError, parse.BybitError):
            return None
        flat = PositionState(symbol=symbol, size=Decimal(0), avg_price=Decimal(0))
        return found[0] if found else flat

    async def balances(self) -> list[WalletBalance] | None:
        outcome = await self.rest.get("/v5/account/wallet-balance", {"accountType": "UNIFIED"})
        if not isinstance(outcome, Done):
            return None
        try:
            rows = msgspec.json.decode(outcome.result, type=ListResult).items
            return parse.wallet_balances(rows)
        except (msgspec.DecodeError, parse.BybitError):
            return None

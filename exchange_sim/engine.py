"""The in-process exchange: instruments, books, accounts, matching and message output.

``Exchange`` has no network and no wall clock: time comes from the ``clock`` it is given, the
market model from ``seed``, so the same seed, clock and client actions give the same message
stream. Every client operation is applied whole, written to the journal (when there is one),
and only then are its private and public messages handed to the sinks and its reply
returned, so a reply always describes an applied and durable change.

The REST and WebSocket server (``exchange_sim.server``) is a thin layer over this class.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, NamedTuple

from exchange_sim.book import Book, Fill, whole_lots
from exchange_sim.config import SimConfig
from exchange_sim.errors import PARAMS, VenueError, by_category
from exchange_sim.feed import OB1_RESEND_MS, BookFeed, encode
from exchange_sim.journal import Journal
from exchange_sim.market import MarketModel
from exchange_sim.state import Account, Coin, Execution, Instrument, Order, Position
from exchange_sim.wire import (
    dec,
    execution_rest,
    execution_ws,
    order_history,
    order_rest,
    order_ws,
    position_rest,
    position_ws,
    wallet_account,
)

__all__ = ["Exchange", "Reply"]

ZERO = Decimal(0)
ONE = Decimal(1)
CATEGORIES = ("spot", "linear")
TICKER_MS = 100
_LINK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_MAX_OPEN_ORDERS = 500


class Reply(NamedTuple):
    """A REST result: ``code`` 0 and ``result``, or a Bybit ``retCode`` and its text."""

    code: int
    msg: str
    result: dict[str, Any]


OK = "OK"

PublicSink = Callable[[str, str, bytes], None]  # (category, topic, message)
PrivateSink = Callable[[str, str, bytes], None]  # (api key, topic, message)


def _no_public(category: str, topic: str, message: bytes) -> None:
    return None


def _no_private(api_key: str, topic: str, message: bytes) -> None:
    return None


def _everyone(who: str, topic: str) -> bool:
    return True


def _decimal(params: dict[str, Any], name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise VenueError(PARAMS, f"params error: {name} is required")
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise VenueError(PARAMS, f"params error: {name} invalid") from None
    if not value.is_finite():
        raise VenueError(PARAMS, f"params error: {name} invalid")
    return value


def _on_grid(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


class _Op:
    """What one operation touched; written to the journal and pushed when it ends."""

    __slots__ = ("books", "coins", "execs", "orders", "positions", "trades")

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.execs: list[Execution] = []
        self.coins: set[tuple[str, str]] = set()
        self.positions: set[tuple[str, str]] = set()
        self.books: set[tuple[str, str]] = set()
        self.trades: dict[tuple[str, str], list[dict[str, Any]]] = {}


class Exchange:
    """A Bybit-like venue in memory (see the module docstring)."""

    def __init__(
        self,
        config: SimConfig,
        *,
        seed: int,
        clock: Callable[[], int],
        journal: Journal | None = None,
        frozen: bool = False,
    ) -> None:
        self.config = config
        self.seed = seed
        self.clock = clock
        self.journal = journal
        self.frozen = frozen
        self.on_public: PublicSink = _no_public
        self.on_private: PrivateSink = _no_private
        self.wants: Callable[[str, str], bool] = _everyone  # (category, topic)
        self.wants_private: Callable[[str, str], bool] = _everyone  # (api key, topic)
        self.instruments: dict[tuple[str, str], Instrument] = {}
        self.books: dict[tuple[str, str], Book] = {}
        self.feeds: dict[tuple[str, str], BookFeed] = {}
        self.base_of: dict[str, str] = {}
        self.quote_of: dict[str, str] = {}
        for spec in config.instruments:
            self.base_of[spec.symbol] = spec.base_coin
            self.quote_of[spec.symbol] = spec.quote_coin
            for category, leg, fees in (
                ("spot", spec.spot, config.fees.spot),
                ("linear", spec.linear, config.fees.linear),
            ):
                if leg is None:
                    continue
                inst = Instrument(
                    category=category,
                    symbol=spec.symbol,
                    base_coin=spec.base_coin,
                    quote_coin=spec.quote_coin,
                    tick_size=leg.tick_size,
                    qty_step=leg.qty_step,
                    min_qty=leg.min_qty,
                    min_notional=leg.min_notional,
                    max_qty=leg.max_qty,
                    max_market_qty=leg.max_market_qty,
                    maker_fee=fees.maker,
                    taker_fee=fees.taker,
                )
                key = (category, spec.symbol)
                self.instruments[key] = inst
                self.books[key] = Book()
                self.feeds[key] = BookFeed(inst)
        self.accounts: dict[str, Account] = {}
        for acct in config.accounts:
            account = Account(api_key=acct.api_key, api_secret=acct.api_secret)
            for coin, amount in acct.balances.items():
                account.coin(coin).wallet = amount
            self.accounts[acct.api_key] = account
        self.order_counter = 0
        self.exec_counter = 0
        self.exec_seq = 0
        self.message_counter = 0
        self.trade_counter = 0
        self.leverage_default = Decimal(10)
        self._op: _Op | None = None
        self.model = MarketModel(self, config.model, seed)
        self.next_funding_ms = self._next_funding_after(clock())
        self.last_ticker_ms = 0
        self.model_saved_ms = 0
        if journal is not None:
            journal.replay(self)
        with self._operation():  # the first books may cross restored orders: journal the fills
            self.model.start(clock())

    # === identifiers ====================================================================

    def _digest(self, kind: str, n: int) -> bytes:
        return hashlib.blake2b(f"{self.seed}:{kind}:{n}".encode(), digest_size=16).digest()

    def _new_order_id(self, category: str) -> str:
        self.order_counter += 1
        if category == "spot":  # spot order ids are numeric strings on Bybit
            return str(int.from_bytes(self._digest("o", self.order_counter)[:7]) + 10**18)
        return str(uuid.UUID(bytes=self._digest("o", self.order_counter), version=4))

    def _new_exec_id(self) -> str:
        self.exec_counter += 1
        return str(uuid.UUID(bytes=self._digest("x", self.exec_counter), version=4))

    def _new_trade_id(self) -> str:
        self.trade_counter += 1
        return str(uuid.UUID(bytes=self._digest("t", self.trade_counter), version=4))

    # === operations: apply, journal, then publish ========================================

    @contextmanager
    def _operation(self) -> Iterator[_Op]:
        outer = self._op
        if outer is not None:  # nested call (e.g. the model inside advance): one operation
            yield outer
            return
        op = _Op()
        self._op = op
        try:
            yield op
        finally:
            self._op = None
        self._commit(op)

    def _commit(self, op: _Op) -> None:
        now = self.clock()
        # Messages are numbered before the journal records the counters, so a restart never
        # reuses an id; they are sent only after the journal write.
        outbox: list[tuple[str, str, bytes]] = []
        self._push_private(op, now, outbox)
        if self.journal is not None:
            self.journal.write_op(self, op.orders.values(), op.execs, op.coins, op.positions)
        for api_key, topic, message in outbox:
            self.on_private(api_key, topic, message)
        for key in sorted(op.books):
            self._publish_book(key, now)
        for key, entries in sorted(op.trades.items()):
            if self.wants(key[0], f"publicTrade.{key[1]}"):
                self.on_public(
                    key[0], f"publicTrade.{key[1]}", self.feeds[key].trades_message(entries, now)
                )

    def _private(
        self,
        api_key: str,
        topic: str,
        data: list[dict[str, Any]],
        now: int,
        outbox: list[tuple[str, str, bytes]],
    ) -> None:
        self.message_counter += 1
        message = {
            "id": f"{self.message_counter}",
            "topic": topic,
            "creationTime": now,
            "data": data,
        }
        outbox.append((api_key, topic, encode(message)))

    def _push_private(self, op: _Op, now: int, outbox: list[tuple[str, str, bytes]]) -> None:
        """One message per api key and topic, only where someone listens (formatting is
        most of an order's cost)."""
        wants = self.wants_private
        by_key: dict[str, list[Order]] = {}
        for order in op.orders.values():
            by_key.setdefault(order.api_key, []).append(order)
        for api_key, orders in sorted(by_key.items()):
            if wants(api_key, "order"):
                data = [order_ws(o, self.instruments[(o.category, o.symbol)]) for o in orders]
                self._private(api_key, "order", data, now, outbox)
        execs: dict[str, list[Execution]] = {}
        for ex in op.execs:
            execs.setdefault(ex.api_key, []).append(ex)
        for api_key, items in sorted(execs.items()):
            if wants(api_key, "execution"):
                data = [
                    execution_ws(ex, self.instruments[(ex.category, ex.symbol)]) for ex in items
                ]
                self._private(api_key, "execution", data, now, outbox)
        positions: dict[str, list[str]] = {}
        for api_key, symbol in sorted(op.positions):
            positions.setdefault(api_key, []).append(symbol)
        for api_key, symbols in positions.items():
            if wants(api_key, "position"):
                account = self.accounts[api_key]
                data = [self._position_ws(account, s) for s in symbols]
                self._private(api_key, "position", data, now, outbox)
        wallets: dict[str, list[str]] = {}
        for api_key, coin in sorted(op.coins):
            wallets.setdefault(api_key, []).append(coin)
        for api_key, coins in wallets.items():
            if wants(api_key, "wallet"):
                self._private(
                    api_key, "wallet", [self._wallet(self.accounts[api_key], coins)], now, outbox
                )

    def _publish_book(self, key: tuple[str, str], now: int) -> None:
        category, symbol = key
        book = self.books[key]
        feed = self.feeds[key]
        feed.cross_seq += 1
        message = feed.ob1(book, now)
        if message is not None and self.wants(category, f"orderbook.1.{symbol}"):
            self.on_public(category, f"orderbook.1.{symbol}", message)
        if self.wants(category, f"orderbook.50.{symbol}"):
            delta = feed.ob50_delta(book, now)
            if delta is not None:
                self.on_public(category, f"orderbook.50.{symbol}", delta)
        else:
            feed.invalidate50()

    # === helpers ========================================================================

    def account(self, api_key: str) -> Account:
        return self.accounts[api_key]

    def instrument(self, category: str, symbol: str) -> Instrument:
        if category not in CATEGORIES:
            raise VenueError(PARAMS, "Illegal category")
        inst = self.instruments.get((category, symbol))
        if inst is None:
            raise VenueError(PARAMS, "params error: symbol invalid")
        return inst

    def mid(self, category: str, symbol: str) -> Decimal:
        book = self.books.get((category, symbol))
        if book is None:
            return ZERO
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None:
            return (bid + ask) / 2
        feed = self.feeds[(category, symbol)]
        return bid or ask or feed.last_price or self.model.reference_price(symbol)

    def book_mid(self, category: str, symbol: str) -> Decimal | None:
        """The mid of a book with both sides, else None."""
        book = self.books.get((category, symbol))
        if book is None:
            return None
        bid, ask = book.best_bid(), book.best_ask()
        return None if bid is None or ask is None else (bid + ask) / 2

    def mark(self, symbol: str) -> Decimal:
        return self.mid("linear", symbol) if ("linear", symbol) in self.books else ZERO

    def usd_price(self, coin: str) -> Decimal:
        if coin in ("USDT", "USDC", "USD"):
            return ONE
        for symbol, base in self.base_of.items():
            if base == coin and self.quote_of[symbol] == "USDT":
                return (
                    self.mid("spot", symbol)
                    if ("spot", symbol) in self.books
                    else self.mark(symbol)
                )
        return ZERO

    def _touch_coin(self, account: Account, coin: str) -> Coin:
        if self._op is not None:
            self._op.coins.add((account.api_key, coin))
        return account.coin(coin)

    def _touch_order(self, order: Order) -> None:
        order.updated = self.clock()
        self.accounts[order.api_key].track(order)
        if self._op is not None:
            self._op.orders[order.order_id] = order

    def _touch_position(self, account: Account, symbol: str) -> Position:
        pos = account.positions.get(symbol)
        if pos is None:
            pos = account.position(symbol)
            pos.leverage = self.leverage_default
            pos.created = self.clock()
        if self._op is not None:
            self._op.positions.add((account.api_key, symbol))
        return pos

    def _dirty(self, key: tuple[str, str]) -> None:
        if self._op is not None:
            self._op.books.add(key)

    def _initial_margin(self, account: Account, *, exclude: Order | None = None) -> Decimal:
        """Margin held by linear positions and by orders that would grow them."""
        total = ZERO
        for pos in account.positions.values():
            if pos.size:
                total += abs(pos.size) * pos.avg_price / pos.leverage
        for order in account.open_orders.values():
            if order.category == "linear" and order is not exclude:
                total += self._order_margin(
                    account, order.symbol, order.side, order.leaves, order.price
                )
        return total

    def _order_margin(
        self, account: Account, symbol: str, side: str, qty: Decimal, price: Decimal
    ) -> Decimal:
        pos = account.positions.get(symbol)
        size = pos.size if pos is not None else ZERO
        leverage = pos.leverage if pos is not None else self.leverage_default
        closing = (
            min(qty, abs(size))
            if (size > 0 and side == "Sell") or (size < 0 and side == "Buy")
            else ZERO
        )
        return (qty - closing) * price / leverage

    def _available_usdt(self, account: Account, *, exclude: Order | None = None) -> Decimal:
        coin = account.coins.get("USDT")
        wallet = coin.wallet - coin.locked if coin is not None else ZERO
        upnl = ZERO
        for symbol, pos in account.positions.items():
            if pos.size:
                upnl += (self.mark(symbol) - pos.avg_price) * pos.size
        return wallet + min(upnl, ZERO) - self._initial_margin(account, exclude=exclude)

    # === client operations ==============================================================

    def create_order(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = str(params.get("category", ""))
        inst = self.instrument(category, str(params.get("symbol", "")))
        side = params.get("side")
        if side not in ("Buy", "Sell"):
            raise VenueError(PARAMS, "params error: side invalid")
        order_type = params.get("orderType")
        if order_type not in ("Limit", "Market"):
            raise VenueError(PARAMS, "params error: orderType invalid")
        tif = str(params.get("timeInForce") or "GTC")
        if tif not in ("GTC", "IOC", "FOK", "PostOnly"):
            raise VenueError(PARAMS, "params error: timeInForce invalid")
        if order_type == "Market":
            if tif == "PostOnly":
                raise VenueError(PARAMS, "params error: Market order cannot be PostOnly")
            tif = "IOC"  # "Market order will always use IOC"
        link_id = str(params.get("orderLinkId") or "")
        if link_id and not _LINK_ID_RE.match(link_id):
            raise VenueError(PARAMS, "params error: orderLinkId invalid")
        if link_id and f"{category}|{link_id}" in account.by_link:
            raise by_category("duplicate", category)
        qty = _decimal(params, "qty")
        assert qty is not None
        if qty <= 0:
            raise VenueError(PARAMS, "params error: qty invalid")
        price = _decimal(params, "price", required=order_type == "Limit")
        market_unit = str(params.get("marketUnit") or "")
        if market_unit not in ("", "baseCoin", "quoteCoin"):
            raise VenueError(PARAMS, "params error: marketUnit invalid")
        if category != "spot" or order_type != "Market":
            market_unit = ""  # only spot market orders have a unit
        elif not market_unit:
            market_unit = "quoteCoin" if side == "Buy" else "baseCoin"  # Bybit's default units
        reduce_only = category == "linear" and str(params.get("reduceOnly", "")).lower() == "true"
        if reduce_only:
            qty = self._reducible(account, inst.symbol, side, qty)
        self._check_open_limit(account, inst)
        book = self.books[(category, inst.symbol)]
        by_value = order_type == "Market" and market_unit == "quoteCoin"
        limit = price if order_type == "Limit" else self._market_cap(inst, book, side)
        self._validate_size(inst, order_type, qty, limit, by_value)
        if order_type == "Limit":
            assert price is not None
            if price <= 0 or not _on_grid(price, inst.tick_size):
                if category == "spot":
                    raise VenueError(170134, "Order price decimal too long.")
                raise VenueError(PARAMS, "params error: price invalid")
        now = self.clock()
        order = Order(
            order_id="",
            link_id=link_id,
            api_key=api_key,
            category=category,
            symbol=inst.symbol,
            side=side,
            order_type=order_type,
            tif=tif,
            price=limit if limit is not None else ZERO,
            qty=qty,
            market_unit=market_unit,
            leaves=ZERO if by_value else qty,
            reduce_only=reduce_only,
            created=now,
            updated=now,
            last_price_on_created=dec(self.feeds[(category, inst.symbol)].last_price),
        )
        with self._operation():
            self._reserve(account, inst, order, book)
            order.order_id = self._new_order_id(category)
            order.number = self.order_counter
            account.add_order(order)
            self._touch_order(order)
            self._execute(account, inst, book, order)
        return Reply(0, OK, {"orderId": order.order_id, "orderLinkId": order.link_id})

    def _reducible(self, account: Account, symbol: str, side: str, qty: Decimal) -> Decimal:
        """A reduce-only order may only shrink the position; Bybit cuts its qty to fit."""
        pos = account.positions.get(symbol)
        size = pos.size if pos is not None else ZERO
        closes = (size > 0 and side == "Sell") or (size < 0 and side == "Buy")
        if not closes:
            raise VenueError(110017, "current position is zero, cannot fix reduce-only order qty")
        return min(qty, abs(size))

    def _check_open_limit(self, account: Account, inst: Instrument) -> None:
        """500 active orders per symbol for linear, per account across symbols for spot."""
        if inst.category == "spot":
            count = sum(1 for o in account.open_orders.values() if o.category == "spot")
        else:
            count = sum(
                1
                for o in account.open_orders.values()
                if o.category == "linear" and o.symbol == inst.symbol
            )
        if count >= _MAX_OPEN_ORDERS:
            raise VenueError(110020, "Not allowed to have more than 500 active orders.")

    def _market_cap(self, inst: Instrument, book: Book, side: str) -> Decimal | None:
        """A market order is an IOC limit at the best opposite price ± the slippage cap."""
        slip = self.config.model.market_slippage
        tick = inst.tick_size
        if side == "Buy":
            ask = book.best_ask()
            return (
                None
                if ask is None
                else (ask * (ONE + slip) / tick).to_integral_value(ROUND_FLOOR) * tick
            )
        bid = book.best_bid()
        return (
            None
            if bid is None
            else (bid * (ONE - slip) / tick).to_integral_value(ROUND_CEILING) * tick
        )

    def _validate_size(
        self, inst: Instrument, order_type: str, qty: Decimal, price: Decimal | None, by_value: bool
    ) -> None:
        spot = inst.category == "spot"
        if by_value:
            if qty < inst.min_notional:
                raise VenueError(170140, "Order value exceeded lower limit.")
            return
        if not _on_grid(qty, inst.qty_step):
            if spot:
                raise VenueError(170137, "Order volume decimal too long")
            raise VenueError(110017, "orderQty will be truncated to zero")
        max_qty = inst.max_market_qty if order_type == "Market" else inst.max_qty
        if qty > max_qty:
            raise VenueError(
                PARAMS, "params error: The number of contracts exceeds maximum limit allowed"
            )
        if qty < inst.min_qty:
            if spot:
                raise VenueError(170136, "Order quantity lower than the minimum.")
            raise VenueError(
                PARAMS, "params error: The number of contracts below min limit allowed"
            )
        if price is not None and qty * price < inst.min_notional:
            if spot:
                raise VenueError(170140, "Order value exceeded lower limit.")
            raise VenueError(
                110094, f"Order does not meet minimum order value {dec(inst.min_notional)}USDT"
            )

    def _reserve(self, account: Account, inst: Instrument, order: Order, book: Book) -> None:
        """Check and lock the funds an order needs (spot) or its margin (linear)."""
        if inst.category == "linear":
            price = order.price if order.price else self.mark(inst.symbol)
            need = self._order_margin(account, inst.symbol, order.side, order.qty, price)
            if need > self._available_usdt(account):
                raise by_category("balance", "linear")
            return
        if order.side == "Buy":
            coin_name = inst.quote_coin
            by_value = order.market_unit == "quoteCoin"
            need = order.qty if by_value else order.qty * order.price
        else:
            coin_name = inst.base_coin
            if order.market_unit == "quoteCoin":
                bid = book.best_bid() or ONE
                need = (order.qty / (bid * (ONE - self.config.model.market_slippage))).quantize(
                    inst.qty_step, rounding=ROUND_CEILING
                )
            else:
                need = order.qty
        coin = account.coins.get(coin_name)
        if coin is None or coin.wallet - coin.locked < need:
            raise by_category("balance", "spot")
        coin = self._touch_coin(account, coin_name)
        coin.locked += need
        order.locked = need

    def _execute(
        self, account: Account, inst: Instrument, book: Book, order: Order, *, amended: bool = False
    ) -> None:
        """Match a new (or re-priced) order, then rest, cancel or reject what is left."""
        key = (inst.category, inst.symbol)
        crosses = self._crosses(book, order)
        if order.tif == "PostOnly" and crosses:
            # A new spot order is rejected; one already accepted (amended) is cancelled.
            rejected = inst.category == "spot" and not amended
            order.status = "Rejected" if rejected else "Cancelled"
            order.reject_reason = "EC_PostOnlyWillTakeLiquidity"
            order.leaves = ZERO
            self._release(account, inst, order)
            self._touch_order(order)
            self._touch_linear(account, inst)
            return
        if order.order_type == "Market" and order.price == 0:
            self._finish_unfilled(account, inst, order, "EC_NoImmediateQtyToFill")
            return
        if order.tif == "FOK" and self._fillable(book, order) < order.leaves:
            self._finish_unfilled(account, inst, order, "EC_CancelForNoFullFill")
            return
        if crosses:
            if order.market_unit == "quoteCoin" and order.side == "Buy":
                budget = order.qty - order.cum_value
                fills = book.match(order.side, order.price, value=budget, step=inst.qty_step)
            else:
                qty = self._taker_qty(inst, order, book)
                fills = book.match(order.side, order.price, qty=qty, step=inst.qty_step)
            self._dirty(key)
            for fill in fills:
                self._apply_fill(account, inst, order, fill.price, fill.qty, is_maker=False)
                if fill.maker is not None:
                    assert isinstance(fill.maker, Order)
                    maker_account = self.accounts[fill.maker.api_key]
                    self._apply_fill(
                        maker_account, inst, fill.maker, fill.price, fill.qty, is_maker=True
                    )
                self._print_trade(key, order.side, fill.price, fill.qty)
        if order.tif in ("GTC", "PostOnly") and order.order_type == "Limit" and order.leaves > 0:
            book.rest(order)
            self._dirty(key)
        elif order.is_open:
            self._close_taker(account, inst, order)
        self._touch_order(order)
        self._touch_linear(account, inst)

    def _fillable(self, book: Book, order: Order) -> Decimal:
        """Opposite liquidity an order could take at or inside its limit (for FOK)."""
        total = ZERO
        for price, size in book.top("Sell" if order.side == "Buy" else "Buy", 1000):
            if (order.side == "Buy" and price > order.price) or (
                order.side == "Sell" and price < order.price
            ):
                break
            total += size
        return total

    def _taker_qty(self, inst: Instrument, order: Order, book: Book) -> Decimal:
        if order.market_unit == "quoteCoin":  # spot sell by value: qty is in quote units
            bid = book.best_bid() or ONE
            return min(
                order.locked, (order.qty / bid).quantize(inst.qty_step, rounding=ROUND_FLOOR)
            )
        return order.leaves

    def _crosses(self, book: Book, order: Order) -> bool:
        if order.side == "Buy":
            ask = book.best_ask()
            return ask is not None and order.price >= ask
        bid = book.best_bid()
        return bid is not None and order.price <= bid

    def _close_taker(self, account: Account, inst: Instrument, order: Order) -> None:
        """End an IOC/market order after matching: filled, or cancelled with what is left."""
        by_value = order.market_unit == "quoteCoin" and order.side == "Buy"
        done = (
            order.cum_value + order.price * inst.qty_step > order.qty
            if by_value
            else order.leaves <= 0
        )
        if done:
            order.status = "Filled"
        elif order.cum_qty > 0:
            order.status = "PartiallyFilledCanceled" if inst.category == "spot" else "Cancelled"
        else:
            order.status = "Cancelled"
            order.reject_reason = "EC_NoImmediateQtyToFill"
        order.leaves = ZERO
        self._release(account, inst, order)

    def _finish_unfilled(
        self, account: Account, inst: Instrument, order: Order, reason: str
    ) -> None:
        order.status = "Cancelled"
        order.reject_reason = reason
        order.leaves = ZERO
        self._release(account, inst, order)
        self._touch_order(order)
        self._touch_linear(account, inst)

    def _release(self, account: Account, inst: Instrument, order: Order) -> None:
        """Give back whatever an order still has locked."""
        if order.locked > 0:
            coin_name = inst.quote_coin if order.side == "Buy" else inst.base_coin
            coin = self._touch_coin(account, coin_name)
            coin.locked -= order.locked
            order.locked = ZERO

    def _touch_linear(self, account: Account, inst: Instrument) -> None:
        """Bybit pushes a position message on every linear create/amend/cancel."""
        if inst.category == "linear":
            self._touch_position(account, inst.symbol)
            self._touch_coin(account, inst.quote_coin)

    def _apply_fill(
        self,
        account: Account,
        inst: Instrument,
        order: Order,
        price: Decimal,
        qty: Decimal,
        *,
        is_maker: bool,
    ) -> None:
        value = price * qty
        rate = inst.maker_fee if is_maker else inst.taker_fee
        if not is_maker and order.market_unit != "quoteCoin":
            order.leaves -= qty
        pnl = ZERO
        closed = ZERO
        if inst.category == "spot":
            base = self._touch_coin(account, inst.base_coin)
            quote = self._touch_coin(account, inst.quote_coin)
            if order.side == "Buy":
                fee = qty * rate  # a spot buy pays its fee in the base coin
                fee_coin = inst.base_coin
                base.wallet += qty - fee
                quote.wallet -= value
                unlock = value if order.market_unit == "quoteCoin" else order.price * qty
                unlock = min(unlock, order.locked)
                quote.locked -= unlock
                order.locked -= unlock
            else:
                fee = value * rate
                fee_coin = inst.quote_coin
                base.wallet -= qty
                unlock = min(qty, order.locked)
                base.locked -= unlock
                order.locked -= unlock
                quote.wallet += value - fee
        else:
            fee = value * rate
            fee_coin = inst.quote_coin
            pos = self._touch_position(account, inst.symbol)
            pnl, closed = _apply_to_position(pos, order.side, qty, price)
            settle = self._touch_coin(account, inst.quote_coin)
            settle.wallet += pnl - fee
            settle.cum_realised += pnl - fee
            pos.cur_realised += pnl - fee
            pos.cum_realised += pnl - fee
            pos.updated = self.clock()
            self.exec_seq += 1
            pos.seq = self.exec_seq
            order.closed_pnl += pnl - fee if closed else ZERO
        order.cum_qty += qty
        order.cum_value += value
        order.cum_fee += fee
        order.fee_coin = fee_coin
        if order.market_unit != "quoteCoin" and order.leaves <= 0:
            order.status = "Filled"
            if order.locked > 0:
                self._release(account, inst, order)
        elif order.status == "New":
            order.status = "PartiallyFilled"
        self._touch_order(order)
        self.exec_seq += 1
        ex = Execution(
            exec_id=self._new_exec_id(),
            api_key=account.api_key,
            category=inst.category,
            symbol=inst.symbol,
            order_id=order.order_id,
            link_id=order.link_id,
            side=order.side,
            order_type=order.order_type,
            order_price=order.price,
            order_qty=order.qty,
            leaves=max(order.leaves, ZERO),
            market_unit=order.market_unit,
            exec_type="Trade",
            exec_price=price,
            exec_qty=qty,
            exec_value=value,
            exec_fee=fee,
            fee_rate=rate,
            fee_coin=fee_coin,
            is_maker=is_maker,
            exec_time=self.clock(),
            seq=self.exec_seq,
            closed_size=closed,
            exec_pnl=pnl,
            mark_price=self.mark(inst.symbol) if inst.category == "linear" else ZERO,
        )
        account.executions.append(ex)
        if self._op is not None:
            self._op.execs.append(ex)

    def _print_trade(
        self, key: tuple[str, str], taker_side: str, price: Decimal, qty: Decimal
    ) -> None:
        feed = self.feeds[key]
        feed.cross_seq += 1
        entry = feed.trade_entry(taker_side, price, qty, self.clock(), self._new_trade_id())
        if self._op is not None:
            self._op.trades.setdefault(key, []).append(entry)

    def amend_order(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        inst, order = self._find_open(account, params)
        category = inst.category
        if order.order_type != "Limit":
            raise VenueError(PARAMS, "params error: only limit orders can be amended")
        new_qty = _decimal(params, "qty", required=False)
        new_price = _decimal(params, "price", required=False)
        if new_qty is None and new_price is None:
            raise VenueError(PARAMS, "params error: qty or price is required")
        qty = new_qty if new_qty is not None else order.qty
        price = new_price if new_price is not None else order.price
        if qty == order.qty and price == order.price:
            raise VenueError(
                PARAMS,
                "The order remains unchanged as the parameters entered match the existing ones.",
            )
        if not _on_grid(price, inst.tick_size) or price <= 0:
            if category == "spot":
                raise VenueError(170134, "Order price decimal too long.")
            raise VenueError(PARAMS, "params error: price invalid")
        self._validate_size(inst, "Limit", qty, price, by_value=False)
        if qty <= order.cum_qty:
            raise VenueError(PARAMS, "params error: qty must be greater than the filled qty")
        book = self.books[(category, inst.symbol)]
        with self._operation():
            self._relock(account, inst, order, qty, price)
            requeue = price != order.price or qty > order.qty
            if requeue:
                book.remove(order)
            order.qty = qty
            order.price = price
            order.leaves = qty - order.cum_qty
            self._touch_order(order)
            self._dirty((category, inst.symbol))
            if requeue:
                self._execute(account, inst, book, order, amended=True)
            else:
                self._touch_linear(account, inst)
        return Reply(0, OK, {"orderId": order.order_id, "orderLinkId": order.link_id})

    def _relock(
        self, account: Account, inst: Instrument, order: Order, qty: Decimal, price: Decimal
    ) -> None:
        leaves = qty - order.cum_qty
        if inst.category == "linear":
            need = self._order_margin(account, inst.symbol, order.side, leaves, price)
            if need > self._available_usdt(account, exclude=order):
                raise by_category("balance", "linear")
            return
        need = leaves * price if order.side == "Buy" else leaves
        coin_name = inst.quote_coin if order.side == "Buy" else inst.base_coin
        coin = account.coin(coin_name)
        if coin.wallet - coin.locked + order.locked < need:
            raise by_category("balance", "spot")
        coin = self._touch_coin(account, coin_name)
        coin.locked += need - order.locked
        order.locked = need

    def _find_open(self, account: Account, params: dict[str, Any]) -> tuple[Instrument, Order]:
        """The open order an amend or cancel names (by orderId, else orderLinkId)."""
        category = str(params.get("category", ""))
        inst = self.instrument(category, str(params.get("symbol", "")))
        order_id = str(params.get("orderId") or "")
        link_id = str(params.get("orderLinkId") or "")
        if not order_id and not link_id:
            raise VenueError(PARAMS, "params error: orderId or orderLinkId is required")
        order = account.find(category, order_id, link_id)
        if order is None or not order.is_open or order.symbol != inst.symbol:
            raise by_category("not_found", category)
        return inst, order

    def cancel_order(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        _, order = self._find_open(account, params)
        with self._operation():
            self._cancel(account, order)
        return Reply(0, OK, {"orderId": order.order_id, "orderLinkId": order.link_id})

    def _cancel(self, account: Account, order: Order) -> None:
        inst = self.instruments[(order.category, order.symbol)]
        self.books[(order.category, order.symbol)].remove(order)
        self._dirty((order.category, order.symbol))
        order.status = (
            "PartiallyFilledCanceled" if inst.category == "spot" and order.cum_qty else "Cancelled"
        )
        order.cancel_type = "CancelByUser"
        order.leaves = ZERO
        self._release(account, inst, order)
        self._touch_order(order)
        self._touch_linear(account, inst)

    def cancel_all(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = str(params.get("category", ""))
        if category not in CATEGORIES:
            raise VenueError(PARAMS, "Illegal category")
        symbol = str(params.get("symbol") or "")
        base = str(params.get("baseCoin") or "")
        settle = str(params.get("settleCoin") or "")
        if category == "linear" and not (symbol or base or settle):
            raise VenueError(PARAMS, "params error: symbol, baseCoin or settleCoin is required")
        cancelled = []
        with self._operation():
            for order in list(account.open_orders.values()):
                if order.category != category:
                    continue
                if symbol and order.symbol != symbol:
                    continue
                if base and self.base_of.get(order.symbol) != base:
                    continue
                if settle and self.quote_of.get(order.symbol) != settle:
                    continue
                self._cancel(account, order)
                cancelled.append({"orderId": order.order_id, "orderLinkId": order.link_id})
        return Reply(0, OK, {"list": cancelled, "success": "1"})

    # --- queries ------------------------------------------------------------------------

    def _orders_matching(
        self, account: Account, params: dict[str, Any], category: str
    ) -> list[Order]:
        order_id = str(params.get("orderId") or "")
        link_id = str(params.get("orderLinkId") or "")
        symbol = str(params.get("symbol") or "")
        if order_id or link_id:
            found = account.find(category, order_id, link_id)
            return [found] if found is not None else []
        try:
            start = int(params.get("startTime") or 0)
            end = int(params.get("endTime") or 0)
        except ValueError:
            raise VenueError(PARAMS, "params error: startTime or endTime invalid") from None
        return [
            o
            for o in reversed(account.orders)
            if o.category == category
            and (not symbol or o.symbol == symbol)
            and o.created >= start
            and (not end or o.created <= end)
        ]

    def open_orders(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = _category(params)
        if category == "linear" and not any(
            params.get(k) for k in ("symbol", "baseCoin", "settleCoin", "orderId", "orderLinkId")
        ):
            raise VenueError(PARAMS, "params error: symbol, baseCoin or settleCoin is required")
        open_only = str(params.get("openOnly", "0"))
        by_id = bool(params.get("orderId") or params.get("orderLinkId"))
        if open_only == "0" and not by_id:
            symbol = str(params.get("symbol") or "")
            orders = [
                o
                for o in reversed(account.open_orders.values())
                if o.category == category and (not symbol or o.symbol == symbol)
            ]
        else:
            orders = self._orders_matching(account, params, category)
        if open_only != "0":
            orders = [o for o in orders if not o.is_open][:500]
        return self._order_page(orders, params, category, order_rest)

    def order_history(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = _category(params)
        orders = self._orders_matching(account, params, category)
        status = str(params.get("orderStatus") or "")
        if status:
            orders = [o for o in orders if o.status == status]
        return self._order_page(orders, params, category, order_history)

    def _order_page(
        self,
        orders: list[Order],
        params: dict[str, Any],
        category: str,
        shape: Callable[[Order, Instrument], dict[str, Any]],
    ) -> Reply:
        page, cursor = _page(orders, params, default=20, maximum=50)
        items = [shape(o, self.instruments[(o.category, o.symbol)]) for o in page]
        return Reply(0, OK, {"list": items, "nextPageCursor": cursor, "category": category})

    def executions(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = _category(params)
        symbol = str(params.get("symbol") or "")
        order_id = str(params.get("orderId") or "")
        link_id = str(params.get("orderLinkId") or "")
        exec_type = str(params.get("execType") or "")
        try:
            start = int(params.get("startTime") or 0)
            end = int(params.get("endTime") or 0)
        except ValueError:
            raise VenueError(PARAMS, "params error: startTime or endTime invalid") from None
        found = [
            ex
            for ex in reversed(account.executions)
            if ex.category == category
            and (not symbol or ex.symbol == symbol)
            and (not order_id or ex.order_id == order_id)
            and (not link_id or ex.link_id == link_id)
            and (not exec_type or ex.exec_type == exec_type)
            and (not start or ex.exec_time >= start)
            and (not end or ex.exec_time <= end)
        ]
        page, cursor = _page(found, params, default=50, maximum=100)
        items = [execution_rest(ex, self.instruments[(ex.category, ex.symbol)]) for ex in page]
        return Reply(0, OK, {"nextPageCursor": cursor, "category": category, "list": items})

    def positions(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = _category(params)
        if category != "linear":
            raise VenueError(PARAMS, "Illegal category")
        symbol = str(params.get("symbol") or "")
        settle = str(params.get("settleCoin") or "")
        if not symbol and not settle:
            raise VenueError(PARAMS, "params error: symbol or settleCoin is required")
        if symbol:
            self.instrument("linear", symbol)
            symbols = [symbol]
        else:
            symbols = [
                s for s, p in account.positions.items() if p.size and self.quote_of.get(s) == settle
            ]
        items = []
        for name in symbols:
            pos = account.positions.get(name) or Position(
                symbol=name, leverage=self.leverage_default
            )
            items.append(position_rest(pos, self.instruments[("linear", name)], self.mark(name)))
        page, cursor = _page(items, params, default=20, maximum=200)
        return Reply(0, OK, {"list": page, "nextPageCursor": cursor, "category": "linear"})

    def _position_ws(self, account: Account, symbol: str) -> dict[str, Any]:
        pos = account.position(symbol)
        return position_ws(pos, self.instruments[("linear", symbol)], self.mark(symbol))

    def set_leverage(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        category = _category(params)
        if category != "linear":
            raise VenueError(PARAMS, "Illegal category")
        symbol = str(params.get("symbol") or "")
        self.instrument("linear", symbol)
        buy = _decimal(params, "buyLeverage")
        sell = _decimal(params, "sellLeverage")
        assert buy is not None and sell is not None
        if buy != sell:
            raise VenueError(
                PARAMS, "params error: buy leverage must equal sell leverage in one-way mode"
            )
        if not ONE <= buy <= 100:
            raise VenueError(PARAMS, "params error: leverage invalid")
        pos = account.positions.get(symbol)
        current = pos.leverage if pos is not None else self.leverage_default
        if buy == current:
            raise VenueError(110043, "Set leverage has not been modified.")
        with self._operation():
            pos = self._touch_position(account, symbol)
            pos.leverage = buy
            pos.updated = self.clock()
        return Reply(0, OK, {})

    def account_info(self, api_key: str) -> Reply:
        return Reply(
            0,
            OK,
            {
                "marginMode": "REGULAR_MARGIN",
                "updatedTime": "0",
                "unifiedMarginStatus": 5,
                "dcpStatus": "OFF",
                "timeWindow": 10,
                "smpGroup": 0,
                "isMasterTrader": False,
                "spotHedgingStatus": "OFF",
            },
        )

    def _wallet(self, account: Account, coins: list[str]) -> dict[str, Any]:
        upnl: dict[str, Decimal] = {}
        for symbol, pos in account.positions.items():
            if pos.size:
                coin = self.quote_of[symbol]
                upnl[coin] = upnl.get(coin, ZERO) + (self.mark(symbol) - pos.avg_price) * pos.size
        prices = {c: self.usd_price(c) for c in coins}
        im = ZERO
        for symbol, pos in account.positions.items():
            if pos.size:
                im += abs(pos.size) * self.mark(symbol) / pos.leverage
        return wallet_account(account, coins, prices, upnl, im)

    def wallet_balance(self, api_key: str, params: dict[str, Any]) -> Reply:
        account = self.accounts[api_key]
        if params.get("accountType") != "UNIFIED":
            raise VenueError(PARAMS, "accountType only support UNIFIED.")
        wanted = [c for c in str(params.get("coin") or "").split(",") if c]
        coins = wanted or sorted(
            c for c, v in account.coins.items() if v.wallet != 0 or v.locked != 0
        )
        return Reply(0, OK, {"list": [self._wallet(account, coins)]})

    def fee_rate(self, api_key: str, params: dict[str, Any]) -> Reply:
        category = _category(params)
        symbol = str(params.get("symbol") or "")
        rows = []
        for (cat, name), inst in self.instruments.items():
            if cat != category or (symbol and name != symbol):
                continue
            row: dict[str, Any] = {"symbol": name}
            if cat == "spot":
                row["baseCoin"] = ""
            row["takerFeeRate"] = dec(inst.taker_fee)
            row["makerFeeRate"] = dec(inst.maker_fee)
            rows.append(row)
        if symbol and not rows:
            raise VenueError(PARAMS, "params error: symbol invalid")
        result: dict[str, Any] = {"list": rows}
        if category == "spot":
            result = {"category": "spot", "list": rows}
        return Reply(0, OK, result)

    # --- public market data -------------------------------------------------------------

    def instruments_info(self, params: dict[str, Any]) -> Reply:
        category = _category(params)
        symbol = str(params.get("symbol") or "")
        rows = [
            _instrument_row(inst, self.config.model.funding_interval_s)
            for (cat, name), inst in self.instruments.items()
            if cat == category and (not symbol or name == symbol)
        ]
        result: dict[str, Any] = {"category": category, "list": rows}
        if category == "linear":
            result["nextPageCursor"] = ""
        return Reply(0, OK, result)

    def orderbook(self, params: dict[str, Any]) -> Reply:
        category = _category(params)
        inst = self.instrument(category, str(params.get("symbol") or ""))
        default = 1 if category == "spot" else 25
        try:
            limit = int(params.get("limit") or default)
        except ValueError:
            raise VenueError(PARAMS, "params error: limit invalid") from None
        if not 1 <= limit <= 1000:
            raise VenueError(PARAMS, "params error: limit invalid")
        key = (category, inst.symbol)
        book = self.books[key]
        feed = self.feeds[key]
        now = self.clock()

        def levels(side: str) -> list[list[str]]:
            return [
                [f"{p:.{inst.price_places}f}", f"{s:.{inst.qty_places}f}"]
                for p, s in book.top(side, limit)
            ]

        result = {
            "s": inst.symbol,
            "a": levels("Sell"),
            "b": levels("Buy"),
            "ts": now,
            "u": feed.cross_seq,  # Bybit's follows its 1000-level stream; ours counts changes
            "seq": feed.cross_seq,
            "cts": now,
        }
        return Reply(0, OK, result)

    def _funding_fields(self) -> dict[str, str]:
        hours = self.config.model.funding_interval_s / 3600
        return {
            "fundingIntervalHour": dec(Decimal(str(hours))),
            "nextFundingTime": str(self.next_funding_ms),
            "fundingRate": dec(self.config.model.funding_rate),
        }

    def _ticker(self, key: tuple[str, str]) -> dict[str, Any]:
        category, symbol = key
        mark = self.mid(category, symbol)
        index = self.mid("spot", symbol) if ("spot", symbol) in self.books else mark
        return self.feeds[key].ticker_fields(self.books[key], mark, index, self._funding_fields())

    def tickers(self, params: dict[str, Any]) -> Reply:
        category = _category(params)
        symbol = str(params.get("symbol") or "")
        rows = []
        for key, inst in self.instruments.items():
            if key[0] != category or (symbol and key[1] != symbol):
                continue
            row = self._ticker(key)
            if category == "spot":
                book = self.books[key]
                bid, ask = book.top("Buy", 1), book.top("Sell", 1)
                row = {
                    "symbol": inst.symbol,
                    "bid1Price": f"{bid[0][0]:.{inst.price_places}f}" if bid else "",
                    "bid1Size": f"{bid[0][1]:.{inst.qty_places}f}" if bid else "",
                    "ask1Price": f"{ask[0][0]:.{inst.price_places}f}" if ask else "",
                    "ask1Size": f"{ask[0][1]:.{inst.qty_places}f}" if ask else "",
                    **{k: v for k, v in row.items() if k != "symbol"},
                }
            rows.append(row)
        if symbol and not rows:
            raise VenueError(PARAMS, "params error: symbol invalid")
        return Reply(0, OK, {"category": category, "list": rows})

    def server_time(self) -> Reply:
        now = self.clock()
        return Reply(0, OK, {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})

    # --- subscriptions ------------------------------------------------------------------

    def snapshot_for(self, category: str, topic: str) -> bytes | None:
        """The first message a new subscriber to ``topic`` gets (``None``: wait for data)."""
        parts = topic.split(".")
        key = (category, parts[-1])
        if key not in self.books:
            return None
        now = self.clock()
        feed = self.feeds[key]
        book = self.books[key]
        if parts[0] == "orderbook" and parts[1] == "1":
            return feed.ob1_for_subscriber(book, now)
        if parts[0] == "orderbook" and parts[1] == "50":
            return feed.ob50_snapshot(book, now)
        if parts[0] == "tickers":
            return feed.ticker_message(self._ticker(key), now, snapshot=True)
        return None

    def has_topic(self, category: str, topic: str) -> bool:
        parts = topic.split(".")
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1] in ("1", "50"):
            return (category, parts[2]) in self.books
        if len(parts) == 2 and parts[0] in ("publicTrade", "tickers"):
            return (category, parts[1]) in self.books
        return False

    # === the admin API's operations =====================================================

    def set_book(
        self,
        category: str,
        symbol: str,
        bids: list[tuple[Decimal, Decimal]],
        asks: list[tuple[Decimal, Decimal]],
    ) -> None:
        """Replace one book's background liquidity; user orders stay where they are."""
        inst = self.check_book(category, symbol, bids, asks)
        with self._operation():
            self.replace_background(inst, bids, asks)

    def check_book(
        self,
        category: str,
        symbol: str,
        bids: list[tuple[Decimal, Decimal]],
        asks: list[tuple[Decimal, Decimal]],
    ) -> Instrument:
        """The instrument, if every level of a new book is on its grid (else a VenueError)."""
        inst = self.instrument(category, symbol)
        for price, size in (*bids, *asks):
            if price <= 0 or size < 0 or not _on_grid(price, inst.tick_size):
                raise VenueError(PARAMS, f"level {price} {size} is not on the instrument's grid")
        return inst

    def replace_background(
        self,
        inst: Instrument,
        bids: list[tuple[Decimal, Decimal]],
        asks: list[tuple[Decimal, Decimal]],
    ) -> None:
        """New background levels; user orders they cross trade first (the users were there)."""
        key = (inst.category, inst.symbol)
        book = self.books[key]
        wanted = {"Buy": dict(bids), "Sell": dict(asks)}
        for side, levels in wanted.items():
            current = book.background(side)
            for price in current:
                if price not in levels:
                    book.set_background(side, price, ZERO)
            for price, size in levels.items():
                if current.get(price) != size:
                    book.set_background(side, price, size)
        self._uncross(inst, book)
        self._dirty(key)

    def update_background(
        self, inst: Instrument, changes: list[tuple[str, Decimal, Decimal]]
    ) -> None:
        """Set background sizes level by level (the market model's incremental path)."""
        key = (inst.category, inst.symbol)
        book = self.books[key]
        for side, price, size in changes:
            book.set_background(side, price, size)
        self._uncross(inst, book)
        self._dirty(key)

    def _uncross(self, inst: Instrument, book: Book) -> None:
        """Background that arrived through resting user orders fills them as makers."""
        if not book.users:
            return
        key = (inst.category, inst.symbol)
        for maker_side, taker_side in (("Buy", "Sell"), ("Sell", "Buy")):
            nearest = _best_background(book, "Sell" if maker_side == "Buy" else "Buy")
            if nearest is None:
                continue
            for level in book.side(maker_side).walk():
                if (maker_side == "Buy" and level.price < nearest) or (
                    maker_side == "Sell" and level.price > nearest
                ):
                    break
                if not level.orders:
                    continue
                for order in list(level.orders):
                    assert isinstance(order, Order)
                    while order.leaves > 0:
                        taken = _take_crossing_background(
                            book, taker_side, level.price, order.leaves, inst.qty_step
                        )
                        if taken is None:
                            break
                        _, qty = taken
                        order.leaves -= qty
                        if order.leaves <= 0:
                            book.remove(order)
                        account = self.accounts[order.api_key]
                        self._apply_fill(account, inst, order, order.price, qty, is_maker=True)
                        self._print_trade(key, taker_side, order.price, qty)
                        self._touch_linear(account, inst)

    def print_trade(
        self, category: str, symbol: str, side: str, price: Decimal, qty: Decimal
    ) -> list[Fill]:
        """An outside taker trades through the book (and user orders) up to ``price``."""
        inst = self.instrument(category, symbol)
        if side not in ("Buy", "Sell"):
            raise VenueError(PARAMS, "side must be Buy or Sell")
        with self._operation():
            return self.taker_trade(inst, side, price, qty)

    def taker_trade(self, inst: Instrument, side: str, price: Decimal, qty: Decimal) -> list[Fill]:
        key = (inst.category, inst.symbol)
        book = self.books[key]
        fills = book.match(side, price, qty=qty, step=inst.qty_step)
        if not fills:
            return fills
        self._dirty(key)
        for fill in fills:
            if fill.maker is not None:
                assert isinstance(fill.maker, Order)
                account = self.accounts[fill.maker.api_key]
                self._apply_fill(account, inst, fill.maker, fill.price, fill.qty, is_maker=True)
                self._touch_linear(account, inst)
            self._print_trade(key, side, fill.price, fill.qty)
        return fills

    def all_orders(self) -> list[dict[str, Any]]:
        out = []
        everything = [o for a in self.accounts.values() for o in a.orders]
        everything.sort(key=lambda o: o.number)
        for order in everything:
            inst = self.instruments[(order.category, order.symbol)]
            row = order_history(order, inst)
            row = {k: row[k] for k in _ADMIN_ORDER_FIELDS}
            row["category"] = order.category
            row["apiKey"] = order.api_key
            out.append(row)
        return out

    def all_accounts(self) -> list[dict[str, Any]]:
        out = []
        for account in self.accounts.values():
            balances = {
                name: {"walletBalance": dec(c.wallet), "locked": dec(c.locked)}
                for name, c in sorted(account.coins.items())
            }
            positions = [
                {
                    "category": "linear",
                    "symbol": pos.symbol,
                    "side": pos.side,
                    "size": dec(abs(pos.size)),
                    "avgPrice": dec(pos.avg_price),
                }
                for pos in account.positions.values()
                if pos.size
            ]
            out.append({"apiKey": account.api_key, "balances": balances, "positions": positions})
        return out

    def adjust_balance(self, api_key: str | None, coin: str, delta: Decimal) -> None:
        account = self._admin_account(api_key)
        with self._operation():
            self._touch_coin(account, coin).wallet += delta

    def set_position(self, api_key: str | None, symbol: str, side: str, size: Decimal) -> None:
        account = self._admin_account(api_key)
        self.instrument("linear", symbol)
        if side not in ("Buy", "Sell", "") or size < 0:
            raise VenueError(PARAMS, "side must be Buy, Sell or empty and size not negative")
        with self._operation():
            pos = self._touch_position(account, symbol)
            signed = size if side == "Buy" else -size
            if signed and (pos.size == 0 or pos.avg_price == 0):
                pos.avg_price = self.mark(symbol)
            pos.size = signed
            if not signed:
                pos.avg_price = ZERO
            pos.updated = self.clock()

    def _admin_account(self, api_key: str | None) -> Account:
        key = api_key or next(iter(self.accounts))
        account = self.accounts.get(key)
        if account is None:
            raise VenueError(10003, "API key is invalid.")
        return account

    def skip_u(self, category: str, symbol: str) -> None:
        self.feeds[(category, symbol)].skip_next_u = True

    # === time ============================================================================

    def advance(self) -> None:
        """Run everything due up to the clock: model steps, funding, periodic re-sends."""
        now = self.clock()
        with self._operation():
            if not self.frozen:
                self.model.run_until(now)
            if now >= self.next_funding_ms:
                self._settle_funding()
                self.next_funding_ms = self._next_funding_after(now)
        if self.journal is not None and not self.frozen and now - self.model_saved_ms >= 1000:
            self.model_saved_ms = now
            self.journal.write_model(self.model.state())
        if now - self.last_ticker_ms >= TICKER_MS:
            self.last_ticker_ms = now
            self._publish_tickers(now)
        for key, feed in self.feeds.items():
            if feed.last1 is not None and now - feed.last1_ms >= OB1_RESEND_MS:
                topic = f"orderbook.1.{key[1]}"
                message = feed.ob1_snapshot(now)
                if self.wants(key[0], topic):
                    self.on_public(key[0], topic, message)

    def _publish_tickers(self, now: int) -> None:
        for key in self.instruments:
            topic = f"tickers.{key[1]}"
            if not self.wants(key[0], topic):
                continue
            message = self.feeds[key].ticker_message(self._ticker(key), now, snapshot=False)
            if message is not None:
                self.on_public(key[0], topic, message)

    def _next_funding_after(self, now: int) -> int:
        interval = self.config.model.funding_interval_s * 1000
        return (now // interval + 1) * interval

    def _settle_funding(self) -> None:
        rate = self.config.model.funding_rate
        for account in self.accounts.values():
            for symbol, pos in account.positions.items():
                if not pos.size:
                    continue
                inst = self.instruments[("linear", symbol)]
                mark = self.mark(symbol)
                payment = pos.size * mark * rate  # > 0: the position pays
                settle = self._touch_coin(account, inst.quote_coin)
                settle.wallet -= payment
                settle.cum_realised -= payment
                pos.cum_realised -= payment
                pos.cur_realised -= payment
                self._touch_position(account, symbol)
                pos.updated = self.clock()
                self.exec_seq += 1
                pos.seq = self.exec_seq
                ex = Execution(
                    exec_id=self._new_exec_id(),
                    api_key=account.api_key,
                    category="linear",
                    symbol=symbol,
                    order_id="",
                    link_id="",
                    side=pos.side,
                    order_type="UNKNOWN",
                    order_price=ZERO,
                    order_qty=ZERO,
                    leaves=ZERO,
                    market_unit="",
                    exec_type="Funding",
                    exec_price=mark,
                    exec_qty=abs(pos.size),
                    exec_value=abs(pos.size) * mark,
                    exec_fee=payment,
                    fee_rate=rate,
                    fee_coin=inst.quote_coin,
                    is_maker=False,
                    exec_time=self.clock(),
                    seq=self.exec_seq,
                    mark_price=mark,
                )
                account.executions.append(ex)
                if self._op is not None:
                    self._op.execs.append(ex)


_ADMIN_ORDER_FIELDS = (
    "orderId",
    "orderLinkId",
    "symbol",
    "side",
    "orderType",
    "timeInForce",
    "price",
    "qty",
    "cumExecQty",
    "avgPrice",
    "orderStatus",
    "rejectReason",
    "createdTime",
    "updatedTime",
)


def _category(params: dict[str, Any]) -> str:
    category = str(params.get("category") or "")
    if category not in CATEGORIES:
        raise VenueError(PARAMS, "Illegal category")
    return category


def _page(
    items: list[Any], params: dict[str, Any], *, default: int, maximum: int
) -> tuple[list[Any], str]:
    """Cursor pagination: the cursor is the offset of the next page."""
    try:
        limit = int(params.get("limit") or default)
        start = int(params.get("cursor") or 0)
    except ValueError:
        raise VenueError(PARAMS, "params error: limit or cursor invalid") from None
    if not 1 <= limit <= maximum or start < 0:
        raise VenueError(PARAMS, "params error: limit invalid")
    page = items[start : start + limit]
    cursor = str(start + limit) if start + limit < len(items) else ""
    return page, cursor


def _apply_to_position(
    pos: Position, side: str, qty: Decimal, price: Decimal
) -> tuple[Decimal, Decimal]:
    """One-way position arithmetic; returns (realised PnL before fees, closed size)."""
    signed = qty if side == "Buy" else -qty
    size = pos.size
    if size == 0 or (size > 0) == (signed > 0):
        total = abs(size) + qty
        pos.avg_price = (abs(size) * pos.avg_price + qty * price) / total
        pos.size = size + signed
        return ZERO, ZERO
    closed = min(qty, abs(size))
    direction = ONE if size > 0 else -ONE
    pnl = (price - pos.avg_price) * closed * direction
    pos.size = size + signed
    if pos.size == 0:
        pos.avg_price = ZERO
    elif (pos.size > 0) != (size > 0):  # flipped: the rest opens at this price
        pos.avg_price = price
    return pnl, closed


def _best_background(book: Book, side: str) -> Decimal | None:
    """The best price on one side that has background liquidity (user orders aside)."""
    for level in book.side(side).scan():
        if level.background > 0:
            return level.price
    return None


def _take_crossing_background(
    book: Book, taker_side: str, limit: Decimal, want: Decimal, step: Decimal
) -> tuple[Decimal, Decimal] | None:
    """Remove up to ``want`` background that crosses a user order priced at ``limit``, in
    whole ``step``s (a user order never fills off its lot grid; a smaller remnant is dropped).

    A user bid is crossed by background asks at or below it (they act as a taker sell),
    a user ask by background bids at or above it (a taker buy); best prices go first.
    """
    book_side = "Sell" if taker_side == "Sell" else "Buy"
    for level in book.side(book_side).walk():
        if (taker_side == "Sell" and level.price > limit) or (
            taker_side == "Buy" and level.price < limit
        ):
            return None
        qty = whole_lots(min(want, level.background), step)
        if qty <= 0:  # less than a lot: it trades elsewhere rather than cross the book
            book.set_background(book_side, level.price, ZERO)
            continue
        book.set_background(book_side, level.price, level.background - qty)
        return level.price, qty
    return None


def _instrument_row(inst: Instrument, funding_interval_s: int) -> dict[str, Any]:
    if inst.category == "spot":
        return {
            "symbolId": 0,
            "symbol": inst.symbol,
            "baseCoin": inst.base_coin,
            "quoteCoin": inst.quote_coin,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "utaOnly",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": dec(inst.qty_step),
                "quotePrecision": "0.0000001",
                "minOrderQty": dec(inst.min_qty),
                "maxOrderQty": dec(inst.max_qty),
                "minOrderAmt": dec(inst.min_notional),
                "maxOrderAmt": "8000000",
                "maxLimitOrderQty": dec(inst.max_qty),
                "maxMarketOrderQty": dec(inst.max_market_qty),
                "postOnlyMaxLimitOrderSize": "60000",
            },
            "priceFilter": {"tickSize": dec(inst.tick_size)},
            "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"},
            "symbolType": "",
        }
    return {
        "symbol": inst.symbol,
        "symbolId": 0,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": inst.base_coin,
        "quoteCoin": inst.quote_coin,
        "launchTime": "1585526400000",
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(inst.price_places),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {
            "minPrice": f"{inst.tick_size:.{inst.price_places}f}",
            "maxPrice": f"{Decimal(1999999) * inst.tick_size * 10:.{inst.price_places}f}",
            "tickSize": f"{inst.tick_size:.{inst.price_places}f}",
        },
        "lotSizeFilter": {
            "maxOrderQty": f"{inst.max_qty:.{inst.qty_places}f}",
            "minOrderQty": f"{inst.min_qty:.{inst.qty_places}f}",
            "qtyStep": f"{inst.qty_step:.{inst.qty_places}f}",
            "postOnlyMaxOrderQty": f"{inst.max_qty:.{inst.qty_places}f}",
            "maxMktOrderQty": f"{inst.max_market_qty:.{inst.qty_places}f}",
            "minNotionalValue": dec(inst.min_notional),
        },
        "unifiedMarginTrade": True,
        "fundingInterval": funding_interval_s // 60,
        "settleCoin": inst.quote_coin,
        "copyTrading": "both",
        "upperFundingRate": "0.00375",
        "lowerFundingRate": "-0.00375",
        "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        "symbolType": "",
    }

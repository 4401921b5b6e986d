"""Property tests of the exchange simulator's money safety (``exchange_sim.engine.Exchange``).

``SimMachine`` drives the in-process engine (frozen market model, manual clock) with a small
config: two instruments with spot and linear legs on different grids, and two accounts with
modest balances, so orders run into insufficient balance, minimums, grids and maximums. Its
rules script books (``set_book``), place Limit GTC/PostOnly/IOC/FOK and Market orders (both
categories, both sides, spot market orders by base or quote unit, linear reduce-only, reused
orderLinkIds, sizes on and off the grid), amend (price and/or quantity), cancel (by id, by
link, unknown ids, closed orders), cancel all, print outside taker trades, advance the clock
(also to a funding boundary), let the market model run for a while (unfreeze, advance,
freeze: it re-centres the books through resting orders and its takers trade) and, rarely,
set a position or adjust a balance.

Every request is checked against an oracle of the faults it certainly has (the order must be
refused, with one of those faults' Bybit codes) and the faults it may have (margin, market
caps): a refused request must carry one of the expected codes, change nothing and push
nothing; a request without any fault must be accepted.

After every step (``Driver.check``):

1. coins: ``locked >= 0``; ``wallet - locked >= 0`` for the base coins (spot only); ``locked``
   equals the sum of ``order.locked`` over the account's open spot orders locking that coin;
2. orders: ``cum_qty``, ``leaves``, ``locked`` never negative; base-unit orders have
   ``cum_qty + leaves == qty`` while open and ``cum_qty <= qty`` (quote-unit market orders:
   ``cum_value <= qty``); closed orders have ``leaves == locked == 0``; Filled means
   ``cum_qty == qty``; FOK fills all or nothing; only Limit GTC/PostOnly orders stay open;
   order ids are unique; the open-order index is exactly the open orders;
3. books: an order rests in the book iff it is an open Limit order (``Level.orders`` and
   ``Book.users``), at its own price and side, with ``0 <= ahead <= background``; no empty
   level is kept; price lists are sorted; the book is never crossed (best bid < best ask);
4. conservation: each account's wallet of each coin equals its start plus what its
   ``execution`` messages say (spot: base and quote legs with the fee in the right coin;
   linear: ``execPnl - execFee``; funding: ``-execFee``) plus admin adjustments, and each
   linear position equals the signed sum of its executions (or the admin's ``set_position``);
5. executions: ``execQty > 0``; ``execValue == execPrice * execQty``; the fee is the maker or
   taker rate of the right base; limit prices are respected; PostOnly fills are maker fills and
   IOC/FOK/Market fills taker fills; per order the executions add up to ``cum_qty``;
6. the private stream: an order's status never goes from closed back to open and its
   ``cumExecQty`` never shrinks; the latest ``order`` message of every order is the order as it
   is now, and the latest ``wallet``/``position`` messages agree with the balances and
   positions (nothing changes without being pushed).

``test_journal_round_trips`` is a plain property: random operation sequences on an exchange
with a journal, then a new exchange replaying the same file (twice: the compacted file too)
has identical orders, accounts, coins, positions, executions and id counters (queue positions
aside), its first book does not trade with the restored orders, and it carries on (the same
operations again) with unique ids and every invariant above.

The engine bugs the properties found (fixed in 1430423) are pinned down by the regression
tests at the end.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import Phase, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from exchange_sim.config import AccountSpec, InstrumentSpec, LegSpec, ModelSpec, SimConfig
from exchange_sim.engine import Exchange
from exchange_sim.errors import PARAMS, VenueError
from exchange_sim.journal import Journal
from exchange_sim.state import Instrument, Order
from exchange_sim.wire import order_ws

D = Decimal
ZERO = D(0)
T0 = 1_700_000_000_000
A = "acct-a"
B = "acct-b"
KEYS = (A, B)
SYMBOLS = ("XUSDT", "YUSDT")
CATEGORIES = ("spot", "linear")
BASE_COINS = ("X", "Y")
COINS = ("USDT", "X", "Y")
OPEN = frozenset({"New", "PartiallyFilled"})
CLOSED = frozenset({"Filled", "Cancelled", "Rejected", "PartiallyFilledCanceled"})
# Quantity of one "lot" of each book: order and level sizes are drawn in lots.
LOT = {
    ("spot", "XUSDT"): D("0.1"),
    ("linear", "XUSDT"): D("0.5"),
    ("spot", "YUSDT"): D("4"),
    ("linear", "YUSDT"): D("20"),
}
PRICE = {"XUSDT": D("100"), "YUSDT": D("2.5")}
# Bybit's codes each request may answer with (docs/simulator.md, exchange_sim/errors.py).
CREATE_CODES = {
    "spot": {PARAMS, 170131, 170134, 170136, 170137, 170140, 170141},
    "linear": {PARAMS, 110007, 110017, 110072, 110094},
}
AMEND_CODES = {
    "spot": {PARAMS, 170131, 170134, 170136, 170137, 170140, 170213},
    "linear": {PARAMS, 110001, 110007, 110017, 110094},
}
POST_ONLY_REASON = "EC_PostOnlyWillTakeLiquidity"
NOT_FOUND = {"spot": 170213, "linear": 110001}
BALANCE = {"spot": 170131, "linear": 110007}
DUPLICATE = {"spot": 170141, "linear": 110072}
PRICE_GRID = {"spot": 170134, "linear": PARAMS}
QTY_GRID = {"spot": 170137, "linear": 110017}
MIN_QTY = {"spot": 170136, "linear": PARAMS}
MIN_VALUE = {"spot": 170140, "linear": 110094}


def sim_config() -> SimConfig:
    """Two instruments on different grids, two accounts with modest balances (B has no Y)."""
    x = InstrumentSpec(
        symbol="XUSDT",
        base_coin="X",
        quote_coin="USDT",
        price=PRICE["XUSDT"],
        level_size=D("2"),
        spot=LegSpec(
            tick_size=D("0.1"),
            qty_step=D("0.001"),
            min_qty=D("0.01"),
            min_notional=D("1"),
            max_qty=D("40"),
            max_market_qty=D("20"),
        ),
        linear=LegSpec(
            tick_size=D("0.1"),
            qty_step=D("0.01"),
            min_qty=D("0.01"),
            min_notional=D("5"),
            max_qty=D("60"),
            max_market_qty=D("30"),
        ),
    )
    y = InstrumentSpec(
        symbol="YUSDT",
        base_coin="Y",
        quote_coin="USDT",
        price=PRICE["YUSDT"],
        level_size=D("60"),
        spot=LegSpec(
            tick_size=D("0.001"),
            qty_step=D("0.01"),
            min_qty=D("0.5"),
            min_notional=D("1"),
            max_qty=D("5000"),
            max_market_qty=D("2000"),
        ),
        linear=LegSpec(
            tick_size=D("0.001"),
            qty_step=D("1"),
            min_qty=D("1"),
            min_notional=D("5"),
            max_qty=D("10000"),
            max_market_qty=D("5000"),
        ),
    )
    accounts = [
        AccountSpec(
            api_key=A,
            api_secret="a-secret",
            balances={"USDT": D("1500"), "X": D("6"), "Y": D("400")},
        ),
        AccountSpec(api_key=B, api_secret="b-secret", balances={"USDT": D("600"), "X": D("2")}),
    ]
    # a thin first book (three levels a side): the rules script the rest
    return SimConfig(instruments=[x, y], accounts=accounts, model=ModelSpec(depth_levels=3))


# === operations =========================================================================


@dataclass(frozen=True)
class SetBook:
    category: str
    symbol: str
    shift: int  # best bid, in ticks from the instrument's price
    spread: int  # ticks from the best bid to the best ask
    gap: int  # ticks between levels
    bids: tuple[int, ...]  # sizes in lots, best first
    asks: tuple[int, ...]


@dataclass(frozen=True)
class Place:
    key: str
    category: str
    symbol: str
    side: str
    kind: str  # GTC, PostOnly, IOC, FOK or Market
    offset: int  # limit price in ticks from the book's reference (its scripted best bid)
    price_mode: str  # grid, off (half a tick off the grid) or zero
    size: str  # lots, off, min, below_min, max, above_max, zero or negative
    lots: int
    steps: int  # extra qty steps on top of the lots
    unit: str  # marketUnit ("" for the default)
    reduce_only: bool
    link: str  # orderLinkId ("" for none), from a small pool so that some are duplicates


@dataclass(frozen=True)
class Amend:
    pick: int  # index into the open orders (or, with ``closed_too``, every order created)
    closed_too: bool
    by_link: bool
    offset: int | None  # new price in ticks from the reference, None: keep
    price_mode: str
    size: str | None  # lots, off, filled, down, same; None: keep
    lots: int
    steps: int


@dataclass(frozen=True)
class Cancel:
    pick: int
    closed_too: bool
    by_link: bool
    unknown: bool  # an order id the venue never issued


@dataclass(frozen=True)
class CancelAll:
    key: str
    category: str
    scope: str  # symbol, base, settle or none


@dataclass(frozen=True)
class Trade:
    category: str
    symbol: str
    side: str  # the outside taker's side
    offset: int  # the taker's limit, in ticks from the reference
    lots: int
    steps: int


@dataclass(frozen=True)
class Advance:
    ms: int | None  # None: to the next funding time


@dataclass(frozen=True)
class RunModel:
    ms: int  # unfreeze the market model, let it run this long, freeze it again


@dataclass(frozen=True)
class SetPosition:
    key: str
    symbol: str
    side: str  # Buy, Sell, or "" (flat)
    lots: int


@dataclass(frozen=True)
class Adjust:
    key: str
    coin: str
    percent: int  # < 0: that share of the available balance; > 0: that many tenths of a unit


Op = (
    SetBook | Place | Amend | Cancel | CancelAll | Trade | Advance | RunModel | SetPosition | Adjust
)

keys = st.sampled_from(KEYS)
categories = st.sampled_from(CATEGORIES)
symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from(("Buy", "Sell"))
price_modes = st.sampled_from(("grid",) * 12 + ("off", "zero"))
place_sizes = st.sampled_from(
    ("lots",) * 10 + ("off", "min", "below_min", "max", "above_max", "zero", "negative")
)
amend_sizes = st.sampled_from((None, None, "lots", "lots", "off", "filled", "down", "same"))
links = st.sampled_from(("",) * 6 + ("l1", "l2", "l3"))

set_book_ops = st.builds(
    SetBook,
    category=categories,
    symbol=symbols,
    shift=st.integers(-12, 12),
    spread=st.integers(1, 3),
    gap=st.integers(1, 2),
    bids=st.lists(st.integers(1, 12), max_size=4).map(tuple),
    asks=st.lists(st.integers(1, 12), max_size=4).map(tuple),
)


def place_ops(category: st.SearchStrategy[str], *, plain: bool = False) -> st.SearchStrategy[Place]:
    """Orders of every kind; ``plain`` ones have valid sizes and prices and no link."""
    return st.builds(
        Place,
        key=keys,
        category=category,
        symbol=symbols,
        side=sides,
        kind=st.sampled_from(("GTC", "GTC", "PostOnly", "IOC", "FOK", "Market", "Market")),
        offset=st.integers(-6, 8),
        price_mode=st.just("grid") if plain else price_modes,
        size=st.just("lots") if plain else place_sizes,
        lots=st.integers(1, 30),
        steps=st.integers(0, 9),
        unit=st.sampled_from(("", "", "baseCoin", "quoteCoin")),
        reduce_only=st.just(False) if plain else st.sampled_from((False,) * 5 + (True,)),
        link=st.just("") if plain else links,
    )


amend_ops = st.builds(
    Amend,
    pick=st.integers(0, 1000),
    closed_too=st.sampled_from((False, False, False, True)),
    by_link=st.booleans(),
    offset=st.none() | st.integers(-6, 8),
    price_mode=price_modes,
    size=amend_sizes,
    lots=st.integers(1, 30),
    steps=st.integers(0, 9),
)
cancel_ops = st.builds(
    Cancel,
    pick=st.integers(0, 1000),
    closed_too=st.sampled_from((False, False, False, True)),
    by_link=st.booleans(),
    unknown=st.sampled_from((False,) * 9 + (True,)),
)
cancel_all_ops = st.builds(
    CancelAll,
    key=keys,
    category=categories,
    scope=st.sampled_from(("symbol", "base", "settle", "none")),
)
trade_ops = st.builds(
    Trade,
    category=categories,
    symbol=symbols,
    side=sides,
    offset=st.integers(-6, 8),
    lots=st.integers(1, 40),
    steps=st.integers(0, 9),
)
advance_ops = st.builds(Advance, ms=st.sampled_from((0, 1, 250, 3100, 60_000, None)))
run_model_ops = st.builds(RunModel, ms=st.sampled_from((100, 300, 1000)))
set_position_ops = st.builds(
    SetPosition,
    key=keys,
    symbol=symbols,
    side=st.sampled_from(("Buy", "Sell", "")),
    lots=st.integers(1, 10),
)
adjust_ops = st.builds(
    Adjust, key=keys, coin=st.sampled_from(COINS), percent=st.integers(-100, 100)
)
admin_ops: st.SearchStrategy[SetPosition | Adjust] = set_position_ops | adjust_ops
any_op: st.SearchStrategy[Op] = st.one_of(
    set_book_ops,
    place_ops(categories),
    place_ops(categories),
    amend_ops,
    cancel_ops,
    cancel_all_ops,
    trade_ops,
    advance_ops,
    run_model_ops,
    admin_ops,
)


# === the driver: applies operations, checks replies and invariants ======================


def event(text: str) -> None:
    """Coverage statistics (``--hypothesis-show-statistics``); a no-op outside a test run."""
    if currently_in_test_context():
        hypothesis_event(text)


def _num(value: Decimal) -> str:
    return format(value, "f")


def _normal(value: Any) -> Any:
    """A value as it reads back from a JSON message."""
    return msgspec.json.decode(msgspec.json.encode(value))


class Driver:
    """One exchange with a manual clock, its captured private stream, and what the stream
    says the balances and positions must be."""

    def __init__(
        self, config: SimConfig, *, journal_path: Path | None = None, t0: int = T0, seed: int = 7
    ) -> None:
        self.t = [t0]
        self.journal = Journal(journal_path) if journal_path is not None else None
        self.private: list[tuple[str, str, bytes]] = []
        self.ex = Exchange(
            config, seed=seed, clock=lambda: self.t[0], frozen=True, journal=self.journal
        )
        self.ex.on_private = lambda key, topic, msg: self.private.append((key, topic, msg))
        self.read = 0
        ex = self.ex
        self.ref: dict[tuple[str, str], int] = {}
        for key, inst in ex.instruments.items():
            bid = ex.books[key].best_bid()
            price = bid if bid is not None else PRICE[key[1]]
            self.ref[key] = int(price / inst.tick_size)
        # every order ever created: (api key, category, symbol, orderId, orderLinkId)
        self.known: list[tuple[str, str, str, str, str]] = [
            (o.api_key, o.category, o.symbol, o.order_id, o.link_id)
            for o in sorted(
                (o for a in ex.accounts.values() for o in a.orders), key=lambda o: o.number
            )
        ]
        # what the private stream (plus admin changes) says the state must be
        self.wallets: dict[tuple[str, str], Decimal] = {}
        self.pushed_coins: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        for api_key, account in ex.accounts.items():
            for coin, c in account.coins.items():
                self.wallets[(api_key, coin)] = c.wallet
                self.pushed_coins[(api_key, coin)] = (c.wallet, c.locked)
        self.positions: dict[tuple[str, str], Decimal] = {
            (api_key, symbol): pos.size
            for api_key, account in ex.accounts.items()
            for symbol, pos in account.positions.items()
        }
        self.pushed_positions: dict[tuple[str, str], Decimal] = dict(self.positions)
        self.exec_ids: set[str] = set()
        self.exec_qty: dict[str, Decimal] = {}
        for account in ex.accounts.values():
            for x in account.executions:
                self.exec_ids.add(x.exec_id)
                if x.order_id:
                    self.exec_qty[x.order_id] = self.exec_qty.get(x.order_id, ZERO) + x.exec_qty
        self.last_order: dict[str, tuple[str, dict[str, Any]]] = {
            o.order_id: (o.api_key, _normal(order_ws(o, self.inst(o.category, o.symbol))))
            for a in ex.accounts.values()
            for o in a.orders
        }
        # orders to compare with their latest message at the next check (besides open ones)
        self.watch: set[str] = set(self.last_order)
        self.fee_rates = {
            key: (inst.maker_fee, inst.taker_fee) for key, inst in ex.instruments.items()
        }

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    # --- helpers -------------------------------------------------------------------------

    def inst(self, category: str, symbol: str) -> Instrument:
        return self.ex.instruments[(category, symbol)]

    def order(self, order_id: str) -> Order:
        for account in self.ex.accounts.values():
            found = account.by_id.get(order_id)
            if found is not None:
                return found
        raise AssertionError(f"no order {order_id}")

    def pick(self, n: int, *, closed_too: bool) -> tuple[str, str, str, str, str]:
        """The ``n``-th open order (modulo), or of all orders when none is open."""
        live = [k for k in self.known if k[3] in self.ex.accounts[k[0]].open_orders]
        pool = live if live and not closed_too else self.known
        return pool[n % len(pool)]

    def price(self, inst: Instrument, offset: int, mode: str) -> Decimal:
        ticks = self.ref[(inst.category, inst.symbol)] + offset
        if mode == "zero":
            return ZERO
        price = max(ticks, 1) * inst.tick_size
        return price + inst.tick_size / 2 if mode == "off" else price

    def qty(self, inst: Instrument, size: str, lots: int, steps: int, *, market: bool) -> Decimal:
        lot = LOT[(inst.category, inst.symbol)]
        step = inst.qty_step
        cap = inst.max_market_qty if market else inst.max_qty
        return {
            "lots": lots * lot + steps * step,
            "off": lots * lot + step / 2,
            "min": inst.min_qty,
            "below_min": inst.min_qty - step,
            "max": cap,
            "above_max": cap + step,
            "zero": ZERO,
            "negative": -lot,
        }[size]

    def fingerprint(self) -> Any:
        """Everything a refused request must leave alone."""
        ex = self.ex
        books = [
            (key, book.users, book.top("Buy", 100), book.top("Sell", 100))
            for key, book in ex.books.items()
        ]
        accounts = {
            k: (
                msgspec.to_builtins((a.coins, a.positions)),
                len(a.orders),
                len(a.executions),
                [
                    (o.order_id, o.status, o.price, o.qty, o.leaves, o.cum_qty, o.locked, o.ahead)
                    for o in a.open_orders.values()
                ],
            )
            for k, a in ex.accounts.items()
        }
        counters = (ex.order_counter, ex.exec_counter, ex.exec_seq, ex.trade_counter)
        return books, accounts, counters

    def refused(
        self,
        request: str,
        exc: VenueError,
        *,
        allowed: set[int],
        faults: set[int],
        maybe: set[int],
        before: Any,
        pushed: int,
        what: object,
    ) -> None:
        event(f"{request} refused {exc.code}")
        assert exc.code in allowed, (exc.code, exc.message, what)
        assert exc.code in faults | maybe, (exc.code, exc.message, faults, maybe, what)
        assert self.fingerprint() == before, ("a refused request changed the state", what)
        assert len(self.private) == pushed, ("a refused request pushed messages", what)

    # --- operations ----------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        self.drain()  # what came before an admin override (set_position) counts before it
        handler: Callable[[Any], None] = getattr(self, f"_{type(op).__name__.lower()}")
        handler(op)

    def _setbook(self, op: SetBook) -> None:
        inst = self.inst(op.category, op.symbol)
        tick = inst.tick_size
        lot = LOT[(op.category, op.symbol)]
        best_bid = int(PRICE[op.symbol] / tick) + op.shift
        bids = [((best_bid - i * op.gap) * tick, n * lot) for i, n in enumerate(op.bids)]
        asks = [
            ((best_bid + op.spread + i * op.gap) * tick, n * lot) for i, n in enumerate(op.asks)
        ]
        self.ex.set_book(op.category, op.symbol, bids=bids, asks=asks)
        self.ref[(op.category, op.symbol)] = best_bid

    def _place(self, op: Place) -> None:
        ex = self.ex
        spot = op.category == "spot"
        inst = self.inst(op.category, op.symbol)
        account = ex.accounts[op.key]
        market = op.kind == "Market"
        unit = op.unit if spot and market else ""
        default_unit = "quoteCoin" if op.side == "Buy" else "baseCoin"  # Bybit's defaults
        by_value = spot and market and (unit or default_unit) == "quoteCoin"
        if by_value:  # quote units: about ten quote per lot
            lot_value = LOT[(op.category, op.symbol)] * PRICE[op.symbol]
            qty = {
                "zero": ZERO,
                "negative": -lot_value,
                "below_min": inst.min_notional - D("0.01"),
                "min": inst.min_notional,
            }.get(op.size, op.lots * lot_value + op.steps * D("0.01"))
        else:
            qty = self.qty(inst, op.size, op.lots, op.steps, market=market)
        price = None if market else self.price(inst, op.offset, op.price_mode)
        params: dict[str, Any] = {
            "category": op.category,
            "symbol": op.symbol,
            "side": op.side,
            "orderType": "Market" if market else "Limit",
            "qty": _num(qty),
        }
        if price is not None:
            params["price"] = _num(price)
            params["timeInForce"] = op.kind
        if op.unit:
            params["marketUnit"] = op.unit
        if op.reduce_only:
            params["reduceOnly"] = "true"
        if op.link:
            params["orderLinkId"] = op.link

        # the oracle: faults the request certainly has, and those it may have
        faults: set[int] = set()
        maybe: set[int] = set()
        cat = op.category
        if op.link and f"{cat}|{op.link}" in account.by_link:
            faults.add(DUPLICATE[cat])
        if qty <= 0:
            faults.add(PARAMS)
        size_faults: set[int] = set()
        if by_value:
            if qty < inst.min_notional:
                size_faults.add(MIN_VALUE[cat])
        else:
            if qty % inst.qty_step != 0:
                size_faults.add(QTY_GRID[cat])
            if qty > (inst.max_market_qty if market else inst.max_qty):
                size_faults.add(PARAMS)
            if qty < inst.min_qty:
                size_faults.add(MIN_QTY[cat])
            if price is not None and qty * price < inst.min_notional:
                size_faults.add(MIN_VALUE[cat])
            if market:  # the minimum value is checked at the market order's price cap
                maybe.add(MIN_VALUE[cat])
        reduce_only = cat == "linear" and op.reduce_only
        if reduce_only:
            pos = account.positions.get(op.symbol)
            size = pos.size if pos is not None else ZERO
            if not ((size > 0 and op.side == "Sell") or (size < 0 and op.side == "Buy")):
                faults.add(110017)
            # the quantity is cut to the position first: any size fault may or may not remain
            maybe |= size_faults | {PARAMS, MIN_QTY[cat], MIN_VALUE[cat], QTY_GRID[cat]}
        else:
            faults |= size_faults
        if price is not None and (price <= 0 or price % inst.tick_size != 0):
            faults.add(PRICE_GRID[cat])
        if spot:
            need: Decimal | None = None
            if not market and price is not None:
                need = qty * price if op.side == "Buy" else qty
            elif by_value == (op.side == "Buy"):  # market buy by value, market sell by base
                need = qty
            coin = account.coins.get(inst.quote_coin if op.side == "Buy" else inst.base_coin)
            if need is None:
                maybe.add(BALANCE[cat])
            elif coin is None or coin.wallet - coin.locked < need:
                faults.add(BALANCE[cat])
        else:
            maybe.add(BALANCE[cat])

        before = self.fingerprint()
        pushed = len(self.private)
        try:
            reply = ex.create_order(op.key, params)
        except VenueError as exc:
            self.refused(
                "create",
                exc,
                allowed=CREATE_CODES[cat],
                faults=faults,
                maybe=maybe,
                before=before,
                pushed=pushed,
                what=params,
            )
            return
        assert not faults, ("accepted an order it had to refuse", faults, params)
        assert reply.code == 0
        order_id = reply.result["orderId"]
        assert isinstance(order_id, str)
        order = account.by_id[order_id]
        assert (order.category, order.symbol, order.side) == (cat, op.symbol, op.side)
        self.known.append((op.key, cat, op.symbol, order_id, op.link))
        event(f"{cat} {op.kind} -> {order.status}")

    def _amend(self, op: Amend) -> None:
        if not self.known:
            return
        api_key, cat, symbol, order_id, link = self.pick(op.pick, closed_too=op.closed_too)
        inst = self.inst(cat, symbol)
        account = self.ex.accounts[api_key]
        order = account.by_id[order_id]
        params: dict[str, Any] = {"category": cat, "symbol": symbol}
        if op.by_link and link:
            params["orderLinkId"] = link
        else:
            params["orderId"] = order_id
        new_price = None if op.offset is None else self.price(inst, op.offset, op.price_mode)
        step = inst.qty_step
        new_qty: Decimal | None
        if op.size is None:
            new_qty = None
        elif op.size == "filled":
            new_qty = order.cum_qty
        elif op.size == "down":
            half = (order.qty - order.cum_qty) / 2
            new_qty = order.cum_qty + (half / step).to_integral_value(ROUND_FLOOR) * step
        elif op.size == "same":
            new_qty = order.qty
        else:
            new_qty = self.qty(inst, op.size, op.lots, op.steps, market=False)
        if new_price is not None:
            params["price"] = _num(new_price)
        if new_qty is not None:
            params["qty"] = _num(new_qty)

        faults: set[int] = set()
        maybe: set[int] = set()
        target = account.find(cat, params.get("orderId", ""), params.get("orderLinkId", ""))
        if target is not order:  # a link names the first order that used it
            assert target is not None and "orderLinkId" in params
            order = target
        if not order.is_open:
            faults.add(NOT_FOUND[cat])
        elif new_qty is None and new_price is None:
            faults.add(PARAMS)
        else:
            qty = new_qty if new_qty is not None else order.qty
            price = new_price if new_price is not None else order.price
            if qty == order.qty and price == order.price:
                faults.add(PARAMS)
            if price <= 0 or price % inst.tick_size != 0:
                faults.add(PRICE_GRID[cat])
            if qty % step != 0:
                faults.add(QTY_GRID[cat])
            if qty > inst.max_qty:
                faults.add(PARAMS)
            if qty < inst.min_qty:
                faults.add(MIN_QTY[cat])
            if qty * price < inst.min_notional:
                faults.add(MIN_VALUE[cat])
            if qty <= order.cum_qty:
                faults.add(PARAMS)
            if cat == "spot":
                leaves = qty - order.cum_qty
                need = leaves * price if order.side == "Buy" else leaves
                coin = account.coins.get(inst.quote_coin if order.side == "Buy" else inst.base_coin)
                available = (coin.wallet - coin.locked if coin is not None else ZERO) + (
                    order.locked
                )
                if available < need:
                    faults.add(BALANCE[cat])
            else:
                maybe.add(BALANCE[cat])

        before = self.fingerprint()
        pushed = len(self.private)
        try:
            self.ex.amend_order(api_key, params)
        except VenueError as exc:
            self.refused(
                "amend",
                exc,
                allowed=AMEND_CODES[cat],
                faults=faults,
                maybe=maybe,
                before=before,
                pushed=pushed,
                what=params,
            )
            return
        assert not faults, ("accepted an amend it had to refuse", faults, params)
        event(f"amend {cat} {order.tif} -> {order.status}")

    def _cancel(self, op: Cancel) -> None:
        if not self.known:
            return
        api_key, cat, symbol, order_id, link = self.pick(op.pick, closed_too=op.closed_too)
        account = self.ex.accounts[api_key]
        params: dict[str, Any] = {"category": cat, "symbol": symbol}
        if op.unknown:
            params["orderId"] = "4242"
        elif op.by_link and link:
            params["orderLinkId"] = link
        else:
            params["orderId"] = order_id
        order = account.find(cat, params.get("orderId", ""), params.get("orderLinkId", ""))
        faults = set() if order is not None and order.is_open else {NOT_FOUND[cat]}
        before = self.fingerprint()
        pushed = len(self.private)
        try:
            self.ex.cancel_order(api_key, params)
        except VenueError as exc:
            self.refused(
                "cancel",
                exc,
                allowed={NOT_FOUND[cat]},
                faults=faults,
                maybe=set(),
                before=before,
                pushed=pushed,
                what=params,
            )
            return
        assert not faults, ("cancelled an order that is not open", params)
        assert order is not None and not order.is_open
        assert order.status in ("Cancelled", "PartiallyFilledCanceled")
        event(f"cancel {cat} -> {order.status}")

    def _cancelall(self, op: CancelAll) -> None:
        params: dict[str, Any] = {"category": op.category}
        if op.scope == "symbol":
            params["symbol"] = "XUSDT"
        elif op.scope == "base":
            params["baseCoin"] = "Y"
        elif op.scope == "settle":
            params["settleCoin"] = "USDT"
        must_fail = op.category == "linear" and op.scope == "none"
        before = self.fingerprint()
        pushed = len(self.private)
        try:
            reply = self.ex.cancel_all(op.key, params)
        except VenueError as exc:
            self.refused(
                "cancel-all",
                exc,
                allowed={PARAMS},
                faults={PARAMS} if must_fail else set(),
                maybe=set(),
                before=before,
                pushed=pushed,
                what=params,
            )
            return
        assert not must_fail, params
        assert reply.code == 0
        left = [
            o
            for o in self.ex.accounts[op.key].open_orders.values()
            if o.category == op.category
            and (op.scope != "symbol" or o.symbol == "XUSDT")
            and (op.scope != "base" or o.symbol == "YUSDT")
        ]
        assert not left, ("cancel-all left orders open", params, left)

    def _trade(self, op: Trade) -> None:
        inst = self.inst(op.category, op.symbol)
        price = self.price(inst, op.offset, "grid")
        qty = op.lots * LOT[(op.category, op.symbol)] + op.steps * inst.qty_step
        fills = self.ex.print_trade(op.category, op.symbol, op.side, price, qty)
        assert sum((f.qty for f in fills), ZERO) <= qty
        for fill in fills:
            assert fill.qty > 0
            assert fill.price <= price if op.side == "Buy" else fill.price >= price

    def _advance(self, op: Advance) -> None:
        if op.ms is None:
            self.t[0] = max(self.t[0], self.ex.next_funding_ms)
        else:
            self.t[0] += op.ms
        self.ex.advance()

    def _runmodel(self, op: RunModel) -> None:
        """What ``/sim/unfreeze`` and ``/sim/freeze`` do, with time passing in between: the
        model re-centres the books (through resting orders) and its takers trade."""
        ex = self.ex
        ex.frozen = False
        ex.model.resume(self.t[0])
        self.t[0] += op.ms
        ex.advance()
        ex.frozen = True
        for key, inst in ex.instruments.items():
            bid = ex.books[key].best_bid()
            if bid is not None:
                self.ref[key] = int(bid / inst.tick_size)

    def _setposition(self, op: SetPosition) -> None:
        size = op.lots * LOT[("linear", op.symbol)] if op.side else ZERO
        self.ex.set_position(op.key, op.symbol, op.side, size)
        self.positions[(op.key, op.symbol)] = -size if op.side == "Sell" else size

    def _adjust(self, op: Adjust) -> None:
        coin = self.ex.accounts[op.key].coin(op.coin)
        if op.percent >= 0:
            unit = {"USDT": D("10"), "X": D("0.1"), "Y": D("4")}[op.coin]
            delta = op.percent * unit / 10
        else:
            available = max(coin.wallet - coin.locked, ZERO)
            delta = -(available * -op.percent / 100).quantize(D("0.001"), rounding=ROUND_FLOOR)
        self.ex.adjust_balance(op.key, op.coin, delta)
        wallet = self.wallets.get((op.key, op.coin), ZERO)
        self.wallets[(op.key, op.coin)] = wallet + delta

    # --- the private stream --------------------------------------------------------------

    def drain(self) -> None:
        """Read the new private messages: status transitions, executions, what was pushed."""
        while self.read < len(self.private):
            api_key, topic, raw = self.private[self.read]
            self.read += 1
            message = json.loads(raw)
            assert message["topic"] == topic
            for data in message["data"]:
                if topic == "order":
                    self._order_message(api_key, data)
                elif topic == "execution":
                    self._execution_message(api_key, data)
                elif topic == "wallet":
                    for row in data["coin"]:
                        self.pushed_coins[(api_key, row["coin"])] = (
                            D(row["walletBalance"]),
                            D(row["locked"]),
                        )
                elif topic == "position":
                    size = D(data["size"])
                    self.pushed_positions[(api_key, data["symbol"])] = (
                        -size if data["side"] == "Sell" else size
                    )

    def _order_message(self, api_key: str, data: dict[str, Any]) -> None:
        order_id = data["orderId"]
        status = data["orderStatus"]
        assert status in OPEN | CLOSED, data
        previous = self.last_order.get(order_id)
        if previous is not None:
            assert previous[0] == api_key
            old = previous[1]
            assert not (old["orderStatus"] in CLOSED and status in OPEN), (
                "an order reopened",
                old,
                data,
            )
            assert D(data["cumExecQty"]) >= D(old["cumExecQty"]), (old, data)
        self.last_order[order_id] = (api_key, data)
        self.watch.add(order_id)

    def _execution_message(self, api_key: str, data: dict[str, Any]) -> None:
        exec_id = data["execId"]
        assert exec_id not in self.exec_ids, ("execution pushed twice", data)
        self.exec_ids.add(exec_id)
        category = data["category"]
        symbol = data["symbol"]
        inst = self.inst(category, symbol)
        qty = D(data["execQty"])
        price = D(data["execPrice"])
        value = D(data["execValue"])
        fee = D(data["execFee"])
        assert qty > 0, data
        wallet = self.wallets
        if data["execType"] == "Funding":
            assert category == "linear" and not data["orderId"]
            key = (api_key, inst.quote_coin)
            wallet[key] = wallet.get(key, ZERO) - fee
            return
        assert data["execType"] == "Trade", data
        order = self.order(data["orderId"])
        assert order.api_key == api_key
        assert value == price * qty, data
        assert price % inst.tick_size == 0 and qty % inst.qty_step == 0, data
        maker_rate, taker_rate = self.fee_rates[(category, symbol)]
        rate = maker_rate if data["isMaker"] else taker_rate
        assert D(data["feeRate"]) == rate, data
        if order.tif == "PostOnly":
            assert data["isMaker"], ("a PostOnly order took liquidity", data)
        if order.tif in ("IOC", "FOK") or order.order_type == "Market":
            assert not data["isMaker"], ("an IOC/FOK/market order made liquidity", data)
        limit = D(data["orderPrice"])
        if limit > 0:  # a limit (or a market order's cap) is never traded through
            assert price <= limit if data["side"] == "Buy" else price >= limit, data
        self.exec_qty[order.order_id] = self.exec_qty.get(order.order_id, ZERO) + qty
        self.watch.add(order.order_id)
        base = (api_key, inst.base_coin)
        quote = (api_key, inst.quote_coin)
        if category == "spot":
            if data["side"] == "Buy":  # the fee is paid in the base coin
                assert (data["feeCurrency"], fee) == (inst.base_coin, qty * rate), data
                wallet[base] = wallet.get(base, ZERO) + (qty - fee)
                wallet[quote] = wallet.get(quote, ZERO) - value
            else:  # ... in the quote coin
                assert (data["feeCurrency"], fee) == (inst.quote_coin, value * rate), data
                wallet[base] = wallet.get(base, ZERO) - qty
                wallet[quote] = wallet.get(quote, ZERO) + (value - fee)
        else:
            assert (data["feeCurrency"], fee) == (inst.quote_coin, value * rate), data
            pnl = D(data["execPnl"])
            wallet[quote] = wallet.get(quote, ZERO) + (pnl - fee)
            signed = qty if data["side"] == "Buy" else -qty
            self.positions[(api_key, symbol)] = self.positions.get((api_key, symbol), ZERO) + signed

    # --- invariants ----------------------------------------------------------------------

    def check(self) -> None:
        self.drain()
        self.check_state()
        self.check_stream()

    def check_state(self) -> None:
        """Invariants of the state alone (they hold after a restart too)."""
        ex = self.ex
        ids = [o.order_id for a in ex.accounts.values() for o in a.orders]
        assert len(ids) == len(set(ids)), "an order id was issued twice"
        for api_key, account in ex.accounts.items():
            locks: dict[str, Decimal] = {}
            for order in account.orders:
                self._check_order(order)
                if order.is_open and order.category == "spot":
                    inst = self.inst(order.category, order.symbol)
                    locking = inst.quote_coin if order.side == "Buy" else inst.base_coin
                    locks[locking] = locks.get(locking, ZERO) + order.locked
            assert set(account.open_orders) == {o.order_id for o in account.orders if o.is_open}
            for name, coin in account.coins.items():
                where = (api_key, name, coin)
                assert coin.locked >= 0, where
                assert coin.locked == locks.get(name, ZERO), ("locked != orders' locks", where)
                if name in BASE_COINS:
                    assert coin.wallet - coin.locked >= 0, ("base coin overdrawn", where)
            assert set(locks) <= set(account.coins), (api_key, locks)
        for key in ex.books:
            self._check_book(key)

    def _check_order(self, order: Order) -> None:
        where = (order.order_id, order.category, order.order_type, order.tif, order.status)
        assert order.status in OPEN | CLOSED, where
        assert order.cum_qty >= 0 and order.cum_value >= 0, where
        assert order.leaves >= 0 and order.locked >= 0, where
        by_quote = order.market_unit == "quoteCoin"
        if by_quote:
            assert order.cum_value <= order.qty, (where, order.cum_value, order.qty)
        else:
            assert order.cum_qty <= order.qty, (where, order.cum_qty, order.qty)
        if order.is_open:
            assert order.order_type == "Limit" and order.tif in ("GTC", "PostOnly"), where
            assert order.cum_qty + order.leaves == order.qty, (where, order.cum_qty, order.leaves)
            assert order.leaves > 0, where
        else:
            assert order.leaves == 0 and order.locked == 0, (where, order.leaves, order.locked)
        if order.status == "Filled" and not by_quote:
            assert order.cum_qty == order.qty, where
        if order.tif == "FOK":
            assert order.cum_qty in (ZERO, order.qty), ("FOK partly filled", where)

    def _check_book(self, key: tuple[str, str]) -> None:
        ex = self.ex
        book = ex.books[key]
        resting: list[Order] = []
        for side_name, side in (("Buy", book.bids), ("Sell", book.asks)):
            assert side.prices == sorted(side.levels), (key, side_name, side.prices)
            for price, level in side.levels.items():
                where = (key, side_name, price)
                assert level.price == price, where
                assert level.background >= 0, where
                assert not level.empty(), ("an empty level is kept", where)
                for rest in level.orders:
                    assert isinstance(rest, Order), where
                    assert rest.side == side_name and rest.price == price, (where, rest)
                    assert rest.leaves > 0, (where, rest.order_id)
                    assert 0 <= rest.ahead <= level.background, (where, rest.ahead)
                    resting.append(rest)
        assert book.users == len(resting), (key, book.users, len(resting))
        ids = [o.order_id for o in resting]
        assert len(set(ids)) == len(ids), ("an order rests twice", key)
        live = {
            o.order_id: o
            for a in ex.accounts.values()
            for o in a.open_orders.values()
            if (o.category, o.symbol) == key and o.order_type == "Limit"
        }
        assert set(ids) == set(live), ("book and open orders differ", key, ids, list(live))
        assert all(o is live[o.order_id] for o in resting), key
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, ("crossed book", key, bid, ask)

    def check_stream(self) -> None:
        """The private stream agrees with the state; balances follow from executions."""
        ex = self.ex
        for api_key, account in ex.accounts.items():
            for name, coin in account.coins.items():
                key = (api_key, name)
                assert coin.wallet == self.wallets.get(key, ZERO), (
                    "wallet != start + executions + adjustments",
                    key,
                    coin.wallet,
                    self.wallets.get(key),
                )
                pushed = self.pushed_coins.get(key, (ZERO, ZERO))
                assert pushed == (coin.wallet, coin.locked), ("wallet not pushed", key, pushed)
            for symbol, pos in account.positions.items():
                key = (api_key, symbol)
                assert pos.size == self.positions.get(key, ZERO), ("position != fills", key)
                assert self.pushed_positions.get(key, ZERO) == pos.size, ("not pushed", key)
                assert (pos.size == 0) == (pos.avg_price == 0), (key, pos.size, pos.avg_price)
            for order in account.orders:
                assert order.cum_qty == self.exec_qty.get(order.order_id, ZERO), (
                    "executions do not add up to cumExecQty",
                    order.order_id,
                )
                last = self.last_order.get(order.order_id)
                assert last is not None, ("an order was never pushed", order.order_id)
                if order.is_open or order.order_id in self.watch:  # closed ones stay put
                    inst = self.inst(order.category, order.symbol)
                    assert last[1] == _normal(order_ws(order, inst)), (
                        "the latest order message is stale",
                        last[1],
                    )
        # next time: whatever is pushed by then, and what is open now (it may close silently)
        self.watch = {o for a in ex.accounts.values() for o in a.open_orders}


# === the state machine ===================================================================


class SimMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver(sim_config())

    @initialize(
        books=st.lists(set_book_ops, max_size=3),
        orders=st.lists(place_ops(categories, plain=True), min_size=2, max_size=10),
    )
    def start(self, books: list[SetBook], orders: list[Place]) -> None:
        """Some books and orders first, so that every run has something to trade with (the
        search often repeats one rule many times)."""
        ops: list[Op] = [*books, *orders]
        for op in ops:
            self.d.apply(op)

    @rule(op=set_book_ops)
    def set_book(self, op: SetBook) -> None:
        self.d.apply(op)

    @rule(op=place_ops(st.just("spot")))
    def place_spot(self, op: Place) -> None:
        self.d.apply(op)

    @rule(op=place_ops(categories, plain=True))
    def place_plain(self, op: Place) -> None:
        self.d.apply(op)

    @rule(op=place_ops(st.just("linear")))
    def place_linear(self, op: Place) -> None:
        self.d.apply(op)

    @rule(op=amend_ops)
    def amend(self, op: Amend) -> None:
        self.d.apply(op)

    @rule(op=cancel_ops)
    def cancel(self, op: Cancel) -> None:
        self.d.apply(op)

    @rule(op=cancel_all_ops)
    def cancel_all(self, op: CancelAll) -> None:
        self.d.apply(op)

    @rule(op=trade_ops)
    def trade(self, op: Trade) -> None:
        self.d.apply(op)

    @rule(op=advance_ops)
    def advance(self, op: Advance) -> None:
        self.d.apply(op)

    @rule(op=run_model_ops)
    def run_model(self, op: RunModel) -> None:
        self.d.apply(op)

    @rule(op=admin_ops)
    def admin(self, op: SetPosition | Adjust) -> None:  # rarely: one rule for both
        self.d.apply(op)

    @invariant()
    def money_is_safe(self) -> None:
        self.d.check()


# No explain phase: on this machine it takes minutes (longer than the shrink) for little.
NO_EXPLAIN = tuple(phase for phase in Phase if phase is not Phase.explain)
SimMachine.TestCase.settings = settings(stateful_step_count=40, phases=NO_EXPLAIN)
TestSimProperties = SimMachine.TestCase


# === the journal round-trips ===============================================================


def _snapshot(ex: Exchange) -> dict[str, Any]:
    """Everything a restart must restore (queue positions aside: restored orders rest at
    the front of their levels)."""
    accounts = {}
    for key, account in ex.accounts.items():
        orders = msgspec.to_builtins(account.orders)
        for row in orders:
            row.pop("ahead")
        accounts[key] = {
            "coins": msgspec.to_builtins(account.coins),
            "positions": msgspec.to_builtins(account.positions),
            "executions": msgspec.to_builtins(account.executions),
            "orders": orders,
            "open": sorted(account.open_orders),
        }
    return {
        "all_orders": ex.all_orders(),
        "all_accounts": ex.all_accounts(),
        "accounts": accounts,
        "counters": (
            ex.order_counter,
            ex.exec_counter,
            ex.exec_seq,
            ex.trade_counter,  # public trade ids
            ex.message_counter,  # private message ids
        ),
    }


@settings(phases=NO_EXPLAIN)
@given(ops=st.lists(any_op, max_size=30))
def test_journal_round_trips(ops: list[Op]) -> None:
    config = sim_config()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state"
        first = Driver(config, journal_path=path)
        for op in ops:
            first.apply(op)
        first.check()
        before = _snapshot(first.ex)
        first.close()
        for _ in range(2):  # the replayed journal, then the compacted one
            again = Driver(config, journal_path=path, t0=first.t[0])
            assert _snapshot(again.ex) == before
            again.check_state()
            again.close()
        # the restored exchange carries on: ids do not collide, every invariant holds
        again = Driver(config, journal_path=path, t0=first.t[0])
        for op in ops:
            again.apply(op)
            again.check()
        again.close()


# === regressions: engine bugs the properties found (fixed in 1430423) =====================


@pytest.mark.parametrize(
    ("category", "amended"), [("spot", False), ("linear", False), ("spot", True)]
)
def test_a_post_only_killed_for_crossing_has_no_leaves(category: str, amended: bool) -> None:
    """A PostOnly that would take liquidity is closed without a fill, at creation or when an
    amend makes it cross, and a closed order has no leaves (it kept its whole quantity: the
    wire printed ``leavesQty`` 0, but the journal and every reader of ``Order.leaves`` saw
    it)."""
    d = Driver(sim_config())  # the initial book: best bid 99.9, best ask 100.0
    d.apply(_buy(category, "PostOnly", offset=-2 if amended else 1))  # rests / crosses
    if amended:  # to the ask
        d.apply(
            Amend(
                0,
                closed_too=False,
                by_link=False,
                offset=1,
                price_mode="grid",
                size=None,
                lots=1,
                steps=0,
            )
        )
    order = d.ex.accounts[A].orders[0]
    assert order.status == ("Cancelled" if amended or category == "linear" else "Rejected")
    assert order.reject_reason == POST_ONLY_REASON
    assert order.leaves == 0


def _buy(category: str, tif: str, *, offset: int) -> Place:
    """A plain buy of one lot of X, ``offset`` ticks from the best bid."""
    return Place(A, category, "XUSDT", "Buy", tif, offset, "grid", "lots", 1, 0, "", False, "")


def _restart(path: Path, d: Driver) -> Driver:
    d.close()
    return Driver(sim_config(), journal_path=path, t0=d.t[0])


def test_a_restart_does_not_reuse_private_message_ids(tmp_path: Path) -> None:
    """The journal recorded the message counter before the operation's messages were
    numbered, so the first messages after a restart repeated the last ids."""
    d = Driver(sim_config(), journal_path=tmp_path / "state")
    d.apply(_buy("spot", "GTC", offset=-1))
    first = {json.loads(raw)["id"] for _, _, raw in d.private}
    again = _restart(tmp_path / "state", d)
    again.apply(_buy("spot", "GTC", offset=-2))
    second = {json.loads(raw)["id"] for _, _, raw in again.private}
    again.close()
    assert first and second
    assert not first & second


def test_a_restart_does_not_reuse_public_trade_ids(tmp_path: Path) -> None:
    """A trade against background liquidity only changed no journaled record, so the trade
    id it used was lost and the next run handed it out again."""

    def trade_ids(d: Driver) -> list[str]:
        d.apply(SetBook("spot", "XUSDT", 0, 1, 1, (), (1,)))
        public: list[bytes] = []
        d.ex.on_public = lambda category, topic, raw: public.append(raw)
        d.apply(Trade("spot", "XUSDT", "Buy", 1, 1, 0))  # the outside taker takes the ask
        return [
            t["i"]
            for raw in public
            for t in json.loads(raw).get("data", [])
            if isinstance(t, dict) and "i" in t
        ]

    d = Driver(sim_config(), journal_path=tmp_path / "state")
    first = trade_ids(d)
    again = _restart(tmp_path / "state", d)
    second = trade_ids(again)
    again.close()
    assert first and second
    assert not set(first) & set(second)


def test_unfreezing_after_a_scripted_book_does_not_cross_the_book() -> None:
    """The model used to resume around its old mid, adding its levels next to the scripted
    ones, so the public book was crossed until taker flow ate them."""
    d = Driver(sim_config())  # the model's book: best bid 99.9, best ask 100.0
    d.apply(SetBook("spot", "XUSDT", -20, 1, 1, (5,), (5,)))  # scripted: 98.0 / 98.1
    d.ex.frozen = False  # what POST /sim/unfreeze does
    d.ex.model.resume(d.t[0])
    d.apply(Advance(100))  # one model step
    book = d.ex.books[("spot", "XUSDT")]
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is not None and ask is not None
    assert bid < ask

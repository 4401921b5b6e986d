"""The simulator's records: orders, executions, coins and positions.

They are msgspec structs so the journal writes and replays them as they are. Decimal fields
travel as strings. ``eq=False``: two records are the same only if they are the same object
(the book removes orders by identity).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = ["Account", "Coin", "Execution", "Instrument", "Order", "Position"]

ZERO = Decimal(0)


class Instrument(msgspec.Struct, kw_only=True):
    category: str
    symbol: str
    base_coin: str
    quote_coin: str
    tick_size: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_qty: Decimal
    max_market_qty: Decimal
    maker_fee: Decimal
    taker_fee: Decimal
    price_places: int = 0  # decimals of tick_size, as Bybit prints prices
    qty_places: int = 0  # decimals of qty_step

    def __post_init__(self) -> None:
        self.price_places = _places(self.tick_size)
        self.qty_places = _places(self.qty_step)


def _places(step: Decimal) -> int:
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


class Order(msgspec.Struct, kw_only=True, eq=False):
    order_id: str
    link_id: str
    api_key: str
    number: int = 0  # creation sequence across all accounts
    category: str
    symbol: str
    side: str
    order_type: str
    tif: str
    price: Decimal
    qty: Decimal
    market_unit: str = ""
    leaves: Decimal = ZERO
    ahead: Decimal = ZERO
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    fee_coin: str = ""
    locked: Decimal = ZERO
    closed_pnl: Decimal = ZERO
    status: str = "New"
    reject_reason: str = "EC_NoError"
    cancel_type: str = "UNKNOWN"
    reduce_only: bool = False
    created: int = 0
    updated: int = 0
    last_price_on_created: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in ("New", "PartiallyFilled")

    @property
    def avg_price(self) -> Decimal:
        return self.cum_value / self.cum_qty if self.cum_qty else ZERO


class Execution(msgspec.Struct, kw_only=True):
    exec_id: str
    api_key: str
    category: str
    symbol: str
    order_id: str
    link_id: str
    side: str
    order_type: str
    order_price: Decimal
    order_qty: Decimal
    leaves: Decimal
    market_unit: str
    exec_type: str
    exec_price: Decimal
    exec_qty: Decimal
    exec_value: Decimal
    exec_fee: Decimal
    fee_rate: Decimal
    fee_coin: str
    is_maker: bool
    exec_time: int
    seq: int
    closed_size: Decimal = ZERO
    exec_pnl: Decimal = ZERO
    mark_price: Decimal = ZERO


class Coin(msgspec.Struct, kw_only=True):
    wallet: Decimal = ZERO
    locked: Decimal = ZERO
    cum_realised: Decimal = ZERO


class Position(msgspec.Struct, kw_only=True):
    symbol: str
    size: Decimal = ZERO  # signed: > 0 long, < 0 short (one-way mode)
    avg_price: Decimal = ZERO
    leverage: Decimal = Decimal(10)
    cur_realised: Decimal = ZERO
    cum_realised: Decimal = ZERO
    created: int = 0
    updated: int = 0
    seq: int = 0

    @property
    def side(self) -> str:
        return "Buy" if self.size > 0 else "Sell" if self.size < 0 else ""


class Account(msgspec.Struct, kw_only=True):
    api_key: str
    api_secret: str
    coins: dict[str, Coin] = msgspec.field(default_factory=dict)
    positions: dict[str, Position] = msgspec.field(default_factory=dict)
    orders: list[Order] = msgspec.field(default_factory=list)
    by_id: dict[str, Order] = msgspec.field(default_factory=dict)
    by_link: dict[str, Order] = msgspec.field(default_factory=dict)
    open_orders: dict[str, Order] = msgspec.field(default_factory=dict)
    executions: list[Execution] = msgspec.field(default_factory=list)

    def coin(self, name: str) -> Coin:
        coin = self.coins.get(name)
        if coin is None:
            coin = self.coins[name] = Coin()
        return coin

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol=symbol)
        return pos

    def find(self, category: str, order_id: str, link_id: str) -> Order | None:
        """orderId wins over orderLinkId, as on Bybit."""
        order = self.by_id.get(order_id) if order_id else self.by_link.get(f"{category}|{link_id}")
        if order is None or order.category != category:
            return None
        return order

    def add_order(self, order: Order) -> None:
        self.orders.append(order)
        self.by_id[order.order_id] = order
        if order.link_id:
            self.by_link[f"{order.category}|{order.link_id}"] = order
        self.track(order)

    def track(self, order: Order) -> None:
        """Keep the open-order index in step with the order's status."""
        if order.is_open:
            self.open_orders[order.order_id] = order
        else:
            self.open_orders.pop(order.order_id, None)

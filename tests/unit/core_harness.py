"""A small driver for the pure core: a simulated clock, book helpers and a venue-side view of
each order, so tests read as the story of a cycle rather than as event plumbing. The BTCUSDT
rules, fees and default parameters are the benchmark's, so both measure the same instance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from bench.common import EPOCH, PERP_FEES, SPOT_FEES, T0, params
from worker.core.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    PlaceOrder,
    ReportTransition,
)
from worker.core.events import (
    Acknowledged,
    BookTop,
    Event,
    Execution,
    OrderUpdate,
    Rejected,
    Tick,
    WalletBalance,
)
from worker.core.model import CoreState, Leg, Order, OrderStatus, Phase, Purpose, RejectKind
from worker.core.model import Request as Req
from worker.core.strategy import Core

D = Decimal
T = TypeVar("T")


@dataclass
class Harness:
    """Drives one core; ``now`` only moves forward through :meth:`advance`."""

    core: Core
    state: CoreState
    now: int = T0
    log: list[Command] = field(default_factory=list)
    exec_seq: int = 0

    @classmethod
    def make(cls, *, balances: bool = True, **overrides: Any) -> Harness:
        core = Core(params(**overrides))
        h = cls(core=core, state=core.new_state(EPOCH))
        h.send(Tick())
        if balances:
            h.wallet("USDT", "100000")
            h.wallet("BTC", "2")
        return h

    # -- plumbing
    def send(self, event: Event) -> list[Command]:
        cmds = self.core.step(self.state, event, self.now)
        self.log.extend(cmds)
        return cmds

    def advance(self, ms: int) -> list[Command]:
        self.now += ms
        return self.send(Tick())

    @property
    def phase(self) -> Phase:
        return self.state.phase

    # -- market
    def book(self, leg: Leg, bid: str, ask: str, qty: str = "5") -> list[Command]:
        return self.send(
            BookTop(
                leg=leg,
                bid=D(bid),
                ask=D(ask),
                bid_qty=D(qty),
                ask_qty=D(qty),
                ts_ms=self.now,
                update_id=self.now,
            )
        )

    def books(self, spot: tuple[str, str], perp: tuple[str, str]) -> list[Command]:
        return self.book(Leg.SPOT, *spot) + self.book(Leg.PERP, *perp)

    def wallet(self, coin: str, available: str) -> list[Command]:
        return self.send(WalletBalance(coin=coin, available=D(available), total=D(available)))

    # -- venue answers
    def order(self, link_id: str) -> Order:
        o = self.state.orders.get(link_id) or self.state.done.get(link_id)
        assert o is not None, link_id
        return o

    def ack(self, link_id: str, request: Req = Req.CREATE) -> list[Command]:
        return self.send(Acknowledged(link_id=link_id, request=request, order_id="v" + link_id))

    def reject(self, link_id: str, kind: RejectKind, request: Req = Req.CREATE) -> list[Command]:
        return self.send(
            Rejected(link_id=link_id, request=request, kind=kind, code="0", message=str(kind))
        )

    def update(
        self,
        link_id: str,
        status: OrderStatus,
        cum: str,
        *,
        price: str | None = None,
        fee: str = "0",
        fee_coin: str = "",
        reject: RejectKind | None = None,
        qty: str | None = None,
    ) -> list[Command]:
        o = self.order(link_id)
        px = D(price) if price is not None else (o.price or D(0))
        return self.send(
            OrderUpdate(
                link_id=link_id,
                status=status,
                cum_qty=D(cum),
                cum_value=D(cum) * px,
                avg_price=px if D(cum) else None,
                cum_fee=D(fee),
                fee_coin=fee_coin,
                qty=D(qty) if qty is not None else o.qty,
                price=o.price if price is None else D(price),
                updated_ms=self.now,
                reject=reject,
            )
        )

    def execution(
        self,
        link_id: str,
        qty: str,
        price: str | None = None,
        *,
        fee: str | None = None,
        fee_coin: str | None = None,
        exec_id: str | None = None,
    ) -> list[Command]:
        """One fill, with the venue's fee: base coin for spot buys, quote otherwise."""
        o = self.order(link_id)
        px = D(price) if price is not None else o.price
        assert px is not None, "a market fill needs a price"
        rates = SPOT_FEES if o.leg is Leg.SPOT else PERP_FEES
        rate = rates.maker if o.post_only else rates.taker
        spot_buy = o.leg is Leg.SPOT and o.side.value == "Buy"
        default_fee = D(qty) * rate if spot_buy else D(qty) * px * rate
        fee_d = default_fee if fee is None else D(fee)
        self.exec_seq += 1
        return self.send(
            Execution(
                link_id=link_id,
                exec_id=exec_id or f"e{self.exec_seq}",
                qty=D(qty),
                price=px,
                fee=fee_d,
                fee_coin=fee_coin or ("BTC" if spot_buy else "USDT"),
                is_maker=o.post_only,
                exec_ms=self.now,
            )
        )

    def fill(self, link_id: str, qty: str | None = None, price: str | None = None) -> list[Command]:
        """Fill (the rest of) an order: its execution, then the order stream's Filled status
        (or PartiallyFilled when ``qty`` leaves some)."""
        o = self.order(link_id)
        q = D(qty) if qty is not None else o.qty - o.filled
        px = D(price) if price is not None else o.price
        cmds = self.execution(link_id, str(q), str(px))
        cum = o.filled
        status = OrderStatus.FILLED if cum >= o.qty else OrderStatus.OPEN
        o2 = self.order(link_id)
        fee_total = sum(o2.exec_fees.values(), D(0))
        coin = next(iter(o2.exec_fees), "")
        cmds += self.send(
            OrderUpdate(
                link_id=link_id,
                status=status,
                cum_qty=cum,
                cum_value=o2.exec_value,
                avg_price=o2.exec_value / cum if cum else None,
                cum_fee=fee_total,
                fee_coin=coin,
                qty=o.qty,
                price=o.price,
                updated_ms=self.now,
            )
        )
        return cmds

    def cancelled(self, link_id: str) -> list[Command]:
        """The venue confirms a cancel with the order's final cumulative quantity."""
        o = self.order(link_id)
        return self.update(link_id, OrderStatus.CANCELLED, str(o.filled))

    # -- reading commands
    def live(self, purpose: Purpose) -> list[Order]:
        return [o for o in self.state.orders.values() if o.purpose is purpose]

    def one_live(self, purpose: Purpose) -> Order:
        orders = self.live(purpose)
        assert len(orders) == 1, orders
        return orders[0]


def of(cmds: Iterable[Command], kind: type[T]) -> list[T]:
    return [c for c in cmds if isinstance(c, kind)]


def places(cmds: Iterable[Command]) -> list[PlaceOrder]:
    return of(cmds, PlaceOrder)


def order_cmds(cmds: Iterable[Command]) -> list[Command]:
    return [c for c in cmds if isinstance(c, PlaceOrder | AmendOrder | CancelOrder)]


def transitions(cmds: Iterable[Command]) -> list[tuple[str, str]]:
    return [(c.source.value, c.target.value) for c in of(cmds, ReportTransition)]


# -- the books and scenario steps every core test starts from (BTCUSDT around 65,000)
SPOT_BOOK = ("65000.0", "65000.1")
RICH = ("65100.0", "65100.1")  # +15.38 bps: buy spot
CHEAP = ("64900.0", "64900.1")  # -15.38 bps: sell spot
NEUTRAL = ("65003.0", "65003.1")  # +0.46 bps: inside every threshold


def enter(h: Harness, perp: tuple[str, str] = RICH) -> Order:
    """Books crossing the entry threshold; the entry is acknowledged."""
    h.books(SPOT_BOOK, perp)
    entry = h.one_live(Purpose.ENTRY)
    h.ack(entry.link_id)
    return entry


def race(h: Harness, perp: tuple[str, str] = RICH) -> tuple[Order, Order]:
    """The entry filled; both racing exits acknowledged: (hedge, spot exit)."""
    entry = enter(h, perp)
    h.fill(entry.link_id)
    assert h.phase is Phase.RACE_EXIT
    hedge, spot_exit = h.one_live(Purpose.HEDGE), h.one_live(Purpose.SPOT_EXIT)
    h.ack(hedge.link_id)
    h.ack(spot_exit.link_id)
    return hedge, spot_exit


def carry(h: Harness, perp: tuple[str, str] = RICH) -> None:
    """The hedge won the race: carry_hedged."""
    hedge, spot_exit = race(h, perp)
    h.fill(hedge.link_id)
    h.cancelled(spot_exit.link_id)
    assert h.phase is Phase.CARRY_HEDGED

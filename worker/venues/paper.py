"""Dry-run orders (``execute: false``): every would-be order is answered, none is sent.

A paper venue accepts every order and never fills one, so the core's decisions (quoting,
chasing, abandoning an entry) run exactly as they would live and each one is logged by the
runtime, while the exchange sees nothing. Market orders end unfilled, like an IOC that found
no liquidity. After a restart the snapshot's working orders are adopted as the paper book.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from worker.core.commands import AmendOrder, CancelOrder, PlaceOrder, QueryOrder
from worker.core.events import (
    Acknowledged,
    Event,
    OrderNotFound,
    OrderUpdate,
    Rejected,
)
from worker.core.model import ZERO, Order, OrderStatus, OrderType, RejectKind, Request

__all__ = ["PaperOrders"]


class PaperOrders:
    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self.clock_ms = clock_ms
        self.book: dict[str, OrderUpdate] = {}

    def adopt(self, orders: Iterable[Order]) -> None:
        for o in orders:
            self._put(o.link_id, OrderStatus.OPEN, o.qty, o.price)

    def _put(
        self, link_id: str, status: OrderStatus, qty: Decimal, price: Decimal | None
    ) -> OrderUpdate:
        update = OrderUpdate(
            link_id=link_id,
            order_id=f"paper-{link_id}",
            status=status,
            cum_qty=ZERO,
            cum_value=ZERO,
            cum_fee=ZERO,
            fee_coin="",
            qty=qty,
            price=price,
            updated_ms=self.clock_ms(),
        )
        self.book[link_id] = update
        return update

    def sign_ahead(self, likely: Sequence[PlaceOrder]) -> None:
        """Nothing is ever sent in a dry run, so nothing is built ahead."""

    async def submit(
        self, command: PlaceOrder | AmendOrder | CancelOrder | QueryOrder
    ) -> list[Event]:
        link_id = command.link_id
        known = self.book.get(link_id)
        if isinstance(command, QueryOrder):
            return [known] if known is not None else [OrderNotFound(link_id=link_id)]
        if isinstance(command, PlaceOrder):
            market = command.order_type is OrderType.MARKET
            status = OrderStatus.CANCELLED if market else OrderStatus.OPEN
            update = self._put(link_id, status, command.qty, command.price)
            return [Acknowledged(link_id=link_id, request=Request.CREATE), update]
        request = Request.AMEND if isinstance(command, AmendOrder) else Request.CANCEL
        if known is None or known.status is not OrderStatus.OPEN:
            kind = RejectKind.NOT_FOUND if known is None else RejectKind.FINISHED
            return [
                Rejected(
                    link_id=link_id, request=request, kind=kind, code="paper", message=str(kind)
                )
            ]
        if isinstance(command, AmendOrder):
            update = self._put(
                link_id,
                OrderStatus.OPEN,
                command.qty if command.qty is not None else known.qty,
                command.price if command.price is not None else known.price,
            )
        else:
            update = self._put(link_id, OrderStatus.CANCELLED, known.qty, known.price)
        return [Acknowledged(link_id=link_id, request=request), update]

"""The core's order commands carried out on Bybit, and the answers turned into core events.

``PlaceOrder``/``AmendOrder``/``CancelOrder`` become one REST request each, after a token
from the account's shared rate budget (risk-reducing requests may use the reserve). The
reply becomes ``Acknowledged``, ``Rejected`` (a definitive refusal) or ``OutcomeUnknown``
(the request may have landed: the core will ask for a ``QueryOrder``, never a resend).
``QueryOrder`` looks the ``orderLinkId`` up in open orders, then in the history; an order
found nowhere is reported ``OrderNotFound`` only once the receive window of its last send
has passed (a request still in flight could otherwise land after the answer), and never
while its request still waits for a rate token (it would leave after the answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from worker.core.commands import AmendOrder, CancelOrder, PlaceOrder, QueryOrder
from worker.core.events import (
    Acknowledged,
    Event,
    OrderNotFound,
    OutcomeUnknown,
    Rejected,
)
from worker.core.model import Leg, OrderType, Purpose, Request
from worker.venues.budget import AccountBudget
from worker.venues.bybit.errors import RATE_LIMIT
from worker.venues.bybit.parse import BybitError, order_updates
from worker.venues.bybit.rest import BybitRest, Done, Outcome, PreparedPost, Refused
from worker.venues.bybit.schemas import ListResult, OrderAck

__all__ = ["BybitOrders"]

OrderCommand = PlaceOrder | AmendOrder | CancelOrder | QueryOrder
_RISK_ADDING = frozenset({Purpose.ENTRY})
_SAFETY_MS = 1000  # on top of the receive window before "never arrived" is believed
# A prepared request is sent only while younger than the TTL, far inside the receive window
# the venue allows its timestamp (5 s), and is signed again once older than the refresh age.
PREPARED_TTL_MS = 1000
PREPARED_REFRESH_MS = 500


def _path(request: Request) -> str:
    return f"/v5/order/{request.value}"


def _plain(value: Decimal) -> str:
    return format(value, "f")


class BybitOrders:
    def __init__(
        self,
        rest: BybitRest,
        *,
        spot_symbol: str,
        perp_symbol: str,
        budget: AccountBudget | None,
        clock_ms: Callable[[], int],
    ) -> None:
        self.rest = rest
        self.symbols = {Leg.SPOT: spot_symbol, Leg.PERP: perp_symbol}
        self.budget = budget
        self.clock_ms = clock_ms
        self.started_ms = clock_ms()
        self._purpose: dict[str, Purpose] = {}
        self._last_send_ms: dict[str, int] = {}
        self._prepared: list[tuple[PlaceOrder, PreparedPost]] = []
        # requests waiting for a rate token: never "not found" (they would leave afterwards)
        self._unsent: set[str] = set()

    def remember(self, link_id: str, purpose: Purpose) -> None:
        """Orders restored from the snapshot: their purpose decides their rate priority."""
        self._purpose[link_id] = purpose

    def sign_ahead(self, likely: Sequence[PlaceOrder]) -> None:
        """Sign the orders the core is likely to place next (its entry candidates), so that
        when it places one of them :meth:`submit` only writes it: no parameters, no JSON,
        no HMAC on the tick-to-order path. Only a command *equal* to a prepared one (its
        ``orderLinkId`` included) uses it; a request older than ``PREPARED_TTL_MS`` is never
        sent (it is signed afresh instead)."""
        now = self.rest.clock()
        current = [command for command, _ in self._prepared]
        if current == list(likely) and all(
            0 <= now - prepared.signed_ms < PREPARED_REFRESH_MS for _, prepared in self._prepared
        ):
            return
        self._prepared = [
            (command, self.rest.prepare_post(_path(Request.CREATE), self._params(command)))
            for command in likely
        ]

    def _prepared_for(self, command: PlaceOrder) -> PreparedPost | None:
        for candidate, prepared in self._prepared:
            if candidate == command:
                # a clock stepped back since the signing makes the age negative: sign again
                fresh = 0 <= self.rest.clock() - prepared.signed_ms < PREPARED_TTL_MS
                return prepared if fresh else None
        return None

    def submit(self, command: OrderCommand) -> Awaitable[list[Event]]:
        """Start carrying out ``command``; await the core events it produced.

        With a rate token at hand and an idle connection, the request is on the wire when this
        returns (the runtime stages the state first and sends inside the core's step)."""
        if isinstance(command, QueryOrder):
            return self._query(command)
        prepared = self._prepared_for(command) if isinstance(command, PlaceOrder) else None
        params = self._params(command) if prepared is None else None
        request, reduces_risk = self._kind(command)
        link_id = command.link_id
        if self.budget is not None and (wait := self.budget.take(reduces_risk=reduces_risk)) > 0:
            # signed when it finally goes: a request prepared now could expire meanwhile
            fresh = params if params is not None else self._params(command)
            return self._send_later(link_id, request, fresh, reduces_risk, wait)
        if prepared is None:
            assert params is not None
            prepared = self.rest.prepare_post(_path(request), params)
        return self._answer_to(link_id, request, self._send(link_id, prepared))

    def _send(self, link_id: str, prepared: PreparedPost) -> Awaitable[Outcome]:
        self._last_send_ms[link_id] = self.clock_ms()
        return self.rest.send_prepared(prepared)

    async def _send_later(
        self,
        link_id: str,
        request: Request,
        params: dict[str, Any],
        reduces_risk: bool,
        wait: float,
    ) -> list[Event]:
        assert self.budget is not None
        self._unsent.add(link_id)
        try:
            while wait > 0:
                await asyncio.sleep(wait)
                wait = self.budget.take(reduces_risk=reduces_risk, turn=True)
            prepared = self.rest.prepare_post(_path(request), params)
            pending = self._send(link_id, prepared)
        finally:
            self._unsent.discard(link_id)
        return await self._answer_to(link_id, request, pending)

    async def _answer_to(
        self, link_id: str, request: Request, pending: Awaitable[Outcome]
    ) -> list[Event]:
        outcome = await pending
        self._feed_budget(outcome)
        return [self._answer(link_id, request, outcome)]

    def _kind(self, command: PlaceOrder | AmendOrder | CancelOrder) -> tuple[Request, bool]:
        if isinstance(command, PlaceOrder):
            self._purpose[command.link_id] = command.purpose
            return Request.CREATE, command.purpose not in _RISK_ADDING
        if isinstance(command, AmendOrder):
            purpose = self._purpose.get(command.link_id, Purpose.ENTRY)
            return Request.AMEND, purpose not in _RISK_ADDING
        return Request.CANCEL, True

    def _params(self, command: PlaceOrder | AmendOrder | CancelOrder) -> dict[str, Any]:
        leg = command.leg
        params: dict[str, Any] = {
            "category": "spot" if leg is Leg.SPOT else "linear",
            "symbol": self.symbols[leg],
        }
        if isinstance(command, PlaceOrder):
            params["side"] = command.side.value
            params["orderType"] = command.order_type.value
            params["qty"] = _plain(command.qty)
            if command.order_type is OrderType.LIMIT:
                if command.price is None:
                    raise ValueError(f"{command.link_id}: a limit order needs a price")
                params["price"] = _plain(command.price)
                params["timeInForce"] = "PostOnly" if command.post_only else "GTC"
            elif leg is Leg.SPOT:
                params["marketUnit"] = "baseCoin"  # the core's quantities are base units
            if command.reduce_only and leg is Leg.PERP:
                params["reduceOnly"] = True
        elif isinstance(command, AmendOrder):
            if command.qty is not None:
                params["qty"] = _plain(command.qty)
            if command.price is not None:
                params["price"] = _plain(command.price)
        params["orderLinkId"] = command.link_id
        return params

    def _feed_budget(self, outcome: Outcome) -> None:
        if (
            self.budget is not None
            and isinstance(outcome, Refused)
            and outcome.code == RATE_LIMIT
            and outcome.rate_limit is not None
        ):
            self.budget.penalise(outcome.rate_limit.reset_ms / 1000)

    def _answer(self, link_id: str, request: Request, outcome: Outcome) -> Event:
        if isinstance(outcome, Done):
            try:
                ack = msgspec.json.decode(outcome.result, type=OrderAck)
            except msgspec.DecodeError:
                return OutcomeUnknown(link_id=link_id, request=request, reason="malformed ack")
            return Acknowledged(link_id=link_id, request=request, order_id=ack.order_id)
        if isinstance(outcome, Refused):
            return Rejected(
                link_id=link_id,
                request=request,
                kind=outcome.kind,
                code=str(outcome.code),
                message=outcome.message,
            )
        return OutcomeUnknown(link_id=link_id, request=request, reason=outcome.reason)

    async def _query(self, command: QueryOrder) -> list[Event]:
        if command.link_id in self._unsent:
            return []  # still waiting for a rate token: the venue cannot know it yet
        category = "spot" if command.leg is Leg.SPOT else "linear"
        params = {"category": category, "orderLinkId": command.link_id}
        for path in ("/v5/order/realtime", "/v5/order/history"):
            outcome = await self.rest.get(path, params)
            if not isinstance(outcome, Done):
                return []  # cannot tell yet; the core asks again
            try:
                rows = msgspec.json.decode(outcome.result, type=ListResult).items
                found = [u for u in order_updates(rows) if u.link_id == command.link_id]
            except (msgspec.DecodeError, BybitError):
                return []
            if found:
                return list(found)
        sent = self._last_send_ms.get(command.link_id, self.started_ms)
        if self.clock_ms() - sent > self.rest.recv_window_ms + _SAFETY_MS:
            return [OrderNotFound(link_id=command.link_id)]
        return []

"""Pure parsers from Bybit V5 REST bodies to the venue-neutral models in ``worker.core``.

No I/O here, so the same functions serve the live client, the simulator's tests and replays of
recorded bodies. Every failure, whether a non-zero ``retCode`` or a body that does not match
the documented shape, becomes one :class:`BybitError`; callers never see a msgspec or Decimal
exception. Numbers are built from the wire's strings, never through float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import msgspec

from worker.core.events import Execution, FundingPayment, OrderUpdate, WalletBalance
from worker.core.instruments import Category, FeeRates, InstrumentRules
from worker.core.model import OrderStatus, RejectKind
from worker.venues.bybit.schemas import (
    BookMessage,
    CategoryProbe,
    ExecutionRow,
    FeeRateResult,
    LinearInstrument,
    LinearInstrumentsResult,
    ListResult,
    OrderAck,
    OrderRow,
    PositionRow,
    PrivateMessage,
    RestEnvelope,
    SpotInstrument,
    SpotInstrumentsResult,
    WalletRow,
)
from worker.venues.types import BookUpdate, PositionState

__all__ = [
    "BybitError",
    "executions",
    "order_updates",
    "parse_book",
    "parse_envelope",
    "parse_fee_rates",
    "parse_instruments",
    "parse_list",
    "parse_order_ack",
    "parse_private",
    "positions",
    "redact",
    "wallet_balances",
]

_T = TypeVar("_T")

_DECIMAL_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Bybit's 10004 text echoes the string it signed (timestamp + api key + recv window + payload).
# The payload may itself hold brackets, so everything from the marker to the end goes.
_ORIGIN_STRING_RE = re.compile(r"origin_string.*", re.IGNORECASE | re.DOTALL)
_MAX_MSG_CHARS = 300


class BybitError(Exception):
    """A Bybit REST call that did not yield the expected result.

    ``ret_code`` is the venue's ``retCode`` (``None`` when the body was not a V5 envelope);
    ``ret_msg`` is its ``retMsg`` with any echoed signing string removed, so the text is safe to
    log and never carries an API key.
    """

    def __init__(self, reason: str, *, ret_code: int | None = None, ret_msg: str = "") -> None:
        self.ret_code = ret_code
        self.ret_msg = redact(ret_msg)
        self.reason = reason
        if ret_code is None:
            text = f"Bybit: {reason}"
        else:
            text = f"Bybit retCode {ret_code} ({self.ret_msg!r}): {reason}"
        super().__init__(text)


def redact(message: str) -> str:
    """Drop the signed string Bybit echoes in 10004 errors and bound the length for logs."""
    cleaned = _ORIGIN_STRING_RE.sub("origin_string[<redacted>]", message)
    if len(cleaned) > _MAX_MSG_CHARS:
        cleaned = cleaned[:_MAX_MSG_CHARS] + "…"
    return cleaned


def parse_envelope(body: bytes) -> RestEnvelope:
    """Decode the common envelope; raise :class:`BybitError` unless ``retCode`` is 0."""
    try:
        envelope = msgspec.json.decode(body, type=RestEnvelope)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise BybitError(f"malformed response: {exc}") from None
    if envelope.ret_code != 0:
        raise BybitError(
            "request rejected by the venue",
            ret_code=envelope.ret_code,
            ret_msg=envelope.ret_msg,
        )
    if not envelope.result:
        raise BybitError(
            "malformed response: no result", ret_code=envelope.ret_code, ret_msg=envelope.ret_msg
        )
    return envelope


def _decode_result(envelope: RestEnvelope, kind: type[_T]) -> _T:
    """Decode ``result`` into ``kind``, reporting a shape mismatch as a :class:`BybitError`."""
    try:
        return msgspec.json.decode(envelope.result, type=kind)
    except msgspec.DecodeError as exc:
        raise BybitError(
            f"malformed result: {exc}", ret_code=envelope.ret_code, ret_msg=envelope.ret_msg
        ) from None


def _decimal(raw: str, where: str, *, allow_negative: bool = False) -> Decimal:
    """A finite Decimal from a wire string; ``where`` names the field in the error."""
    text = raw.strip()
    if not _DECIMAL_RE.fullmatch(text):
        raise BybitError(f"malformed result: {where} is {raw!r}, not a decimal number")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        raise BybitError(f"malformed result: {where} is {raw!r}, not a decimal number") from None
    if value < 0 and not allow_negative:
        raise BybitError(f"malformed result: {where} is {raw!r}, expected >= 0")
    if not _in_range(value):
        raise BybitError(f"malformed result: {where} is {raw!r}, out of range")
    return value


def _in_range(value: Decimal) -> bool:
    """Zero, or a magnitude between 1e-30 and 1e30: anything else is not a real price or size."""
    return not value or -30 <= value.adjusted() <= 30


def _step(raw: str, where: str) -> Decimal:
    """A strictly positive step (tick, qty step); zero would make every rounding divide by 0."""
    value = _decimal(raw, where)
    if value == 0:
        raise BybitError(f"malformed result: {where} is {raw!r}, expected > 0")
    return value


def _optional(raw: str, where: str) -> Decimal | None:
    """``None`` for a missing or ``""`` value (deprecated or not-applicable fields)."""
    if not raw.strip():
        return None
    return _decimal(raw, where)


def _spot_rules(row: SpotInstrument) -> InstrumentRules:
    where = f"spot {row.symbol!r} "
    lot = row.lot_size_filter
    max_qty = _optional(lot.max_limit_order_qty, where + "maxLimitOrderQty")
    if max_qty is None:  # maxOrderQty is deprecated on spot but the only cap on older rows
        max_qty = _optional(lot.max_order_qty, where + "maxOrderQty")
    # Deprecated on spot ("check minOrderAmt instead"): absent or "" means no minimum.
    min_qty = _optional(lot.min_order_qty, where + "minOrderQty")
    return InstrumentRules(
        symbol=row.symbol,
        category=Category.SPOT,
        base_coin=row.base_coin,
        quote_coin=row.quote_coin,
        tick_size=_step(row.price_filter.tick_size, where + "tickSize"),
        qty_step=_step(lot.base_precision, where + "basePrecision"),
        min_qty=Decimal(0) if min_qty is None else min_qty,
        min_notional=_decimal(lot.min_order_amt, where + "minOrderAmt"),
        max_qty=max_qty,
        max_market_qty=_optional(lot.max_market_order_qty, where + "maxMarketOrderQty"),
        status=row.status,
    )


def _linear_rules(row: LinearInstrument) -> InstrumentRules:
    where = f"linear {row.symbol!r} "
    lot = row.lot_size_filter
    return InstrumentRules(
        symbol=row.symbol,
        category=Category.LINEAR,
        base_coin=row.base_coin,
        quote_coin=row.settle_coin,
        tick_size=_step(row.price_filter.tick_size, where + "tickSize"),
        qty_step=_step(lot.qty_step, where + "qtyStep"),
        min_qty=_decimal(lot.min_order_qty, where + "minOrderQty"),
        min_notional=_decimal(lot.min_notional_value, where + "minNotionalValue"),
        max_qty=_optional(lot.max_order_qty, where + "maxOrderQty"),
        max_market_qty=_optional(lot.max_mkt_order_qty, where + "maxMktOrderQty"),
        status=row.status,
    )


def parse_instruments(body: bytes) -> list[InstrumentRules]:
    """Rules for every row of a ``GET /v5/market/instruments-info`` body (spot or linear).

    The category comes from ``result.category``; other categories (inverse, option) are not
    traded here and raise. Pagination (``nextPageCursor``) is the caller's business.
    """
    envelope = parse_envelope(body)
    category = _decode_result(envelope, CategoryProbe).category
    if category == Category.SPOT:
        spot = _decode_result(envelope, SpotInstrumentsResult)
        return [_spot_rules(row) for row in spot.items]
    if category == Category.LINEAR:
        linear = _decode_result(envelope, LinearInstrumentsResult)
        return [_linear_rules(row) for row in linear.items]
    raise BybitError(
        f"unsupported instrument category {category!r} (expected 'spot' or 'linear')",
        ret_code=envelope.ret_code,
        ret_msg=envelope.ret_msg,
    )


def parse_fee_rates(body: bytes) -> dict[str, FeeRates]:
    """Maker/taker fractions by symbol from a ``GET /v5/account/fee-rate`` body.

    Negative rates are rebates and kept. Option rows carry ``symbol == ""`` and a ``baseCoin``;
    they are keyed by the base coin so they cannot collide under ``""``.
    """
    envelope = parse_envelope(body)
    result = _decode_result(envelope, FeeRateResult)
    rates: dict[str, FeeRates] = {}
    for row in result.items:
        key = row.symbol or row.base_coin
        if not key:
            raise BybitError(
                "malformed result: fee-rate row without symbol or baseCoin",
                ret_code=envelope.ret_code,
                ret_msg=envelope.ret_msg,
            )
        where = f"fee rate {key!r} "
        rates[key] = FeeRates(
            maker=_decimal(row.maker_fee_rate, where + "makerFeeRate", allow_negative=True),
            taker=_decimal(row.taker_fee_rate, where + "takerFeeRate", allow_negative=True),
        )
    return rates


# --- orders and fills ---------------------------------------------------------------------

_STATUS = {
    "New": OrderStatus.OPEN,
    "PartiallyFilled": OrderStatus.OPEN,
    "Untriggered": OrderStatus.OPEN,
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,  # derivatives: may carry fills
    "PartiallyFilledCanceled": OrderStatus.CANCELLED,  # spot only
    "Deactivated": OrderStatus.CANCELLED,
    "Triggered": OrderStatus.OPEN,
    "Rejected": OrderStatus.REJECTED,
}
_POST_ONLY_REASON = "EC_PostOnlyWillTakeLiquidity"
# Fills that change what is held; "Funding" is reported separately, the rest do not occur
# for spot and perpetuals in one-way mode.
_TRADES = frozenset({"Trade", "AdlTrade", "BustTrade"})


def parse_order_ack(body: bytes) -> OrderAck:
    """``result`` of a successful create, amend or cancel."""
    return _decode_result(parse_envelope(body), OrderAck)


def parse_list(body: bytes) -> ListResult:
    """``result`` of a list endpoint; decode ``items`` with the row parsers below."""
    return _decode_result(parse_envelope(body), ListResult)


def parse_private(raw: bytes) -> PrivateMessage:
    """A private topic push (``topic`` and its raw ``data``)."""
    try:
        return msgspec.json.decode(raw, type=PrivateMessage)
    except msgspec.DecodeError as exc:
        raise BybitError(f"malformed private message: {exc}") from None


def _rows(data: bytes | msgspec.Raw, kind: type[_T]) -> list[_T]:
    try:
        return msgspec.json.decode(data, type=list[kind])  # type: ignore[valid-type]
    except msgspec.DecodeError as exc:
        raise BybitError(f"malformed rows: {exc}") from None


def _fee(row: OrderRow) -> tuple[Decimal, str]:
    """Cumulative fee and its coin: ``cumFeeDetail`` first (spot and linear), else the
    deprecated ``cumExecFee`` in ``feeCurrency``."""
    detail = {coin: amount for coin, amount in row.cum_fee_detail.items() if amount.strip()}
    if len(detail) > 1:
        raise BybitError(f"order {row.order_link_id}: fees in several coins {sorted(detail)}")
    if detail:
        [(coin, amount)] = detail.items()
        return _decimal(amount, "cumFeeDetail", allow_negative=True), coin
    fee = _optional(row.cum_exec_fee, "cumExecFee")
    return (fee or Decimal(0)), row.fee_currency


def order_updates(data: bytes | msgspec.Raw) -> list[OrderUpdate]:
    """Order rows as the core's ``OrderUpdate``s.

    A PostOnly order refused for crossing is ``Cancelled`` (linear) or ``Rejected`` (spot)
    with ``EC_PostOnlyWillTakeLiquidity``; both become a POST_ONLY rejection (re-quote), as
    long as nothing traded.
    """
    updates = []
    for row in _rows(data, OrderRow):
        status = _STATUS.get(row.order_status)
        if status is None:
            raise BybitError(f"order {row.order_link_id}: unknown status {row.order_status!r}")
        cum_qty = _decimal(row.cum_exec_qty or "0", "cumExecQty")
        reject: RejectKind | None = None
        if row.reject_reason == _POST_ONLY_REASON and cum_qty == 0:
            status, reject = OrderStatus.REJECTED, RejectKind.POST_ONLY
        elif status is OrderStatus.REJECTED:
            reject = RejectKind.OTHER
        fee, fee_coin = _fee(row)
        price = _optional(row.price, "price")
        try:
            updated_ms = int(row.updated_time or 0)
        except ValueError:
            raise BybitError(
                f"order {row.order_link_id}: updatedTime {row.updated_time!r}"
            ) from None
        updates.append(
            OrderUpdate(
                link_id=row.order_link_id,
                order_id=row.order_id,
                status=status,
                cum_qty=cum_qty,
                cum_value=_optional(row.cum_exec_value, "cumExecValue"),
                avg_price=_optional(row.avg_price, "avgPrice") or None,
                cum_fee=fee,
                fee_coin=fee_coin,
                qty=_decimal(row.qty, "qty"),
                price=price or None,
                updated_ms=updated_ms,
                reject=reject,
                reject_text=row.reject_reason if reject is not None else "",
            )
        )
    return updates


def executions(
    data: bytes | msgspec.Raw, *, funding_symbol: str | None = None
) -> list[Execution | FundingPayment]:
    """Execution rows as fills, and funding settlements (positive: received); with
    ``funding_symbol`` only that perp's settlements (the account's others belong to other
    instances)."""
    out: list[Execution | FundingPayment] = []
    for row in _rows(data, ExecutionRow):
        try:
            exec_ms = int(row.exec_time)
        except ValueError:
            raise BybitError(f"execution {row.exec_id}: execTime {row.exec_time!r}") from None
        if row.exec_type == "Funding":
            if funding_symbol is not None and row.symbol != funding_symbol:
                continue
            paid = _decimal(row.exec_fee, "execFee", allow_negative=True)
            out.append(FundingPayment(amount=-paid, ts_ms=exec_ms))
        elif row.exec_type in _TRADES:
            out.append(
                Execution(
                    link_id=row.order_link_id,
                    exec_id=row.exec_id,
                    qty=_decimal(row.exec_qty, "execQty"),
                    price=_decimal(row.exec_price, "execPrice"),
                    fee=_decimal(row.exec_fee, "execFee", allow_negative=True),
                    fee_coin=row.fee_currency,
                    is_maker=row.is_maker,
                    exec_ms=exec_ms,
                )
            )
    return out


def positions(data: bytes | msgspec.Raw) -> list[PositionState]:
    """Position rows (REST or topic) as signed one-way positions."""
    out = []
    for row in _rows(data, PositionRow):
        size = _decimal(row.size or "0", "size")
        if row.side == "Sell":
            size = -size
        elif row.side not in ("Buy", "") or (row.side == "" and size):
            raise BybitError(f"position {row.symbol}: side {row.side!r} with size {row.size!r}")
        entry = _optional(row.avg_price or row.entry_price, "avgPrice") or Decimal(0)
        out.append(PositionState(symbol=row.symbol, size=size, avg_price=entry))
    return out


def wallet_balances(data: bytes | msgspec.Raw) -> list[WalletBalance]:
    """The UNIFIED account's coins: available = wallet balance − locked (spot orders)."""
    out = []
    for row in _rows(data, WalletRow):
        if row.account_type != "UNIFIED":
            continue
        for coin in row.coin:
            total = _decimal(coin.wallet_balance, "walletBalance", allow_negative=True)
            locked = _optional(coin.locked, "locked") or Decimal(0)
            out.append(WalletBalance(coin=coin.coin, available=total - locked, total=total))
    return out


# --- public order book --------------------------------------------------------------------


def _sane(value: Decimal) -> bool:
    """What :func:`_decimal` admits without ``allow_negative``."""
    return value.is_finite() and value >= 0 and _in_range(value)


def parse_book(raw: bytes) -> BookUpdate:
    """An ``orderbook.{depth}.{symbol}`` push with Decimal levels (bids best first)."""
    try:
        message = msgspec.json.decode(raw, type=BookMessage)
    except msgspec.DecodeError as exc:
        raise BybitError(f"malformed order book message: {exc}") from None
    parts = message.topic.split(".")
    if len(parts) != 3 or parts[0] != "orderbook" or message.type not in ("snapshot", "delta"):
        raise BybitError(f"not an order book message: {message.topic!r} {message.type!r}")
    try:
        depth = int(parts[1])
    except ValueError:
        raise BybitError(f"order book depth {parts[1]!r}") from None
    data = message.data
    for side in (data.b, data.a):
        for price, size in side:
            if not (_sane(price) and _sane(size)):
                raise BybitError(f"order book level {price} {size}: not a finite number >= 0")
    return BookUpdate(
        symbol=data.s,
        depth=depth,
        snapshot=message.type == "snapshot",
        bids=data.b,
        asks=data.a,
        update_id=data.u,
        seq=data.seq,
        ts_ms=message.cts or message.ts,
    )

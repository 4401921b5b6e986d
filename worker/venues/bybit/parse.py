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

from worker.core.instruments import Category, FeeRates, InstrumentRules
from worker.venues.bybit.schemas import (
    CategoryProbe,
    FeeRateResult,
    LinearInstrument,
    LinearInstrumentsResult,
    RestEnvelope,
    SpotInstrument,
    SpotInstrumentsResult,
)

__all__ = ["BybitError", "parse_envelope", "parse_fee_rates", "parse_instruments"]

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
        self.ret_msg = _redact(ret_msg)
        self.reason = reason
        if ret_code is None:
            text = f"Bybit: {reason}"
        else:
            text = f"Bybit retCode {ret_code} ({self.ret_msg!r}): {reason}"
        super().__init__(text)


def _redact(message: str) -> str:
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
    if value and not -30 <= value.adjusted() <= 30:
        raise BybitError(f"malformed result: {where} is {raw!r}, out of range")
    return value


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

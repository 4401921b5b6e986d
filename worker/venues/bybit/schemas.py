"""msgspec Structs mirroring the Bybit V5 REST wire, field for field.

Names follow the wire (camelCase via ``rename="camel"``) so a diff against the official examples
(bybit-exchange/docs ``docs/v5/market/instrument.mdx``, ``docs/v5/account/fee-rate.mdx``) is
easy to read; only ``result.list`` is exposed as ``items``, because a field named ``list``
would shadow the builtin in the annotations. Decimal values are kept as the wire's strings:
Bybit sends ``""`` for some deprecated or not-applicable numbers, and
:mod:`worker.venues.bybit.parse` turns the rest into ``Decimal`` without ever passing through
float. Unknown extra fields are ignored (msgspec's default), so a new field on the venue never
breaks a worker; fields we do not rely on have defaults.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

# --- common envelope -------------------------------------------------------------------------


class RestEnvelope(msgspec.Struct, rename="camel"):
    """``{"retCode", "retMsg", "result", "retExtInfo", "time"}``, result left undecoded.

    ``result`` stays raw because its shape depends on the endpoint and is often ``{}`` on an
    error; decode it only after ``ret_code`` says 0. Error examples in the official docs omit
    ``result``, ``retExtInfo`` and ``time``, so all three are optional.
    """

    ret_code: int
    ret_msg: str
    result: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    ret_ext_info: dict[str, object] | None = None
    time: int | None = None


class CategoryProbe(msgspec.Struct):
    """Just ``result.category``, to pick the spot or linear instrument shape."""

    category: str


# --- GET /v5/market/instruments-info ---------------------------------------------------------


class RiskParameters(msgspec.Struct, rename="camel"):
    """Limit-order price band ratios (spot and linear)."""

    price_limit_ratio_x: str = ""
    price_limit_ratio_y: str = ""


class SpotLotSizeFilter(msgspec.Struct, rename="camel"):
    """Spot size rules: no ``qtyStep``/``minNotionalValue`` here, ``basePrecision``/``minOrderAmt``.

    ``minOrderQty``, ``maxOrderQty`` and ``maxOrderAmt`` are deprecated by Bybit ("check
    ``minOrderAmt`` instead") but still sent, so they default to ``""``.
    """

    base_precision: str
    min_order_amt: str
    quote_precision: str = ""
    min_order_qty: str = ""
    max_order_qty: str = ""
    max_order_amt: str = ""
    max_limit_order_qty: str = ""
    max_market_order_qty: str = ""
    post_only_max_limit_order_size: str = ""


class SpotPriceFilter(msgspec.Struct, rename="camel"):
    """Spot has a tick size only."""

    tick_size: str


class SpotInstrument(msgspec.Struct, rename="camel"):
    """One row of ``result.list`` for ``category=spot``."""

    symbol: str
    base_coin: str
    quote_coin: str
    status: str
    lot_size_filter: SpotLotSizeFilter
    price_filter: SpotPriceFilter
    symbol_id: int | None = None
    innovation: str = ""  # deprecated, "please use symbolType"
    margin_trading: str = ""
    st_tag: str = ""
    risk_parameters: RiskParameters | None = None
    symbol_type: str = ""


class SpotInstrumentsResult(msgspec.Struct):
    """``result`` for ``category=spot`` (spot has no pagination, hence no cursor)."""

    category: str
    items: list[SpotInstrument] = msgspec.field(name="list")


class LeverageFilter(msgspec.Struct, rename="camel"):
    """Linear leverage bounds."""

    min_leverage: str = ""
    max_leverage: str = ""
    leverage_step: str = ""


class LinearPriceFilter(msgspec.Struct, rename="camel"):
    """Linear price bounds and tick."""

    tick_size: str
    min_price: str = ""
    max_price: str = ""


class LinearLotSizeFilter(msgspec.Struct, rename="camel"):
    """Linear size rules; ``postOnlyMaxOrderQty`` is deprecated ("please use maxOrderQty")."""

    max_order_qty: str
    min_order_qty: str
    qty_step: str
    min_notional_value: str
    max_mkt_order_qty: str = ""
    post_only_max_order_qty: str = ""


class PreListingPhase(msgspec.Struct, rename="camel"):
    """One phase of a pre-market contract's schedule; ``endTime`` is ``""`` when open-ended."""

    phase: str
    start_time: str = ""
    end_time: str = ""


class AuctionFeeInfo(msgspec.Struct, rename="camel"):
    """Fees of a pre-market contract, by phase."""

    auction_fee_rate: str = ""
    taker_fee_rate: str = ""
    maker_fee_rate: str = ""


class PreListingInfo(msgspec.Struct, rename="camel"):
    """Present (not null) only while ``isPreListing`` is true."""

    cur_auction_phase: str = ""
    phases: list[PreListingPhase] = msgspec.field(default_factory=list)
    auction_fee_info: AuctionFeeInfo | None = None


class LinearInstrument(msgspec.Struct, rename="camel"):
    """One row of ``result.list`` for ``category=linear`` (perpetuals and dated futures)."""

    symbol: str
    status: str
    base_coin: str
    quote_coin: str
    settle_coin: str
    lot_size_filter: LinearLotSizeFilter
    price_filter: LinearPriceFilter
    symbol_id: int | None = None
    contract_type: str = ""
    launch_time: str = ""
    delivery_time: str = ""
    delivery_fee_rate: str = ""
    price_scale: str = ""
    leverage_filter: LeverageFilter | None = None
    unified_margin_trade: bool | None = None
    funding_interval: int | None = None  # minutes
    copy_trading: str = ""
    upper_funding_rate: str = ""
    lower_funding_rate: str = ""
    is_pre_listing: bool = False
    pre_listing_info: PreListingInfo | None = None
    risk_parameters: RiskParameters | None = None
    symbol_type: str = ""


class LinearInstrumentsResult(msgspec.Struct, rename="camel"):
    """``result`` for ``category=linear``; a non-empty cursor means more pages."""

    category: str
    items: list[LinearInstrument] = msgspec.field(name="list")
    next_page_cursor: str = ""


# --- GET /v5/account/fee-rate ----------------------------------------------------------------


class FeeRateEntry(msgspec.Struct, rename="camel"):
    """One row of the fee-rate list; ``symbol`` is ``""`` and ``baseCoin`` set for options only."""

    symbol: str
    taker_fee_rate: str
    maker_fee_rate: str
    base_coin: str = ""


class FeeRateResult(msgspec.Struct):
    """``result`` of ``/v5/account/fee-rate``; "Derivatives does not have" ``category``."""

    items: list[FeeRateEntry] = msgspec.field(name="list")
    category: str = ""


# --- orders, executions, positions, wallet (REST lists and private WebSocket topics) ---------


class OrderRow(msgspec.Struct, rename="camel"):
    """One order, as ``/v5/order/realtime|history`` list it and the ``order`` topic pushes it.

    ``cumExecFee`` is deprecated for spot and linear; the fee is read from ``cumFeeDetail``
    (``{coin: amount}``), falling back to ``cumExecFee`` with ``feeCurrency``.
    """

    order_id: str
    order_link_id: str
    symbol: str
    side: str
    order_type: str
    price: str
    qty: str
    order_status: str
    cum_exec_qty: str
    cum_exec_value: str = ""
    avg_price: str = ""
    cum_exec_fee: str = ""
    cum_fee_detail: dict[str, str] = msgspec.field(default_factory=dict)
    fee_currency: str = ""
    reject_reason: str = ""
    updated_time: str = "0"
    category: str = ""


class ExecutionRow(msgspec.Struct, rename="camel"):
    """One execution (``/v5/execution/list`` and the ``execution`` topic)."""

    exec_id: str
    order_id: str
    order_link_id: str
    symbol: str
    side: str
    exec_type: str
    exec_price: str
    exec_qty: str
    exec_fee: str
    exec_time: str
    is_maker: bool
    fee_currency: str = ""
    category: str = ""


class PositionRow(msgspec.Struct, rename="camel"):
    """One linear position; REST calls the entry ``avgPrice``, the topic ``entryPrice``."""

    symbol: str
    side: str
    size: str
    avg_price: str = ""
    entry_price: str = ""
    leverage: str = ""
    position_idx: int = 0
    category: str = "linear"


class WalletCoin(msgspec.Struct, rename="camel"):
    coin: str
    wallet_balance: str
    locked: str = "0"


class WalletRow(msgspec.Struct, rename="camel"):
    account_type: str
    coin: list[WalletCoin]


class ListResult(msgspec.Struct, rename="camel"):
    """``result`` of the list endpoints; the rows stay raw until their type is known."""

    items: msgspec.Raw = msgspec.field(name="list", default_factory=msgspec.Raw)
    next_page_cursor: str = ""
    category: str = ""


class OrderAck(msgspec.Struct, rename="camel"):
    """``result`` of ``/v5/order/create|amend|cancel``."""

    order_id: str
    order_link_id: str


class PrivateMessage(msgspec.Struct, rename="camel"):
    """``{"id", "topic", "creationTime", "data": [...]}`` of the private topics."""

    topic: str
    data: msgspec.Raw
    creation_time: int = 0
    id: str = ""


class BookData(msgspec.Struct):
    s: str
    b: list[tuple[Decimal, Decimal]]  # decoded in C; parse_book checks they are sane
    a: list[tuple[Decimal, Decimal]]
    u: int
    seq: int = 0


class BookMessage(msgspec.Struct):
    """An ``orderbook.{depth}.{symbol}`` push (``type`` is ``snapshot`` or ``delta``)."""

    topic: str
    type: str
    ts: int
    data: BookData
    cts: int = 0

"""Bybit V5 shapes of the simulator's records (REST results and private WebSocket data).

Field names and value formats follow the official examples in ``shared/fixtures/bybit``:
decimals are strings, prices carry the instrument's tick precision and quantities its step
precision, timestamps are millisecond strings in order/position bodies and integers in
envelopes. A test compares every shape here with its fixture, key for key.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange_sim.state import Account, Coin, Execution, Instrument, Order, Position

__all__ = [
    "dec",
    "execution_rest",
    "execution_ws",
    "order_history",
    "order_rest",
    "order_ws",
    "position_rest",
    "position_ws",
    "price_str",
    "qty_str",
    "wallet_account",
]

ZERO = Decimal(0)


def dec(value: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros (``"0"`` for zero)."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def price_str(value: Decimal, inst: Instrument) -> str:
    return f"{value:.{inst.price_places}f}"


def qty_str(value: Decimal, inst: Instrument) -> str:
    return f"{value:.{inst.qty_places}f}"


def _fee_detail(order: Order) -> dict[str, str]:
    return {order.fee_coin: dec(order.cum_fee)} if order.fee_coin and order.cum_fee else {}


def _order_common(order: Order, inst: Instrument) -> dict[str, Any]:
    by_value = order.order_type == "Market" and order.market_unit == "quoteCoin"
    qty = dec(order.qty) if by_value else qty_str(order.qty, inst)
    leaves = order.leaves if order.is_open else ZERO
    return {
        "orderId": order.order_id,
        "orderLinkId": order.link_id,
        "blockTradeId": "",
        "symbol": order.symbol,
        "price": price_str(order.price, inst),
        "qty": qty,
        "side": order.side,
        "positionIdx": 0,
        "orderStatus": order.status,
        "cancelType": order.cancel_type,
        "rejectReason": order.reject_reason,
        "avgPrice": dec(order.avg_price) if order.cum_qty else "0",
        "leavesQty": qty_str(leaves, inst),
        "leavesValue": dec(leaves * order.price),
        "cumExecQty": qty_str(order.cum_qty, inst),
        "cumExecValue": dec(order.cum_value),
        "cumExecFee": dec(order.cum_fee),
        "timeInForce": order.tif,
        "orderType": order.order_type,
        "stopOrderType": "UNKNOWN",
        "orderIv": "",
        "triggerPrice": "0" if inst.category == "spot" else price_str(ZERO, inst),
        "takeProfit": "0" if inst.category == "spot" else price_str(ZERO, inst),
        "stopLoss": "0" if inst.category == "spot" else price_str(ZERO, inst),
        "tpTriggerBy": "UNKNOWN",
        "slTriggerBy": "UNKNOWN",
        "triggerDirection": 0,
        "triggerBy": "UNKNOWN",
        "lastPriceOnCreated": order.last_price_on_created,
        "reduceOnly": order.reduce_only,
        "closeOnTrigger": False,
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "tpslMode": "",
        "tpLimitPrice": "",
        "slLimitPrice": "",
        "placeType": "",
        "createdTime": str(order.created),
        "updatedTime": str(order.updated),
        "cumFeeDetail": _fee_detail(order),
    }


def order_rest(order: Order, inst: Instrument) -> dict[str, Any]:
    """An order as ``/v5/order/realtime`` lists it."""
    body = _order_common(order, inst)
    body["isLeverage"] = "0" if inst.category == "spot" else ""
    return body


def order_history(order: Order, inst: Instrument) -> dict[str, Any]:
    """An order as ``/v5/order/history`` lists it (a few more fields than realtime)."""
    body = order_rest(order, inst)
    body["slippageToleranceType"] = "UNKNOWN"
    body["slippageTolerance"] = ""
    body["extraFees"] = ""
    body["rpiTakerAccess"] = False
    body["rpiMatchedQty"] = "0"
    return body


def order_ws(order: Order, inst: Instrument) -> dict[str, Any]:
    """An order as the private ``order`` topic pushes it."""
    body = _order_common(order, inst)
    body["category"] = order.category
    body["feeCurrency"] = order.fee_coin if inst.category == "spot" else ""
    body["closedPnl"] = dec(order.closed_pnl)
    body["rpiTakerAccess"] = False
    body["rpiMatchedQty"] = "0"
    # Fields the docs' table lists for the order topic beyond the (option) official example:
    body["isLeverage"] = "0" if inst.category == "spot" else ""
    body["marketUnit"] = order.market_unit
    body["slippageToleranceType"] = "UNKNOWN"
    body["slippageTolerance"] = ""
    if inst.category == "linear":
        body["createType"] = "CreateByUser"  # "Spot, Option do not have this key"
    else:
        body["ocoTriggerBy"] = "OcoTriggerByUnknown"
    return body


def _execution_common(ex: Execution, inst: Instrument) -> dict[str, Any]:
    by_value = ex.order_type == "Market" and ex.market_unit == "quoteCoin"
    return {
        "symbol": ex.symbol,
        "orderType": ex.order_type,
        "underlyingPrice": "",
        "orderLinkId": ex.link_id,
        "side": ex.side,
        "indexPrice": "",
        "orderId": ex.order_id,
        "stopOrderType": "UNKNOWN",
        "leavesQty": qty_str(ex.leaves, inst),
        "execTime": str(ex.exec_time),
        "feeCurrency": ex.fee_coin,
        "isMaker": ex.is_maker,
        "execFee": dec(ex.exec_fee),
        "feeRate": dec(ex.fee_rate),
        "execId": ex.exec_id,
        "tradeIv": "",
        "blockTradeId": "",
        "markPrice": price_str(ex.mark_price, inst) if ex.mark_price else "",
        "execPrice": price_str(ex.exec_price, inst),
        "markIv": "",
        "orderQty": dec(ex.order_qty) if by_value else qty_str(ex.order_qty, inst),
        "orderPrice": price_str(ex.order_price, inst),
        "execValue": dec(ex.exec_value),
        "execType": ex.exec_type,
        "execQty": qty_str(ex.exec_qty, inst),
        "closedSize": qty_str(ex.closed_size, inst) if inst.category == "linear" else "",
        "seq": ex.seq,
    }


def execution_rest(ex: Execution, inst: Instrument) -> dict[str, Any]:
    body = _execution_common(ex, inst)
    body["extraFees"] = ""
    return body


def execution_ws(ex: Execution, inst: Instrument) -> dict[str, Any]:
    body = _execution_common(ex, inst)
    body["category"] = ex.category
    body["extraFees"] = []
    body["isLeverage"] = "0" if inst.category == "spot" else ""
    body["marketUnit"] = ex.market_unit
    body["execPnl"] = dec(ex.exec_pnl)
    body["createType"] = "CreateByUser"
    return body


def _position_common(pos: Position, inst: Instrument, mark: Decimal) -> dict[str, Any]:
    size = abs(pos.size)
    value = size * pos.avg_price
    upnl = (mark - pos.avg_price) * pos.size if pos.size else ZERO
    im = value / pos.leverage if pos.leverage else ZERO
    return {
        "positionIdx": 0,
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": pos.symbol,
        "side": pos.side,
        "size": qty_str(size, inst),
        "positionValue": dec(value),
        "tradeMode": 0,
        "positionStatus": "Normal",
        "autoAddMargin": 0,
        "adlRankIndicator": 2 if pos.size else 0,
        "leverage": dec(pos.leverage),
        "breakEvenPrice": price_str(pos.avg_price, inst) if pos.size else "0",
        "positionBalance": dec(im),
        "markPrice": price_str(mark, inst),
        "liqPrice": "",
        "bustPrice": "",
        "positionMM": dec(value * Decimal("0.005")),
        "positionMMByMp": dec(size * mark * Decimal("0.005")),
        "positionIM": dec(im),
        "positionIMByMp": dec(size * mark / pos.leverage if pos.leverage else ZERO),
        "tpslMode": "Full",
        "takeProfit": price_str(ZERO, inst),
        "stopLoss": price_str(ZERO, inst),
        "trailingStop": price_str(ZERO, inst),
        "unrealisedPnl": dec(upnl),
        "curRealisedPnl": dec(pos.cur_realised),
        "cumRealisedPnl": dec(pos.cum_realised),
        "seq": pos.seq,
        "isReduceOnly": False,
        "leverageSysUpdatedTime": "",
        "sessionAvgPrice": "",
        "createdTime": str(pos.created),
        "updatedTime": str(pos.updated),
    }


def position_rest(pos: Position, inst: Instrument, mark: Decimal) -> dict[str, Any]:
    body = _position_common(pos, inst, mark)
    body["avgPrice"] = price_str(pos.avg_price, inst) if pos.size else "0"
    body["mmrSysUpdateTime"] = ""  # sic: the REST field is spelled without the "d"
    return body


def position_ws(pos: Position, inst: Instrument, mark: Decimal) -> dict[str, Any]:
    body = _position_common(pos, inst, mark)
    body["entryPrice"] = price_str(pos.avg_price, inst) if pos.size else "0"
    body["mmrSysUpdatedTime"] = ""
    body["category"] = "linear"
    return body


def _coin(name: str, coin: Coin, usd_price: Decimal, upnl: Decimal) -> dict[str, Any]:
    equity = coin.wallet + upnl
    return {
        "coin": name,
        "equity": dec(equity),
        "usdValue": dec(equity * usd_price),
        "walletBalance": dec(coin.wallet),
        "availableToWithdraw": "",
        "availableToBorrow": "",
        "borrowAmount": "0",
        "accruedInterest": "0",
        "totalOrderIM": "0",
        "totalPositionIM": "0",
        "totalPositionMM": "0",
        "unrealisedPnl": dec(upnl),
        "cumRealisedPnl": dec(coin.cum_realised),
        "bonus": "0",
        "collateralSwitch": True,
        "marginCollateral": True,
        "locked": dec(coin.locked),
        "spotHedgingQty": "0",
        "spotBorrow": "0",
    }


def wallet_account(
    account: Account,
    coins: list[str],
    usd_prices: dict[str, Decimal],
    upnl_by_coin: dict[str, Decimal],
    initial_margin: Decimal,
) -> dict[str, Any]:
    """The UNIFIED account row of ``wallet-balance`` and the ``wallet`` topic."""
    rows = []
    total_equity = ZERO
    total_wallet = ZERO
    for name in coins:
        coin = account.coins.get(name)
        if coin is None:
            continue
        price = usd_prices.get(name, ZERO)
        upnl = upnl_by_coin.get(name, ZERO)
        rows.append(_coin(name, coin, price, upnl))
        total_equity += (coin.wallet + upnl) * price
        total_wallet += coin.wallet * price
    upl = sum(upnl_by_coin.values(), ZERO)
    available = total_equity - initial_margin
    return {
        "accountIMRate": dec(initial_margin / total_equity) if total_equity > 0 else "0",
        "accountIMRateByMp": dec(initial_margin / total_equity) if total_equity > 0 else "0",
        "accountMMRate": "0",
        "accountMMRateByMp": "0",
        "totalEquity": dec(total_equity),
        "totalWalletBalance": dec(total_wallet),
        "totalMarginBalance": dec(total_equity),
        "totalAvailableBalance": dec(available),
        "totalPerpUPL": dec(upl),
        "totalInitialMargin": dec(initial_margin),
        "totalInitialMarginByMp": dec(initial_margin),
        "totalMaintenanceMargin": "0",
        "totalMaintenanceMarginByMp": "0",
        "coin": rows,
        "accountLTV": "0",
        "accountType": "UNIFIED",
    }

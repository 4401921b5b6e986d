"""Fill accounting: signed positions with average-cost realised PnL, and fees.

Fills are counted from two independent sources per order, the order stream's cumulative figures
and the de-duplicated executions; whichever has seen more quantity is applied, so neither a lost
execution nor a late order update can hide a fill, and a message that adds nothing changes
nothing. A fee taken in the base coin of a spot buy reduces what is held.
"""

from __future__ import annotations

from decimal import Decimal

from worker.core.model import ZERO, CoreState, Leg, LegPosition, Order, Side


def apply_fills(s: CoreState, o: Order, *, base: str, quote: str) -> tuple[Decimal, Decimal]:
    """Apply the order's not yet applied fills to the positions and fees of ``s``.

    Returns the quantity and quote value applied (zero when nothing was new).
    """
    if o.exec_qty > o.upd_qty:
        qty, value, fees = o.exec_qty, o.exec_value, o.exec_fees
    else:
        qty, value = o.upd_qty, o.upd_value
        coin = o.upd_fee_coin or fee_coin_of(o, base=base, quote=quote)
        fees = {coin: o.upd_fee} if o.upd_qty else {}
    dq = qty - o.applied_qty
    if dq <= ZERO:
        return ZERO, ZERO
    dv = value - o.applied_value
    price = dv / dq
    pos = s.spot if o.leg is Leg.SPOT else s.perp
    trade(pos, dq * o.side.sign, price)
    for coin, total in fees.items():
        delta = total - o.applied_fees.get(coin, ZERO)
        if not delta:
            continue
        if coin == base:
            if o.leg is Leg.SPOT:
                adjust(pos, -delta)  # the venue kept part of the bought coin
            s.fees += delta * price
        elif coin == quote:
            s.fees += delta
        else:
            s.other_fees[coin] = s.other_fees.get(coin, ZERO) + delta
    o.applied_qty, o.applied_value, o.applied_fees = qty, value, dict(fees)
    return dq, dv


def fee_coin_of(o: Order, *, base: str, quote: str) -> str:
    """The coin a fee is charged in when the venue leaves it blank: the coin received by a spot
    buy (Bybit charges spot buys in the base coin), the quote or settle coin otherwise."""
    return base if o.leg is Leg.SPOT and o.side is Side.BUY else quote


def net_pnl(s: CoreState) -> Decimal:
    """Realised PnL net of fees and funding (quote units)."""
    return s.spot.realized + s.perp.realized - s.fees + s.funding


def fmt(value: Decimal) -> str:
    """A decimal for people: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def trade(pos: LegPosition, signed_qty: Decimal, price: Decimal) -> None:
    """Average-cost position update; realises PnL on the reducing part."""
    q = pos.qty
    new = q + signed_qty
    if q == ZERO or (q > ZERO) == (signed_qty > ZERO):
        pos.avg_price = (abs(q) * pos.avg_price + abs(signed_qty) * price) / abs(new)
    else:
        closing = min(abs(signed_qty), abs(q))
        pos.realized += (price - pos.avg_price) * closing * (1 if q > ZERO else -1)
        if new == ZERO:
            pos.avg_price = ZERO
        elif (new > ZERO) != (q > ZERO):
            pos.avg_price = price  # the fill flipped the position: the rest opened at price
    pos.qty = new


def adjust(pos: LegPosition, delta: Decimal) -> None:
    """Change the held quantity without a trade (a fee taken in the traded coin)."""
    pos.qty += delta
    if pos.qty == ZERO:
        pos.avg_price = ZERO

"""Public market-data messages of one book: ``orderbook.1``, ``orderbook.50``, ``publicTrade``
and ``tickers``, in Bybit's V5 shapes and key order.

``orderbook.1`` is snapshot-only and re-sent every 3 s with the same ``u`` when nothing
changed; ``orderbook.50`` is a snapshot then deltas with a continuous ``u`` (size ``"0"``
deletes a level). ``seq`` is the book's cross sequence, shared by both depths and trades.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from exchange_sim.book import Book
from exchange_sim.state import Instrument
from exchange_sim.wire import dec, price_str, qty_str

__all__ = ["DEPTH", "OB1_RESEND_MS", "BookFeed", "encode"]

DEPTH = 50
OB1_RESEND_MS = 3000
_encoder = msgspec.json.Encoder()

Levels = list[tuple[Decimal, Decimal]]


def encode(message: dict[str, Any]) -> bytes:
    return _encoder.encode(message)


class BookFeed:
    """Publishing state of one instrument's public topics."""

    def __init__(self, inst: Instrument) -> None:
        self.inst = inst
        self.cross_seq = 0
        self.u1 = 0
        self.u50 = 0
        self.last1: tuple[Levels, Levels] | None = None
        self.last1_ms = 0
        self.pub_bids: dict[Decimal, Decimal] = {}
        self.pub_asks: dict[Decimal, Decimal] = {}
        self.pub_valid = False
        self.skip_next_u = False
        self.last_price = Decimal(0)
        self.trade_count = 0
        self.ticker_sent: dict[str, Any] = {}

    # --- orderbook ---------------------------------------------------------------------

    def _levels(self, levels: Levels) -> list[list[str]]:
        """``[price, size]`` strings; a deleted level's size is ``"0"``, as Bybit sends it."""
        return [[price_str(p, self.inst), qty_str(s, self.inst) if s else "0"] for p, s in levels]

    def _book_message(
        self, depth: int, kind: str, bids: list[list[str]], asks: list[list[str]], u: int, now: int
    ) -> bytes:
        topic = f"orderbook.{depth}.{self.inst.symbol}"
        data = {"s": self.inst.symbol, "b": bids, "a": asks, "u": u, "seq": self.cross_seq}
        # Spot (every depth) and depth 1 put "ts" before "type"; linear depth 50 after it.
        if self.inst.category == "spot" or depth == 1:
            message = {"topic": topic, "ts": now, "type": kind, "data": data, "cts": now}
        else:
            message = {"topic": topic, "type": kind, "ts": now, "data": data, "cts": now}
        return encode(message)

    def ob1(self, book: Book, now: int) -> bytes | None:
        """A new ``orderbook.1`` snapshot if the top changed, else ``None``."""
        top = (book.top("Buy", 1), book.top("Sell", 1))
        if top == self.last1:
            return None
        self.last1 = top
        self.u1 += 1
        return self.ob1_snapshot(now)

    def ob1_snapshot(self, now: int) -> bytes:
        self.last1_ms = now
        bids, asks = self.last1 if self.last1 is not None else ([], [])
        return self._book_message(
            1, "snapshot", self._levels(bids), self._levels(asks), self.u1, now
        )

    def ob1_for_subscriber(self, book: Book, now: int) -> bytes:
        if self.last1 is None:
            self.last1 = (book.top("Buy", 1), book.top("Sell", 1))
            self.u1 += 1
        bids, asks = self.last1
        return self._book_message(
            1, "snapshot", self._levels(bids), self._levels(asks), self.u1, now
        )

    def ob50_snapshot(self, book: Book, now: int) -> bytes:
        """A full snapshot for a new subscriber; also the base the next deltas build on."""
        bids = book.top("Buy", DEPTH)
        asks = book.top("Sell", DEPTH)
        if not self.pub_valid or dict(bids) != self.pub_bids or dict(asks) != self.pub_asks:
            self.u50 += 1
        self.pub_bids = dict(bids)
        self.pub_asks = dict(asks)
        self.pub_valid = True
        return self._book_message(
            50, "snapshot", self._levels(bids), self._levels(asks), self.u50, now
        )

    def ob50_delta(self, book: Book, now: int) -> bytes | None:
        if not self.pub_valid:
            return None
        bids = dict(book.top("Buy", DEPTH))
        asks = dict(book.top("Sell", DEPTH))
        bid_changes = _diff(self.pub_bids, bids, descending=True)
        ask_changes = _diff(self.pub_asks, asks, descending=False)
        if not bid_changes and not ask_changes:
            return None
        self.pub_bids = bids
        self.pub_asks = asks
        self.u50 += 2 if self.skip_next_u else 1
        self.skip_next_u = False
        return self._book_message(
            50, "delta", self._levels(bid_changes), self._levels(ask_changes), self.u50, now
        )

    def invalidate50(self) -> None:
        """Nobody listens: stop tracking deltas until the next subscriber's snapshot."""
        self.pub_valid = False

    # --- trades and tickers ------------------------------------------------------------

    def trade_entry(
        self, taker_side: str, price: Decimal, qty: Decimal, now: int, trade_id: str
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "T": now,
            "s": self.inst.symbol,
            "S": taker_side,
            "v": qty_str(qty, self.inst),
            "p": price_str(price, self.inst),
        }
        if self.inst.category == "linear":
            entry["L"] = _tick_direction(self.last_price, price)
        entry["i"] = trade_id
        entry["BT"] = False
        entry["seq"] = self.cross_seq
        self.last_price = price
        return entry

    def trades_message(self, entries: list[dict[str, Any]], now: int) -> bytes:
        return encode(
            {
                "topic": f"publicTrade.{self.inst.symbol}",
                "type": "snapshot",
                "ts": now,
                "data": entries,
            }
        )

    def ticker_fields(
        self, book: Book, mark: Decimal, index: Decimal, funding: dict[str, str]
    ) -> dict[str, Any]:
        inst = self.inst
        bid = book.top("Buy", 1)
        ask = book.top("Sell", 1)
        # Before any trade, the mid rounded down to the tick stands in for the last price.
        last = self.last_price or (mark // inst.tick_size) * inst.tick_size
        if inst.category == "spot":
            return {
                "symbol": inst.symbol,
                "lastPrice": price_str(last, inst),
                "highPrice24h": price_str(last, inst),
                "lowPrice24h": price_str(last, inst),
                "prevPrice24h": price_str(last, inst),
                "volume24h": "0",
                "turnover24h": "0",
                "price24hPcnt": "0",
                "usdIndexPrice": dec(index),
            }
        return {
            "symbol": inst.symbol,
            "tickDirection": "ZeroPlusTick",
            "price24hPcnt": "0",
            "lastPrice": price_str(last, inst),
            "prevPrice24h": price_str(last, inst),
            "highPrice24h": price_str(last, inst),
            "lowPrice24h": price_str(last, inst),
            "prevPrice1h": price_str(last, inst),
            "markPrice": price_str(mark, inst),
            "indexPrice": price_str(index, inst),
            "openInterest": "0",
            "openInterestValue": "0",
            "turnover24h": "0",
            "volume24h": "0",
            "fundingIntervalHour": funding["fundingIntervalHour"],
            "fundingCap": "0.005",
            "nextFundingTime": funding["nextFundingTime"],
            "fundingRate": funding["fundingRate"],
            "bid1Price": price_str(bid[0][0], inst) if bid else "",
            "bid1Size": qty_str(bid[0][1], inst) if bid else "",
            "ask1Price": price_str(ask[0][0], inst) if ask else "",
            "ask1Size": qty_str(ask[0][1], inst) if ask else "",
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
        }

    def ticker_message(self, fields: dict[str, Any], now: int, *, snapshot: bool) -> bytes | None:
        """Spot tickers are snapshots; linear sends a snapshot, then only changed fields.

        A new subscriber's snapshot leaves the baseline of the periodic pushes alone, so a
        change not yet pushed still reaches the earlier subscribers.
        """
        topic = f"tickers.{self.inst.symbol}"
        if snapshot and not self.ticker_sent:
            self.ticker_sent = fields
        if self.inst.category == "spot":
            if not snapshot:
                if fields == self.ticker_sent:
                    return None
                self.ticker_sent = fields
            return encode(
                {
                    "topic": topic,
                    "ts": now,
                    "type": "snapshot",
                    "cs": self.cross_seq,
                    "data": fields,
                }
            )
        if snapshot:
            return encode(
                {
                    "topic": topic,
                    "type": "snapshot",
                    "data": fields,
                    "cs": self.cross_seq,
                    "ts": now,
                }
            )
        changed = {k: v for k, v in fields.items() if self.ticker_sent.get(k) != v}
        if not changed:
            return None
        self.ticker_sent = fields
        data = {"symbol": self.inst.symbol, **changed}
        return encode(
            {"topic": topic, "type": "delta", "data": data, "cs": self.cross_seq, "ts": now}
        )


def _diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal], *, descending: bool) -> Levels:
    changes: dict[Decimal, Decimal] = {}
    for price, size in new.items():
        if old.get(price) != size:
            changes[price] = size
    for price in old:
        if price not in new:
            changes[price] = Decimal(0)
    return sorted(changes.items(), reverse=descending)


def _tick_direction(previous: Decimal, price: Decimal) -> str:
    if not previous or price == previous:
        return "ZeroPlusTick"
    return "PlusTick" if price > previous else "MinusTick"

"""Faults injected into a real scripted exchange-sim while real worker processes trade on it.

Each test starts its own simulator, drives its books through the admin API, injects one fault
(``POST /sim/faults``) and checks what the worker did from three independent views: the
simulator's orders (the truth), the REST requests the simulator saw (a recording proxy in
front of its REST port, ``RestRecorder``), and the worker's log and durable snapshot.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.conftest import API_KEY, Json, Sim, running_sim
from tests.integration.worker_harness import (
    BudgetPin,
    Market,
    RestRecorder,
    WorkerProc,
    budget_path,
    endpoints,
    log_ms,
    never,
    own_orders,
    recording_rest,
    running_worker,
    sends,
    wait_for,
    wall_ms,
    write_config,
)
from worker.core.model import OrderStatus, Phase

D = Decimal
LIVE = ("New", "PartiallyFilled")


@pytest.fixture
def rest(sim: Sim) -> Iterator[RestRecorder]:
    with recording_rest(sim) as recorder:
        yield recorder


def started(config: Path, instance: str = "btc") -> WorkerProc:
    worker = WorkerProc(config, instance)
    try:
        worker.wait_event("resynced", timeout=30)
    except BaseException:
        worker.close()
        raise
    return worker


def open_orders(
    sim: Sim, category: str, side: str, prefix: str = "btc-", price: str | None = None
) -> list[Json]:
    return [
        o
        for o in own_orders(sim, prefix)
        if o["category"] == category
        and o["side"] == side
        and o["orderStatus"] in LIVE
        and (price is None or D(o["price"]) == D(price))
    ]


def one_open(
    sim: Sim,
    category: str,
    side: str,
    prefix: str = "btc-",
    price: str | None = None,
    timeout: float = 15.0,
) -> Json:
    def find() -> Json | None:
        found = open_orders(sim, category, side, prefix, price)
        return found[0] if len(found) == 1 else None

    result: Json = wait_for(
        find, timeout, f"one open {prefix}{category} {side} order at {price or 'any price'}"
    )
    return result


def status_of(sim: Sim, link_id: str) -> str:
    order = sim.order(link_id)
    assert order is not None, f"the simulator has no order {link_id}"
    return str(order["orderStatus"])


def price_of(sim: Sim, link_id: str) -> Decimal:
    order = sim.order(link_id)
    assert order is not None, f"the simulator has no order {link_id}"
    return D(order["price"])


def link_ids_unique(sim: Sim) -> None:
    links = [o["orderLinkId"] for o in sim.orders()]
    assert len(links) == len(set(links)), f"an orderLinkId appears twice: {links}"


# --- 1. dropped WebSockets ----------------------------------------------------------------


def test_dropped_websockets_reconnect_resubscribe_and_keep_trading(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        market.at("50000", "15")
        first = one_open(sim, "spot", "Buy", price="50000")["orderLinkId"]
        streams = ("spot", "perp", "private")
        up = [e["stream"] for e in worker.events("stream_up")]
        assert sorted(up) == sorted(streams), up

        sim.fault("drop_ws")

        for stream in streams:
            worker.wait_event("stream_down", stream=stream)
        # every stream comes back (a second stream_up after its stream_down)
        wait_for(
            lambda: all(
                len([e for e in worker.events("stream_up") if e["stream"] == stream]) == 2
                for stream in streams
            ),
            message="spot, perp and private reconnected",
        )
        lines = worker.lines()
        for stream in streams:
            down = next(
                i
                for i, e in enumerate(lines)
                if e.get("event") == "stream_down" and e.get("stream") == stream
            )
            ups = [
                i
                for i, e in enumerate(lines)
                if e.get("event") == "stream_up" and e.get("stream") == stream
            ]
            assert ups[0] < down < ups[1], f"{stream}: no stream_up after its stream_down"
        # a book the worker could not see is no book to quote on: the entry was cancelled
        wait_for(lambda: status_of(sim, first) == "Cancelled", message="first entry cancelled")
        # resubscribed: fresh snapshots on both legs, so it quotes again at the touch
        second = one_open(sim, "spot", "Buy", price="50000")["orderLinkId"]
        assert second != first
        # the public streams carry prices again: the new entry is re-priced in place
        market.spot("50001", "50001.1")
        market.perp("50076", "50076.1")
        wait_for(lambda: price_of(sim, second) == D("50001"), message="entry amended to 50001")
        # the private stream is subscribed again: a fill reaches the worker, the race starts
        sim.trade("spot", "BTCUSDT", "Sell", "50001", "0.52")
        market.spot("50001", "50001.1")
        one_open(sim, "linear", "Sell")
        worker.wait_state(lambda s: s.phase is Phase.RACE_EXIT)
        assert not worker.events("halted")
        link_ids_unique(sim)
        assert worker.stop() == 0


# --- 2. an update-id gap ------------------------------------------------------------------

SUBSCRIBE_DELAY_MS = 1000  # the simulator answers each (un)subscribe this late


def test_update_id_gap_invalidates_the_book_until_a_fresh_snapshot(tmp_path: Path) -> None:
    """The resubscription after a gap takes 2 × the subscribe delay (an unsubscribe, then a
    subscribe whose snapshot heals the book); meanwhile fresh ``orderbook.1`` tops keep coming
    and must not be quoted on."""
    sim_config = tmp_path / "sim.json"
    sim_config.write_text(json.dumps({"ws_subscribe_delay_ms": SUBSCRIBE_DELAY_MS}))
    asks = [("50000.1", "0.5"), ("50000.2", "0.5")]
    with running_sim(tmp_path / "sim-state", config=sim_config) as sim:
        market = Market(sim)
        market.depth = "0.5"
        market.at("50000", "0")
        with running_worker(write_config(tmp_path, sim)) as worker:
            worker.wait_event("resynced", timeout=30)
            sim.book("spot", "BTCUSDT", [("50000", "0.5"), ("49999", "0.5")], asks)
            market.perp("50075", "50075.1")  # about 15 bps
            first = one_open(sim, "spot", "Buy", price="50000")["orderLinkId"]
            assert not worker.events("book_gap")
            before_fault = len(worker.lines())

            sim.fault("skip_u", category="spot", topic="orderbook.50.BTCUSDT")
            # a change below the top: orderbook.1 stays silent, the orderbook.50 delta skips a u
            sim.book("spot", "BTCUSDT", [("50000", "0.5"), ("49998", "0.7")], asks)

            gap = worker.wait_event("book_gap", leg="spot")
            gap_ms = log_ms(gap)
            assert "gap" in gap["reason"]
            # the top moves while the deep book is gapped: orderbook.1 brings it at once
            sim.book(
                "spot", "BTCUSDT", [("50000.5", "0.5"), ("49998", "0.7")], [("50000.6", "0.5")]
            )
            # the gapped book stops quoting: the entry is cancelled (not chased to the new
            # top), although the basis still holds
            line = worker.wait_event("transition", target="flat", reason="book stale or invalid")
            assert line["source"] == "entry_working"
            assert status_of(sim, first) == "Cancelled"
            assert price_of(sim, first) == D("50000")
            cancels = [
                i
                for i, e in enumerate(worker.lines())
                if e.get("event") == "send"
                and e.get("request") == "cancel"
                and e.get("link_id") == first
            ]
            assert cancels and cancels[0] >= before_fault  # asked for only after the gap
            # no quote while gapped, although orderbook.1 shows a fresh top and the basis holds
            window = (gap_ms + 2 * SUBSCRIBE_DELAY_MS - 300 - wall_ms()) / 1000
            assert window > 0.5
            never(
                lambda: [o for o in own_orders(sim) if o["orderLinkId"] != first],
                window,
                "an order placed on the gapped book",
            )
            # only a new orderbook.50 snapshot heals a gap, and only the resubscription brings
            # one: the worker quotes again at the top it could not trust until then
            second = one_open(sim, "spot", "Buy", price="50000.5")
            assert second["orderLinkId"] != first
            assert int(second["createdTime"]) - gap_ms >= 2 * SUBSCRIBE_DELAY_MS - 200
            # and the healed deep book tracks deltas again: a new top is chased
            sim.book("spot", "BTCUSDT", [("50000.7", "0.5")], [("50000.8", "0.5")])
            wait_for(
                lambda: price_of(sim, second["orderLinkId"]) == D("50000.7"),
                message="entry amended",
            )
            assert len(worker.events("book_gap")) == 1
            assert not worker.events("halted")
            link_ids_unique(sim)
            assert worker.stop() == 0


# --- 3. a paused orderbook.1 topic --------------------------------------------------------

STALE_MS = 3500  # the smallest the config allows is above orderbook.1's 3 s re-send
PAUSE_MS = 6500


def test_paused_top_of_book_goes_stale_cancels_and_waits_for_fresh_messages(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    config = write_config(tmp_path, sim, stale_book_ms=STALE_MS)
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        market.at("50000", "15")
        first = one_open(sim, "spot", "Buy", price="50000")["orderLinkId"]

        market.at("50000", "15.5")  # a fresh orderbook.1 on both legs: staleness starts now
        sim.fault("pause_topic", category="spot", topic="orderbook.1.BTCUSDT", ms=PAUSE_MS)
        paused_at = time.monotonic()
        # the spot top moves while orderbook.1 is silent (orderbook.50 deltas still flow, the
        # perp's orderbook.1 too): a worker pricing from anything but fresh tops would chase
        market.at("50010", "15")

        line = worker.wait_event(
            "transition", target="flat", reason="book stale or invalid", timeout=STALE_MS / 1000 + 3
        )
        assert line["source"] == "entry_working"
        assert time.monotonic() - paused_at >= (STALE_MS - 500) / 1000
        assert status_of(sim, first) == "Cancelled"
        assert price_of(sim, first) == D("50000")  # never re-priced on the unseen move
        # nothing is quoted while the book is stale, although the basis holds
        window = paused_at + PAUSE_MS / 1000 - 0.3 - time.monotonic()
        assert window > 1.0
        never(
            lambda: [o for o in own_orders(sim) if o["orderLinkId"] != first],
            window,
            "an order placed while the spot book was stale",
        )
        assert worker.state().phase is Phase.FLAT
        # fresh orderbook.1 messages return (the 3 s re-send, at the latest): quoting resumes
        # at the touch the worker could not see during the pause
        second = one_open(sim, "spot", "Buy", price="50010", timeout=8)["orderLinkId"]
        assert second != first
        assert not worker.events("halted")
        assert worker.stop() == 0


# --- 4. rate limited: 10006 -----------------------------------------------------------------

REFUSALS = 3


def test_rate_limit_backs_off_until_each_reset_without_a_busy_loop(
    tmp_path: Path, sim: Sim, market: Market, rest: RestRecorder
) -> None:
    config = write_config(tmp_path, sim, endpoints=endpoints(sim, rest.url))
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        since = wall_ms()
        sim.fault("rate_limit", count=REFUSALS)
        market.at("50000", "15")

        entry = one_open(sim, "spot", "Buy", price="50000")
        rest.settle()
        seen = rest.requests(since_ms=since)
        refused = [s for s in seen if s.ret_code == 10006]
        assert len(refused) == REFUSALS, seen
        creates = rest.requests("/v5/order/create", since_ms=since)
        assert all(s.path == "/v5/order/create" for s in refused)
        # one request per refusal and the one that went through: no busy loop on 10006
        assert len(creates) == REFUSALS + 1, creates
        assert creates[-1].ret_code == 0
        assert creates[-1].params["orderLinkId"] == entry["orderLinkId"]
        # every request after a refusal waited for the reset time that refusal announced
        for before, after in itertools.pairwise(creates):
            assert before.ret_code == 10006 and before.reset_ms is not None
            assert after.sent_ms >= before.reset_ms - 20, (before, after)
        assert creates[-1].sent_ms - creates[0].sent_ms >= REFUSALS * 1000 - 100
        # and nothing else hammered the venue meanwhile
        assert len(seen) <= len(creates) + 2, seen
        # the worker's log agrees: one place per request, each its own orderLinkId
        places = sends(worker, "place")
        assert [p["link_id"] for p in places] == [c.params["orderLinkId"] for c in creates]
        assert len(own_orders(sim)) == 1
        assert not worker.events("halted")
        assert worker.stop() == 0


# --- 5. a lost reply ----------------------------------------------------------------------


def test_lost_create_reply_is_resolved_by_order_link_id_never_resent(
    tmp_path: Path, sim: Sim, market: Market, rest: RestRecorder
) -> None:
    config = write_config(tmp_path, sim, endpoints=endpoints(sim, rest.url))
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        since = wall_ms()
        sim.fault("lose_reply", count=1)
        market.at("50000", "15")

        entry = one_open(sim, "spot", "Buy", price="50000")  # applied at the venue
        link = entry["orderLinkId"]
        (create,) = rest.requests("/v5/order/create", since_ms=since)
        assert create.params["orderLinkId"] == link
        # the worker asks the venue about the order by its orderLinkId ...
        query = wait_for(
            lambda: rest.requests(
                "/v5/order/realtime", since_ms=since, category="spot", orderLinkId=link
            ),
            timeout=12,
            message="a query by orderLinkId",
        )[0]
        assert create.status is None, "the simulator answered a reply it should have lost"
        assert query.method == "GET"
        # ... and knows it as open, with the venue's id
        worker.wait_state(
            lambda s: (
                link in s.orders
                and s.orders[link].status is OrderStatus.OPEN
                and s.orders[link].venue_order_id == entry["orderId"]
            )
        )
        # never sent again, and no other order while its outcome was in doubt
        assert len(rest.requests("/v5/order/create", orderLinkId=link)) == 1
        assert [o["orderLinkId"] for o in own_orders(sim)] == [link]
        assert len(sends(worker, "place")) == 1
        link_ids_unique(sim)
        # the order keeps being worked: re-priced in place when the market moves
        market.spot("50001", "50001.1")
        market.perp("50076", "50076.1")
        wait_for(lambda: price_of(sim, link) == D("50001"), message="entry amended to 50001")
        assert [o["orderLinkId"] for o in own_orders(sim)] == [link]
        assert len(rest.requests("/v5/order/create", orderLinkId=link)) == 1
        assert not worker.events("halted")
        assert worker.stop() == 0


# --- 6. HTTP 503 on a cancel --------------------------------------------------------------


def test_cancel_answered_503_is_retried_until_the_order_is_cancelled(
    tmp_path: Path, sim: Sim, market: Market, rest: RestRecorder
) -> None:
    config = write_config(tmp_path, sim, endpoints=endpoints(sim, rest.url))
    with running_worker(config) as worker:
        worker.wait_event("resynced", timeout=30)
        market.at("50000", "15")
        link = one_open(sim, "spot", "Buy", price="50000")["orderLinkId"]
        worker.wait_state(lambda s: link in s.orders and s.orders[link].status is OrderStatus.OPEN)

        since = wall_ms()
        sim.fault("http_503", count=2)
        market.perp("50000.5", "50000.6")  # the basis falls back inside the threshold

        wait_for(lambda: status_of(sim, link) == "Cancelled", message="entry cancelled")
        worker.wait_state(lambda s: s.phase is Phase.FLAT and not s.orders)
        worker.wait_event("transition", source="entry_working", target="flat")
        rest.settle()
        cancels = rest.requests("/v5/order/cancel", since_ms=since, orderLinkId=link)
        assert cancels[0].status == 503
        assert cancels[-1].status == 200 and cancels[-1].ret_code == 0, cancels
        assert 2 <= len(cancels) <= 4, cancels
        # retried at a steady pace, not in a loop
        for before, after in itertools.pairwise(cancels):
            assert after.sent_ms - before.sent_ms >= 500, cancels
        assert len(sends(worker, "cancel", link)) == len(cancels)
        assert len(sim.orders()) == 1  # nothing new placed: the basis is inside the threshold
        assert not worker.events("halted")
        assert worker.stop() == 0


# --- 7. two workers, one account, one rate budget -----------------------------------------


def two_rows(tmp_path: Path, sim: Sim, rest: RestRecorder) -> Path:
    rows: list[Json] = [
        {
            "id": "btc",
            "spot_symbol": "BTCUSDT",
            "future_symbol": "BTCUSDT",
            "order_qty": "0.01",
            "state_path": "state/btc.json",
        },
        {
            "id": "eth",
            "spot_symbol": "ETHUSDT",
            "future_symbol": "ETHUSDT",
            "order_qty": "0.1",
            "state_path": "state/eth.json",
        },
    ]
    return write_config(tmp_path, sim, instances=rows, endpoints=endpoints(sim, rest.url))


@pytest.fixture
def eth_market(sim: Sim) -> Market:
    m = Market(sim, "ETHUSDT", tick="0.01")
    m.depth = "0.5"
    m.at("3000", "0")
    return m


def test_a_10006_seen_by_one_worker_holds_back_the_other(
    tmp_path: Path, sim: Sim, market: Market, eth_market: Market, rest: RestRecorder
) -> None:
    config = two_rows(tmp_path, sim, rest)
    btc = started(config, "btc")
    try:
        eth = started(config, "eth")
        try:
            since = wall_ms()
            sim.fault("rate_limit", count=1)
            market.at("50000", "15")
            refusal = wait_for(
                lambda: [s for s in rest.requests(since_ms=since) if s.ret_code == 10006],
                message="btc's create refused with 10006",
            )[0]
            assert refusal.params["symbol"] == "BTCUSDT" and refusal.reset_ms is not None
            eth_market.at("3000", "15")  # eth wants to enter right after btc's refusal

            eth_entry = one_open(sim, "spot", "Buy", prefix="eth-", price="3000")
            (eth_create,) = rest.requests("/v5/order/create", since_ms=since, symbol="ETHUSDT")
            assert eth_create.params["orderLinkId"] == eth_entry["orderLinkId"]
            eth_send = sends(eth, "place")[0]
            # eth decided well before the reset, but its request waited for it: the penalty
            # btc's worker wrote is the account's, and the eth process honoured it
            assert log_ms(eth_send) < refusal.reset_ms - 300
            assert eth_create.sent_ms >= refusal.reset_ms - 20
            one_open(sim, "spot", "Buy", prefix="btc-", price="50000")
            rest.settle()
            assert eth_create.ret_code == 0
            assert [s for s in rest.requests(since_ms=since) if s.ret_code == 10006] == [refusal]
            assert eth.stop() == 0
        finally:
            eth.close()
        assert btc.stop() == 0
    finally:
        btc.close()


def test_shared_budget_shortage_lets_hedges_and_cancels_overtake_entry_amends(
    tmp_path: Path, sim: Sim, market: Market, eth_market: Market, rest: RestRecorder
) -> None:
    config = two_rows(tmp_path, sim, rest)
    btc = started(config, "btc")
    try:
        eth = started(config, "eth")
        try:
            market.at("50000", "15")
            eth_market.at("3000", "15")
            btc_entry = one_open(sim, "spot", "Buy", prefix="btc-", price="50000")["orderLinkId"]
            one_open(sim, "spot", "Buy", prefix="eth-", price="3000")
            # the account's bucket is held inside its reserve: only risk-reducing requests
            # (cancels, hedges, exits) may spend what is left
            pin = BudgetPin(budget_path(config, API_KEY), tokens=3.0)
            pinned_at = wall_ms()
            try:
                # btc's entry should follow a one-tick move: an amend, which adds risk, waits
                market.spot("50001", "50001.1")
                market.perp("50076", "50076.1")
                btc.wait_state(
                    lambda s: btc_entry in s.orders and s.orders[btc_entry].amend is not None
                )
                # eth's entry fills: its perp hedge and spot exit reduce risk and go out now
                sim.trade("spot", "ETHUSDT", "Sell", "3000", "0.7")
                eth_market.spot("3000", "3000.01")
                hedge = one_open(sim, "linear", "Sell", prefix="eth-")
                spot_exit = one_open(sim, "spot", "Sell", prefix="eth-")
                eth.wait_state(lambda s: s.phase is Phase.RACE_EXIT)
                # btc's amend is still waiting: the venue has neither seen it nor applied it
                assert price_of(sim, btc_entry) == D("50000")
                state = btc.state()
                assert state.orders[btc_entry].amend is not None
                # btc's basis falls back: the cancel overtakes btc's own waiting amend
                market.perp("50001.5", "50001.6")
                wait_for(
                    lambda: status_of(sim, btc_entry) == "Cancelled", message="btc entry cancelled"
                )
                btc.wait_state(lambda s: s.phase is Phase.FLAT and not s.orders)
                assert rest.requests("/v5/order/amend", orderLinkId=btc_entry) == []
                tokens, _ = pin.read()
                assert tokens < 6  # still inside the reserve: the shortage held throughout
                released_at = wall_ms()
            finally:
                pin.release()
            # what reached the venue during the shortage: risk-reducing requests only
            during = [s for s in rest.requests(since_ms=pinned_at) if s.sent_ms <= released_at]
            posted = [(s.path, s.params.get("orderLinkId")) for s in during if s.method == "POST"]
            assert ("/v5/order/create", hedge["orderLinkId"]) in posted
            assert ("/v5/order/create", spot_exit["orderLinkId"]) in posted
            assert ("/v5/order/cancel", btc_entry) in posted
            assert ("/v5/order/amend", btc_entry) not in posted
            entry_links = {btc_entry} | {
                o["orderLinkId"]
                for o in sim.orders()
                if o["orderLinkId"].startswith(("btc-", "eth-"))
                and o["category"] == "spot"
                and o["side"] == "Buy"
            }
            assert not [
                p
                for p in posted
                if p[1] in entry_links and p[0] in ("/v5/order/create", "/v5/order/amend")
            ]
            # after the shortage the amend that waited finally goes out, too late to matter
            wait_for(
                lambda: rest.requests("/v5/order/amend", orderLinkId=btc_entry),
                message="btc's entry amend sent after the shortage",
            )
            assert status_of(sim, btc_entry) == "Cancelled"
            assert not btc.events("halted") and not eth.events("halted")
            link_ids_unique(sim)
            assert eth.stop() == 0
        finally:
            eth.close()
        assert btc.stop() == 0
    finally:
        btc.close()


# --- 8. a malformed venue message -----------------------------------------------------------


def test_a_malformed_book_message_is_logged_and_the_book_is_rebuilt(
    tmp_path: Path, sim: Sim, market: Market
) -> None:
    with running_worker(write_config(tmp_path, sim)) as worker:
        worker.wait_event("resynced", timeout=30)
        market.at("50000", "15")
        one_open(sim, "spot", "Buy", price="50000")
        sim.fault("garble", category="spot", topic="orderbook.50.BTCUSDT")
        market.spot("50001", "50001.1")  # its orderbook.50 delta arrives cut in half
        bad = worker.wait_event("bad_message", source="spot")
        assert "orderbook.50.BTCUSDT" in bad["raw"] and bad["detail"]
        # never a crash: the leg is rebuilt from a fresh snapshot and quoting goes on
        market.spot("50002", "50002.1")
        one_open(sim, "spot", "Buy", price="50002")
        worker.assert_alive()
        link_ids_unique(sim)
        assert worker.stop() == 0

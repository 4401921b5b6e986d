"""What a worker checks on Bybit before it may trade (issue 4, "Before trading").

In order: the server clock is within the receive window of ours; both instruments exist and
their rules and fee rates pass the instance's stage-2 check (``check_instance_against_venue``,
the same messages and JSON paths as ``--check``); the account is a unified trading account;
the perpetual is in one-way mode; its leverage is the configured one (set when it differs;
Bybit's 110043 "not modified" is success). A dry-run without API keys (``private=False``)
checks only what is public and assumes Bybit's base-tier fee rates, with a warning. A
refusal that the configuration must fix raises
``SetupError`` with exit code 2; a venue that cannot be reached or answers nonsense raises it
with exit code 1 (the hub restarts the worker with backoff). A rate-limit refusal (10006: a
whole fleet starting on one account) is waited out until the venue's reset time and asked
again; only if it persists is it exit code 1, never 2.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial

import msgspec

from worker.core.config import InstanceConfig
from worker.core.instruments import FeeRates, InstrumentRules
from worker.core.venue_check import check_instance_against_venue
from worker.venues.bybit.errors import RATE_LIMIT
from worker.venues.bybit.parse import BybitError, parse_fee_rates, parse_instruments, positions
from worker.venues.bybit.rest import BybitRest, Done, Outcome, Refused, Unknown
from worker.venues.bybit.schemas import ListResult
from worker.venues.types import VenueSetup

__all__ = ["LEVERAGE_UNCHANGED", "SetupError", "VenueSetup", "prepare"]

LEVERAGE_UNCHANGED = 110043
# Bybit's non-VIP rates, assumed by a dry-run that has no keys to ask for the account's own
BASE_TIER_FEES = {
    "spot": FeeRates(maker=Decimal("0.001"), taker=Decimal("0.001")),
    "linear": FeeRates(maker=Decimal("0.0002"), taker=Decimal("0.00055")),
}
_UNIFIED = frozenset({3, 4, 5, 6})  # unifiedMarginStatus of unified trading accounts
RATE_LIMIT_TRIES = 12
# a request with no answer (timeout, 5xx; see _unanswered) is asked again after 0.5, 1, 2
# and 4 s (jittered): every setup request is a query or an idempotent setting, and on a host
# busy starting a fleet the venue (or the simulator) may answer late
UNANSWERED_TRIES = 4
INFO, FEES, TICKERS = "/v5/market/instruments-info", "/v5/account/fee-rate", "/v5/market/tickers"


class SetupError(Exception):
    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Time(msgspec.Struct, rename="camel"):
    time_nano: str


class _Ticker(msgspec.Struct, rename="camel"):
    symbol: str
    last_price: str


class _Tickers(msgspec.Struct):
    items: list[_Ticker] = msgspec.field(name="list", default_factory=list)


class _AccountInfo(msgspec.Struct, rename="camel"):
    unified_margin_status: int


def _done(outcome: Outcome, what: str) -> Done:
    if isinstance(outcome, Done):
        return outcome
    if isinstance(outcome, Refused) and outcome.code != RATE_LIMIT:
        raise SetupError(f"{what}: refused ({outcome.code}: {outcome.message})", exit_code=2)
    reason = outcome.message if isinstance(outcome, Refused) else outcome.reason
    raise SetupError(f"{what}: {reason}", exit_code=1)  # transient: restarted with backoff


def _rate_limited(outcome: Outcome) -> bool:
    return isinstance(outcome, Refused) and outcome.code == RATE_LIMIT


def _unanswered(outcome: Outcome) -> bool:
    """No answer at all (timeout, 5xx, not an envelope). A venue that answered with a code
    this client does not classify (110043 "leverage not modified", say) has answered."""
    return isinstance(outcome, Unknown) and outcome.code is None


async def _pause(outcome: Outcome) -> None:
    """Until the venue's rate-limit reset (0.2–5 s), with jitter so a fleet spreads out."""
    limit = outcome.rate_limit
    reset_s = limit.reset_ms / 1000 - time.time() if limit is not None else 0.0
    await asyncio.sleep(min(max(reset_s, 0.2), 5.0) + random.uniform(0, 0.5))


async def _retried(call: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """The venue's answer, asked again while it is a rate-limit refusal (a fleet starting at
    once shares one account's limits: a wait, never a configuration error) or no answer at
    all (see ``UNANSWERED_TRIES``). What persists is returned: a retryable failure (exit 1)."""
    outcome = await call()
    limited = unanswered = 0
    while True:
        if _rate_limited(outcome) and limited < RATE_LIMIT_TRIES:
            limited += 1
            await _pause(outcome)
        elif _unanswered(outcome) and unanswered < UNANSWERED_TRIES:
            await asyncio.sleep(0.5 * 2**unanswered * random.uniform(0.75, 1.25))
            unanswered += 1
        else:
            return outcome
        outcome = await call()


async def _ask(call: Callable[[], Awaitable[Outcome]], what: str) -> Done:
    return _done(await _retried(call), what)


async def prepare(
    rest: BybitRest,
    cfg: InstanceConfig,
    *,
    path: str,
    clock_ms: Callable[[], int],
    private: bool = True,
    trading: bool = True,
) -> VenueSetup:
    """``private``: API keys are at hand (fee rates are the account's); ``trading``: orders
    will be sent, so the account's mode and the leverage are checked and set."""
    try:
        return await _prepare(rest, cfg, path, clock_ms, private, private and trading)
    except (BybitError, msgspec.DecodeError, ValueError) as exc:
        raise SetupError(f"unexpected venue reply: {exc}", exit_code=1) from None


async def _prepare(
    rest: BybitRest,
    cfg: InstanceConfig,
    path: str,
    clock_ms: Callable[[], int],
    private: bool,
    trading: bool,
) -> VenueSetup:
    sent = 0

    async def server_time() -> Outcome:
        nonlocal sent
        sent = clock_ms()  # the skew is measured around the answer that counts
        return await rest.get("/v5/market/time", {}, auth=False)

    server = await _ask(server_time, "server time")
    local = (sent + clock_ms()) // 2
    skew = int(msgspec.json.decode(server.result, type=_Time).time_nano) // 1_000_000 - local
    if abs(skew) * 2 > rest.recv_window_ms:
        raise SetupError(
            f"the venue's clock differs from ours by {skew} ms (receive window "
            f"{rest.recv_window_ms} ms): fix the system clock (NTP)",
            exit_code=2,
        )
    rules: dict[str, InstrumentRules] = {}
    fees: dict[str, FeeRates] = {}
    prices: dict[str, Decimal] = {}
    for category, symbol in (("spot", cfg.spot_symbol), ("linear", cfg.future_symbol)):
        params = {"category": category, "symbol": symbol}
        info = await _ask(partial(rest.get, INFO, params, auth=False), symbol)
        found = [r for r in parse_instruments(info.body) if r.symbol == symbol]
        if found:
            rules[category] = found[0]
        if private:
            rates = await _ask(partial(rest.get, FEES, params), f"{symbol} fee rate")
            fees.update({f"{category}:{k}": v for k, v in parse_fee_rates(rates.body).items()})
        else:
            fees[f"{category}:{symbol}"] = BASE_TIER_FEES[category]
        ticker = await _ask(partial(rest.get, TICKERS, params, auth=False), symbol)
        for row in msgspec.json.decode(ticker.result, type=_Tickers).items:
            if row.symbol == symbol and row.last_price:
                prices[category] = Decimal(row.last_price)
    check = check_instance_against_venue(
        path=path,
        spot_symbol=cfg.spot_symbol,
        future_symbol=cfg.future_symbol,
        order_qty=cfg.order_qty,
        quote_coin=cfg.quote_coin,
        entry_threshold_bps=cfg.entry_threshold_bps,
        spot=rules.get("spot"),
        perp=rules.get("linear"),
        spot_fees=fees.get(f"spot:{cfg.spot_symbol}"),
        perp_fees=fees.get(f"linear:{cfg.future_symbol}"),
        spot_price=prices.get("spot"),
        perp_price=prices.get("linear"),
    )
    if check.errors:
        raise SetupError("\n".join(check.errors), exit_code=2)
    warnings = list(check.warnings)
    if trading:
        await _account(rest, cfg)
    if not private:
        warnings.append("dry-run without API keys: Bybit's base-tier fee rates are assumed")
    return VenueSetup(
        spot=rules["spot"],
        perp=rules["linear"],
        spot_fees=fees[f"spot:{cfg.spot_symbol}"],
        perp_fees=fees[f"linear:{cfg.future_symbol}"],
        skew_ms=skew,
        warnings=warnings,
    )


async def _account(rest: BybitRest, cfg: InstanceConfig) -> None:
    info_outcome = await _ask(partial(rest.get, "/v5/account/info", {}), "account info")
    status = msgspec.json.decode(info_outcome.result, type=_AccountInfo).unified_margin_status
    if status not in _UNIFIED:
        raise SetupError(
            f"the account is not a unified trading account (unifiedMarginStatus {status})",
            exit_code=2,
        )
    await _one_way(rest, cfg.future_symbol)
    await _leverage(rest, cfg.future_symbol, cfg.leverage)


class _PositionIdx(msgspec.Struct, rename="camel"):
    position_idx: int = 0


async def _one_way(rest: BybitRest, symbol: str) -> None:
    params = {"category": "linear", "symbol": symbol}
    listed = await _ask(partial(rest.get, "/v5/position/list", params), f"{symbol} position")
    rows = msgspec.json.decode(listed.result, type=ListResult).items
    positions(rows)  # validates the rows' shape
    for row in msgspec.json.decode(rows, type=list[_PositionIdx]):
        if row.position_idx != 0:
            raise SetupError(
                f"{symbol} is in hedge mode (positionIdx {row.position_idx}); "
                "switch the account to one-way mode",
                exit_code=2,
            )


async def _leverage(rest: BybitRest, symbol: str, leverage: Decimal) -> None:
    value = format(leverage, "f")
    body = {"category": "linear", "symbol": symbol, "buyLeverage": value, "sellLeverage": value}
    outcome = await _retried(partial(rest.post, "/v5/position/set-leverage", body))
    if not isinstance(outcome, Done) and outcome.code == LEVERAGE_UNCHANGED:
        return  # already at this leverage (Bybit answers "not modified")
    _done(outcome, f"{symbol} leverage {value}")

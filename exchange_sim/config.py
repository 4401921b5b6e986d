"""The simulator's configuration: instruments, accounts, fees, market model and rate limits.

Everything has a default, so ``exchange-sim`` without ``--config`` is a working exchange: one
account (``arbhub-sim-key``) and BTC/ETH/SOL against USDT in ``spot`` and ``linear`` with
Bybit's tick, step and minimums. A config file overrides any subset of the top-level keys.
Prices and quantities are decimals written as strings, never binary floats.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "AccountSpec",
    "FeeSpec",
    "Fees",
    "InstrumentSpec",
    "LegSpec",
    "ModelSpec",
    "SimConfig",
    "SimConfigError",
    "default_config",
    "load_sim_config",
    "parse_sim_config",
]

DEFAULT_API_KEY = "arbhub-sim-key"
DEFAULT_API_SECRET = "arbhub-sim-secret"


class SimConfigError(ValueError):
    """The simulator's config file is unreadable or invalid; the message says where."""


class LegSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tradeable instrument: the venue's price and quantity grid.

    For spot, ``qty_step`` is Bybit's ``basePrecision`` and ``min_notional`` its
    ``minOrderAmt``; for linear they are ``qtyStep`` and ``minNotionalValue``.
    """

    tick_size: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_qty: Decimal
    max_market_qty: Decimal


class InstrumentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A base coin traded as spot and as a linear perpetual under one symbol.

    ``price`` is where the market model starts the spot mid; ``volatility_bps`` is the
    spot mid's standard deviation per second of the random walk.
    """

    symbol: str
    base_coin: str
    quote_coin: str
    price: Decimal
    spot: LegSpec | None = None
    linear: LegSpec | None = None
    volatility_bps: Decimal = Decimal("2")
    level_size: Decimal | None = None


class FeeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    maker: Decimal
    taker: Decimal


class Fees(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    spot: FeeSpec = FeeSpec(maker=Decimal("0.001"), taker=Decimal("0.001"))
    linear: FeeSpec = FeeSpec(maker=Decimal("0.0002"), taker=Decimal("0.00055"))


class AccountSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    api_key: str
    api_secret: str
    balances: dict[str, Decimal]


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The seeded market model (see docs/simulator.md).

    The basis is an Ornstein-Uhlenbeck process in bps: it reverts to ``basis_mean_bps`` at
    ``basis_reversion_per_s`` and diffuses with ``basis_volatility_bps`` per √second. Taker
    flow arrives as a Poisson process of ``taker_rate_per_s`` trades per book with sizes drawn
    from an exponential distribution of mean ``taker_size_levels`` × the level size.
    """

    step_ms: int = 100
    basis_mean_bps: Decimal = Decimal("0")
    basis_reversion_per_s: Decimal = Decimal("0.2")
    basis_volatility_bps: Decimal = Decimal("4")
    depth_levels: int = 60
    spread_ticks: int = 1
    level_spacing_ticks: int = 1
    level_notional: Decimal = Decimal("20000")
    taker_rate_per_s: Decimal = Decimal("4")
    taker_size_levels: Decimal = Decimal("0.6")
    funding_interval_s: int = 28800
    funding_rate: Decimal = Decimal("0.0001")
    market_slippage: Decimal = Decimal("0.01")


def _default_instruments() -> list[InstrumentSpec]:
    """Bybit's grids for the three default markets (spot and USDT perpetual)."""
    return [
        InstrumentSpec(
            symbol="BTCUSDT",
            base_coin="BTC",
            quote_coin="USDT",
            price=Decimal("65000"),
            spot=LegSpec(
                tick_size=Decimal("0.1"),
                qty_step=Decimal("0.000001"),
                min_qty=Decimal("0.000011"),
                min_notional=Decimal("5"),
                max_qty=Decimal("83"),
                max_market_qty=Decimal("41.5"),
            ),
            linear=LegSpec(
                tick_size=Decimal("0.10"),
                qty_step=Decimal("0.001"),
                min_qty=Decimal("0.001"),
                min_notional=Decimal("5"),
                max_qty=Decimal("1190"),
                max_market_qty=Decimal("500"),
            ),
        ),
        InstrumentSpec(
            symbol="ETHUSDT",
            base_coin="ETH",
            quote_coin="USDT",
            price=Decimal("3200"),
            spot=LegSpec(
                tick_size=Decimal("0.01"),
                qty_step=Decimal("0.00001"),
                min_qty=Decimal("0.00062"),
                min_notional=Decimal("5"),
                max_qty=Decimal("1229"),
                max_market_qty=Decimal("614"),
            ),
            linear=LegSpec(
                tick_size=Decimal("0.01"),
                qty_step=Decimal("0.01"),
                min_qty=Decimal("0.01"),
                min_notional=Decimal("5"),
                max_qty=Decimal("7240"),
                max_market_qty=Decimal("3620"),
            ),
        ),
        InstrumentSpec(
            symbol="SOLUSDT",
            base_coin="SOL",
            quote_coin="USDT",
            price=Decimal("150"),
            spot=LegSpec(
                tick_size=Decimal("0.01"),
                qty_step=Decimal("0.001"),
                min_qty=Decimal("0.011"),
                min_notional=Decimal("5"),
                max_qty=Decimal("13000"),
                max_market_qty=Decimal("6500"),
            ),
            linear=LegSpec(
                tick_size=Decimal("0.010"),
                qty_step=Decimal("0.1"),
                min_qty=Decimal("0.1"),
                min_notional=Decimal("5"),
                max_qty=Decimal("79770"),
                max_market_qty=Decimal("39880"),
            ),
        ),
    ]


def _default_accounts() -> list[AccountSpec]:
    return [
        AccountSpec(
            api_key=DEFAULT_API_KEY,
            api_secret=DEFAULT_API_SECRET,
            balances={
                "USDT": Decimal("100000"),
                "BTC": Decimal("2"),
                "ETH": Decimal("30"),
                "SOL": Decimal("500"),
            },
        )
    ]


def _default_rate_limits() -> dict[str, dict[str, int]]:
    """Bybit's per-UID, per-endpoint requests per second (non-VIP), by category."""
    trade = {"spot": 20, "linear": 10}
    return {
        "/v5/order/create": trade,
        "/v5/order/amend": {"spot": 10, "linear": 10},
        "/v5/order/cancel": trade,
        "/v5/order/cancel-all": trade,
        "/v5/order/realtime": {"*": 50},
        "/v5/order/history": {"*": 50},
        "/v5/execution/list": {"*": 50},
        "/v5/position/list": {"*": 50},
        "/v5/position/set-leverage": {"*": 10},
        "/v5/account/wallet-balance": {"*": 50},
        "/v5/account/fee-rate": {"*": 10},
        "/v5/account/info": {"*": 50},
    }


class SimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole simulator configuration. ``rate_limits`` maps a REST path to requests per
    second per category (``"*"`` for any category)."""

    instruments: list[InstrumentSpec] = msgspec.field(default_factory=_default_instruments)
    accounts: list[AccountSpec] = msgspec.field(default_factory=_default_accounts)
    fees: Fees = msgspec.field(default_factory=Fees)
    model: ModelSpec = msgspec.field(default_factory=ModelSpec)
    rate_limits: dict[str, dict[str, int]] = msgspec.field(default_factory=_default_rate_limits)
    ws_subscribe_delay_ms: int = 30


def default_config() -> SimConfig:
    return SimConfig()


def _check(config: SimConfig) -> None:
    problems: list[str] = []
    seen: set[str] = set()
    for i, inst in enumerate(config.instruments):
        where = f"instruments[{i}]"
        if inst.symbol in seen:
            problems.append(f"{where}.symbol: {inst.symbol!r} appears twice")
        seen.add(inst.symbol)
        if inst.spot is None and inst.linear is None:
            problems.append(f"{where}: needs a 'spot' or a 'linear' leg")
        if inst.price <= 0:
            problems.append(f"{where}.price: must be positive")
        for name, leg in (("spot", inst.spot), ("linear", inst.linear)):
            if leg is None:
                continue
            for field in ("tick_size", "qty_step", "max_qty", "max_market_qty"):
                if getattr(leg, field) <= 0:
                    problems.append(f"{where}.{name}.{field}: must be positive")
    keys = [a.api_key for a in config.accounts]
    if len(set(keys)) != len(keys):
        problems.append("accounts: an api_key appears twice")
    if not config.accounts:
        problems.append("accounts: at least one account is needed")
    if config.model.step_ms <= 0:
        problems.append("model.step_ms: must be positive")
    if config.model.depth_levels < 1 or config.model.depth_levels > 500:
        problems.append("model.depth_levels: must be between 1 and 500")
    for path, limits in config.rate_limits.items():
        for category, limit in limits.items():
            if limit <= 0:
                problems.append(f"rate_limits[{path!r}][{category!r}]: must be positive")
    if problems:
        raise SimConfigError("; ".join(problems))


def parse_sim_config(text: str | bytes) -> SimConfig:
    try:
        config = msgspec.json.decode(text, type=SimConfig)
    except msgspec.DecodeError as exc:
        raise SimConfigError(f"invalid simulator config: {exc}") from None
    _check(config)
    return config


def load_sim_config(path: str | Path | None) -> SimConfig:
    if path is None:
        config = default_config()
        _check(config)
        return config
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise SimConfigError(f"cannot read simulator config {path}: {exc.strerror}") from None
    try:
        return parse_sim_config(text)
    except SimConfigError as exc:
        raise SimConfigError(f"{path}: {exc}") from None

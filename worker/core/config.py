"""The fleet configuration: its model, its defaults and the static validation (stage 1, §3).

This module is pure: it turns the config file's TEXT into a resolved ``FleetConfig`` and a list of
problems, so the rules can be tested table-driven and shared by the worker, the hub and
``spot-future-arb --check``. Facts that need the file system (does the account file exist, who
may read it, does it hold keys) are gathered by ``worker.config_loader`` and judged here by
``judge_account_file`` / ``judge_path``, so every message is written in one place.

Every problem carries its JSON path and one sentence an operator can act on, and EVERY problem
is reported at once: an operator should fix the file in one pass, not one error per run.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from ipaddress import ip_address
from pathlib import PurePath
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "ACCEPTED_KEYS",
    "AccountFacts",
    "AccountUse",
    "ConfigAnalysis",
    "ConfigError",
    "ConfigProblem",
    "Endpoints",
    "FleetConfig",
    "HedgeMode",
    "HubConfig",
    "InstanceConfig",
    "Mode",
    "PathCheck",
    "PathFacts",
    "Venue",
    "analyse_config",
    "judge_account_file",
    "judge_path",
    "parse_config",
]


class HedgeMode(StrEnum):
    """How the perp leg is hedged after a spot fill (§4.4)."""

    RACE = "race"
    MARKET = "market"


class Venue(StrEnum):
    SIM = "sim"
    BYBIT = "bybit"


class Mode(StrEnum):
    """What an instance really does; shown on /arb so nobody mistakes LIVE for a demo."""

    SIM = "SIM"
    DRY_RUN = "DRY-RUN"
    DEMO = "DEMO"
    TESTNET = "TESTNET"
    LIVE = "LIVE"


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """Where the venue is; ``/spot`` or ``/linear`` is appended to ``ws_public``."""

    rest: str
    ws_public: str
    ws_private: str


class HubConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The supervisor's settings; paths are absolute after resolution."""

    host: str = "127.0.0.1"
    port: int = 8800
    run_dir: str = "run"
    start_retries: int = 5
    backoff_max_s: Decimal = Decimal(60)
    stop_grace_s: Decimal = Decimal(30)
    token_file: str | None = None
    alert_webhook: str | None = None
    enable_docs: bool = False


class InstanceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One fully resolved instance: defaults, then the root, then its own row."""

    id: str
    spot_symbol: str
    future_symbol: str
    order_qty: Decimal
    state_path: str
    venue: Venue
    demo: bool
    testnet: bool
    execute: bool
    endpoints: Endpoints | None
    account_file: str | None
    quote_coin: str
    entry_threshold_bps: Decimal
    exit_threshold_bps: Decimal
    emergency_unwind_bps: Decimal
    chase_interval_ms: int
    chase_max_slip_bps: Decimal
    max_unhedged_ms: int
    hedge_mode: HedgeMode
    leverage: Decimal
    stale_book_ms: int
    ws_ping_interval_s: int
    max_notional_quote: Decimal | None
    max_daily_loss_quote: Decimal | None
    sim_config: str | None

    @property
    def mode(self) -> Mode:
        """Dry-run wins over everything: with ``execute`` false no order is ever sent."""
        return _mode(self.venue, self.demo, self.testnet, self.execute)


class ConfigProblem(msgspec.Struct, frozen=True):
    """One error or warning: the JSON path it is about and a sentence saying what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; carries every problem, not just the first."""

    def __init__(
        self, problems: Iterable[ConfigProblem], warnings: Iterable[ConfigProblem] = ()
    ) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        self.warnings: list[ConfigProblem] = list(warnings)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class FleetConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The whole config file, resolved: every instance, the hub, the shared venue."""

    path: str
    instances: list[InstanceConfig]
    hub: HubConfig
    venue: Venue
    single_strategy: bool

    @property
    def ids(self) -> list[str]:
        return [row.id for row in self.instances]

    def row_path(self, instance_id: str) -> str:
        """JSON path of an instance's row (empty for a single-strategy root), for messages."""
        if self.single_strategy:
            return ""
        return f"instances[{self.ids.index(instance_id)}]"

    def instance(self, id: str | None) -> InstanceConfig:
        """The instance a worker runs; ``None`` is fine when there is only one."""
        ids = ", ".join(self.ids)
        if id is None:
            if len(self.instances) == 1:
                return self.instances[0]
            raise ConfigError(
                [
                    ConfigProblem(
                        "instances",
                        f"this config has {len(self.instances)} instances ({ids}); "
                        "choose one with --instance ID",
                    )
                ]
            )
        for row in self.instances:
            if row.id == id:
                return row
        if self.single_strategy:
            message = (
                f'there is no instance "{id}": this config has no instances[], so its only '
                'instance is "default"; omit --instance or pass --instance default'
            )
        else:
            message = f'there is no instance "{id}" in this config; choose one of: {ids}'
        raise ConfigError([ConfigProblem("instances", message)])


# --------------------------------------------------------------------------------------------
# File checks: the pure side says what must be looked at and judges what the I/O side found.


class AccountUse(msgspec.Struct, frozen=True, kw_only=True):
    """Who relies on the account file, so its problems get the right severity."""

    file: str  # absolute
    venue: Venue
    explicit: bool  # written in the config (with venue sim it is only used when given)
    trading: tuple[str, ...]  # instances that send orders with these keys
    live: tuple[str, ...]  # instances trading real money
    path: str = "account_file"


class AccountFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the loader found in the account file; never the key values themselves."""

    exists: bool
    is_file: bool = True
    mode: int | None = None  # permission bits, e.g. 0o600
    read_error: str | None = None  # OS error text
    json_error: str | None = None  # parse error, or "not a JSON object"
    api_key_present: bool = False
    api_secret_present: bool = False

    @property
    def usable(self) -> bool:
        return (
            self.exists
            and self.is_file
            and self.read_error is None
            and self.json_error is None
            and self.api_key_present
            and self.api_secret_present
        )


class PathKind(StrEnum):
    SIM_CONFIG = "sim_config"
    TOKEN_FILE = "token_file"


class PathCheck(msgspec.Struct, frozen=True, kw_only=True):
    """A file the config names that must exist before anything starts."""

    path: str  # JSON path
    file: str  # absolute
    kind: PathKind


class PathFacts(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool
    is_file: bool = True
    size: int = 0
    mode: int | None = None
    error: str | None = None


class ConfigAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    """Static validation's result, plus the file checks the I/O side must still run."""

    config: FleetConfig | None
    errors: list[ConfigProblem]
    warnings: list[ConfigProblem]
    account: AccountUse | None
    paths: list[PathCheck]


def _who(ids: tuple[str, ...]) -> str:
    if len(ids) == 1:
        return f"instance {ids[0]} trades"
    return f"instances {', '.join(ids)} trade"


def _account_unusable_reason(facts: AccountFacts) -> str:
    if not facts.exists:
        return "does not exist"
    if not facts.is_file:
        return "is not a regular file"
    if facts.read_error is not None:
        return f"cannot be read ({facts.read_error})"
    if facts.json_error is not None:
        return f"is not usable ({facts.json_error})"
    missing = [
        name
        for name, present in (
            ("api_key", facts.api_key_present),
            ("api_secret", facts.api_secret_present),
        )
        if not present
    ]
    return f"has an empty or missing {' and '.join(missing)}"


def judge_account_file(
    use: AccountUse, facts: AccountFacts
) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """Errors and warnings about the account file; no message ever contains a key value."""
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    if not facts.usable:
        reason = f"{use.file} {_account_unusable_reason(facts)}"
        if use.trading and use.venue is Venue.BYBIT:
            errors.append(
                ConfigProblem(
                    use.path,
                    f'{reason}, but {_who(use.trading)} on bybit with "execute": true; '
                    "without API keys only dry-run or the simulator can run, so put "
                    'api_key and api_secret into that file, set "execute": false, '
                    'or use "venue": "sim"',
                )
            )
        elif use.trading:
            errors.append(
                ConfigProblem(
                    use.path,
                    f"{reason}; fix it, or remove account_file to trade with the "
                    "simulator's default account",
                )
            )
        elif facts.exists and use.venue is Venue.BYBIT:
            warnings.append(
                ConfigProblem(
                    use.path, f"{reason}; dry-run does not need API keys, but trading will"
                )
            )
        elif use.explicit and use.venue is Venue.SIM:
            warnings.append(
                ConfigProblem(
                    use.path,
                    f"{reason}; remove account_file to use the simulator's default account",
                )
            )
    exposed = facts.exists and facts.is_file and facts.mode is not None and facts.mode & 0o077
    if exposed and use.venue is Venue.BYBIT:
        assert facts.mode is not None
        base = (
            f"{use.file} is readable or writable by other users (mode {facts.mode & 0o777:04o}); "
            f"run chmod 600 {use.file}"
        )
        if use.live:
            errors.append(ConfigProblem(use.path, f"{base} before {_who(use.live)} live with it"))
        else:
            warnings.append(ConfigProblem(use.path, f"{base}, which live trading requires"))
    return errors, warnings


def judge_path(
    check: PathCheck, facts: PathFacts
) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """Errors and warnings about a file named by ``sim_config`` or ``hub.token_file``."""
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    if check.kind is PathKind.SIM_CONFIG:
        fix = "create it, or remove sim_config to run the simulator with its built-in defaults"
    else:
        fix = "write the hub's bearer token into it (one line), or bind hub.host to 127.0.0.1"
    if facts.error is not None:
        errors.append(ConfigProblem(check.path, f"{check.file} cannot be read ({facts.error})"))
    elif not facts.exists:
        errors.append(ConfigProblem(check.path, f"{check.file} does not exist; {fix}"))
    elif not facts.is_file:
        errors.append(ConfigProblem(check.path, f"{check.file} is not a regular file; {fix}"))
    elif check.kind is PathKind.TOKEN_FILE:
        if facts.size == 0:
            errors.append(ConfigProblem(check.path, f"{check.file} is empty; {fix}"))
        if facts.mode is not None and facts.mode & 0o077:
            warnings.append(
                ConfigProblem(
                    check.path,
                    f"{check.file} is readable or writable by other users "
                    f"(mode {facts.mode & 0o777:04o}); run chmod 600 {check.file}",
                )
            )
    return errors, warnings


# --------------------------------------------------------------------------------------------
# Keys and their rules.

_BAD: Final = object()  # a value that failed validation (its problem is already reported)

DEFAULT_ACCOUNT_FILE: Final = "../bybit-account.json"
ORDERBOOK1_RESEND_MS: Final = 3000  # Bybit resends orderbook.1 every 3 s when nothing changes
_MAX_EXPONENT: Final = 30  # no price, size or bps in a config is beyond 1e±30
_UNIX_SOCKET_MAX: Final = 107  # sun_path holds 108 bytes including the terminating NUL
_SOCKET_NAME_ROOM: Final = 20  # room left in run_dir for the hub's and workers' socket names

_ID_RE: Final = re.compile(r"[a-z0-9]{1,12}")
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,30}")
_COIN_RE: Final = re.compile(r"[A-Z0-9]{2,16}")
_DECIMAL_RE: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

_IDENTITY_KEYS: Final = ("spot_symbol", "future_symbol", "order_qty", "state_path")
_ROOT_ONLY_KEYS: Final = (
    "venue",
    "demo",
    "testnet",
    "endpoints",
    "account_file",
    "sim_config",
    "hub",
    "instances",
)
_STRATEGY_KEYS: Final = (
    "execute",
    "quote_coin",
    "entry_threshold_bps",
    "exit_threshold_bps",
    "emergency_unwind_bps",
    "chase_interval_ms",
    "chase_max_slip_bps",
    "max_unhedged_ms",
    "hedge_mode",
    "leverage",
    "stale_book_ms",
    "ws_ping_interval_s",
    "max_notional_quote",
    "max_daily_loss_quote",
)
_HUB_KEYS: Final = tuple(HubConfig.__struct_fields__)
_ENDPOINT_KEYS: Final = tuple(Endpoints.__struct_fields__)

ACCEPTED_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "root": _ROOT_ONLY_KEYS + _STRATEGY_KEYS,
    "root (single strategy, no instances[])": _IDENTITY_KEYS,
    "instances[]": ("id", *_IDENTITY_KEYS, *_STRATEGY_KEYS),
    "hub": _HUB_KEYS,
    "endpoints": _ENDPOINT_KEYS,
}
"""Every key the model accepts, by where it may appear (docs/configuration.md lists them all)."""

_STRATEGY_DEFAULTS: Final[dict[str, object]] = {
    "execute": False,
    "quote_coin": "USDT",
    "exit_threshold_bps": Decimal(0),
    "emergency_unwind_bps": Decimal(0),
    "chase_interval_ms": 200,
    "chase_max_slip_bps": Decimal(3),
    "max_unhedged_ms": 3000,
    "hedge_mode": HedgeMode.RACE,
    "leverage": Decimal(2),
    "stale_book_ms": 5000,
    "ws_ping_interval_s": 20,
    "max_notional_quote": None,
    "max_daily_loss_quote": None,
}


def _mode(venue: Venue, demo: bool, testnet: bool, execute: bool) -> Mode:
    if not execute:
        return Mode.DRY_RUN
    if venue is Venue.SIM:
        return Mode.SIM
    if demo:
        return Mode.DEMO
    if testnet:
        return Mode.TESTNET
    return Mode.LIVE


class _Report:
    """Collects problems in document order, each once."""

    def __init__(self) -> None:
        self.errors: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []

    def error(self, path: str, message: str) -> None:
        problem = ConfigProblem(path, message)
        if problem not in self.errors:
            self.errors.append(problem)

    def warn(self, path: str, message: str) -> None:
        problem = ConfigProblem(path, message)
        if problem not in self.warnings:
            self.warnings.append(problem)


def _join(base: str, key: str) -> str:
    return key if base == "$" else f"{base}.{key}"


def _describe(value: object) -> str:
    """How a JSON value reads in a message, e.g. 'the string "200"'."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown)}"
    if isinstance(value, int | Decimal):
        return f"the number {_fmt(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fmt(value: int | Decimal) -> str:
    """Plain notation as written (``0.002``, never ``2E-3``)."""
    if isinstance(value, Decimal) and value.is_finite() and _in_range(value):
        return format(value, "f")
    return str(value)


def _in_range(value: Decimal) -> bool:
    """Magnitudes a trading config can mean; also keeps plain notation short."""
    return value.is_zero() or -_MAX_EXPONENT <= value.adjusted() <= _MAX_EXPONENT


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.75)
    return f'; did you mean "{close[0]}"?' if close else ""


# --- scalar validators: each returns the value or _BAD after reporting ---------------------


def _decimal(value: object, path: str, rep: _Report) -> object:
    """A number or a decimal string, read exactly (JSON floats arrive as Decimal)."""
    result: Decimal | None = None
    if isinstance(value, bool):
        result = None
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value.strip()):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the regex admits only valid text
            result = None
    if result is None or not result.is_finite():
        rep.error(path, f"must be a number or a decimal string, not {_describe(value)}")
        return _BAD
    if not _in_range(result):
        rep.error(path, f"must be between 1e-{_MAX_EXPONENT} and 1e{_MAX_EXPONENT} in size")
        return _BAD
    return result


def _integer(value: object, path: str, rep: _Report) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        rep.error(path, f"must be a whole number, not {_describe(value)}; write it without quotes")
    else:
        rep.error(path, f"must be a whole number, not {_describe(value)}")
    return _BAD


def _boolean(value: object, path: str, rep: _Report) -> object:
    if isinstance(value, bool):
        return value
    rep.error(path, f"must be true or false (without quotes), not {_describe(value)}")
    return _BAD


def _string(value: object, path: str, rep: _Report) -> object:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, str):
        rep.error(path, "must not be empty")
    else:
        rep.error(path, f"must be a string, not {_describe(value)}")
    return _BAD


def _choice(value: object, path: str, rep: _Report, enum: type[StrEnum]) -> object:
    allowed = [member.value for member in enum]
    if isinstance(value, str) and value in allowed:
        return enum(value)
    options = " or ".join(f'"{a}"' for a in allowed)
    hint = _suggest(value.lower(), allowed) if isinstance(value, str) else ""
    rep.error(path, f"must be {options}, not {_describe(value)}{hint}")
    return _BAD


def _bounded_decimal(
    *,
    above: Decimal | None = None,
    at_least: Decimal | None = None,
    nullable: bool = False,
) -> Callable[[object, str, _Report], object]:
    def check(value: object, path: str, rep: _Report) -> object:
        if value is None and nullable:
            return None
        number = _decimal(value, path, rep)
        if not isinstance(number, Decimal):
            return _BAD
        if above is not None and not number > above:
            rep.error(path, f"must be greater than {above}, not {_fmt(number)}")
            return _BAD
        if at_least is not None and not number >= at_least:
            rep.error(path, f"must be at least {at_least}, not {_fmt(number)}")
            return _BAD
        return number

    return check


_HOUR_MS = 3_600_000  # no timer of the strategy sensibly exceeds an hour


def _valid_url_host(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


def _bounded_int(
    *,
    above: int | None = None,
    at_least: int | None = None,
    at_most: int | None = None,
    unit: str = "",
    why: str = "",
) -> Callable[[object, str, _Report], object]:
    suffix = f" {unit}" if unit else ""

    def check(value: object, path: str, rep: _Report) -> object:
        number = _integer(value, path, rep)
        if not isinstance(number, int):
            return _BAD
        shown = str(number) if number.bit_length() <= 64 else "a number that large"
        if at_least is not None and at_most is not None:
            if not at_least <= number <= at_most:
                rep.error(
                    path, f"must be between {at_least} and {at_most}{suffix}{why}, not {shown}"
                )
                return _BAD
        elif above is not None and not number > above:
            rep.error(path, f"must be greater than {above}{suffix}{why}, not {shown}")
            return _BAD
        elif at_least is not None and not number >= at_least:
            rep.error(path, f"must be at least {at_least}{suffix}{why}, not {shown}")
            return _BAD
        elif at_most is not None and number > at_most:
            rep.error(path, f"must be at most {at_most}{suffix}, not {shown}")
            return _BAD
        return number

    return check


def _coin(value: object, path: str, rep: _Report) -> object:
    if isinstance(value, str) and _COIN_RE.fullmatch(value):
        return value
    if isinstance(value, str) and _COIN_RE.fullmatch(value.upper()):
        rep.error(path, f'must be in upper case, e.g. "{value.upper()}", not {_describe(value)}')
    else:
        rep.error(path, f'must be a coin name such as "USDT", not {_describe(value)}')
    return _BAD


def _symbol(value: object, path: str, rep: _Report) -> object:
    if isinstance(value, str) and _SYMBOL_RE.fullmatch(value):
        return value
    if isinstance(value, str) and _SYMBOL_RE.fullmatch(value.upper()):
        rep.error(path, f'must be in upper case, e.g. "{value.upper()}", not {_describe(value)}')
    else:
        rep.error(
            path,
            "must be the venue's symbol, 2 to 30 upper-case letters or digits such as "
            f'"BTCUSDT", not {_describe(value)}',
        )
    return _BAD


def _order_qty(value: object, path: str, rep: _Report) -> object:
    """A decimal STRING: a JSON number invites float rounding in other tools."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        number = Decimal(value)
        sensible = number.is_finite() and number > 0 and _in_range(number)
        example = _fmt(number) if sensible else "0.001"
        rep.error(
            path,
            f'is a JSON number; write order_qty as a decimal string such as "{example}" '
            "so it is read exactly",
        )
        return _BAD
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value.strip()):
        rep.error(path, f'must be a decimal string such as "0.001", not {_describe(value)}')
        return _BAD
    number = Decimal(value.strip())
    if not _in_range(number):
        rep.error(path, f"must be between 1e-{_MAX_EXPONENT} and 1e{_MAX_EXPONENT} in size")
        return _BAD
    if not number > 0:
        rep.error(path, f"must be greater than 0, not {_describe(value)}")
        return _BAD
    return number


def _hedge_mode(value: object, path: str, rep: _Report) -> object:
    return _choice(value, path, rep, HedgeMode)


_STALE_WHY: Final = " (Bybit resends orderbook.1 only every 3 s when the book is quiet)"

_STRATEGY_RULES: Final[dict[str, Callable[[object, str, _Report], object]]] = {
    "execute": _boolean,
    "quote_coin": _coin,
    "entry_threshold_bps": _bounded_decimal(above=Decimal(0)),
    "exit_threshold_bps": _decimal,
    "emergency_unwind_bps": _decimal,
    "chase_interval_ms": _bounded_int(above=0, at_most=_HOUR_MS, unit="ms"),
    "chase_max_slip_bps": _bounded_decimal(at_least=Decimal(0)),
    "max_unhedged_ms": _bounded_int(above=0, at_most=_HOUR_MS, unit="ms"),
    "hedge_mode": _hedge_mode,
    "leverage": _bounded_decimal(at_least=Decimal(1)),
    "stale_book_ms": _bounded_int(
        above=ORDERBOOK1_RESEND_MS, at_most=_HOUR_MS, unit="ms", why=_STALE_WHY
    ),
    "ws_ping_interval_s": _bounded_int(at_least=1, at_most=300, unit="seconds"),
    "max_notional_quote": _bounded_decimal(above=Decimal(0), nullable=True),
    "max_daily_loss_quote": _bounded_decimal(above=Decimal(0), nullable=True),
}
assert set(_STRATEGY_RULES) == set(_STRATEGY_KEYS)


# --- JSON reading ---------------------------------------------------------------------------


class _Object(dict[str, Any]):
    """A JSON object that remembers keys written more than once (json keeps only the last)."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _report_duplicates(node: object, path: str, rep: _Report) -> None:
    if isinstance(node, _Object):
        for key in node.duplicates:
            rep.error(
                _join(path, key),
                f'the key "{key}" is written more than once in the same object; '
                "keep only one (JSON would silently use the last)",
            )
        for key, value in node.items():
            _report_duplicates(value, _join(path, key), rep)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _report_duplicates(value, f"{path}[{index}]", rep)


_PARENT_RE: Final = re.compile(r"(.*?)(\.[^.\[]+|\[\d+\])$")


def _sort_by_document(problems: list[ConfigProblem], document: object) -> list[ConfigProblem]:
    """Problems in the order an operator reads the file; a missing key sorts after its object."""
    start: dict[str, int] = {}
    end: dict[str, int] = {}

    def walk(node: object, path: str) -> None:
        start.setdefault(path, len(start))
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, _join(path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")
        end.setdefault(path, len(start))

    walk(document, "$")

    def position(problem: ConfigProblem) -> tuple[int, int]:
        path = problem.path
        if path in start:
            return start[path], 0
        while path not in start:
            match = _PARENT_RE.fullmatch(path)
            path = match.group(1) if match and match.group(1) else "$"
        return end[path] - 1, 1

    return sorted(problems, key=position)


def _read_json(text: str, rep: _Report) -> object:
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=Decimal,  # NaN / Infinity become non-finite and are rejected
            object_pairs_hook=_pairs,
        )
    except json.JSONDecodeError as exc:
        rep.error(
            "$",
            f"the file is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        )
    except RecursionError:
        rep.error("$", "the file is nested too deeply to be a configuration")
    except ValueError:  # an integer longer than Python's 4300-digit limit
        rep.error("$", "the file holds a number with thousands of digits; shorten it")
    return _BAD


# --- paths ------------------------------------------------------------------------------------


def _normalise(path: PurePath) -> PurePath:
    """Lexical normalisation (``a/../b`` -> ``b``) without touching the file system."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if parts and parts[-1] != ".." and parts[-1] != path.anchor:
                parts.pop()
            elif not path.anchor:
                parts.append(part)
        elif part != ".":
            parts.append(part)
    return type(path)(*parts) if parts else type(path)(".")


def _resolve_path(value: object, path: str, base: PurePath, rep: _Report) -> object:
    """A file path; relative ones are taken from the config file's folder."""
    text = _string(value, path, rep)
    if not isinstance(text, str):
        return _BAD
    if text.startswith("~"):
        rep.error(path, f'"{text}" starts with ~, which is not expanded; write the full path')
        return _BAD
    if "\x00" in text:
        rep.error(path, "must not contain a NUL character")
        return _BAD
    return str(_normalise(base / text))


# --- the document -------------------------------------------------------------------------------


class _Row(msgspec.Struct, kw_only=True):
    """One instance while it is being resolved; values may be _BAD."""

    index: int | None  # None for the single-strategy root
    label: str  # its id, or "instances[3]" when the id is unusable
    path: str  # "instances[3]" or "$"
    values: dict[str, Any]
    in_row: set[str]  # keys written in this row


def _check_keys(
    obj: dict[str, Any],
    path: str,
    allowed: Iterable[str],
    rep: _Report,
    *,
    misplaced: dict[str, str] | None = None,
) -> None:
    allowed = tuple(allowed)
    for key in obj:
        if key in allowed:
            continue
        if misplaced and key in misplaced:
            rep.error(_join(path, key), misplaced[key])
            continue
        hint = _suggest(key, allowed)
        if not hint:
            hint = "; see docs/configuration.md for the accepted keys"
        rep.error(_join(path, key), f'unknown key "{key}"{hint}')


def _object(value: object, path: str, rep: _Report, what: str) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    rep.error(path, f"must be an object ({what}), not {_describe(value)}")
    return None


def _endpoints(value: object, rep: _Report) -> object:
    if value is None:
        return None
    obj = _object(value, "endpoints", rep, '{"rest": ..., "ws_public": ..., "ws_private": ...}')
    if obj is None:
        return _BAD
    _check_keys(obj, "endpoints", _ENDPOINT_KEYS, rep)
    schemes = {
        "rest": ("http://", "https://"),
        "ws_public": ("ws://", "wss://"),
        "ws_private": ("ws://", "wss://"),
    }
    examples = {
        "rest": "http://127.0.0.1:9000",
        "ws_public": "ws://127.0.0.1:9000/v5/public",
        "ws_private": "ws://127.0.0.1:9000/v5/private",
    }
    result: dict[str, str] = {}
    ok = True
    for key, prefixes in schemes.items():
        path = f"endpoints.{key}"
        if key not in obj:
            rep.error(path, f'is required when endpoints is given, e.g. "{examples[key]}"')
            ok = False
            continue
        text = _string(obj[key], path, rep)
        if not isinstance(text, str):
            ok = False
            continue
        if not text.startswith(prefixes):
            rep.error(
                path,
                f"must start with {' or '.join(prefixes)}, not {_describe(text)}; "
                f'e.g. "{examples[key]}"',
            )
            ok = False
            continue
        text = text.rstrip("/")
        if key == "ws_public" and text.endswith(("/spot", "/linear")):
            rep.error(
                path,
                "must be the base address without the category (the worker appends /spot "
                f'and /linear), e.g. "{text.rsplit("/", 1)[0]}"',
            )
            ok = False
            continue
        result[key] = text
    return Endpoints(**result) if ok else _BAD


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hub(value: object, base: PurePath, rep: _Report, paths: list[PathCheck]) -> object:
    if value is None:
        value = {}
    obj = _object(value, "hub", rep, '{"host": ..., "port": ..., ...}')
    if obj is None:
        return _BAD
    _check_keys(obj, "hub", _HUB_KEYS, rep)
    rules: dict[str, Callable[[object, str, _Report], object]] = {
        "host": _string,
        "port": _bounded_int(at_least=1, at_most=65535),
        "start_retries": _bounded_int(at_least=0, at_most=1000),
        "backoff_max_s": _bounded_decimal(at_least=Decimal(1)),
        "stop_grace_s": _bounded_decimal(above=Decimal(0)),
        "enable_docs": _boolean,
    }
    values: dict[str, Any] = {}
    for key, rule in rules.items():
        if key in obj:
            values[key] = rule(obj[key], f"hub.{key}", rep)
    values["run_dir"] = _resolve_path(obj.get("run_dir", "run"), "hub.run_dir", base, rep)
    token = obj.get("token_file")
    values["token_file"] = (
        None if token is None else _resolve_path(token, "hub.token_file", base, rep)
    )
    webhook = obj.get("alert_webhook")
    if webhook is not None:
        text = _string(webhook, "hub.alert_webhook", rep)
        if isinstance(text, str) and not text.startswith(("http://", "https://")):
            rep.error(
                "hub.alert_webhook",
                "must start with http:// or https:// (an address that accepts a JSON POST)",
            )
            text = _BAD
        elif isinstance(text, str) and not _valid_url_host(text):
            # the URL is never echoed: webhook addresses often carry a token
            rep.error("hub.alert_webhook", "has an invalid host or port; check the address")
            text = _BAD
        values["alert_webhook"] = text
    if any(v is _BAD for v in values.values()):
        return _BAD
    hub = HubConfig(**values)
    if not _is_loopback(hub.host):
        if hub.token_file is None:
            rep.error(
                "hub.host",
                f'"{hub.host}" is not a loopback address, so anyone who can reach it could '
                "control the fleet; set hub.token_file (a file holding a bearer token) "
                'or bind "127.0.0.1"',
            )
            return _BAD
        rep.warn(
            "hub.host",
            f'the hub listens on "{hub.host}", reachable from other machines; every request '
            "must carry the bearer token from hub.token_file",
        )
    if len(hub.run_dir.encode()) + _SOCKET_NAME_ROOM > _UNIX_SOCKET_MAX:
        rep.warn(
            "hub.run_dir",
            f"{hub.run_dir} is long; Unix socket paths are limited to {_UNIX_SOCKET_MAX} "
            "bytes, so choose a shorter run_dir if the hub cannot create its socket",
        )
    if hub.token_file is not None:
        paths.append(
            PathCheck(path="hub.token_file", file=hub.token_file, kind=PathKind.TOKEN_FILE)
        )
    return hub


_ROW_KEY_AT_ROOT: Final = (
    "the config has instances[], so {key} belongs in each instances[] row; move it into "
    "the rows, or remove instances[] for a single-strategy config"
)
_ROOT_KEY_IN_ROW: Final = (
    "{key} belongs at the root of the config because it applies to every instance; "
    "move it out of the instances[] row"
)
_ID_AT_ROOT_SINGLE: Final = (
    'a config without instances[] is a single strategy whose id is always "default"; '
    "remove id, or move the strategy into an instances[] row"
)


def _read_row(
    obj: dict[str, Any],
    row: _Row,
    root_values: dict[str, object],
    base: PurePath,
    rep: _Report,
) -> None:
    """Validate one row's own keys and resolve every strategy parameter for it."""
    prefix = row.path
    for key in _IDENTITY_KEYS:
        path = _join(prefix, key)
        if key not in obj:
            example = {
                "spot_symbol": 'e.g. "BTCUSDT"',
                "future_symbol": 'the perpetual, e.g. "BTCUSDT"',
                "order_qty": 'a decimal string such as "0.001"',
                "state_path": f'its own snapshot file, e.g. "state/{row.label}.json"',
            }[key]
            rep.error(path, f"is required: {example}")
            row.values[key] = _BAD
            continue
        value = obj[key]
        if row.index is not None:
            row.in_row.add(key)
        if key == "order_qty":
            row.values[key] = _order_qty(value, path, rep)
        elif key == "state_path":
            resolved = _resolve_path(value, path, base, rep)
            if isinstance(resolved, str) and isinstance(value, str) and value.endswith("/"):
                rep.error(path, 'must name a file, e.g. "state/btc.json", not a folder')
                resolved = _BAD
            row.values[key] = resolved
        else:
            row.values[key] = _symbol(value, path, rep)
    for key in _STRATEGY_KEYS:
        if row.index is not None and key in obj:
            path = _join(prefix, key)
            row.values[key] = _STRATEGY_RULES[key](obj[key], path, rep)
            row.in_row.add(key)
        elif key in root_values:
            row.values[key] = root_values[key]
        elif key in _STRATEGY_DEFAULTS:
            row.values[key] = _STRATEGY_DEFAULTS[key]


def _name(row: _Row) -> str:
    """``instances[0] (btc)``, or just the path when the row has no usable id."""
    return row.path if row.label == row.path else f"{row.path} ({row.label})"


def _cross_path(row: _Row, subject: str, other: str) -> str:
    """Blame the row when the row set either value, else the root."""
    if subject in row.in_row or other in row.in_row:
        return _join(row.path, subject)
    return subject


def _cross_checks(row: _Row, rep: _Report) -> None:
    v = row.values
    entry, exit_, emergency = (
        v.get("entry_threshold_bps"),
        v.get("exit_threshold_bps"),
        v.get("emergency_unwind_bps"),
    )
    if isinstance(entry, Decimal) and isinstance(exit_, Decimal) and not exit_ < entry:
        rep.error(
            _cross_path(row, "exit_threshold_bps", "entry_threshold_bps"),
            f"exit_threshold_bps ({_fmt(exit_)}) must be below entry_threshold_bps "
            f"({_fmt(entry)}), otherwise every cycle unwinds as soon as it is hedged",
        )
    if (
        isinstance(entry, Decimal)
        and isinstance(emergency, Decimal)
        and emergency > 0
        and not emergency > entry
    ):
        rep.error(
            _cross_path(row, "emergency_unwind_bps", "entry_threshold_bps"),
            f"emergency_unwind_bps ({_fmt(emergency)}) must exceed entry_threshold_bps "
            f"({_fmt(entry)}), or be 0 to disable it, otherwise a fresh carry is unwound at once",
        )
    chase, unhedged = v.get("chase_interval_ms"), v.get("max_unhedged_ms")
    if (
        v.get("hedge_mode") is HedgeMode.RACE
        and isinstance(chase, int)
        and isinstance(unhedged, int)
        and unhedged <= chase
    ):
        rep.warn(
            _cross_path(row, "max_unhedged_ms", "chase_interval_ms"),
            f"max_unhedged_ms ({unhedged}) is not above chase_interval_ms ({chase}), so the "
            "passive perp hedge is never re-priced before the market hedge takes over; "
            'raise max_unhedged_ms or use "hedge_mode": "market"',
        )
    spot, future, quote = v.get("spot_symbol"), v.get("future_symbol"), v.get("quote_coin")
    if isinstance(spot, str) and isinstance(quote, str) and not spot.endswith(quote):
        rep.warn(
            _cross_path(row, "quote_coin", "spot_symbol"),
            f'spot_symbol "{spot}" does not end with quote_coin "{quote}"; balances and '
            "PnL are counted in quote_coin, so check that they match",
        )
    if isinstance(spot, str) and isinstance(future, str) and spot != future:
        rep.warn(
            _join(row.path, "future_symbol"),
            f'"{future}" differs from spot_symbol "{spot}"; make sure one unit of each is '
            "the same amount of the base coin (e.g. 1000PEPEUSDT counts 1000 PEPE per unit)",
        )


class _Shared(msgspec.Struct, kw_only=True):
    """The root-only settings every instance shares; values may be _BAD."""

    venue: Any
    demo: Any
    testnet: Any
    endpoints: Any
    account_file: Any
    account_explicit: bool
    sim_config: Any
    hub: Any


def _shared(root: dict[str, Any], base: PurePath, rep: _Report, paths: list[PathCheck]) -> _Shared:
    venue = _choice(root.get("venue", "sim"), "venue", rep, Venue)
    flags: dict[str, object] = {}
    for key in ("demo", "testnet"):
        flags[key] = _boolean(root[key], key, rep) if key in root else False
    demo, testnet = flags["demo"], flags["testnet"]
    if demo is True and testnet is True:
        rep.error(
            "demo",
            "demo and testnet are both true; choose one: demo trading (mainnet demo account) "
            "or testnet",
        )
    if venue is Venue.SIM:
        for key in ("demo", "testnet"):
            if flags[key] is True:
                rep.warn(key, f'is ignored with "venue": "sim"; {key} only applies to "bybit"')
        demo = testnet = False
    endpoints = _endpoints(root.get("endpoints"), rep)

    account_file: object = None
    explicit = root.get("account_file") is not None
    if explicit:
        account_file = _resolve_path(root["account_file"], "account_file", base, rep)
    elif venue is Venue.BYBIT:
        account_file = str(_normalise(base / DEFAULT_ACCOUNT_FILE))

    sim_config: object = None
    if root.get("sim_config") is not None:
        sim_config = _resolve_path(root["sim_config"], "sim_config", base, rep)
        if venue is Venue.BYBIT and isinstance(sim_config, str):
            rep.warn("sim_config", 'is ignored with "venue": "bybit"; it configures the simulator')
            sim_config = None
        elif isinstance(sim_config, str):
            paths.append(PathCheck(path="sim_config", file=sim_config, kind=PathKind.SIM_CONFIG))

    return _Shared(
        venue=venue,
        demo=demo,
        testnet=testnet,
        endpoints=endpoints,
        account_file=account_file,
        account_explicit=explicit,
        sim_config=sim_config,
        hub=_hub(root.get("hub"), base, rep, paths),
    )


def _fleet_rows(
    instances: object, root_values: dict[str, object], base: PurePath, rep: _Report
) -> list[_Row]:
    """The instances[] rows, each validated and resolved against the root."""
    if not isinstance(instances, list):
        rep.error(
            "instances",
            f"must be an array of instance rows ([{{...}}, ...]), not {_describe(instances)}",
        )
        return []
    if not instances:
        rep.error(
            "instances",
            "is empty; add at least one row, or remove instances to use the single-strategy form",
        )
        return []
    rows: list[_Row] = []
    row_allowed = ("id", *_IDENTITY_KEYS, *_STRATEGY_KEYS)
    row_misplaced = {key: _ROOT_KEY_IN_ROW.format(key=key) for key in _ROOT_ONLY_KEYS}
    for index, raw in enumerate(instances):
        path = f"instances[{index}]"
        obj = _object(raw, path, rep, 'one instance, e.g. {"id": "btc", ...}')
        if obj is None:
            continue
        _check_keys(obj, path, row_allowed, rep, misplaced=row_misplaced)
        row_id: object = _BAD
        if "id" not in obj:
            rep.error(f"{path}.id", 'is required: 1 to 12 lowercase letters or digits, e.g. "btc"')
        elif isinstance(obj["id"], str) and _ID_RE.fullmatch(obj["id"]):
            row_id = obj["id"]
        else:
            rep.error(
                f"{path}.id",
                "must be 1 to 12 lowercase letters or digits ([a-z0-9]{1,12}), "
                f"not {_describe(obj['id'])}",
            )
        label = row_id if isinstance(row_id, str) else path
        row = _Row(index=index, label=label, path=path, values={"id": row_id}, in_row=set())
        _read_row(obj, row, root_values, base, rep)
        rows.append(row)
    return rows


def _require_entry(root: dict[str, Any], rows: list[_Row], rep: _Report) -> None:
    """entry_threshold_bps has no default: the root or every row must give it."""
    if "entry_threshold_bps" in root:
        return
    lacking = [row for row in rows if "entry_threshold_bps" not in row.values]
    if lacking and len(lacking) == len(rows):
        rep.error(
            "entry_threshold_bps",
            "is required: set it at the root (or in every instances[] row) to the basis in bps "
            "at which to enter, a number greater than 0 such as 12",
        )
    else:
        for row in lacking:
            rep.error(
                _join(row.path, "entry_threshold_bps"),
                "is required because the root sets no entry_threshold_bps; set it in this row "
                "or at the root",
            )
    for row in lacking:
        row.values["entry_threshold_bps"] = _BAD


def _uniqueness(rows: list[_Row], config_file: str, account_file: object, rep: _Report) -> None:
    """Ids, snapshots and perp symbols are unique (one perp position per symbol, §8)."""
    seen: dict[str, dict[object, _Row]] = {"id": {}, "state_path": {}, "future_symbol": {}}
    for row in rows:
        row_id = row.values["id"]
        if isinstance(row_id, str):
            first = seen["id"].setdefault(row_id, row)
            if first is not row:
                rep.error(
                    _join(row.path, "id"),
                    f'"{row_id}" is also the id of {first.path}; every instance needs its own id',
                )
        state = row.values.get("state_path")
        if isinstance(state, str):
            first = seen["state_path"].setdefault(state, row)
            if first is not row:
                rep.error(
                    _join(row.path, "state_path"),
                    f"{state} is also the state_path of {_name(first)}; give every instance "
                    "its own snapshot file",
                )
            if state in (config_file, account_file):
                what = "the config file" if state == config_file else "the account file"
                rep.error(
                    _join(row.path, "state_path"),
                    f"points at {what}; choose a file of its own, e.g. state/{row.label}.json",
                )
        future = row.values.get("future_symbol")
        if isinstance(future, str):
            first = seen["future_symbol"].setdefault(future, row)
            if first is not row:
                rep.error(
                    _join(row.path, "future_symbol"),
                    f'"{future}" is also traded by {_name(first)}; one account holds one perp '
                    "position per symbol, so only one instance may trade it",
                )


def _account_use(shared: _Shared, rows: list[_Row]) -> AccountUse | None:
    """Who relies on the account file, so the loader can judge it with the right severity."""
    venue, file = shared.venue, shared.account_file
    if not isinstance(venue, Venue) or not isinstance(file, str):
        return None
    trading = tuple(row.label for row in rows if row.values.get("execute") is True)
    live: tuple[str, ...] = ()
    demo, testnet = shared.demo, shared.testnet
    known = isinstance(demo, bool) and isinstance(testnet, bool)
    if known and _mode(venue, bool(demo), bool(testnet), execute=True) is Mode.LIVE:
        live = trading
    return AccountUse(
        file=file, venue=venue, explicit=shared.account_explicit, trading=trading, live=live
    )


def analyse_config(text: str, config_path: PurePath) -> ConfigAnalysis:
    """Static validation of the config TEXT; ``config_path`` anchors relative paths."""
    rep = _Report()
    paths: list[PathCheck] = []
    config_file = str(_normalise(config_path))
    base = _normalise(config_path.parent)

    document: object = _BAD

    def finish(
        config: FleetConfig | None = None, account: AccountUse | None = None
    ) -> ConfigAnalysis:
        return ConfigAnalysis(
            config=None if rep.errors else config,
            errors=_sort_by_document(rep.errors, document),
            warnings=_sort_by_document(rep.warnings, document),
            account=account,
            paths=paths,
        )

    document = _read_json(text, rep)
    if document is _BAD:
        return finish()
    _report_duplicates(document, "$", rep)
    root = _object(document, "$", rep, "the top level of the config must be {...}")
    if root is None:
        return finish()

    fleet = "instances" in root
    allowed_root: tuple[str, ...] = _ROOT_ONLY_KEYS + _STRATEGY_KEYS
    if fleet:
        misplaced = {key: _ROW_KEY_AT_ROOT.format(key=key) for key in (*_IDENTITY_KEYS, "id")}
    else:
        allowed_root += _IDENTITY_KEYS
        misplaced = {"id": _ID_AT_ROOT_SINGLE}
    _check_keys(root, "$", allowed_root, rep, misplaced=misplaced)

    shared = _shared(root, base, rep, paths)
    root_values: dict[str, object] = {
        key: _STRATEGY_RULES[key](root[key], key, rep) for key in _STRATEGY_KEYS if key in root
    }

    rows: list[_Row] = []
    if fleet:
        rows = _fleet_rows(root["instances"], root_values, base, rep)
    elif not any(key in root for key in _IDENTITY_KEYS):
        rep.error(
            "$",
            "defines no instance: add an instances[] array of rows (id, spot_symbol, "
            "future_symbol, order_qty, state_path), or put those keys at the root for a "
            "single strategy",
        )
    else:
        row = _Row(index=None, label="default", path="$", values={"id": "default"}, in_row=set())
        _read_row(root, row, root_values, base, rep)
        rows.append(row)

    _require_entry(root, rows, rep)
    for row in rows:
        _cross_checks(row, rep)
    _uniqueness(rows, config_file, shared.account_file, rep)
    account = _account_use(shared, rows)
    if rep.errors:
        return finish(account=account)

    common: dict[str, Any] = {
        "venue": shared.venue,
        "demo": shared.demo,
        "testnet": shared.testnet,
        "endpoints": shared.endpoints,
        "account_file": shared.account_file,
        "sim_config": shared.sim_config,
    }
    config = FleetConfig(
        path=config_file,
        instances=[InstanceConfig(**common, **row.values) for row in rows],
        hub=shared.hub,
        venue=shared.venue,
        single_strategy=not fleet,
    )
    return finish(config, account)


def parse_config(
    text: str, config_path: PurePath
) -> tuple[FleetConfig | None, list[ConfigProblem], list[ConfigProblem]]:
    """Static validation only: ``(config, errors, warnings)``; config is None on any error.

    File facts (the account file, sim_config, hub.token_file) are checked by
    ``worker.config_loader``, which is what the worker and the hub call.
    """
    analysis = analyse_config(text, config_path)
    return analysis.config, analysis.errors, analysis.warnings

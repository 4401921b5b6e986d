"""Static configuration validation (ARCHITECTURE §3 stage 1): exact messages, defaults, paths.

Invalid configurations are table-driven and assert the EXACT problems, because the messages are
the operator's interface: each must name its JSON path and say what to do.
"""

from __future__ import annotations

import ast
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import pytest

from worker.config_loader import (
    ApiCredentials,
    inspect_account_file,
    load_config,
    load_config_with_warnings,
    load_credentials,
)
from worker.core import config as config_module
from worker.core.config import (
    ACCEPTED_KEYS,
    AccountFacts,
    AccountUse,
    ConfigError,
    ConfigProblem,
    Endpoints,
    FleetConfig,
    HedgeMode,
    HubConfig,
    InstanceConfig,
    Mode,
    Venue,
    judge_account_file,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "algo" / "spot-future-arb" / "config.json"
SECRET = "S3CR3T-do-not-print-0123456789"
KEY = "K3Y-do-not-print-9876543210"

Doc = dict[str, Any]
_JSON = msgspec.json.Encoder(decimal_format="number")  # Decimal("200.5") stays a JSON number


def base_doc() -> Doc:
    """A small valid fleet on the simulator; each case breaks one thing."""
    return {
        "venue": "sim",
        "entry_threshold_bps": 12,
        "instances": [
            {
                "id": "btc",
                "spot_symbol": "BTCUSDT",
                "future_symbol": "BTCUSDT",
                "order_qty": "0.002",
                "state_path": "state/btc.json",
            },
            {
                "id": "eth",
                "spot_symbol": "ETHUSDT",
                "future_symbol": "ETHUSDT",
                "order_qty": "0.05",
                "state_path": "state/eth.json",
            },
        ],
    }


def write_config(root: Path, doc: Doc | str) -> Path:
    """``<root>/algo/arb/config.json``, so the default account file is ``<root>/algo/...``."""
    folder = root / "algo" / "arb"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_bytes(
        doc.encode() if isinstance(doc, str) else msgspec.json.format(_JSON.encode(doc))
    )
    return path


def write_account(path: Path, mode: int = 0o600, key: str = KEY, secret: str = SECRET) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api_key": key, "api_secret": secret}))
    path.chmod(mode)
    return path


def set_in(path: str, value: object) -> Callable[[Doc], None]:
    """Edit the document at a dotted path such as ``instances.1.order_qty``."""

    def edit(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def drop(path: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return edit


@dataclass(frozen=True)
class Case:
    name: str
    errors: list[str]
    edits: tuple[Callable[[Doc], None], ...] = ()
    text: str | None = None  # raw file text instead of the edited base document
    account_mode: int | None = None  # write <root>/algo/bybit-account.json with this mode
    extra: dict[str, str] = field(default_factory=dict)  # more files (relative to root)


NOT_BOOL = "must be true or false (without quotes), not"
LIVE_NO_KEYS = (
    "account_file: {root}/algo/bybit-account.json does not exist, but instances btc, eth "
    'trade on bybit with "execute": true; without API keys only dry-run or the simulator can '
    'run, so put api_key and api_secret into that file, set "execute": false, or use '
    '"venue": "sim"'
)

INVALID: list[Case] = [
    Case(
        "duplicate ids",
        ['instances[1].id: "btc" is also the id of instances[0]; every instance needs its own id'],
        (set_in("instances.1.id", "btc"),),
    ),
    Case(
        "bad id",
        [
            "instances[0].id: must be 1 to 12 lowercase letters or digits ([a-z0-9]{1,12}), "
            'not the string "BTC-1"'
        ],
        (set_in("instances.0.id", "BTC-1"),),
    ),
    Case(
        "id too long",
        [
            "instances[1].id: must be 1 to 12 lowercase letters or digits ([a-z0-9]{1,12}), "
            'not the string "ethereum1234x"'
        ],
        (set_in("instances.1.id", "ethereum1234x"),),
    ),
    Case(
        "missing id",
        ['instances[0].id: is required: 1 to 12 lowercase letters or digits, e.g. "btc"'],
        (drop("instances.0.id"),),
    ),
    Case(
        "duplicate state_path after resolution",
        [
            "instances[1].state_path: {root}/algo/arb/state/btc.json is also the state_path of "
            "instances[0] (btc); give every instance its own snapshot file"
        ],
        (set_in("instances.1.state_path", "./state/../state/btc.json"),),
    ),
    Case(
        "two instances on one perp symbol",
        [
            'instances[1].future_symbol: "BTCUSDT" is also traded by instances[0] (btc); one '
            "account holds one perp position per symbol, so only one instance may trade it"
        ],
        (set_in("instances.1.future_symbol", "BTCUSDT"),),
    ),
    Case(
        "live trading without keys",
        [LIVE_NO_KEYS],
        (set_in("venue", "bybit"), set_in("execute", True)),
    ),
    Case(
        "one row trading live without keys",
        [
            "account_file: {root}/algo/bybit-account.json does not exist, but instance eth "
            'trades on bybit with "execute": true; without API keys only dry-run or the simulator '
            'can run, so put api_key and api_secret into that file, set "execute": false, or use '
            '"venue": "sim"'
        ],
        (set_in("venue", "bybit"), set_in("instances.1.execute", True)),
    ),
    Case(
        "unknown key with suggestion",
        ['chase_intervall_ms: unknown key "chase_intervall_ms"; did you mean "chase_interval_ms"?'],
        (set_in("chase_intervall_ms", 100),),
    ),
    Case(
        "unknown key in a row with suggestion",
        ['instances[1].order_qtty: unknown key "order_qtty"; did you mean "order_qty"?'],
        (set_in("instances.1.order_qtty", "1"),),
    ),
    Case(
        "unknown key without suggestion",
        ['colour: unknown key "colour"; see docs/configuration.md for the accepted keys'],
        (set_in("colour", "blue"),),
    ),
    Case(
        "wrong types",
        [
            'instances[0].hedge_mode: must be "race" or "market", not the string "Market"; '
            'did you mean "market"?',
            f'execute: {NOT_BOOL} the string "true"',
            "chase_interval_ms: must be a whole number, not the number 200.5",
            'max_unhedged_ms: must be a whole number, not the string "3000"; write it without '
            "quotes",
            "leverage: must be a number or a decimal string, not an array",
            'hub.port: must be a whole number, not the string "8800"; write it without quotes',
            'quote_coin: must be in upper case, e.g. "USDT", not the string "usdt"',
        ],
        (
            set_in("execute", "true"),
            set_in("chase_interval_ms", Decimal("200.5")),
            set_in("max_unhedged_ms", "3000"),
            set_in("leverage", []),
            set_in("hub", {"port": "8800"}),
            set_in("instances.0.hedge_mode", "Market"),
            set_in("quote_coin", "usdt"),
        ),
    ),
    Case(
        "negative and malformed order_qty",
        [
            'instances[0].order_qty: must be greater than 0, not the string "-0.1"',
            'instances[1].order_qty: must be a decimal string such as "0.001", not the string '
            '"1,5"',
        ],
        (set_in("instances.0.order_qty", "-0.1"), set_in("instances.1.order_qty", "1,5")),
    ),
    Case(
        "zero order_qty",
        ['instances[0].order_qty: must be greater than 0, not the string "0"'],
        (set_in("instances.0.order_qty", "0"),),
    ),
    Case(
        "order_qty as a JSON number",
        [
            "instances[1].order_qty: is a JSON number; write order_qty as a decimal string such "
            'as "0.05" so it is read exactly'
        ],
        (set_in("instances.1.order_qty", Decimal("0.05")),),
    ),
    Case(
        "missing entry_threshold_bps",
        [
            "entry_threshold_bps: is required: set it at the root (or in every instances[] row) "
            "to the basis in bps at which to enter, a number greater than 0 such as 12"
        ],
        (drop("entry_threshold_bps"),),
    ),
    Case(
        "entry_threshold_bps missing in one row",
        [
            "instances[0].entry_threshold_bps: is required because the root sets no "
            "entry_threshold_bps; set it in this row or at the root"
        ],
        (drop("entry_threshold_bps"), set_in("instances.1.entry_threshold_bps", 10)),
    ),
    Case(
        "entry_threshold_bps not positive",
        ["entry_threshold_bps: must be greater than 0, not 0"],
        (set_in("entry_threshold_bps", 0),),
    ),
    Case(
        "exit not below entry",
        [
            "exit_threshold_bps: exit_threshold_bps (12) must be below entry_threshold_bps (12), "
            "otherwise every cycle unwinds as soon as it is hedged"
        ],
        (set_in("exit_threshold_bps", 12),),
    ),
    Case(
        "exit not below a row's entry",
        [
            "instances[1].exit_threshold_bps: exit_threshold_bps (5) must be below "
            "entry_threshold_bps (4.5), otherwise every cycle unwinds as soon as it is hedged"
        ],
        (set_in("exit_threshold_bps", 5), set_in("instances.1.entry_threshold_bps", "4.5")),
    ),
    Case(
        "emergency not above entry",
        [
            "emergency_unwind_bps: emergency_unwind_bps (10) must exceed entry_threshold_bps "
            "(12), or be 0 to disable it, otherwise a fresh carry is unwound at once"
        ],
        (set_in("emergency_unwind_bps", 10),),
    ),
    Case(
        "world-readable account file for live",
        [
            "account_file: {root}/algo/bybit-account.json is readable or writable by other users "
            "(mode 0644); run chmod 600 {root}/algo/bybit-account.json before instances btc, eth "
            "trade live with it"
        ],
        (set_in("venue", "bybit"), set_in("execute", True)),
        account_mode=0o644,
    ),
    Case(
        "account file without a secret",
        [LIVE_NO_KEYS.replace("does not exist", "has an empty or missing api_secret")],
        (set_in("venue", "bybit"), set_in("execute", True)),
        extra={"algo/bybit-account.json": '{"api_key": "abc", "api_secret": ""}'},
    ),
    Case(
        "account file not JSON",
        [
            LIVE_NO_KEYS.replace(
                "does not exist",
                "is not usable (not valid JSON: Expecting value at line 1, column 1)",
            )
        ],
        (set_in("venue", "bybit"), set_in("execute", True)),
        extra={"algo/bybit-account.json": "api_key=abc"},
    ),
    Case(
        "JSON syntax error",
        [
            "$: the file is not valid JSON: Expecting property name enclosed in double quotes "
            "at line 3, column 1"
        ],
        text='{\n  "venue": "sim",\n}\n',
    ),
    Case(
        "duplicate JSON key",
        [
            'entry_threshold_bps: the key "entry_threshold_bps" is written more than once in the '
            "same object; keep only one (JSON would silently use the last)",
            'instances[0].order_qty: the key "order_qty" is written more than once in the same '
            "object; keep only one (JSON would silently use the last)",
        ],
        text=(
            '{"entry_threshold_bps": 12, "entry_threshold_bps": 14, "instances": [{"id": "btc",'
            ' "spot_symbol": "BTCUSDT", "future_symbol": "BTCUSDT", "order_qty": "1",'
            ' "order_qty": "2", "state_path": "s.json"}]}'
        ),
    ),
    Case(
        "root-only key in a row",
        [
            "instances[0].venue: venue belongs at the root of the config because it applies to "
            "every instance; move it out of the instances[] row",
            "instances[1].hub: hub belongs at the root of the config because it applies to every "
            "instance; move it out of the instances[] row",
        ],
        (set_in("instances.0.venue", "bybit"), set_in("instances.1.hub", {})),
    ),
    Case(
        "non-loopback host without token_file",
        [
            'hub.host: "0.0.0.0" is not a loopback address, so anyone who can reach it could '
            "control the fleet; set hub.token_file (a file holding a bearer token) or bind "
            '"127.0.0.1"'
        ],
        (set_in("hub", {"host": "0.0.0.0"}),),
    ),
    Case(
        "hub port out of range",
        ["hub.port: must be between 1 and 65535, not 70000"],
        (set_in("hub", {"port": 70000}),),
    ),
    Case(
        "demo and testnet together",
        [
            "demo: demo and testnet are both true; choose one: demo trading (mainnet demo "
            "account) or testnet"
        ],
        (set_in("venue", "bybit"), set_in("demo", True), set_in("testnet", True)),
    ),
    Case(
        "instances and a root spot_symbol",
        [
            "spot_symbol: the config has instances[], so spot_symbol belongs in each instances[] "
            "row; move it into the rows, or remove instances[] for a single-strategy config"
        ],
        (set_in("spot_symbol", "BTCUSDT"),),
    ),
    Case(
        "stale_book_ms not above the orderbook.1 resend",
        [
            "stale_book_ms: must be greater than 3000 ms (Bybit resends orderbook.1 only every "
            "3 s when the book is quiet), not 3000"
        ],
        (set_in("stale_book_ms", 3000),),
    ),
    Case(
        "ws_ping_interval_s out of range",
        ["instances[0].ws_ping_interval_s: must be between 1 and 300 seconds, not 0"],
        (set_in("instances.0.ws_ping_interval_s", 0),),
    ),
    Case(
        "unknown venue",
        ['venue: must be "sim" or "bybit", not the string "binance"'],
        (set_in("venue", "binance"),),
    ),
    Case(
        "row without state_path",
        ['instances[1].state_path: is required: its own snapshot file, e.g. "state/eth.json"'],
        (drop("instances.1.state_path"),),
    ),
    Case(
        "lower-case symbol",
        [
            'instances[0].spot_symbol: must be in upper case, e.g. "BTCUSDT", not the string '
            '"btcusdt"'
        ],
        (
            set_in("instances.0.spot_symbol", "btcusdt"),
            set_in("instances.0.future_symbol", "BTCUSDT"),
        ),
    ),
    Case(
        "empty instances",
        [
            "instances: is empty; add at least one row, or remove instances to use the "
            "single-strategy form"
        ],
        (set_in("instances", []),),
    ),
    Case(
        "endpoints incomplete",
        [
            "endpoints.ws_public: must be the base address without the category (the worker "
            'appends /spot and /linear), e.g. "ws://127.0.0.1:9000/v5/public"',
            'endpoints.ws_private: is required when endpoints is given, e.g. "ws://127.0.0.1:9000/'
            'v5/private"',
        ],
        (
            set_in(
                "endpoints",
                {
                    "rest": "http://127.0.0.1:9000",
                    "ws_public": "ws://127.0.0.1:9000/v5/public/spot",
                },
            ),
        ),
    ),
    Case(
        "NaN is not a number",
        ["max_notional_quote: must be a number or a decimal string, not the number NaN"],
        text=json.dumps(base_doc())[:-1] + ', "max_notional_quote": NaN}',
    ),
    Case(
        "missing sim_config file",
        [
            "sim_config: {root}/algo/sim.json does not exist; create it, or remove sim_config to "
            "run the simulator with its built-in defaults"
        ],
        (set_in("sim_config", "../sim.json"),),
    ),
    Case(
        "top level is not an object",
        ["$: must be an object (the top level of the config must be {...}), not an array"],
        text="[]",
    ),
]


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_invalid_config_reports_exact_errors(case: Case, tmp_path: Path) -> None:
    doc: Doc | str
    if case.text is not None:
        doc = case.text
    else:
        doc = base_doc()
        for edit in case.edits:
            edit(doc)
    if case.account_mode is not None:
        write_account(tmp_path / "algo" / "bybit-account.json", case.account_mode)
    for name, content in case.extra.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
        (tmp_path / name).chmod(0o600)
    path = write_config(tmp_path, doc)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    expected = [line.replace("{root}", str(tmp_path)) for line in case.errors]
    assert [str(p) for p in caught.value.problems] == expected


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    doc = base_doc()
    doc["venue"] = "bybit"
    doc["execute"] = True
    doc["entry_treshold_bps"] = 5
    doc["hub"] = {"host": "0.0.0.0", "port": 0}
    doc["instances"][0]["order_qty"] = 1
    doc["instances"][1]["id"] = "btc"
    doc["instances"][1]["state_path"] = "state/btc.json"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, doc))
    paths = [p.path for p in caught.value.problems]
    assert sorted(paths) == sorted(
        [
            "entry_treshold_bps",
            "hub.port",
            "instances[0].order_qty",
            "instances[1].id",
            "instances[1].state_path",
            "account_file",
        ]
    )
    # hub.port is invalid, so the host check waits; every line is "<path>: <sentence>".
    text = str(caught.value)
    assert text.count("\n") == len(paths) - 1
    assert "without API keys only dry-run or the simulator" in text


def test_problem_and_error_formatting() -> None:
    problem = ConfigProblem("hub.port", "must be between 1 and 65535, not 0")
    assert str(problem) == "hub.port: must be between 1 and 65535, not 0"
    error = ConfigError([problem, ConfigProblem("$", "x")])
    assert str(error) == "hub.port: must be between 1 and 65535, not 0\n$: x"


def test_parse_config_is_pure_and_reports_errors_and_warnings() -> None:
    doc = base_doc()
    doc["demo"] = True
    config, errors, warnings = parse_config(json.dumps(doc), PurePosixPath("/srv/arb/config.json"))
    assert errors == []
    assert config is not None
    assert warnings == [
        ConfigProblem("demo", 'is ignored with "venue": "sim"; demo only applies to "bybit"')
    ]
    assert config.instances[0].demo is False
    assert config.instances[0].state_path == "/srv/arb/state/btc.json"

    config, errors, _ = parse_config("{", PurePosixPath("/srv/arb/config.json"))
    assert config is None
    assert errors == [
        ConfigProblem(
            "$",
            "the file is not valid JSON: Expecting property name enclosed in double quotes "
            "at line 1, column 2",
        )
    ]


# --- valid configurations ------------------------------------------------------------------------


def test_defaults_are_applied(tmp_path: Path) -> None:
    fleet = load_config(write_config(tmp_path, base_doc()))
    btc = fleet.instance("btc")
    folder = tmp_path / "algo" / "arb"
    assert btc == InstanceConfig(
        id="btc",
        spot_symbol="BTCUSDT",
        future_symbol="BTCUSDT",
        order_qty=Decimal("0.002"),
        state_path=str(folder / "state" / "btc.json"),
        venue=Venue.SIM,
        demo=False,
        testnet=False,
        execute=False,
        endpoints=None,
        account_file=None,
        quote_coin="USDT",
        entry_threshold_bps=Decimal(12),
        exit_threshold_bps=Decimal(0),
        emergency_unwind_bps=Decimal(0),
        chase_interval_ms=200,
        chase_max_slip_bps=Decimal(3),
        max_unhedged_ms=3000,
        hedge_mode=HedgeMode.RACE,
        leverage=Decimal(2),
        stale_book_ms=5000,
        ws_ping_interval_s=20,
        max_notional_quote=None,
        max_daily_loss_quote=None,
        sim_config=None,
    )
    assert btc.mode is Mode.DRY_RUN
    assert fleet.hub == HubConfig(run_dir=str(folder / "run"))
    assert fleet.hub.port == 8800 and fleet.hub.host == "127.0.0.1"
    assert fleet.venue is Venue.SIM
    assert fleet.single_strategy is False
    assert fleet.path == str(folder / "config.json")


def test_row_overrides_root(tmp_path: Path) -> None:
    doc = base_doc()
    doc.update(
        {
            "execute": True,
            "exit_threshold_bps": "1.5",
            "chase_interval_ms": 150,
            "hedge_mode": "market",
            "max_notional_quote": 1000,
        }
    )
    doc["instances"][1].update(
        {
            "entry_threshold_bps": "20.25",
            "execute": False,
            "chase_interval_ms": 300,
            "hedge_mode": "race",
            "max_notional_quote": "250.5",
            "leverage": 3,
        }
    )
    fleet = load_config(write_config(tmp_path, doc))
    btc, eth = fleet.instance("btc"), fleet.instance("eth")
    assert (btc.entry_threshold_bps, eth.entry_threshold_bps) == (Decimal(12), Decimal("20.25"))
    assert (btc.execute, eth.execute) == (True, False)
    assert (btc.mode, eth.mode) == (Mode.SIM, Mode.DRY_RUN)
    assert (btc.chase_interval_ms, eth.chase_interval_ms) == (150, 300)
    assert (btc.hedge_mode, eth.hedge_mode) == (HedgeMode.MARKET, HedgeMode.RACE)
    assert (btc.max_notional_quote, eth.max_notional_quote) == (Decimal(1000), Decimal("250.5"))
    assert (btc.leverage, eth.leverage) == (Decimal(2), Decimal(3))
    assert btc.exit_threshold_bps == eth.exit_threshold_bps == Decimal("1.5")


def test_json_floats_are_read_exactly(tmp_path: Path) -> None:
    doc = base_doc()
    path = write_config(tmp_path, doc)
    path.write_text(
        path.read_text().replace('"entry_threshold_bps": 12', '"entry_threshold_bps": 0.1')
    )
    btc = load_config(path).instance("btc")
    assert btc.entry_threshold_bps == Decimal("0.1")
    assert isinstance(btc.entry_threshold_bps, Decimal)


def test_single_strategy_fallback(tmp_path: Path) -> None:
    doc = {
        "entry_threshold_bps": 12,
        "execute": True,
        "spot_symbol": "BTCUSDT",
        "future_symbol": "BTCUSDT",
        "order_qty": "0.001",
        "state_path": "state/default.json",
    }
    fleet = load_config(write_config(tmp_path, doc))
    assert fleet.single_strategy is True
    assert fleet.ids == ["default"]
    only = fleet.instance(None)
    assert only is fleet.instance("default")
    assert only.id == "default"
    assert only.mode is Mode.SIM
    assert only.state_path == str(tmp_path / "algo" / "arb" / "state" / "default.json")
    with pytest.raises(ConfigError) as caught:
        fleet.instance("btc")
    assert str(caught.value) == (
        'instances: there is no instance "btc": this config has no instances[], so its only '
        'instance is "default"; omit --instance or pass --instance default'
    )


def test_single_strategy_rejects_root_id(tmp_path: Path) -> None:
    doc = {
        "id": "btc",
        "entry_threshold_bps": 12,
        "spot_symbol": "BTCUSDT",
        "future_symbol": "BTCUSDT",
        "order_qty": "0.001",
        "state_path": "s.json",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, doc))
    assert [str(p) for p in caught.value.problems] == [
        'id: a config without instances[] is a single strategy whose id is always "default"; '
        "remove id, or move the strategy into an instances[] row"
    ]


def test_instance_selection(tmp_path: Path) -> None:
    fleet = load_config(write_config(tmp_path, base_doc()))
    with pytest.raises(ConfigError) as caught:
        fleet.instance(None)
    assert str(caught.value) == (
        "instances: this config has 2 instances (btc, eth); choose one with --instance ID"
    )
    with pytest.raises(ConfigError) as caught:
        fleet.instance("xrp")
    assert str(caught.value) == (
        'instances: there is no instance "xrp" in this config; choose one of: btc, eth'
    )
    doc = base_doc()
    del doc["instances"][1]
    assert load_config(write_config(tmp_path, doc)).instance(None).id == "btc"


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = base_doc()
    doc["venue"] = "bybit"
    doc["sim_config"] = "ignored.json"
    doc["instances"][0]["state_path"] = "../state/./btc.json"
    doc["instances"][1]["state_path"] = str(tmp_path / "abs" / ".." / "eth.json")
    doc["hub"] = {"run_dir": "../../run", "token_file": "secrets/token"}
    path = write_config(tmp_path, doc)
    (path.parent / "secrets").mkdir()
    (path.parent / "secrets" / "token").write_text("t0ken\n")
    (path.parent / "secrets" / "token").chmod(0o600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = Path("..") / "algo" / "arb" / "config.json"
    fleet, warnings = load_config_with_warnings(relative)
    btc, eth = fleet.instance("btc"), fleet.instance("eth")
    assert btc.state_path == str(tmp_path / "algo" / "state" / "btc.json")
    assert eth.state_path == str(tmp_path / "eth.json")
    assert btc.account_file == str(tmp_path / "algo" / "bybit-account.json")
    assert fleet.hub.run_dir == str(tmp_path / "run")
    assert fleet.hub.token_file == str(path.parent / "secrets" / "token")
    assert btc.sim_config is None
    assert fleet.path == str(path)
    assert warnings == [
        ConfigProblem("sim_config", 'is ignored with "venue": "bybit"; it configures the simulator')
    ]


def test_sim_config_and_account_file_with_the_simulator(tmp_path: Path) -> None:
    doc = base_doc()
    doc["execute"] = True
    doc["sim_config"] = "sim.json"
    doc["account_file"] = "sim-account.json"
    path = write_config(tmp_path, doc)
    (path.parent / "sim.json").write_text("{}")
    write_account(path.parent / "sim-account.json", mode=0o644)
    fleet, warnings = load_config_with_warnings(path)
    btc = fleet.instance("btc")
    assert btc.sim_config == str(path.parent / "sim.json")
    assert btc.account_file == str(path.parent / "sim-account.json")
    assert warnings == []  # the simulator's keys are not secrets
    credentials = load_credentials(btc)
    assert credentials is not None
    assert (credentials.api_key, credentials.api_secret) == (KEY, SECRET)


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({"venue": "sim", "execute": False}, Mode.DRY_RUN),
        ({"venue": "sim", "execute": True}, Mode.SIM),
        ({"venue": "bybit", "execute": False}, Mode.DRY_RUN),
        ({"venue": "bybit", "execute": False, "demo": True}, Mode.DRY_RUN),
        ({"venue": "bybit", "execute": True, "demo": True}, Mode.DEMO),
        ({"venue": "bybit", "execute": True, "testnet": True}, Mode.TESTNET),
        ({"venue": "bybit", "execute": True}, Mode.LIVE),
    ],
)
def test_mode_derivation(settings: dict[str, object], mode: Mode, tmp_path: Path) -> None:
    write_account(tmp_path / "algo" / "bybit-account.json")
    doc = base_doc()
    doc.update(settings)
    fleet = load_config(write_config(tmp_path, doc))
    assert {row.mode for row in fleet.instances} == {mode}


def test_warnings_for_demo_with_an_exposed_account_file(tmp_path: Path) -> None:
    account = write_account(tmp_path / "algo" / "bybit-account.json", mode=0o640)
    doc = base_doc()
    doc.update({"venue": "bybit", "demo": True, "execute": True})
    doc["instances"][1]["spot_symbol"] = "PEPEUSDT"
    doc["instances"][1]["future_symbol"] = "1000PEPEUSDT"
    fleet, warnings = load_config_with_warnings(write_config(tmp_path, doc))
    assert fleet.instance("eth").mode is Mode.DEMO
    assert [str(w) for w in warnings] == [
        'instances[1].future_symbol: "1000PEPEUSDT" differs from spot_symbol "PEPEUSDT"; make '
        "sure one unit of each is the same amount of the base coin (e.g. 1000PEPEUSDT counts "
        "1000 PEPE per unit)",
        f"account_file: {account} is readable or writable by other users (mode 0640); run "
        f"chmod 600 {account}, which live trading requires",
    ]


def test_dry_run_on_bybit_needs_no_keys(tmp_path: Path) -> None:
    doc = base_doc()
    doc["venue"] = "bybit"
    fleet, warnings = load_config_with_warnings(write_config(tmp_path, doc))
    assert warnings == []
    assert fleet.instance("btc").mode is Mode.DRY_RUN
    assert load_credentials(fleet.instance("btc")) is None


def test_non_loopback_hub_with_token_file_is_a_warning(tmp_path: Path) -> None:
    doc = base_doc()
    doc["hub"] = {"host": "0.0.0.0", "token_file": "token"}
    path = write_config(tmp_path, doc)
    (path.parent / "token").write_text("abc\n")
    (path.parent / "token").chmod(0o600)
    fleet, warnings = load_config_with_warnings(path)
    assert fleet.hub.host == "0.0.0.0"
    assert [str(w) for w in warnings] == [
        'hub.host: the hub listens on "0.0.0.0", reachable from other machines; every request '
        "must carry the bearer token from hub.token_file"
    ]


def test_shipped_config_validates() -> None:
    fleet, warnings = load_config_with_warnings(SHIPPED)
    assert warnings == []
    assert fleet.venue is Venue.SIM
    assert fleet.ids == ["btc", "eth", "sol"]
    assert all(row.mode is Mode.SIM for row in fleet.instances)
    assert all(row.account_file is None for row in fleet.instances)
    sol = fleet.instance("sol")
    assert sol.entry_threshold_bps == Decimal(20)
    assert sol.exit_threshold_bps == Decimal(-3)
    assert fleet.instance("eth").order_qty == Decimal("0.05")
    assert sol.state_path == str(SHIPPED.parent / "state" / "sol.json")
    assert fleet.hub.run_dir == str(SHIPPED.parent / "run")
    assert sol.max_daily_loss_quote == Decimal(50)


def test_endpoints_are_parsed(tmp_path: Path) -> None:
    doc = base_doc()
    doc["endpoints"] = {
        "rest": "http://127.0.0.1:9000/",
        "ws_public": "ws://127.0.0.1:9000/v5/public",
        "ws_private": "ws://127.0.0.1:9000/v5/private",
    }
    fleet = load_config(write_config(tmp_path, doc))
    assert fleet.instance("btc").endpoints == Endpoints(
        rest="http://127.0.0.1:9000",
        ws_public="ws://127.0.0.1:9000/v5/public",
        ws_private="ws://127.0.0.1:9000/v5/private",
    )


# --- files, credentials ------------------------------------------------------------------------


def test_missing_and_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.json")
    assert str(caught.value) == (
        f"$: the config file {tmp_path / 'nope.json'} does not exist; check --config"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == (
        f"$: {tmp_path} is a folder; --config must name the config file, e.g. config.json"
    )


def test_credentials_are_never_shown(tmp_path: Path) -> None:
    account = write_account(tmp_path / "algo" / "bybit-account.json")
    doc = base_doc()
    doc.update({"venue": "bybit", "execute": True})
    fleet = load_config(write_config(tmp_path, doc))
    credentials = load_credentials(fleet.instance("btc"))
    assert isinstance(credentials, ApiCredentials)
    assert credentials.api_key == KEY and credentials.api_secret == SECRET
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert SECRET not in text and KEY not in text
        assert "redacted" in text
    assert credentials == ApiCredentials(KEY, SECRET)
    facts = inspect_account_file(account)
    assert facts.usable and facts.mode == 0o600
    assert SECRET not in repr(facts) and KEY not in repr(facts)


def test_credentials_refused_when_the_file_broke_after_loading(tmp_path: Path) -> None:
    account = write_account(tmp_path / "algo" / "bybit-account.json")
    doc = base_doc()
    doc.update({"venue": "bybit", "execute": True})
    fleet = load_config(write_config(tmp_path, doc))
    account.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load_credentials(fleet.instance("btc"))
    assert str(caught.value) == (
        f"account_file: {account} is readable or writable by other users (mode 0644); run "
        f"chmod 600 {account} before instance btc trades live with it"
    )


def test_no_message_contains_a_key_value() -> None:
    use = AccountUse(
        file="/a/bybit-account.json",
        venue=Venue.BYBIT,
        explicit=False,
        trading=("btc",),
        live=("btc",),
    )
    for facts in (
        AccountFacts(exists=False),
        AccountFacts(exists=True, mode=0o666, api_key_present=True),
        AccountFacts(exists=True, json_error="not UTF-8 text"),
    ):
        errors, warnings = judge_account_file(use, facts)
        assert errors
        for problem in errors + warnings:
            assert problem.path == "account_file"


# --- the docs and the core's purity -------------------------------------------------------------


def test_every_accepted_key_is_documented() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text()
    keys = {key for group in ACCEPTED_KEYS.values() for key in group}
    keys |= set(InstanceConfig.__struct_fields__) - {"venue", "demo", "testnet"}
    keys |= set(HubConfig.__struct_fields__) | set(Endpoints.__struct_fields__)
    keys |= set(FleetConfig.__struct_fields__) - {"path", "single_strategy"}
    missing = sorted(key for key in keys if f"`{key}`" not in docs)
    assert missing == [], f"keys missing from docs/configuration.md: {missing}"
    for mode in Mode:
        assert f"`{mode.value}`" in docs


FORBIDDEN = {"asyncio", "socket", "time", "os", "logging", "pybit", "websockets", "sqlmodel"}


def test_config_core_imports_no_io() -> None:
    source = Path(config_module.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & FORBIDDEN == set()
    assert "open(" not in source


def test_base_document_is_valid(tmp_path: Path) -> None:
    """The table's starting point must be valid, or a case could fail for the wrong reason."""
    fleet, warnings = load_config_with_warnings(write_config(tmp_path, copy.deepcopy(base_doc())))
    assert fleet.ids == ["btc", "eth"] and warnings == []


def test_row_path_names_the_row_for_stage_two_messages() -> None:
    """Stage-2 messages use the same JSON paths as stage 1."""
    fleet, _ = load_config_with_warnings(SHIPPED)
    assert [fleet.row_path(i) for i in fleet.ids] == [
        "instances[0]",
        "instances[1]",
        "instances[2]",
    ]

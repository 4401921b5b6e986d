"""Regressions from a review of configuration, rounding and the Bybit instrument parser:
each test pins one defect the review demonstrated (all fixed).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

import pytest

from tests.conftest import FIXTURES
from worker.cli import main
from worker.config_loader import load_config
from worker.core.config import ConfigError, analyse_config
from worker.core.instruments import floor_to, trunc_to
from worker.venues.bybit.parse import BybitError, parse_instruments

SECRET_PATH = "T000-WEBHOOK-SECRET-0123456789"


def single(**extra: Any) -> dict[str, Any]:
    """A valid single-strategy config; ``extra`` adds or replaces root keys."""
    doc: dict[str, Any] = {
        "entry_threshold_bps": 12,
        "spot_symbol": "BTCUSDT",
        "future_symbol": "BTCUSDT",
        "order_qty": "0.002",
        "state_path": "state/btc.json",
    }
    doc.update(extra)
    return doc


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "content",
    [
        "[" * 100_000 + "]" * 100_000,  # nested too deeply for the json module
        '{"api_key": ' + "1" * 5000 + "}",  # an integer beyond Python's 4300-digit limit
    ],
    ids=["deeply-nested", "huge-integer"],
)
def test_unparsable_account_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    account = tmp_path / "account.json"
    account.write_text(content)
    account.chmod(0o600)
    config = write(tmp_path, single(venue="bybit", execute=True, account_file="account.json"))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert any(p.path == "account_file" for p in caught.value.problems)


@pytest.mark.parametrize(
    "webhook",
    [
        f"https://hooks.example.com:99999/{SECRET_PATH}",  # port out of range
        f"https://hooks.example.com:abc/{SECRET_PATH}",  # port not a number
        f"https://[::1/{SECRET_PATH}",  # unbalanced IPv6 bracket
    ],
    ids=["port-out-of-range", "port-not-a-number", "bad-ipv6"],
)
def test_check_with_a_malformed_webhook_exits_cleanly(
    tmp_path: Path, webhook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, single(hub={"alert_webhook": webhook}))
    code = main(["--config", str(config), "--check"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "hub.alert_webhook" in err
    assert SECRET_PATH not in out + err


def test_rounding_a_held_quantity_never_exceeds_it() -> None:
    held = Decimal("0.99999999999999999999999999999")  # 29 significant digits
    step = Decimal("0.1")
    assert floor_to(held, step) <= held
    assert trunc_to(held, step) <= held


def test_a_huge_integer_duration_is_reported() -> None:
    huge = 10**400  # 10**400 / 1000 cannot even become a float (OverflowError)
    text = json.dumps(single(chase_interval_ms=huge))
    analysis = analyse_config(text, PurePath("/tmp/arb/config.json"))
    assert any(p.path == "chase_interval_ms" for p in analysis.errors)


def test_an_absurd_tick_size_is_a_bybit_error() -> None:
    fixture = FIXTURES / "bybit" / "rest_instruments_info_linear_response.json"
    body = json.loads(fixture.read_text())
    body["result"]["list"][0]["priceFilter"]["tickSize"] = "1e-999999999"
    with pytest.raises(BybitError):
        parse_instruments(json.dumps(body).encode())

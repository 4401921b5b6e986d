"""``spot-future-arb --check`` run as the real console script, the way an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_config import base_doc

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "algo" / "spot-future-arb" / "config.json"
SCRIPT = Path(sys.executable).parent / "spot-future-arb"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "worker.cli"]
SECRET = "S3CR3T-must-never-appear-abcdef0123"
KEY = "K3Y-must-never-appear-9876543210"


def run(
    *args: str, cwd: Path | None = None, module: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "worker.cli"] if module else COMMAND
    return subprocess.run(
        [*command, *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fleet(**root: Any) -> dict[str, Any]:
    doc = base_doc()
    doc.update(root)
    return doc


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    folder = tmp_path / "algo" / "arb"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_check_shipped_config_prints_resolved_values() -> None:
    result = run("--config", str(SHIPPED), "--instance", "btc", "--check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = json.loads(result.stdout)
    assert out["id"] == "btc"
    assert out["mode"] == "SIM"
    assert out["venue"] == "sim"
    assert out["execute"] is True
    assert out["spot_symbol"] == out["future_symbol"] == "BTCUSDT"
    assert out["order_qty"] == "0.002"
    assert out["entry_threshold_bps"] == "20"
    assert out["exit_threshold_bps"] == "-3"
    assert out["emergency_unwind_bps"] == "60"
    assert out["chase_interval_ms"] == 200
    assert out["hedge_mode"] == "race"
    assert out["max_daily_loss_quote"] == "50"
    assert out["max_notional_quote"] is None
    assert out["state_path"] == str(SHIPPED.parent / "state" / "btc.json")
    assert out["config"] == str(SHIPPED)
    assert out["hub"]["run_dir"] == str(SHIPPED.parent / "run")
    assert out["hub"]["port"] == 8800
    assert out["account_file"] is None
    assert out["credentials"]["account_file"] is None
    assert out["fleet"]["instances"] == ["btc", "eth", "sol"]


def test_check_row_override_from_another_directory(tmp_path: Path) -> None:
    relative = os.path.relpath(SHIPPED, tmp_path)  # e.g. ../../../work/main/algo/...
    result = run("--config", relative, "--instance", "sol", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["order_qty"], out["entry_threshold_bps"]) == ("1", "20")  # its row, the root
    assert out["state_path"] == str(SHIPPED.parent / "state" / "sol.json")


def test_check_as_a_module(tmp_path: Path) -> None:
    result = run("--config", str(SHIPPED), "--instance", "eth", "--check", module=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["order_qty"] == "0.05"


def test_check_bad_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    doc = fleet(entry_treshold_bps=5, hub={"port": 0})
    doc["instances"][0]["order_qty"] = 0.002
    doc["instances"][1]["id"] = "btc"
    path = write(tmp_path, doc)
    result = run("--config", str(path), "--instance", "btc", "--check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: instances[0].order_qty: is a JSON number; write order_qty as a decimal string "
        'such as "0.002" so it is read exactly',
        'error: instances[1].id: "btc" is also the id of instances[0]; every instance needs its '
        "own id",
        'error: entry_treshold_bps: unknown key "entry_treshold_bps"; did you mean '
        '"entry_threshold_bps"?',
        "error: hub.port: must be between 1 and 65535, not 0",
    ]


def test_check_needs_instance_with_several(tmp_path: Path) -> None:
    result = run("--config", str(write(tmp_path, fleet())), "--check")
    assert result.returncode == 2
    assert result.stderr == (
        "error: instances: this config has 2 instances (btc, eth); choose one with --instance ID\n"
    )
    result = run("--config", str(write(tmp_path, fleet())), "--instance", "sol", "--check")
    assert result.returncode == 2
    assert result.stderr == (
        'error: instances: there is no instance "sol" in this config; choose one of: btc, eth\n'
    )


def test_check_never_prints_secrets(tmp_path: Path) -> None:
    account = tmp_path / "algo" / "bybit-account.json"
    account.parent.mkdir(parents=True)
    account.write_text(json.dumps({"api_key": KEY, "api_secret": SECRET}))
    account.chmod(0o600)
    path = write(
        tmp_path,
        fleet(
            venue="bybit",
            execute=True,
            hub={"alert_webhook": f"https://hooks.example.com/services/{SECRET}"},
        ),
    )
    result = run("--config", str(path), "--instance", "eth", "--check")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert KEY not in result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["mode"] == "LIVE"
    assert out["account_file"] == str(account)
    assert out["credentials"] == {
        "account_file": str(account),
        "exists": True,
        "api_key_present": True,
        "api_secret_present": True,
    }
    assert out["hub"]["alert_webhook"] == "https://hooks.example.com/<redacted>"

    account.chmod(0o644)  # refused for live; the message names the file, not its content
    result = run("--config", str(path), "--instance", "eth", "--check")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: account_file: {account} is readable or writable by other users (mode 0644); "
        f"run chmod 600 {account} before instances btc, eth trade live with it\n"
    )
    assert SECRET not in result.stdout + result.stderr and KEY not in result.stderr


def test_check_live_without_keys(tmp_path: Path) -> None:
    path = write(tmp_path, fleet(venue="bybit", execute=True))
    result = run("--config", str(path), "--instance", "btc", "--check")
    assert result.returncode == 2
    assert "without API keys only dry-run or the simulator" in result.stderr
    assert str(tmp_path / "algo" / "bybit-account.json") in result.stderr


def test_check_prints_warnings_to_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, fleet(testnet=True))
    result = run("--config", str(path), "--instance", "btc", "--check")
    assert result.returncode == 0
    assert result.stderr == (
        'warning: testnet: is ignored with "venue": "sim"; testnet only applies to "bybit"\n'
    )
    assert json.loads(result.stdout)["testnet"] is False


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "none.json"), "--check")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: $: the config file {tmp_path / 'none.json'} does not exist; check --config\n"
    )


def test_a_sim_worker_without_the_simulators_address_is_a_config_error() -> None:
    result = run("--config", str(SHIPPED), "--instance", "btc")
    assert result.returncode == 2
    line = json.loads(result.stdout.splitlines()[-1])
    assert line["event"] == "config_error" and "ARBHUB_ENDPOINTS" in line["detail"]


@pytest.mark.parametrize("args", [["--bogus"], ["--check"], ["--check", "--config"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = subprocess.run(
        [*COMMAND, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "usage: spot-future-arb" in result.stderr

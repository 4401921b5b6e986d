"""``spot-future-arb``: the worker's command line.

Without ``--check`` or ``--reconcile`` it runs the instance until stopped (``worker.run``).
``--check`` validates the whole config file (stage 1 of §3) and prints the resolved settings of
one instance, so an operator sees exactly what a worker would run with before anything starts.
``--reconcile`` compares a stopped instance's snapshot with the exchange, optionally with
``--cancel-orphans`` and ``--resume`` or ``--clear``, and exits (``worker.reconcile``).
Exit codes follow §7: 0 ok (clean stop; a clean reconcile), 1 crash (a reconcile that leaves
differences or whose action was refused), 2 configuration or usage error, 3 the instance is
locked by another process, 4 unreadable or newer snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from worker.config_loader import inspect_account_file, load_config_with_warnings
from worker.core.config import ConfigError, ConfigProblem, FleetConfig, InstanceConfig
from worker.reconcile import reconcile
from worker.run import run

__all__ = ["main"]

EXIT_OK = 0
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spot-future-arb",
        description="One spot/perpetual basis-arbitrage worker (one instance of the fleet).",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("ARBHUB_CONFIG"),
        help="the fleet config file (default: $ARBHUB_CONFIG)",
    )
    parser.add_argument(
        "--instance",
        metavar="ID",
        help="the instances[] id to run; may be omitted when the config has only one",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config, print this instance's resolved settings as JSON, and exit",
    )
    repair = parser.add_argument_group(
        "reconcile (a stopped instance: takes its lock, compares its snapshot with the exchange)"
    )
    repair.add_argument(
        "--reconcile",
        action="store_true",
        help="report the differences between the snapshot and the exchange and exit "
        "(0 clean, 1 differences remain or an action was refused)",
    )
    repair.add_argument(
        "--cancel-orphans",
        action="store_true",
        help="cancel the open orders with this instance's prefix that the snapshot does not hold",
    )
    actions = repair.add_mutually_exclusive_group()
    actions.add_argument(
        "--resume",
        action="store_true",
        help="leave halted keeping the positions, only when snapshot and exchange agree",
    )
    actions.add_argument(
        "--clear",
        action="store_true",
        help="reset the state to flat with a new id epoch, only when nothing is held or open",
    )
    repair.add_argument(
        "--json", action="store_true", help="print the reconcile report as one JSON object"
    )
    return parser


def _redact_url(url: str | None) -> str | None:
    """Webhook URLs often carry a token in their path or query; show only where they go."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # never echo a malformed URL: it may carry a token
        return "<redacted>"
    return f"{parts.scheme}://{host}{port}/<redacted>"


def _resolved(fleet: FleetConfig, instance: InstanceConfig) -> dict[str, Any]:
    """What --check prints: the instance, its mode, the hub, and key presence (never values)."""
    out: dict[str, Any] = {"config": fleet.path, "mode": instance.mode.value}
    out.update(msgspec.to_builtins(instance))
    credentials: dict[str, Any] = {"account_file": instance.account_file}
    if instance.account_file is None:
        credentials["source"] = "the simulator's default account"
    else:
        facts = inspect_account_file(instance.account_file)
        credentials["exists"] = facts.exists
        credentials["api_key_present"] = facts.api_key_present
        credentials["api_secret_present"] = facts.api_secret_present
    out["credentials"] = credentials
    hub = msgspec.to_builtins(fleet.hub)
    hub["alert_webhook"] = _redact_url(fleet.hub.alert_webhook)
    out["hub"] = hub
    out["fleet"] = {
        "venue": fleet.venue.value,
        "single_strategy": fleet.single_strategy,
        "instances": fleet.ids,
    }
    return out


def _print_problems(kind: str, problems: Sequence[ConfigProblem]) -> None:
    for problem in problems:
        print(f"{kind}: {problem}", file=sys.stderr)


def _check(config: str, instance_id: str | None) -> int:
    try:
        fleet, warnings = load_config_with_warnings(config)
        instance = fleet.instance(instance_id)
    except ConfigError as exc:
        _print_problems("error", exc.problems)
        _print_problems("warning", exc.warnings)
        return EXIT_CONFIG
    _print_problems("warning", warnings)
    print(json.dumps(_resolved(fleet, instance), indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spot-future-arb`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("--config PATH is required (or set ARBHUB_CONFIG)")
    repair_flags = [
        flag
        for flag, given in (
            ("--cancel-orphans", args.cancel_orphans),
            ("--resume", args.resume),
            ("--clear", args.clear),
            ("--json", args.json),
        )
        if given
    ]
    if args.reconcile and args.check:
        parser.error("--check and --reconcile cannot be combined")
    if repair_flags and not args.reconcile:
        parser.error(f"{', '.join(repair_flags)} only with --reconcile")
    if args.check:
        return _check(args.config, args.instance)
    if args.reconcile:
        return reconcile(
            args.config,
            args.instance,
            cancel_orphans=args.cancel_orphans,
            resume=args.resume,
            clear=args.clear,
            as_json=args.json,
        )
    return run(args.config, args.instance)


if __name__ == "__main__":
    raise SystemExit(main())

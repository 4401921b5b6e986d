"""The I/O side of configuration: read the files, gather facts, let the pure core judge them.

``worker.core.config`` validates the config text; this module reads that text, looks at the
files it names (the account file's existence, permissions and keys; ``sim_config``;
``hub.token_file``) and raises ONE ``ConfigError`` carrying every problem, so the worker, the
hub and ``spot-future-arb --check`` all refuse a bad fleet with the same complete list.
API keys are read here and nowhere else, into ``ApiCredentials``, which never shows them.
"""

from __future__ import annotations

import hmac
import json
import stat
from pathlib import Path, PurePath

from worker.core.config import (
    AccountFacts,
    AccountUse,
    ConfigError,
    ConfigProblem,
    FleetConfig,
    InstanceConfig,
    Mode,
    PathCheck,
    PathFacts,
    Venue,
    analyse_config,
    judge_account_file,
    judge_path,
)

__all__ = [
    "SIM_CREDENTIALS",
    "ApiCredentials",
    "check_paths",
    "inspect_account_file",
    "load_config",
    "load_config_with_warnings",
    "load_credentials",
]

_REDACTED = "<redacted>"


# the simulator's default account (exchange_sim.config), used with venue sim and no key file
SIM_CREDENTIALS = ("arbhub-sim-key", "arbhub-sim-secret")


class ApiCredentials:
    """An API key pair whose repr, str and format never reveal either value."""

    __slots__ = ("_api_key", "_api_secret")

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._api_key = api_key
        self._api_secret = api_secret

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def api_secret(self) -> str:
        return self._api_secret

    def __repr__(self) -> str:
        return f"ApiCredentials(api_key={_REDACTED}, api_secret={_REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiCredentials):
            return NotImplemented
        return hmac.compare_digest(self._api_key, other._api_key) and hmac.compare_digest(
            self._api_secret, other._api_secret
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking secrets are not dict keys

    def __reduce__(self) -> str:
        """Refuse pickling, so keys never leave the process by accident."""
        raise TypeError("ApiCredentials cannot be pickled")


def _absolute(path: str | Path) -> Path:
    """Absolute without resolving symlinks: relative paths follow the folder as written."""
    return Path(path).expanduser().absolute()


def _read_account(path: Path) -> tuple[AccountFacts, ApiCredentials | None]:
    """Everything the judge needs about the account file, and the keys when usable."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return AccountFacts(exists=False), None
    except OSError as exc:
        return AccountFacts(exists=True, read_error=exc.strerror or str(exc)), None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return AccountFacts(exists=True, is_file=False, mode=mode), None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return AccountFacts(exists=True, mode=mode, read_error=exc.strerror or str(exc)), None
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return AccountFacts(exists=True, mode=mode, json_error="not UTF-8 text"), None
    except json.JSONDecodeError as exc:
        # exc.msg and the position never quote the file's content, so no secret leaks.
        error = f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        return AccountFacts(exists=True, mode=mode, json_error=error), None
    except RecursionError:
        return AccountFacts(exists=True, mode=mode, json_error="nested too deeply"), None
    except ValueError:  # an integer with thousands of digits; the message is not quoted
        error = "holds a number with thousands of digits"
        return AccountFacts(exists=True, mode=mode, json_error=error), None
    if not isinstance(document, dict):
        error = 'not a JSON object like {"api_key": "...", "api_secret": "..."}'
        return AccountFacts(exists=True, mode=mode, json_error=error), None
    key, secret = document.get("api_key"), document.get("api_secret")
    key = key.strip() if isinstance(key, str) else ""
    secret = secret.strip() if isinstance(secret, str) else ""
    facts = AccountFacts(
        exists=True, mode=mode, api_key_present=bool(key), api_secret_present=bool(secret)
    )
    return facts, (ApiCredentials(key, secret) if facts.usable else None)


def inspect_account_file(path: str | Path) -> AccountFacts:
    """What the account file holds (existence, mode, whether keys are present), never keys."""
    return _read_account(_absolute(path))[0]


def _path_facts(path: Path) -> PathFacts:
    try:
        info = path.stat()
    except FileNotFoundError:
        return PathFacts(exists=False)
    except OSError as exc:
        return PathFacts(exists=True, error=exc.strerror or str(exc))
    return PathFacts(
        exists=True,
        is_file=stat.S_ISREG(info.st_mode),
        size=info.st_size,
        mode=stat.S_IMODE(info.st_mode),
    )


def _read_config_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        message = f"the config file {path} does not exist; check --config"
    except IsADirectoryError:
        message = f"{path} is a folder; --config must name the config file, e.g. config.json"
    except OSError as exc:
        message = f"the config file {path} cannot be read ({exc.strerror or exc})"
    else:
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            message = f"the config file {path} is not UTF-8 text (bad byte at offset {exc.start})"
    raise ConfigError([ConfigProblem("$", message)])


def load_config_with_warnings(path: str | Path) -> tuple[FleetConfig, list[ConfigProblem]]:
    """The resolved fleet and its warnings; raises ConfigError listing EVERY problem."""
    config_path = _absolute(path)
    text = _read_config_text(config_path)
    analysis = analyse_config(text, PurePath(config_path))
    errors = list(analysis.errors)
    warnings = list(analysis.warnings)
    if analysis.account is not None:
        facts, _ = _read_account(Path(analysis.account.file))
        more_errors, more_warnings = judge_account_file(analysis.account, facts)
        errors += more_errors
        warnings += more_warnings
    more_errors, more_warnings = check_paths(analysis.paths)
    errors += more_errors
    warnings += more_warnings
    if errors or analysis.config is None:
        raise ConfigError(errors, warnings)
    return analysis.config, warnings


def load_config(path: str | Path) -> FleetConfig:
    """The resolved fleet; raises ConfigError listing every problem."""
    return load_config_with_warnings(path)[0]


def load_credentials(instance: InstanceConfig) -> ApiCredentials | None:
    """The instance's API keys, or None when it runs without them (dry-run, the sim's default).

    The file is read again at worker start, so a file broken or exposed since the fleet was
    validated is still refused for an instance that trades with it.
    """
    if instance.account_file is None:
        return None
    facts, credentials = _read_account(Path(instance.account_file))
    trading = (instance.id,) if instance.execute else ()
    use = AccountUse(
        file=instance.account_file,
        venue=instance.venue,
        explicit=instance.venue is Venue.SIM,
        trading=trading,
        live=trading if instance.mode is Mode.LIVE else (),
    )
    errors, _ = judge_account_file(use, facts)
    if errors:
        raise ConfigError(errors)
    return credentials


def check_paths(checks: list[PathCheck]) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """Judge files named by the config (exposed for the hub's own start-up checks)."""
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    for check in checks:
        more_errors, more_warnings = judge_path(check, _path_facts(Path(check.file)))
        errors += more_errors
        warnings += more_warnings
    return errors, warnings

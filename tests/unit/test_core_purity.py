"""``worker/core`` stays pure: no I/O, clocks, logging, venue clients or runtime packages.

Two checks. The static one parses every ``.py`` file under ``worker/core`` with :mod:`ast` and
rejects any import of a forbidden module, wherever it stands (module level, inside a function,
under ``if TYPE_CHECKING``) and however it is spelled: ``import x``, ``import x.y``,
``from x import y``, ``from x.y import z``, a submodule ``from pkg import x`` or
``from . import x``, and ``__import__("x")`` / ``importlib.import_module("x")`` with a literal
name. The dynamic one imports the core's entry modules in a fresh interpreter and looks at
``sys.modules`` afterwards, which catches a forbidden module pulled in through another package.
The standard library imports ``os`` and ``time`` for itself, so the dynamic check covers only the
modules nothing in a pure import chain has a reason to load.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "worker" / "core"

# Never imported by name from worker/core.
FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "os",
        "logging",
        "pybit",
        "websockets",
        "sqlmodel",
        "hub",
        "exchange_sim",
    }
)
# Never loaded at all as a consequence of importing worker/core.
FORBIDDEN_LOADED = frozenset(
    {"asyncio", "socket", "pybit", "websockets", "sqlmodel", "hub", "exchange_sim"}
)
ENTRY_MODULES = (
    "worker.core.strategy",
    "worker.core.config",
    "worker.core.snapshot",
    "worker.core.venue_check",
)
_DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


def _hits(dotted: str, forbidden: frozenset[str]) -> list[str]:
    """The forbidden parts of a dotted name: ``os.path`` -> os, ``worker.hub.api`` -> hub."""
    return [part for part in dotted.split(".") if part in forbidden]


def forbidden_imports(path: Path, forbidden: frozenset[str] = FORBIDDEN) -> list[str]:
    """Every import in ``path`` that names a forbidden module, as ``file:line: statement``."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    found: list[tuple[int, str]] = []

    def hit(node: ast.stmt | ast.expr, what: str) -> None:
        found.append((node.lineno, what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _hits(alias.name, forbidden):
                    hit(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            source_name = "." * node.level + module
            if _hits(module, forbidden):
                hit(node, f"from {source_name} import ...")
                continue
            # ``from pkg import x`` may import the submodule ``pkg.x``. A standard-library
            # module's attribute (``from datetime import time``) is not a module import.
            stdlib_attr = node.level == 0 and module.split(".")[0] in sys.stdlib_module_names
            for alias in node.names:
                if alias.name in forbidden and not stdlib_attr:
                    hit(node, f"from {source_name} import {alias.name}")
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            first = node.args[0]
            if (
                name in _DYNAMIC_IMPORTERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _hits(first.value, forbidden)
            ):
                hit(node, f"{name}({first.value!r})")
    return [f"{path.name}:{line}: {what}" for line, what in sorted(found)]


def core_files() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


# ---------------------------------------------------------------------- the checks


def test_core_files_are_found() -> None:
    names = {p.name for p in core_files()}
    assert {"__init__.py", "strategy.py", "model.py", "events.py"} <= names, names


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_core_module_imports_nothing_impure(path: Path) -> None:
    found = forbidden_imports(path)
    assert not found, (
        f"worker/core must stay pure (no {', '.join(sorted(FORBIDDEN))}); "
        "move the I/O to the runtime and pass its result in as an event:\n  " + "\n  ".join(found)
    )


_PROBE = textwrap.dedent(
    """
    import importlib, json, sys, traceback

    sys.path[:0] = PATHS
    FORBIDDEN = set(NAMES)
    culprits = {}

    class Spy:
        # records where a forbidden module is first asked for; finds nothing itself
        @staticmethod
        def find_spec(name, path=None, target=None):
            if FORBIDDEN & set(name.split(".")) and name not in culprits:
                frames = [
                    f"{f.filename}:{f.lineno}"
                    for f in traceback.extract_stack()[:-1]
                    if "importlib" not in f.filename and "<frozen" not in f.filename
                ]
                culprits[name] = frames[-3:]
            return None

    sys.meta_path.insert(0, Spy)
    before = set(sys.modules)
    for module in MODULES:
        importlib.import_module(module)
    loaded = sorted(set(sys.modules) - before)
    print(json.dumps({"loaded": loaded, "culprits": culprits}))
    """
)


def loaded_by(
    modules: list[str], paths: list[str], forbidden: frozenset[str] = FORBIDDEN_LOADED
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Import ``modules`` in a fresh interpreter: (every module that loaded, the forbidden ones
    among them, where each forbidden one was first requested)."""
    code = f"PATHS = {paths!r}\nNAMES = {sorted(forbidden)!r}\nMODULES = {modules!r}\n" + _PROBE
    # -I: ignore PYTHON* variables and the user's site directory; the venv's site still loads
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths[0],
        check=False,
    )
    assert proc.returncode == 0, f"importing {modules} failed:\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded: list[str] = result["loaded"]
    culprits: dict[str, list[str]] = result["culprits"]
    return loaded, [m for m in loaded if _hits(m, forbidden)], culprits


def test_importing_the_core_loads_nothing_impure() -> None:
    loaded, bad, culprits = loaded_by(list(ENTRY_MODULES), [str(REPO)])
    assert set(ENTRY_MODULES) <= set(loaded), loaded  # the probe really imported them
    assert not bad, (
        f"importing {', '.join(ENTRY_MODULES)} loaded {bad}; first requested from "
        f"{json.dumps(culprits, indent=2)}"
    )


# ---------------------------------------------------------------------- the checker itself


def test_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "impure.py"
    bad.write_text(
        textwrap.dedent(
            """\
            import socket
            from time import time
            import decimal, os.path as osp
            from worker.hub.client import Client
            from . import exchange_sim


            def later():
                import asyncio
                from logging import getLogger

                return asyncio, getLogger


            class Later:
                def run(self):
                    from pybit.unified_trading import HTTP
                    importlib.import_module("websockets.client")
                    return __import__("sqlmodel"), HTTP
            """
        ),
        encoding="utf-8",
    )
    assert forbidden_imports(bad) == [
        "impure.py:1: import socket",
        "impure.py:2: from time import ...",
        "impure.py:3: import os.path",
        "impure.py:4: from worker.hub.client import ...",
        "impure.py:5: from . import exchange_sim",
        "impure.py:9: import asyncio",
        "impure.py:10: from logging import ...",
        "impure.py:17: from pybit.unified_trading import ...",
        "impure.py:18: import_module('websockets.client')",
        "impure.py:19: __import__('sqlmodel')",
    ]


def test_checker_accepts_pure_imports(tmp_path: Path) -> None:
    good = tmp_path / "pure.py"
    good.write_text(
        textwrap.dedent(
            """\
            from __future__ import annotations

            import decimal
            from datetime import time  # a class, not the time module
            from typing import TYPE_CHECKING

            import msgspec

            from worker.core.model import Leg
            from . import basis


            def f():
                from worker.core import ids

                return ids, decimal, time, msgspec, Leg, basis, TYPE_CHECKING, "import os"
            """
        ),
        encoding="utf-8",
    )
    assert forbidden_imports(good) == []


def test_probe_catches_a_transitive_import(tmp_path: Path) -> None:
    pkg = tmp_path / "fakecore"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "strategy.py").write_text("from fakecore import helper\n", encoding="utf-8")
    (pkg / "helper.py").write_text("import decimal\n\nimport socket\n", encoding="utf-8")
    loaded, bad, culprits = loaded_by(["fakecore.strategy"], [str(tmp_path)])
    assert "fakecore.helper" in loaded
    assert bad == ["socket"]
    assert culprits["socket"][-1] == f"{pkg / 'helper.py'}:3"

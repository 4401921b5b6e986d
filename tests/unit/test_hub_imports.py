"""The hub may use the worker's config, IPC, store, journal and venue client, never the core's
decision code or the worker's runtime (ARCHITECTURE §2): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("worker.core.strategy", "worker.core.machine", "worker.runtime", "worker.run")


def test_the_hub_never_imports_the_cores_decisions_or_the_worker_runtime() -> None:
    code = (
        "import sys, hub.cli, hub.web, hub.service, hub.account\n"
        f"print([m for m in {FORBIDDEN!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout

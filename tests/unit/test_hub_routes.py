"""Every route of the hub's web app runs on its event loop.

The supervisor's rows and the workers' IPC streams belong to the loop; FastAPI runs a plain
``def`` route in a thread pool, where a Stop or Start would write to an asyncio stream and
spawn a worker concurrently with the supervisor (a second worker for a row). The app is built
from a real fleet config; nothing is started.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.routing import APIRoute

from hub.service import Hub
from hub.web import create_app
from tests.hub_harness import ROWS, write_config
from worker.config_loader import load_config


def test_every_route_is_a_coroutine(tmp_path: Path) -> None:
    config = write_config(tmp_path, ROWS)
    fleet = load_config(config)
    app = create_app(Hub(fleet, config_path=config), token="t" * 32)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} >= {"/api/instances", "/arb", "/arb/{instance}/stop"}
    blocking = [r.path for r in routes if not asyncio.iscoroutinefunction(r.endpoint)]
    assert blocking == []

"""The hub's web side: ``/arb`` for the operator, a JSON API, Prometheus metrics and probes.

Built by :func:`create_app` around a running :class:`~hub.service.Hub`; routes stay thin and
read the hub's views. Every state-changing request is a POST carrying the page's CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``); anything else gets 403. With
``hub.token_file`` every request must also carry the bearer token (``Authorization: Bearer``,
or the ``arbhub_token`` cookie that ``/arb?token=…`` sets). OpenAPI docs are off unless
``enable_docs``. Pages never show secrets: the config's keys live in account files the hub
does not read, and log lines are already redacted by the workers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from fastapi import FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from hub.files import tail_lines
from hub.service import Hub
from hub.supervisor import ProcessState, Row
from worker import ipc
from worker.core.ledger import fmt
from worker.journal import journal_path

__all__ = ["create_app"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LOG_TAIL = 80
RECENT = 20
_ERROR_STATES = frozenset({ProcessState.FATAL.value, ProcessState.BACKOFF.value})


def _severity(view: dict[str, Any]) -> int:
    """Halted, FATAL and stale rows first (§8), then any other trouble, then the rest."""
    if view["state"] == "halted" or view["process_state"] == "FATAL" or view["stale"]:
        return 0
    if view["process_state"] in _ERROR_STATES or view["error"]:
        return 1
    return 2


def _same(given: str, secret: str) -> bool:
    """Constant-time comparison that also refuses (never raises on) non-ASCII input."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode())


def sorted_views(hub: Hub) -> list[dict[str, Any]]:
    return sorted(hub.views(), key=lambda v: (_severity(v), v["id"]))


def _json(data: object, status_code: int = 200) -> Response:
    """JSON encoded by msgspec: FastAPI's own encoder walked 100 rows in ≈ 10 ms."""
    return Response(msgspec.json.encode(data), status_code, media_type="application/json")


def _row_files(state_path: Path, log: Path) -> dict[str, Any]:
    """What a row's page reads from disk (in a thread: the worker owns these files)."""
    journal = journal_path(state_path)
    try:
        snapshot = json.dumps(json.loads(state_path.read_bytes()), indent=2)[:200_000]
    except (OSError, ValueError):
        snapshot = "(no snapshot yet)"
    return {
        "log": tail_lines(log, LOG_TAIL),
        "snapshot": snapshot,
        "orders": _recent(journal, "SELECT * FROM orders ORDER BY created_ms DESC LIMIT ?"),
        "fills": _recent(journal, "SELECT * FROM fills ORDER BY exec_ms DESC LIMIT ?"),
        "cycles": _recent(journal, "SELECT * FROM cycles ORDER BY number DESC LIMIT ?"),
    }


def _recent(path: Path, query: str) -> list[dict[str, Any]]:
    """Rows from the instance's journal, read-only (the worker owns it)."""
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(query, (RECENT,))]
    except sqlite3.Error:
        return []


# name → (help, the value from a row's view; None leaves the row out)
_GAUGES: dict[str, tuple[str, Callable[[dict[str, Any]], object]]] = {
    "arbhub_instance_running": (
        "1 when the worker process is RUNNING",
        lambda v: int(v["process_state"] == "RUNNING"),
    ),
    "arbhub_instance_halted": (
        "1 when the instance is halted",
        lambda v: int(v["state"] == "halted"),
    ),
    "arbhub_instance_stale": (
        "1 when a running worker stopped reporting",
        lambda v: int(v["stale"]),
    ),
    "arbhub_instance_restarts": ("worker restarts since the hub started", lambda v: v["restarts"]),
    "arbhub_instance_basis_bps": ("basis in bps", lambda v: v["basis_bps"]),
    "arbhub_instance_fills": ("fills since the state was created", lambda v: v["fills"]),
    "arbhub_instance_realized_pnl": ("realised PnL in quote units", lambda v: v["realized_pnl"]),
    "arbhub_instance_rss_bytes": ("worker resident memory", lambda v: v["rss_bytes"]),
}


def _metrics(hub: Hub) -> str:
    lines = ["# HELP arbhub_up 1 while the hub serves.", "# TYPE arbhub_up gauge", "arbhub_up 1"]
    views = hub.views()
    for name, (help_text, value_of) in _GAUGES.items():
        lines += [f"# HELP {name} {help_text}.", f"# TYPE {name} gauge"]
        for v in views:
            if (value := value_of(v)) is not None:
                lines.append(f'{name}{{instance="{v["id"]}"}} {value}')
    lines += [
        "# HELP arbhub_account_mismatch 1 when the rows' perp claims differ from the exchange.",
        "# TYPE arbhub_account_mismatch gauge",
    ]
    for check in hub.account.results:
        lines.append(f'arbhub_account_mismatch{{symbol="{check.symbol}"}} {int(check.differs)}')
    return "\n".join(lines) + "\n"


def create_app(hub: Hub, *, token: str | None = None, enable_docs: bool = False) -> FastAPI:
    app = FastAPI(
        title="arbhub",
        docs_url="/docs" if enable_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if enable_docs else None,
    )
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["money"] = money
    templates.env.filters["plain"] = plain
    csrf = secrets.token_urlsafe(32)

    if token is not None:

        @app.middleware("http")
        async def bearer(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            scheme, _, credential = request.headers.get("authorization", "").partition(" ")
            given = credential if scheme == "Bearer" else ""
            given = given or request.cookies.get("arbhub_token", "")
            query = request.query_params.get("token", "")
            if query and _same(query, token):
                response = RedirectResponse(request.url.path, status_code=303)
                response.set_cookie("arbhub_token", token, httponly=True, samesite="strict")
                return response
            if request.url.path != "/livez" and not _same(given, token):
                return PlainTextResponse("a bearer token is required", status_code=401)
            return await call_next(request)

    def check_csrf(request: Request, form_token: str | None) -> None:
        given = form_token or request.headers.get("x-csrf-token", "")
        if not _same(given, csrf):
            raise HTTPException(403, "missing or wrong CSRF token")

    def row_or_404(instance: str) -> Row:
        row = hub.rows.get(instance)
        if row is None:
            raise HTTPException(404, f"no instance {instance!r}")
        return row

    def done(request: Request, notes: list[str], back: str) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": True, "notes": notes})
        return RedirectResponse(back, status_code=303)

    # Every route is a coroutine: it runs on the hub's event loop, the only thread that may
    # touch the supervisor's state and the workers' IPC streams (a plain ``def`` route would
    # run in a thread pool, racing the loop). Disk reads go to a thread explicitly.

    @app.get("/livez")
    async def livez() -> Response:
        return _json({"ok": True})

    @app.get("/readyz")
    async def readyz() -> Response:
        return _json({"ready": hub.ready}, 200 if hub.ready else 503)

    @app.get("/api/instances")
    async def instances() -> Response:
        return Response(hub.views_json(), media_type="application/json")

    @app.get("/api/instances/{instance}")
    async def instance(instance: str) -> Response:
        view = hub.view_json(row_or_404(instance), time.monotonic())
        return Response(view, media_type="application/json")

    @app.get("/api/account")
    async def account() -> Response:
        """Per perp symbol: the rows' claims against the exchange's position."""
        return _json([check.as_dict() for check in hub.account.results])

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(_metrics(hub), media_type="text/plain; version=0.0.4")

    @app.get("/arb", response_class=HTMLResponse)
    async def arb(request: Request) -> Response:
        context = {
            "rows": sorted_views(hub),
            "account": hub.account.results,
            "csrf": csrf,
            "venue": hub.fleet.venue.value,
        }
        return templates.TemplateResponse(request, "arb.html", context)

    @app.get("/arb/rows", response_class=HTMLResponse)
    async def arb_rows(request: Request) -> Response:
        context = {"rows": sorted_views(hub), "account": hub.account.results, "csrf": csrf}
        return templates.TemplateResponse(request, "rows.html", context)

    @app.get("/arb/{instance}", response_class=HTMLResponse)
    async def arb_row(request: Request, instance: str) -> Response:
        row = row_or_404(instance)
        view = hub.view(row, time.monotonic())
        chart = basis_chart(list(row.basis))
        files = await asyncio.to_thread(_row_files, Path(row.cfg.state_path), hub.run.log(instance))
        context = {"row": view, "csrf": csrf, "chart": chart, **files}
        return templates.TemplateResponse(request, "row.html", context)

    @app.post("/arb/{instance}/start")
    async def start(
        request: Request, instance: str, csrf_token: str | None = Form(None)
    ) -> Response:
        check_csrf(request, csrf_token)
        row_or_404(instance)
        return done(request, hub.start([instance]), "/arb")

    @app.post("/arb/{instance}/stop")
    async def stop(
        request: Request, instance: str, csrf_token: str | None = Form(None)
    ) -> Response:
        check_csrf(request, csrf_token)
        row_or_404(instance)
        return done(request, hub.stop([instance]), "/arb")

    @app.post("/arb/{instance}/flatten")
    async def flatten(
        request: Request, instance: str, csrf_token: str | None = Form(None)
    ) -> Response:
        check_csrf(request, csrf_token)
        row_or_404(instance)
        refused = hub.command(instance, ipc.Flatten())
        if refused is not None:
            raise HTTPException(409, refused)
        return done(request, [f"{instance}: flatten sent"], f"/arb/{instance}")

    @app.post("/arb/stop-all")
    async def stop_all(request: Request, csrf_token: str | None = Form(None)) -> Response:
        check_csrf(request, csrf_token)
        return done(request, hub.stop(list(hub.rows)), "/arb")

    return app


def plain(value: Decimal | None) -> str:
    return "—" if value is None else fmt(value)


def money(value: str | None) -> str:
    """A quote amount for the page: 4 decimals (the API keeps every digit)."""
    if value is None:
        return "—"
    return fmt(Decimal(value).quantize(Decimal("0.0001")))


def basis_chart(points: list[tuple[int, float]], width: int = 640, height: int = 160) -> str:
    """An inline SVG polyline of the basis (bps) over the points the hub has seen."""
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], points[-1][0]
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span_t, span_v = max(t1 - t0, 1), max(high - low, 1e-9)
    coords = " ".join(
        f"{(t - t0) / span_t * width:.1f},{height - (v - low) / span_v * height:.1f}"
        for t, v in points
    )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="basis in bps from {low:.1f} to {high:.1f}">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{coords}"/>'
        f'<text x="2" y="12">{high:.1f} bps</text><text x="2" y="{height - 2}">{low:.1f} bps</text>'
        "</svg>"
    )

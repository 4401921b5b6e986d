"""The CLI's way into a running hub: a Unix socket in ``run_dir`` (0600), never HTTP (§8).

One JSON request per connection, one JSON answer: ``{"op": "status" | "start" | "stop" |
"flatten" | "resume" | "shutdown", "ids": [...]}`` → ``{"ok": bool, "notes": [...], "rows": [...],
"url": "http://…/arb"}``. Only the operator's user can open the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.service import Hub
from worker import ipc

__all__ = ["ControlError", "ask", "serve_control"]

MAX_REQUEST = 64 << 10
_COMMANDS: dict[str, ipc.Down] = {"flatten": ipc.Flatten(), "resume": ipc.Resume()}


class ControlError(RuntimeError):
    """No hub answers on the control socket."""


def _handle(hub: Hub, request: dict[str, Any], url: str, shutdown: Callable[[], None]) -> Any:
    op = request.get("op")
    ids = request.get("ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return {"ok": False, "error": "ids must be a list of instance ids"}
    unknown = [i for i in ids if i not in hub.rows]
    if unknown:
        return {"ok": False, "error": f"no such instance: {', '.join(unknown)}"}
    if op == "status":
        return {"ok": True, "rows": hub.views(), "url": url}
    if op == "start":
        return {"ok": True, "notes": hub.start(ids or list(hub.rows)), "url": url}
    if op == "stop":
        return {"ok": True, "notes": hub.stop(ids or list(hub.rows))}
    if op in _COMMANDS:
        if len(ids) != 1:
            return {"ok": False, "error": f"{op} takes exactly one instance id"}
        refused = hub.command(ids[0], _COMMANDS[op])
        if refused is not None:
            return {"ok": False, "error": refused}
        return {"ok": True, "notes": [f"{ids[0]}: {op} sent"]}
    if op == "shutdown":
        shutdown()
        return {"ok": True, "notes": ["the hub stops the fleet, then the simulator, then exits"]}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def serve_control(hub: Hub, url: str, shutdown: Callable[[], None]) -> asyncio.AbstractServer:
    path = hub.run.control_socket

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            try:
                request = json.loads(line[:MAX_REQUEST])
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                answer = _handle(hub, request, url, shutdown)
            except ValueError as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError):
            return  # the CLI went away (closed in finally)
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a hub that died (Hub.open refused if one is alive)
    server = await asyncio.start_unix_server(client, str(path))
    os.chmod(path, 0o600)
    return server


def ask(control_socket: Path, request: dict[str, Any], timeout_s: float = 10.0) -> Any:
    """Send one request to the running hub; ``ControlError`` when none answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(control_socket))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"the hub is not running ({control_socket}: {exc.strerror})") from None
    except OSError as exc:
        raise ControlError(f"the hub did not answer ({exc})") from None
    try:
        return json.loads(data)
    except ValueError:
        raise ControlError("the hub's answer was cut short") from None

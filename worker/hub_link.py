"""The worker's side of the hub connection (ARCHITECTURE §7).

The worker trades whether or not a hub listens: ``HubLink`` keeps trying the hub's Unix
socket (capped backoff), and on each connection sends ``Hello`` first, then the latest
``Status`` and a ``Heartbeat`` every interval. Status updates made while disconnected are
not queued — only the newest matters. Commands from the hub go to ``on_command``. A frame
the hub should never send ends the connection (and the link reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from worker import ipc

__all__ = ["HubLink"]


class HubLink:
    def __init__(
        self,
        socket_path: Path,
        hello: ipc.Hello,
        *,
        on_command: Callable[[ipc.Down], None],
        heartbeat_s: float = 1.0,
        retry_min_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.socket_path = socket_path
        self.hello = hello
        self.on_command = on_command
        self.heartbeat_s = heartbeat_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.connected = False
        self.connections = 0
        self.last_error = ""  # why the last connection was dropped by us
        self._status: ipc.Status | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stopping = False

    def publish(self, status: ipc.Status) -> None:
        """The newest status; sent now when connected, else on the next connection."""
        self._status = status
        self._send(status)

    def _send(self, message: ipc.Up) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(ipc.encode(message))

    async def run(self) -> None:
        delay = self.retry_min_s
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_min_s
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.connected = True
        self.connections += 1
        self._send(self.hello)
        if self._status is not None:
            self._send(self._status)
        beats = asyncio.create_task(self._heartbeats())
        try:
            while (frame := await ipc.read_frame(reader)) is not None:
                self.on_command(ipc.decode_down(frame))
        except (ipc.ProtocolError, OSError) as exc:
            # a broken or confused hub: remember why, drop the connection, try again
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            beats.cancel()
            self.connected = False
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self._send(ipc.Heartbeat(instance=self.hello.instance, ts_ms=time.time_ns() // 10**6))

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            self._writer.close()

"""The worker's hub link over a real Unix socket: Hello first, latest status, commands in,
and it keeps retrying while no hub listens."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.unit.test_ipc import STATUS
from worker import ipc
from worker.hub_link import HubLink

HELLO = ipc.Hello(instance="btc", pid=1, mode="SIM", version="0.1.0")


class FakeHub:
    """A real Unix-socket server that records what workers send and can send commands."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[ipc.Up] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while (frame := await ipc.read_frame(reader)) is not None:
            self.received.append(ipc.decode_up(frame))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        self.writers.clear()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def test_hello_first_then_status_then_commands_and_reconnect() -> None:
    async def scenario(path: Path) -> list[ipc.Down]:
        commands: list[ipc.Down] = []
        link = HubLink(path, HELLO, on_command=commands.append, heartbeat_s=0.05)
        link.publish(STATUS)  # before any hub exists: kept, not lost
        task = asyncio.create_task(link.run())
        await asyncio.sleep(0.3)  # no hub yet: the link keeps retrying quietly
        assert link.connections == 0
        hub = FakeHub(path)
        await hub.start()
        await _until(lambda: any(isinstance(m, ipc.Heartbeat) for m in hub.received))
        assert hub.received[:2] == [HELLO, STATUS]
        hub.writers[0].write(ipc.encode(ipc.Stop()) + ipc.encode(ipc.Flatten()))
        await _until(lambda: len(commands) == 2)
        await hub.stop()  # the hub dies …
        path.unlink()
        hub = FakeHub(path)
        await hub.start()  # … and comes back: Hello again, then the latest status
        await _until(lambda: len(hub.received) >= 2)
        assert hub.received[:2] == [HELLO, STATUS]
        assert link.connections == 2
        await link.stop()
        await hub.stop()
        task.cancel()
        return commands

    with tempfile.TemporaryDirectory() as tmp:
        commands = asyncio.run(scenario(Path(tmp) / "hub.sock"))
    assert commands == [ipc.Stop(), ipc.Flatten()]


def test_a_garbage_frame_drops_the_connection_and_the_link_reconnects() -> None:
    async def scenario(path: Path) -> int:
        link = HubLink(path, HELLO, on_command=lambda _: None, heartbeat_s=10)
        hub = FakeHub(path)
        await hub.start()
        task = asyncio.create_task(link.run())
        await _until(lambda: len(hub.writers) == 1)
        hub.writers[0].write(b"\x00\x00\x00\x03abc")
        await _until(lambda: len(hub.writers) == 2)
        await link.stop()
        await hub.stop()
        task.cancel()
        assert link.last_error.startswith("ProtocolError")
        return link.connections

    with tempfile.TemporaryDirectory() as tmp:
        assert asyncio.run(scenario(Path(tmp) / "hub.sock")) == 2

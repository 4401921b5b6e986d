"""The hub's web port: every connection it accepts has Nagle's algorithm off.

uvicorn writes a response's head and body in two writes; with Nagle on, the body waited for
the client's delayed ACK and every request took 40 ms (the cause of the hub bench's misses).
"""

from __future__ import annotations

import socket

import pytest

from hub.cli import listen


def test_connections_accepted_on_the_hub_port_have_tcp_nodelay() -> None:
    listening = listen("127.0.0.1", 0)
    try:
        port = listening.getsockname()[1]
        assert listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listening.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listening.close()


def test_a_port_in_use_is_an_os_error() -> None:
    first = listen("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listen("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()

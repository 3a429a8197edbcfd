"""The fault proxy's trigger: `reset_on` cuts at the write that carries a pattern, not before."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from support.fault_proxy import FaultProxy


@pytest.fixture
def echo_port() -> int:
    """A TCP echo server on a free port, for the life of the test."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def _answer(port: int, data: bytes) -> bytes:
    """What a new connection through the proxy gets back for `data` (b"" when it is cut)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(data)
            return conn.recv(100)
    except OSError:
        return b""


def test_reset_on_passes_other_writes_then_cuts_at_the_one_carrying_the_pattern(
    echo_port: int,
) -> None:
    proxy = FaultProxy(echo_port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            proxy.reset_on(b"publish")
            client.sendall(b"ack 1")
            assert client.recv(100) == b"ack 1"
            assert proxy.mode == "pass"

            client.sendall(b"LPUSH publish me")
            with contextlib.suppress(ConnectionResetError):  # the echo never saw it
                assert client.recv(100) == b""
        assert proxy.mode == "reset"
        assert _answer(proxy.port, b"x") == b""  # new connections are cut until pass

        proxy.set_mode("pass")
        assert _answer(proxy.port, b"publish again") == b"publish again"  # it struck once
    finally:
        proxy.close()

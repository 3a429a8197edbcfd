"""A small TCP fault proxy (threads, in the test process) in front of Redis, PostgreSQL or SMTP.

    proxy = FaultProxy(target_port); proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    proxy.set_mode("blackhole")   # pass | latency | reset | refuse | blackhole, at any time
    proxy.reset_on(b"some.task")  # reset from the first client write that carries these bytes

- pass: bytes flow both ways.
- latency: every chunk is held `latency` seconds (plus uniform jitter) before it is forwarded.
- reset: every open connection is closed with a TCP RST; new ones are accepted and reset at
  once (the client sees "connection reset", as when the server crashed).
- refuse: open connections keep working, new ones are reset at once (a listener that is gone
  while established sessions survive, e.g. a broker's connection limit).
- blackhole: connections stay open, bytes are read and dropped, nothing ever comes back (a
  frozen server or a dead network path); switching back to pass does not revive the
  connections that saw the blackhole: they are reset, as a real stalled peer eventually is.

`reset_on(pattern)` arms a trigger instead of a timed switch: the first chunk a client sends
that contains `pattern` is dropped and the proxy turns to reset at that instant. A test cuts a
given command (a publish of a task, by its name in the message headers) however soon after
another event it comes, where waiting for a log line and then switching would race it.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time

MODES = frozenset({"pass", "latency", "reset", "refuse", "blackhole"})


def _reset(sock: socket.socket) -> None:
    """Drop the connection at once: SO_LINGER 0 (RST where the kernel can), and shutdown()
    first, which also wakes the proxy's own thread blocked in recv() on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.tainted = False  # saw a blackhole: never forwards again

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            _reset(self.client)
            _reset(self.upstream)


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.latency = 0.0
        self.jitter = 0.0
        self.connections_accepted = 0
        self.connections_reset = 0
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._random = random.Random(self.port)
        self._trigger: bytes | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def set_mode(self, mode: str, latency: float = 0.0, jitter: float = 0.0) -> None:
        assert mode in MODES, mode
        with self._lock:
            self.mode, self.latency, self.jitter = mode, latency, jitter
            pairs = list(self._pairs)
        if mode == "reset":
            for pair in pairs:
                self.connections_reset += not pair.closed.is_set()
                pair.close()
        elif mode == "blackhole":
            for pair in pairs:
                pair.tainted = True
        elif mode == "pass":
            for pair in pairs:  # connections that lost bytes in the blackhole are unusable
                if pair.tainted:
                    pair.close()

    def reset_on(self, pattern: bytes) -> None:
        """Turn to reset when a client next sends `pattern`; that chunk never reaches the server."""
        with self._lock:
            self._trigger = pattern

    def _tripped(self, data: bytes) -> bool:
        with self._lock:
            if self._trigger is None or self._trigger not in data:
                return False
            self._trigger = None
        self.set_mode("reset")
        return True

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- plumbing ---------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections_accepted += 1
            if self.mode in ("reset", "refuse"):
                self.connections_reset += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = _Pair(client, upstream)
            pair.tainted = self.mode == "blackhole"
            with self._lock:
                self._pairs = [p for p in self._pairs if not p.closed.is_set()] + [pair]
            self._spawn(self._pipe, pair, client, upstream)
            self._spawn(self._pipe, pair, upstream, client)

    def _pipe(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        while not pair.closed.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            if source is pair.client and self._trigger is not None and self._tripped(data):
                break
            if pair.tainted or self.mode == "blackhole":
                pair.tainted = True
                continue  # swallowed
            if self.mode == "latency":
                time.sleep(self.latency + self._random.uniform(0, self.jitter))
            try:
                sink.sendall(data)
            except OSError:
                break
        pair.close()

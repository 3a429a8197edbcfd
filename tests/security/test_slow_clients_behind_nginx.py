"""S52: slow clients cannot stop the shipped server behind the shipped proxy.

gunicorn's sync workers serve one connection each, start to end, so a client that sends its
request one header line (or body byte) every few seconds holds a worker: with the 2 workers of
`gunicorn.conf.py`, 2 such clients stopped `/health`. `deploy/nginx.conf` reads whole requests
before gunicorn sees them; these tests run Debian's nginx from that file in front of gunicorn
(the shipped configuration, 2 sync workers), and check what the file promises besides: the app
sees each client's own address, bodies over `MAX_CONTENT_LENGTH` stop at nginx, and what nginx
answers itself is JSON.

Integration tier: gunicorn and nginx run as subprocesses (stopped by their PIDs, their
directories removed) on the run's PostgreSQL database and Redis, with a key prefix of their own.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal

import pytest
from nginx_front import Answer, require_nginx, send, start_nginx

from harness.launcher import Service, wait_until
from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = [pytest.mark.scenario("S52"), pytest.mark.integration, POSTGRESQL_ONLY]

SLOW_HEADERS = 20
SLOW_BODIES = 10
LINE_EVERY = 2.0  # seconds between two pieces (header line, body byte) of a slow client
PROBE_EVERY = 0.5
PROBE_WINDOW = 8.0  # within the proxy's client_header_timeout (10 s): every slow client is open
HEALTHY = 1.0  # the longest a probe of /health may take
CONTROL_PROBES = 2
LOGIN_LIMIT = 3
MAX_CONTENT_LENGTH = 1024 * 1024  # the app's default, and the proxy's client_max_body_size


@dataclass
class Front:
    """gunicorn (the shipped configuration, 2 sync workers) and nginx in front of it."""

    stack: Stack
    gunicorn: int
    nginx: int

    @property
    def gunicorn_service(self) -> Service:
        return next(service for service in self.stack.services if service.name == "gunicorn")

    def log_sections(self) -> list[tuple[str, str]]:
        return self.stack.log_sections()


@pytest.fixture
def front(
    start_gunicorn_pair: Callable[..., AbstractContextManager[tuple[Stack, int]]],
) -> Iterator[Front]:
    """gunicorn behind one trusted proxy (`TRUSTED_PROXIES=1`), its login limit in Redis, its
    access log naming the forwarded headers it received; nginx in front of it."""
    require_nginx()  # before gunicorn starts
    access_log = "%(U)s xff=%({x-forwarded-for}i)s proto=%({x-forwarded-proto}i)s"
    access_log += " host=%({x-forwarded-host}i)s"
    with start_gunicorn_pair(
        "s52",
        TRUSTED_PROXIES="1",
        LOGIN_RATE_LIMIT=f"{LOGIN_LIMIT} per minute",
        GUNICORN_CMD_ARGS=f"--access-logformat '{access_log}'",
    ) as (stack, port):
        yield Front(stack, port, start_nginx(stack, port))


@dataclass
class SlowClients:
    """`count` connections that each send a request one piece every `LINE_EVERY` seconds and
    never finish it: a header line (`kind="header"`) or a byte of a login's body ("body", which
    a worker reading it would wait for); notes when the server closes each one."""

    port: int
    count: int
    kind: Literal["header", "body"] = "header"
    opened_at: float = 0.0
    closed_after: dict[int, float] = field(default_factory=dict)
    _sockets: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SlowClients:
        self.opened_at = time.monotonic()
        for number in range(self.count):
            connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            connection.sendall(self._opening(number))
            self._sockets.append(connection)
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for connection in self._sockets:
            connection.close()

    @property
    def open(self) -> int:
        return self.count - len(self.closed_after)

    def _opening(self, number: int) -> bytes:
        if self.kind == "header":
            return f"GET /health HTTP/1.1\r\nHost: slow-{number}\r\n".encode()
        return (
            f"POST /api/v1/login HTTP/1.1\r\nHost: slow-{number}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        ).encode()

    def _piece(self, sequence: int) -> bytes:
        return f"X-Slow-{sequence}: {sequence}\r\n".encode() if self.kind == "header" else b" "

    def _trickle(self) -> None:
        """Send the next piece to every open connection every `LINE_EVERY` seconds; in between,
        watch for the server closing one (readable: its answer or end of file)."""
        pieces = 0
        next_piece = time.monotonic() + LINE_EVERY
        while not self._stop.is_set():
            waiting = [s for n, s in enumerate(self._sockets) if n not in self.closed_after]
            timeout = max(0.0, min(next_piece - time.monotonic(), 0.2))
            readable, _, _ = select.select(waiting, [], [], timeout) if waiting else ([], [], [])
            for connection in readable:
                self.closed_after[self._sockets.index(connection)] = (
                    time.monotonic() - self.opened_at
                )
            if time.monotonic() >= next_piece:
                pieces += 1
                next_piece += LINE_EVERY
                for number, connection in enumerate(self._sockets):
                    if number not in self.closed_after:
                        try:
                            connection.sendall(self._piece(pieces))
                        except OSError:
                            self.closed_after[number] = time.monotonic() - self.opened_at


@dataclass(frozen=True)
class Probe:
    answered: bool
    elapsed: float
    slow_clients_open: int


def probe_health(port: int, slow: SlowClients, timeout: float) -> Probe:
    """GET /health on a new connection; unanswered if it fails or takes over `timeout`."""
    open_before = slow.open
    started = time.perf_counter()
    try:
        answer = send(port, "GET", "/health", [("Host", "localhost")], timeout=timeout)
    except OSError:
        return Probe(False, time.perf_counter() - started, open_before)
    return Probe(answer.status == 200, answer.elapsed, min(open_before, slow.open))


def probes_during(port: int, slow: SlowClients, window: float) -> list[Probe]:
    """A probe of /health every `PROBE_EVERY` seconds for `window` seconds."""
    probes = []
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        probes.append(probe_health(port, slow, timeout=3 * HEALTHY))
        time.sleep(PROBE_EVERY)  # the probes' pace: nothing to wait for
    return probes


def assert_json_error(answer: Answer, status: int) -> dict[str, str]:
    """`answer` is the API's error shape, JSON, with the reason phrase the app would use."""
    assert answer.status == status, answer
    assert answer.headers.get_content_type() == "application/json", answer
    body = json.loads(answer.body)
    assert set(body) == {"error", "message"}, body
    assert body["error"] == HTTPStatus(status).phrase
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    return dict(body)


def test_slow_clients_do_not_delay_health_through_nginx(front: Front) -> None:
    with (
        SlowClients(front.nginx, SLOW_HEADERS) as headers,
        SlowClients(front.nginx, SLOW_BODIES, "body") as bodies,
    ):
        proxied = probes_during(front.nginx, headers, PROBE_WINDOW)
        bodies_open = bodies.open
        wait_until(lambda: headers.open == 0, 15, "nginx to close the slow-header connections")
    with SlowClients(front.gunicorn, SLOW_HEADERS) as direct:
        control = [
            probe_health(front.gunicorn, direct, timeout=2 * HEALTHY) for _ in range(CONTROL_PROBES)
        ]

    slowest = max(probe.elapsed for probe in proxied)
    closed_after = headers.closed_after.values()
    figures = (
        f"through nginx: {sum(p.answered for p in proxied)}/{len(proxied)} probes answered, "
        f"slowest {slowest * 1000:.0f} ms; nginx closed the slow-header connections after "
        f"{min(closed_after):.1f}-{max(closed_after):.1f} s; straight to gunicorn: "
        f"{sum(p.answered for p in control)}/{len(control)} answered within {2 * HEALTHY:g} s"
    )
    print(figures)
    assert all(probe.answered and probe.elapsed < HEALTHY for probe in proxied), figures
    assert len(proxied) >= PROBE_WINDOW / (PROBE_EVERY + HEALTHY), figures
    assert {probe.slow_clients_open for probe in proxied} == {SLOW_HEADERS}, proxied
    assert bodies_open == SLOW_BODIES  # still sending, a byte every LINE_EVERY seconds
    # The control: the same slow-header clients straight to gunicorn hold both workers.
    assert not any(probe.answered for probe in control), control
    assert {probe.slow_clients_open for probe in control} == {SLOW_HEADERS}, control


def test_nginx_gives_the_app_each_clients_address_and_answers_its_own_errors_in_json(
    front: Front,
) -> None:
    def login(source: str, forwarded_for: str) -> Answer:
        body = json.dumps({"username": "nobody", "password": "wrong password"}).encode()
        headers = [
            ("Host", "api.example.com"),
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", forwarded_for),
        ]
        return send(front.nginx, "POST", "/api/v1/login", headers, body, source=source)

    # One client, whatever X-Forwarded-For it makes up: one limit.
    guesses = [login("127.0.0.2", f"10.0.0.{number}") for number in range(LOGIN_LIMIT + 1)]
    other_client = login("127.0.0.3", "10.0.0.1")

    def logged_logins() -> list[str]:
        lines = front.gunicorn_service.log().splitlines()
        return sorted(line for line in lines if line.startswith("/api/v1/login "))

    logins = wait_until(
        lambda: len(logged_logins()) == LOGIN_LIMIT + 2 and logged_logins(),
        10,
        lambda: f"gunicorn to log {LOGIN_LIMIT + 2} logins: {logged_logins()}",
    )

    assert [answer.status for answer in guesses] == [401] * LOGIN_LIMIT + [429]
    assert_json_error(guesses[-1], 429)
    assert other_client.status == 401
    # nginx set the client's address (not appended to the client's header), scheme and host.
    forwarded = "/api/v1/login xff={} proto=http host=api.example.com"
    assert logins == [forwarded.format("127.0.0.2")] * (LOGIN_LIMIT + 1) + [
        forwarded.format("127.0.0.3")
    ]

    largest = b'{"username": "' + b"x" * (MAX_CONTENT_LENGTH - 16) + b'"}'
    assert len(largest) == MAX_CONTENT_LENGTH
    json_body = [("Host", "localhost"), ("Content-Type", "application/json")]
    accepted = send(front.nginx, "POST", "/api/v1/users", json_body, largest)
    refused = send(front.nginx, "POST", "/api/v1/users", json_body, largest + b" ")
    apps_own = send(front.gunicorn, "POST", "/api/v1/users", json_body, largest + b" ")

    assert accepted.status == 400
    assert "X-Request-ID" in accepted.headers  # the app's answer
    assert_json_error(refused, 413)
    assert "X-Request-ID" not in refused.headers  # nginx's, before any worker read the body
    assert json.loads(refused.body) == json.loads(apps_own.body)

    duplicate_host = send(front.nginx, "GET", "/health", [("Host", "a"), ("Host", "b")])
    long_uri = send(front.nginx, "GET", "/" + "a" * 9000, [("Host", "localhost")])
    nginx_internal = send(front.nginx, "GET", "/_nginx_error", [("Host", "localhost")])
    front.gunicorn_service.stop()
    gunicorn_down = send(front.nginx, "GET", "/health", [("Host", "localhost")])

    assert_json_error(duplicate_host, 400)
    assert_json_error(long_uri, 414)
    assert_json_error(nginx_internal, 404)
    assert_json_error(gunicorn_down, 502)
    for answer in (refused, duplicate_host, long_uri, nginx_internal, gunicorn_down):
        assert answer.headers["Server"] == "nginx", answer.headers  # server_tokens off

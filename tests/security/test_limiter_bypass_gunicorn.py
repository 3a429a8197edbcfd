"""S32 across processes: unreadable bodies sent to both gunicorn workers leave every rate limit in
Redis, shared by the pair. Before, one deeply nested or oversized body made the worker that
served it count in its own memory from then on: two workers then let twice the limit through.

Integration tier: gunicorn runs as a subprocess (stopped by its PID, its temp directory removed)
on the run's PostgreSQL database and Redis database, with a key prefix of its own.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress

import pytest

from harness.launcher import wait_until
from support import PASSWORD, Account
from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = [pytest.mark.scenario("S32"), pytest.mark.integration, POSTGRESQL_ONLY]

LIMIT = 5
DEEP_BODY = "[" * 2000 + "]" * 2000
OVERSIZED_BODY = '{"username": "' + "x" * (1024 * 1024) + '"}'


@pytest.fixture
def gunicorn(
    start_gunicorn_pair: Callable[..., AbstractContextManager[tuple[Stack, int]]],
) -> Iterator[int]:
    """gunicorn, 2 sync workers, login and registration limits of 5 per minute in Redis; the
    port."""
    limit = f"{LIMIT} per minute"
    with start_gunicorn_pair("s32", LOGIN_RATE_LIMIT=limit, REGISTER_RATE_LIMIT=limit) as (
        _stack,
        port,
    ):
        yield port


def send(port: int, method: str, path: str, body: str | None = None) -> tuple[int, str, str]:
    """One request on a connection of its own: (status, serving worker's pid, body).

    A body over the size limit is refused from its Content-Length alone: the server answers
    `413` and closes the connection while the client may still be writing the rest, which the
    client sees as a broken pipe or a reset. The answer was sent all the same: read it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with suppress(BrokenPipeError, ConnectionResetError):
            connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.getheader("X-Worker-Pid", ""), response.read().decode()
    finally:
        connection.close()


def unreadable_bodies_to_both_workers(port: int) -> set[int]:
    """Bursts of unreadable bodies until both workers have served some; their statuses."""
    pids: set[str] = set()
    statuses: set[int] = set()

    def burst() -> bool:
        requests = [("/api/v1/login", DEEP_BODY), ("/api/v1/users", DEEP_BODY)] * 3
        requests += [("/api/v1/login", OVERSIZED_BODY), ("/api/v1/users", OVERSIZED_BODY)]
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            for status, pid, _ in pool.map(lambda r: send(port, "POST", *r), requests):
                statuses.add(status)
                pids.add(pid)
        return len(pids) == 2

    wait_until(burst, 60, "unreadable bodies served by both workers", interval=0)
    return statuses


def fallbacks(port: int) -> set[float]:
    """The storage-fallback counter of each worker (each keeps its own registry)."""
    seen: dict[str, float] = {}

    def both() -> bool:
        _, pid, text = send(port, "GET", "/metrics")
        for line in text.splitlines():
            if line.startswith("blog_api_rate_limit_storage_fallbacks_total "):
                seen[pid] = float(line.split()[1])
        return len(seen) == 2

    wait_until(both, 30, "/metrics from both workers", interval=0)
    return set(seen.values())


def test_unreadable_bodies_do_not_split_the_limits_between_workers(
    gunicorn: int,
    make_account: Callable[..., Account],
    row_counts: Callable[[], dict[str, int]],
) -> None:
    port = gunicorn
    make_account("alice")
    before = row_counts()

    statuses = unreadable_bodies_to_both_workers(port)
    login_body = json.dumps({"username": "alice", "password": "wrong password"})
    with ThreadPoolExecutor(max_workers=2 * LIMIT) as pool:
        guesses = list(
            pool.map(lambda _: send(port, "POST", "/api/v1/login", login_body), range(5 * LIMIT))
        )
    right_password = send(
        port, "POST", "/api/v1/login", json.dumps({"username": "alice", "password": PASSWORD})
    )

    assert statuses == {400, 413}
    assert sorted(status for status, _, _ in guesses) == [401] * LIMIT + [429] * 4 * LIMIT
    assert len({pid for _, pid, _ in guesses}) == 2
    assert right_password[0] == 429
    assert row_counts() == before
    assert fallbacks(port) == {0.0}


def test_registration_limit_holds_across_workers_after_unreadable_bodies(
    gunicorn: int, row_counts: Callable[[], dict[str, int]]
) -> None:
    port = gunicorn
    unreadable_bodies_to_both_workers(port)
    before = row_counts()

    def register(number: int) -> tuple[int, str, str]:
        body = json.dumps({"username": f"signup_{number}", "password": PASSWORD})
        return send(port, "POST", "/api/v1/users", body)

    with ThreadPoolExecutor(max_workers=2 * LIMIT) as pool:
        signups = list(pool.map(register, range(3 * LIMIT)))

    assert sorted(status for status, _, _ in signups) == [201] * LIMIT + [429] * 2 * LIMIT
    assert row_counts()["users"] == before["users"] + LIMIT

"""S5 across processes: gunicorn with two workers counts login attempts in one Redis, so the
limit holds for the pair, not per worker; and the server does not announce its version (S26).

Integration tier: gunicorn runs as a subprocess (stopped by its PID, its temp directory removed)
on the run's PostgreSQL database and Redis database, with a key prefix of its own.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pytest

from support import PASSWORD, Account
from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

LIMIT = 5


@pytest.fixture
def gunicorn(
    start_gunicorn_pair: Callable[..., AbstractContextManager[tuple[Stack, int]]],
) -> Iterator[tuple[Stack, int]]:
    """gunicorn, 2 sync workers, the login limit at 5 per minute in Redis; (stack, port)."""
    with start_gunicorn_pair("s5", LOGIN_RATE_LIMIT=f"{LIMIT} per minute") as pair:
        yield pair


def login(port: int, username: str, password: str) -> tuple[int, dict[str, str], Any]:
    """One login on a connection of its own: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = json.dumps({"username": username, "password": password})
        connection.request("POST", "/api/v1/login", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.scenario("S5", "S26")
def test_login_limit_is_shared_by_both_gunicorn_workers(
    gunicorn: tuple[Stack, int],
    make_account: Callable[..., Account],
    row_counts: Callable[[], dict[str, int]],
) -> None:
    _, port = gunicorn
    make_account("alice")
    before = row_counts()

    with ThreadPoolExecutor(max_workers=2 * LIMIT) as pool:
        burst = list(pool.map(lambda _: login(port, "alice", "wrong password"), range(4 * LIMIT)))
    correct = login(port, "alice", PASSWORD)

    statuses = sorted(status for status, _, _ in burst)
    assert statuses == [401] * LIMIT + [429] * 3 * LIMIT  # per worker, 2 x 5 would get through
    assert len({headers["X-Worker-Pid"] for _, headers, _ in burst}) == 2
    status, headers, body = correct
    assert status == 429
    assert body["error"] == "Too Many Requests"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert "access_token" not in body
    assert row_counts() == before
    assert not any(character.isdigit() for character in headers.get("Server", ""))

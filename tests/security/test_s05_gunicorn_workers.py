"""S5 across processes: gunicorn with two workers counts login attempts in one Redis, so the
limit holds for the pair, not per worker; and the server does not announce its version (S26).

Integration tier: gunicorn runs as a subprocess (stopped by its PID, its temp directory removed)
on the run's PostgreSQL database and Redis database, with a key prefix of its own.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from integration_stack import BIN, POSTGRESQL_ONLY, Stack, free_port, wait_until  # noqa: E402

from support import PASSWORD, RUN_ID, Account  # noqa: E402

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

REPOSITORY = Path(__file__).resolve().parents[2]
LIMIT = 5


@pytest.fixture
def gunicorn(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    make_app: Callable[..., Flask],
    redis_url: str,
) -> Iterator[tuple[Stack, int]]:
    """gunicorn, 2 sync workers, the login limit at 5 per minute in Redis; (stack, port)."""
    directory = tmp_path_factory.mktemp(f"gunicorn_{RUN_ID}")
    stack = Stack(directory, database_url, f"s5_{RUN_ID}", make_app)
    port = free_port()
    stack.configure(
        LOGIN_RATE_LIMIT=f"{LIMIT} per minute",
        RATELIMIT_STORAGE_URI=redis_url,
        # Heavy enough (tens of ms) that a burst of logins keeps both workers busy.
        ARGON2_TIME_COST=1,
        ARGON2_MEMORY_COST=32768,
    )
    try:
        server = stack.start(
            "gunicorn",
            [
                str(BIN / "gunicorn"),
                "-c",
                str(REPOSITORY / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--pythonpath",
                str(Path(__file__).parent),
                "worker_pid_wsgi:application",
            ],
            env=stack.env(SECURITY_LIMIT_PREFIX=f"s5-{uuid.uuid4().hex}"),
        )
        wait_until(
            lambda: server.log().count("app ready in worker") >= 2 or not server.alive,
            60,
            "both gunicorn workers to build the app",
        )
        assert server.alive, server.log()
        yield stack, port
    finally:
        stack.close()
        shutil.rmtree(directory, ignore_errors=True)


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


def test_s05_login_limit_is_shared_by_both_gunicorn_workers(
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

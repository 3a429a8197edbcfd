"""Two gunicorn sync workers on one Redis for the rate limits: the security tests that must see
what one process cannot (a limit shared by the pair, a worker falling back to memory).

gunicorn runs as a subprocess (stopped by its PID, its temp directory removed) on the run's
PostgreSQL database and Redis database, with a key prefix of its own; `worker_pid_wsgi` tags
every answer with the serving worker's PID.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from harness.launcher import REPOSITORY, free_port
from support import RUN_ID
from support.integration_stack import Stack, stack_in


@contextmanager
def gunicorn_pair(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    make_app: Callable[..., Flask],
    redis_url: str,
    name: str,
    **settings: str,
) -> Iterator[tuple[Stack, int]]:
    """gunicorn with 2 sync workers, its limits in Redis and `settings`; (stack, port)."""
    with stack_in(tmp_path_factory, f"{name}_{RUN_ID}", database_url, make_app) as stack:
        port = free_port()
        stack.configure(
            RATELIMIT_STORAGE_URI=redis_url,
            # Heavy enough (tens of ms) that a burst of logins keeps both workers busy.
            ARGON2_TIME_COST=1,
            ARGON2_MEMORY_COST=32768,
            **settings,
        )
        server = stack.launcher.start_gunicorn(
            "gunicorn",
            "worker_pid_wsgi:application",
            *("-c", str(REPOSITORY / "gunicorn.conf.py")),
            *("--bind", f"127.0.0.1:{port}", "--workers", "2"),
            *("--pythonpath", str(Path(__file__).parent)),
            env=stack.env(SECURITY_LIMIT_PREFIX=f"{name}-{uuid.uuid4().hex}"),
        )
        server.wait_for(
            lambda: server.log().count("app ready in worker") >= 2,
            60,
            "both gunicorn workers to build the app",
        )
        yield stack, port

"""The code several test folders share (pytest puts tests/ on the path: `from support import`).

This module is the shared vocabulary: accounts, table rows and job rows, the error-shape
assertion, service checks and the run's databases. Beside it: `resources` (creating posts and
to-dos, the bodies every endpoint refuses, the contract suite's `Resource`) and the integration
rig: `integration_stack` (real worker, SMTP, Redis and gunicorn processes), `live_server`,
`fault_proxy`, `fault_hooks` and `rig_wsgi`, the entry module of the processes the rig starts.
The processes themselves, polling with a deadline and free ports are the launcher's, which the
benchmark shares (`from harness import launcher`, bench/harness/launcher.py). Fixtures stay in
the conftest modules; what a test imports lives here.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from limits import parse as parse_limit
from sqlalchemy import event, text, update

from blog_api.errors import reason_phrase
from blog_api.extensions import db
from blog_api.models import Job, User
from blog_api.services.users import create_user
from harness import launcher

RUN_ID = uuid.uuid4().hex[:10]
PASSWORD = "correct horse battery"


def require_service(name: str, error: Exception) -> NoReturn:
    """Skip for a missing service on a developer machine; fail under CI."""
    reason = f"{name} is not reachable ({error}); start it to run this tier"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@dataclass
class Account:
    id: int
    username: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def create_account_from_before_confirmations(
    username: str, email: str | None = None, role: str = "user"
) -> User:
    """An account as registered before addresses were confirmed: created through the service,
    then given its (unconfirmed) address without the confirmation e-mail a registration sends
    now. Needs an app context."""
    user = create_user(username, PASSWORD, role=role)
    if email:
        user.email = email.lower()
        db.session.commit()
    return user


def table_rows(app: Flask, table: str) -> list[tuple[Any, ...]]:
    """Every row of `table`, to prove a request changed nothing in it."""
    with app.app_context():
        rows = db.session.execute(text(f"SELECT * FROM {table} ORDER BY id"))
        return [tuple(row) for row in rows]


def set_job(app: Flask, job_id: str, **values: Any) -> None:
    """Write `values` into the row of job `job_id` (an expired lease, a status to start from)."""
    with app.app_context():
        db.session.execute(update(Job).where(Job.id == job_id).values(**values))
        db.session.commit()


def job_row(app: Flask, job_id: str) -> Job:
    """The row of job `job_id`, detached from its session so it can be read afterwards."""
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None
        db.session.expunge(job)
        return job


def assert_error(
    response: Any, status: int, message: str, fields: set[str] | None = None
) -> dict[str, Any]:
    """`response` is the JSON error `{"error": <reason phrase>, "message"[, "errors"]}`.

    `fields`: the fields that must be named in `errors` (a validation failure); without it the
    body must have no `errors`. Returns the body for further checks.
    """
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == reason_phrase(status)
    assert body["message"] == message
    if fields is None:
        assert set(body) == {"error", "message"}
    else:
        assert set(body) == {"error", "message", "errors"}
        assert set(body["errors"]) == fields
    return dict(body)


def assert_too_many_requests(response: Any, limit: str) -> None:
    """A JSON 429 that names the limit and says when to retry, and whose RateLimit fields
    (IETF draft) describe the broken limit: its quota and window, nothing left of it, and the
    seconds until its window ends, which Retry-After says too."""
    assert response.status_code == 429, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"error", "message"}
    assert body["error"] == "Too Many Requests"
    assert limit in body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    policies = rate_limit_items(response.headers["RateLimit-Policy"])
    states = rate_limit_items(response.headers["RateLimit"])
    assert set(states) == set(policies)
    broken = parse_limit(limit)
    assert any(
        policy == {"q": broken.amount, "w": broken.get_expiry()}
        and states[name]["r"] == 0
        and max(states[name]["t"], 1) == retry_after
        for name, policy in policies.items()
    ), (policies, states, retry_after)


def rate_limit_items(field: str) -> dict[str, dict[str, int]]:
    """An IETF RateLimit or RateLimit-Policy field, `"name";q=3;w=60, ...`, as
    `{name: {"q": 3, "w": 60}, ...}`."""
    items = {}
    for item in field.split(","):
        name, *parameters = item.strip().split(";")
        assert re.fullmatch(r'"[^"]+"', name), field
        items[name[1:-1]] = {key: int(value) for key, value in (p.split("=") for p in parameters)}
    return items


HEARTBEAT_AGE_METRIC = "blog_api_worker_heartbeat_age_seconds"


def heartbeat_ages(client: FlaskClient) -> dict[str, float]:
    """The worker label -> age pairs of the heartbeat gauge in `/metrics`."""
    text = client.get("/metrics").get_data(as_text=True)
    pattern = rf'^{HEARTBEAT_AGE_METRIC}{{worker="([^"]*)"}} (\S+)$'
    return {worker: float(age) for worker, age in re.findall(pattern, text, re.M)}


def redis_server() -> str:
    """The redis-server the launcher runs (`make run`'s); skipped without one (failed under
    CI)."""
    try:
        return launcher.redis_server()
    except FileNotFoundError as error:
        require_service("redis-server", error)


@contextmanager
def statements_run_by(app: Flask) -> Iterator[list[str]]:
    """The SQL statements the app runs inside the block (commits are not statements)."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def create_postgres_database(name: str) -> tuple[str, Callable[[], None]]:
    """A new, empty PostgreSQL database `name`: its SQLAlchemy URL and the function that drops
    it. Under CI a PostgreSQL that does not answer fails the test (`require_service`)."""
    try:
        url = launcher.create_database(POSTGRES_ADMIN_URL, name)
    except psycopg.OperationalError as error:
        require_service("PostgreSQL", error)
    return url, functools.partial(launcher.drop_database, POSTGRES_ADMIN_URL, name)

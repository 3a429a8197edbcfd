"""Fixtures: an app per test on a real database (SQLite file and PostgreSQL), users and tokens.

Every test that uses `app` runs twice: once on a SQLite file and once on a fresh PostgreSQL
database created for this run. The schema comes from the committed migrations. Services the
machine may lack are skipped with a reason, except under `CI=true`, where a missing service fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import func, select

from blog_api import create_app
from blog_api.extensions import db, limiter
from support import (
    PASSWORD,
    RUN_ID,
    Account,
    create_account_from_before_confirmations,
    create_postgres_database,
    require_service,
)
from support.integration_stack import Stack, stack_in

REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

# Where spans go is each test's choice (tests/test_tracing.py): an OTEL_* variable of the calling
# shell would trace every app the tests build and every process the rig starts.
for _otel_variable in [name for name in os.environ if name.startswith("OTEL_")]:
    del os.environ[_otel_variable]


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database for this run: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path_factory.mktemp('db') / 'blog.db'}", (lambda: None)
    else:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        url, drop = create_postgres_database(f"blog_api_test_{RUN_ID}_{worker}")
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        upgrade()
        db.engine.dispose()
    yield url
    drop()


def _empty_all_tables() -> None:
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    db.session.commit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """When a test fails, attach the logs of the processes its fixtures started (a `Stack`)."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            log_sections = getattr(value, "log_sections", None)
            if callable(log_sections):
                report.sections.extend(log_sections())
    return report


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget rate-limiter state left by earlier apps in this process.

    `limiter` is a module-level singleton. Flask-Limiter keeps the first key prefix it was given
    and whether its storage was found dead on the object itself, across `init_app` calls; a
    server builds one app per process, but tests build many.
    """
    monkeypatch.setattr(limiter, "_key_prefix", "")
    monkeypatch.setattr(limiter, "_storage_dead", False)


@pytest.fixture(scope="session")
def shared_app(database_url: str) -> Iterator[Flask]:
    """The default app, built once per database: building one costs ~0.1 s (OpenAPI docs)."""
    application = create_app("testing", SQLALCHEMY_DATABASE_URI=database_url)
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def make_app(database_url: str, shared_app: Flask) -> Iterator[Callable[..., Flask]]:
    """Build apps with their own settings on the run's database; every table is emptied after
    the test, whichever apps it used."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app("testing", **{"SQLALCHEMY_DATABASE_URI": database_url, **overrides})
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    with shared_app.app_context():
        db.session.remove()
        _empty_all_tables()


@pytest.fixture
def make_stack(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    make_app: Callable[..., Flask],
) -> Iterator[Callable[[str], Stack]]:
    """`make_stack(queue)`: a `Stack` (the integration rig: real worker, SMTP and gunicorn
    processes) on the run's database, in a temp directory of its own. Its processes are stopped
    and the directory removed after the test, before `make_app` empties the tables."""
    with contextlib.ExitStack() as stacks:
        yield lambda queue: stacks.enter_context(
            stack_in(tmp_path_factory, queue, database_url, make_app)
        )


@pytest.fixture
def app(make_app: Callable[..., Flask], shared_app: Flask) -> Flask:
    """The app under test. No context stays pushed, so every request gets a fresh session as in
    production; tests open `app.app_context()` to look at the database.

    The rate limiter is one object per process: binding it again gives this test fresh
    counters on the default app's storage.
    """
    limiter.init_app(shared_app)
    return shared_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_account(app: Flask, client: FlaskClient) -> Callable[..., Account]:
    """Create a user through the service and log in through the API."""

    def make(username: str | None = None, role: str = "user", email: str | None = None) -> Account:
        username = username or f"user_{uuid.uuid4().hex[:8]}"
        with app.app_context():
            user_id = create_account_from_before_confirmations(username, email, role).id
        response = client.post("/api/v1/login", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.json
        return Account(
            user_id,
            username,
            PASSWORD,
            response.json["access_token"],
            response.json["refresh_token"],
        )

    return make


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account("alice", email="alice@example.com")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account("bob", email="bob@example.com")


@pytest.fixture
def admin(make_account: Callable[..., Account]) -> Account:
    return make_account("root_admin", role="admin", email="admin@example.com")


@pytest.fixture
def row_counts(app: Flask) -> Callable[[], dict[str, int]]:
    """Rows per table, to prove that a failed request wrote nothing."""

    def counts() -> dict[str, int]:
        with app.app_context():
            return {
                table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
                for table in db.metadata.sorted_tables
            }

    return counts


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis; limiter keys carry this run's id, so runs never collide."""
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        require_service("Redis", error)
    return f"{REDIS_TEST_URL}/{int(RUN_ID, 16) % 15 + 1}"

"""Fixtures of the security suite (reliability-security §6.3, scenarios S1-S31).

The app under test is the in-process app of the fast tier, on SQLite and PostgreSQL, with two
additions that make "nothing written" a real check rather than a row count alone:

- e-mails go to an in-process SMTP sink (the project's own `SinkHandler`) that records every
  message, and the v2 audit file is a file of this run;
- `snapshot()` first runs every pending job through its real Celery task (`apply()`, in this
  process), so a job row that a rejected request left behind would show up as an e-mail or an
  audit line, not only as a row. The snapshot is then: row counts of every table, the audit
  file's size and the number of messages the sink received.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from effects import MailSink, Snapshot, run_pending_jobs
from flask import Flask
from gunicorn_pair import gunicorn_pair

from blog_api import create_app
from blog_api.extensions import db, limiter
from smtp_sink import SinkHandler
from support.integration_stack import Stack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def security_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("security")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def mail_sink(security_dir: Path) -> Iterator[MailSink]:
    sink = MailSink(_free_port(), security_dir / "mail.jsonl")
    controller = Controller(
        SinkHandler(str(sink.record), [], None), hostname="127.0.0.1", port=sink.port
    )
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture(scope="session")
def effect_settings(security_dir: Path, mail_sink: MailSink, database_url: str) -> dict[str, Any]:
    """Settings that send this run's e-mails to the sink and its audit lines to a file of its own
    (one per database, so the SQLite and PostgreSQL runs never count each other's lines)."""
    database = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    audit = security_dir / f"audit-{database}.log"
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "POST_AUDIT_LOG": str(audit),
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": mail_sink.port,
        "MAIL_TIMEOUT": 5.0,
    }


@pytest.fixture(scope="session")
def security_app(effect_settings: dict[str, Any]) -> Iterator[Flask]:
    application = create_app("testing", **effect_settings)
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask], security_app: Flask) -> Flask:
    """Overrides the suite-wide `app`: the same testing app, with real side effects.

    `make_app` is requested for its teardown, which empties every table after the test.
    """
    limiter.init_app(security_app)
    return security_app


@pytest.fixture
def make_security_app(
    make_app: Callable[..., Flask], effect_settings: dict[str, Any]
) -> Callable[..., Flask]:
    """An app with its own settings (rate limits, token lifetimes) and the same side effects."""

    def build(**overrides: Any) -> Flask:
        return make_app(**{**effect_settings, **overrides})

    return build


@pytest.fixture
def snapshot(
    app: Flask,
    row_counts: Callable[[], dict[str, int]],
    mail_sink: MailSink,
    effect_settings: dict[str, Any],
) -> Callable[[], Snapshot]:
    """Everything a request could have written: rows, audit bytes, e-mails (after the jobs ran)."""
    audit = Path(effect_settings["POST_AUDIT_LOG"])

    def take() -> Snapshot:
        run_pending_jobs(app)
        size = audit.stat().st_size if audit.exists() else 0
        return Snapshot(row_counts(), size, len(mail_sink.messages()))

    return take


@pytest.fixture
def start_gunicorn_pair(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    make_app: Callable[..., Flask],
    redis_url: str,
) -> Callable[..., AbstractContextManager[tuple[Stack, int]]]:
    """`start_gunicorn_pair(name, **settings)`: gunicorn with 2 sync workers on the run's
    database and Redis (see `gunicorn_pair`), as a context manager giving (stack, port)."""
    return partial(gunicorn_pair, tmp_path_factory, database_url, make_app, redis_url)

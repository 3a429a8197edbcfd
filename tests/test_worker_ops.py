"""Worker heartbeats in `/metrics` and the creating request's id in a job's log lines.

Real database (SQLite file and PostgreSQL); the heartbeat thread is real, tasks run in-process
through Celery's `apply` (the integration tier runs the same with real workers).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from blog_api.extensions import db
from blog_api.jobs.heartbeats import forget_silent_workers, record_heartbeat
from blog_api.logs import begin_job_log_scope, bind_job, end_job_log_scope
from blog_api.models import Job, JobKind, WorkerHeartbeat
from blog_api.models.base import utcnow
from blog_api.worker.heartbeat import Heartbeat
from harness.launcher import wait_until
from support import Account, heartbeat_ages


@contextmanager
def console_lines(app: Flask) -> Iterator[io.StringIO]:
    """What the app's console handler writes, as an operator reads it."""
    (console,) = [h for h in app.logger.handlers if getattr(h, "blog_api", False)]
    assert isinstance(console, logging.StreamHandler)
    stream = io.StringIO()
    previous = console.setStream(stream)
    try:
        yield stream
    finally:
        console.setStream(previous)


# --- heartbeat -----------------------------------------------------------------------------------


@contextmanager
def job_log_scope() -> Iterator[None]:
    """One task run's log scope, as Celery's task_prerun and task_postrun open and close it."""
    token = begin_job_log_scope()
    try:
        yield
    finally:
        end_job_log_scope(token)


def test_metrics_show_each_workers_heartbeat_age(app: Flask, client: FlaskClient) -> None:
    now = utcnow()
    with app.app_context():
        record_heartbeat("fresh@host-a", now - timedelta(hours=1), now - timedelta(seconds=2))
        record_heartbeat("stale@host-b", now - timedelta(hours=1), now - timedelta(minutes=10))

    ages = heartbeat_ages(client)

    assert set(ages) == {"fresh@host-a", "stale@host-b"}
    assert 2 <= ages["fresh@host-a"] < 60
    assert 600 <= ages["stale@host-b"] < 660


def test_a_restarted_worker_takes_over_its_row_and_its_age_starts_again(
    app: Flask, client: FlaskClient
) -> None:
    now = utcnow()
    with app.app_context():
        record_heartbeat("w1@host", now - timedelta(hours=2), now - timedelta(hours=1))
        record_heartbeat("w1@host", now, now)
        rows = db.session.scalars(select(WorkerHeartbeat)).all()
        assert [(row.worker, row.started_at) for row in rows] == [("w1@host", now)]

    assert heartbeat_ages(client)["w1@host"] < 60


def test_a_clock_ahead_of_the_api_shows_age_zero_not_negative(
    app: Flask, client: FlaskClient
) -> None:
    with app.app_context():
        record_heartbeat("ahead@host", utcnow(), utcnow() + timedelta(seconds=30))

    assert heartbeat_ages(client) == {"ahead@host": 0.0}


def test_workers_silent_past_the_forget_horizon_disappear(make_app: Callable[..., Flask]) -> None:
    app = make_app(WORKER_HEARTBEAT_FORGET_AFTER=3600)
    now = utcnow()
    with app.app_context():
        record_heartbeat("gone@host", now - timedelta(days=2), now - timedelta(hours=2))
        record_heartbeat("quiet@host", now - timedelta(days=2), now - timedelta(minutes=50))

    # The scrape never writes: it leaves the row but does not show it.
    assert set(heartbeat_ages(app.test_client())) == {"quiet@host"}
    with app.app_context():
        assert forget_silent_workers() == 1
        assert db.session.scalars(select(WorkerHeartbeat.worker)).all() == ["quiet@host"]


def test_operators_list_workers_and_forget_one_that_was_scaled_down(
    app: Flask, client: FlaskClient
) -> None:
    now = utcnow()
    with app.app_context():
        record_heartbeat("kept@host", now - timedelta(hours=1), now - timedelta(seconds=5))
        record_heartbeat("retired@host", now - timedelta(hours=1), now - timedelta(minutes=5))
    runner = app.test_cli_runner()

    listed = runner.invoke(args=["jobs", "workers"])
    forgotten = runner.invoke(args=["jobs", "forget-worker", "retired@host"])
    again = runner.invoke(args=["jobs", "forget-worker", "retired@host"])

    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert [line.split()[0] for line in lines] == ["kept@host", "retired@host"]
    assert re.search(r"last seen (29\d|30\d)s ago", lines[1])
    assert (forgotten.exit_code, forgotten.output) == (0, "Forgot worker retired@host\n")
    assert again.exit_code == 1
    assert "no heartbeat recorded for retired@host" in again.output
    assert set(heartbeat_ages(client)) == {"kept@host"}


def test_the_heartbeat_thread_beats_until_stopped(make_app: Callable[..., Flask]) -> None:
    app = make_app(WORKER_HEARTBEAT_INTERVAL=0.05)
    heartbeat = Heartbeat(app, "thread@host")

    def last_seen() -> datetime | None:
        with app.app_context():
            return db.session.scalar(
                select(WorkerHeartbeat.last_seen).where(WorkerHeartbeat.worker == "thread@host")
            )

    heartbeat.start()
    try:
        first = wait_until(last_seen, 20, "the first heartbeat", interval=0.02)
        wait_until(
            lambda: (seen := last_seen()) is not None and seen > first,
            20,
            "a second heartbeat",
            interval=0.02,
        )
    finally:
        heartbeat.stop()
    assert not heartbeat._thread.is_alive()  # joined: nothing writes after stop()


def test_a_heartbeat_without_a_database_logs_once_and_never_raises(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:1/none",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 1}},
    )
    heartbeat = Heartbeat(app, "cut-off@host")

    with console_lines(app) as output:
        heartbeat.beat()
        heartbeat.beat()

    warnings = [line for line in output.getvalue().splitlines() if "not recorded" in line]
    assert len(warnings) == 1
    assert "Worker heartbeat of cut-off@host not recorded" in warnings[0]


# --- request id in job log lines -----------------------------------------------------------------


def post_with_request_id(
    client: FlaskClient, author: Account, request_id: str, version: str = "v2"
) -> TestResponse:
    """A post created with `X-Request-ID: <request_id>` (201)."""
    response = client.post(
        f"/api/{version}/posts",
        json={"title": "Traced", "content": "x"},
        headers={**author.headers, "X-Request-ID": request_id},
    )
    assert response.status_code == 201
    return response


def test_jobs_remember_the_request_id_of_the_post_that_created_them(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    response = post_with_request_id(client, alice, "abc-123")

    with app.app_context():
        request_ids = db.session.scalars(
            select(Job.request_id).where(Job.post_id == response.json["id"])
        ).all()
    assert request_ids == ["abc-123", "abc-123"]


def test_an_invalid_request_id_is_replaced_before_it_is_stored(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    response = post_with_request_id(client, alice, 'abc" onload="x', version="v1")

    with app.app_context():
        stored = db.session.scalar(select(Job.request_id).where(Job.post_id == response.json["id"]))
    assert stored == response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", stored or "")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_jobs_log_lines_carry_the_request_id_of_its_post(
    make_app: Callable[..., Flask], alice: Account, tmp_path: Path, log_format: str
) -> None:
    app = make_app(LOG_FORMAT=log_format, POST_AUDIT_LOG=str(tmp_path / "audit.log"))
    response = post_with_request_id(app.test_client(), alice, "abc-123")
    with app.app_context():
        job_id = db.session.scalar(
            select(Job.id).where(
                Job.post_id == response.json["id"], Job.kind == JobKind.AUDIT_POST_CREATED
            )
        )
    task = app.extensions["celery"].tasks["blog_api.record_post_created"]

    with console_lines(app) as output:
        assert task.apply(args=[job_id]).get() == "done"
        app.logger.info("after the job")

    lines = output.getvalue().splitlines()
    written = [line for line in lines if "Audit record written" in line]
    after = [line for line in lines if "after the job" in line]
    assert len(written) == 1
    assert len(after) == 1
    if log_format == "text":
        assert "[request_id=abc-123] Audit record written for post" in written[0]
        assert "[request_id=-] after the job" in after[0]
    else:
        record = json.loads(written[0])
        assert (record["request_id"], record["job_id"]) == ("abc-123", job_id)
        assert json.loads(after[0])["request_id"] == "-"
        assert "job_id" not in json.loads(after[0])


def test_a_stored_request_id_that_is_not_valid_is_not_logged(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()

    with console_lines(app) as output, app.app_context(), job_log_scope():
        bind_job("job-1", "forged\nINFO line")
        app.logger.warning("inside the job")

    (line,) = output.getvalue().splitlines()
    assert "[request_id=-] inside the job" in line


def test_bind_job_outside_a_task_run_tags_nothing(make_app: Callable[..., Flask]) -> None:
    app = make_app()

    with console_lines(app) as output, app.app_context():
        bind_job("job-1", "abc-123")
        app.logger.warning("no task here")

    assert "[request_id=-] no task here" in output.getvalue()


def test_a_line_logged_outside_a_request_ends_with_its_message(
    make_app: Callable[..., Flask],
) -> None:
    """A worker's lines ended in a meaningless `[-]`, the URL of no request."""
    app = make_app()

    with console_lines(app) as output, app.app_context(), job_log_scope():
        bind_job("job-1", "abc-123")
        app.logger.warning("inside the job")

    (line,) = output.getvalue().splitlines()
    assert line.endswith("[request_id=abc-123] inside the job")

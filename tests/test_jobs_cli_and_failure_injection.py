"""`flask jobs list | retry | sweep | prune`, and the seedable MAIL_FAILURE_RATE exercise."""

from __future__ import annotations

import os
import pty
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.jobs import checkpoints
from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.jobs.errors import TransientJobError
from blog_api.models import Job
from blog_api.models.base import utcnow
from support import Account, job_row, set_job

# The `flask` command of this environment.
FLASK = Path(sys.executable).parent / "flask"


def create_post_with_job(client: FlaskClient, author: Account, app: Flask) -> Job:
    response = client.post(
        "/api/v1/posts", json={"title": "Queued", "content": "x"}, headers=author.headers
    )
    assert response.status_code == 201
    with app.app_context():
        return db.session.scalars(select(Job).where(Job.post_id == response.json["id"])).one()


def test_jobs_list_shows_jobs_filtered_by_status(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    job = create_post_with_job(client, alice, app)
    runner = app.test_cli_runner()

    listed = runner.invoke(args=["jobs", "list"])
    dead_only = runner.invoke(args=["jobs", "list", "--status", "dead"])

    assert listed.exit_code == 0
    assert job.id in listed.output
    assert "notify_author" in listed.output
    assert dead_only.exit_code == 0
    assert job.id not in dead_only.output


def test_jobs_retry_gives_a_dead_job_fresh_attempts(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    job = create_post_with_job(client, alice, app)
    set_job(app, job.id, status="dead", attempts=6, last_error="SMTP 550 Mailbox unavailable")

    result = app.test_cli_runner().invoke(args=["jobs", "retry", job.id])

    assert result.exit_code == 0, result.output
    retried = job_row(app, job.id)
    assert (retried.status, retried.attempts) == ("pending", 0)


def test_jobs_retry_refuses_a_job_that_is_not_dead(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    job = create_post_with_job(client, alice, app)

    result = app.test_cli_runner().invoke(args=["jobs", "retry", job.id])

    assert result.exit_code != 0
    assert "Only dead jobs can be retried" in result.output
    assert job_row(app, job.id).status == "pending"


def test_jobs_retry_of_an_unknown_job_fails(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["jobs", "retry", "no-such-job"])

    assert result.exit_code != 0
    assert "no job no-such-job" in result.output


def test_jobs_sweep_publishes_due_jobs_and_pushes_them_back(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    job = create_post_with_job(client, alice, app)
    set_job(app, job.id, available_at=utcnow() - timedelta(seconds=1))

    first = app.test_cli_runner().invoke(args=["jobs", "sweep"])
    second = app.test_cli_runner().invoke(args=["jobs", "sweep"])

    assert "Published 1 job(s)" in first.output
    assert "Published 0 job(s)" in second.output
    assert job_row(app, job.id).available_at > utcnow()


def test_jobs_prune_deletes_finished_jobs_past_retention_and_keeps_the_rest(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    old = create_post_with_job(client, alice, app)
    recent = create_post_with_job(client, alice, app)
    set_job(app, old.id, status="done", finished_at=utcnow() - timedelta(days=31))
    set_job(app, recent.id, status="done", finished_at=utcnow() - timedelta(days=1))

    result = app.test_cli_runner().invoke(args=["jobs", "prune"])

    # Not a terminal (a script, a log): the summary lines alone, as before progress bars.
    assert result.output == (
        "Deleted 1 finished job(s)\n"
        "Deleted 0 finished delivery(ies)\n"
        "Deleted 0 expired idempotency key(s)\n"
    )
    with app.app_context():
        assert list(db.session.scalars(select(Job.id))) == [recent.id]


def run_in_a_terminal(args: list[str], timeout: float = 60) -> str:
    """Run `args` with a pseudo-terminal as its stdout and stderr; what it wrote."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + timeout
    readable = selectors.DefaultSelector()
    readable.register(controller, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if readable.select(timeout=0.5):
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the last writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        else:
            raise AssertionError(f"{args} still running after {timeout}s: {output!r}")
    finally:
        readable.close()
        os.close(controller)
        process.wait(timeout=10)
    return output.decode()


def test_jobs_prune_on_a_terminal_shows_a_progress_bar_per_table(
    app: Flask, client: FlaskClient, alice: Account, database_url: str
) -> None:
    """The real `flask` command with a terminal for its output: a bar over each table's
    prunable rows, filled as each batch commits, then the same summary lines."""
    old = [create_post_with_job(client, alice, app) for _ in range(3)]
    for job in old:
        set_job(app, job.id, status="done", finished_at=utcnow() - timedelta(days=31))
    factory = f"blog_api:create_app('testing', SQLALCHEMY_DATABASE_URI={database_url!r})"

    output = run_in_a_terminal([str(FLASK), "--app", factory, "jobs", "prune"])

    lines = [line.strip("\r") for line in output.split("\n")]
    assert re.search(r"Finished jobs\s+\[#+\]\s+3/3", output), output
    assert re.search(r"Idempotency keys\s+\[-+\]\s+0/0", output), output
    assert "Deleted 3 finished job(s)" in lines
    assert "Deleted 0 expired idempotency key(s)" in lines
    with app.app_context():
        assert db.session.scalars(select(Job.id)).all() == []


def injected_failures(app: Flask, calls: int) -> list[bool]:
    """Send the checkpoint before an e-mail's DATA `calls` times: was a failure injected?"""
    outcomes = []
    with app.app_context():
        for _ in range(calls):
            try:
                job_checkpoint.send(Job(post_id=1), point=Checkpoint.BEFORE_SMTP_DATA)
            except TransientJobError as error:
                outcomes.append("injected failure" in str(error))
            else:
                outcomes.append(False)
    return outcomes


def test_mail_failure_rate_one_fails_every_attempt_before_the_smtp_server_is_reached(
    make_app: Callable[..., Flask], make_account: Callable[..., Account]
) -> None:
    # Port 1 refuses connections: a real attempt would report "SMTP connection failed".
    app = make_app(MAIL_FAILURE_RATE=1.0, MAIL_PORT=1)
    author = make_account(email="injected@example.com")
    job = create_post_with_job(app.test_client(), author, app)
    task = app.extensions["celery"].tasks["blog_api.send_post_notification"]

    attempt = task.apply(args=[job.id])

    assert (attempt.state, attempt.result.outcome) == ("FAILURE", "retrying")

    stored = job_row(app, job.id)
    assert (stored.status, stored.attempts) == ("pending", 1)
    assert stored.last_error == "injected failure (MAIL_FAILURE_RATE)"
    assert stored.error_code == "injected_failure"
    assert injected_failures(app, 5) == [True] * 5


def test_mail_failure_rate_zero_injects_nothing(make_app: Callable[..., Flask]) -> None:
    assert injected_failures(make_app(MAIL_FAILURE_RATE=0.0), 20) == [False] * 20


def test_mail_failure_rate_is_reproducible_with_a_seed(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(MAIL_FAILURE_RATE=0.5, MAIL_FAILURE_SEED=1234, MAIL_PORT=1)

    monkeypatch.setattr(checkpoints, "_failure_rngs", {})
    first = injected_failures(app, 30)
    monkeypatch.setattr(checkpoints, "_failure_rngs", {})
    second = injected_failures(app, 30)

    assert first == second
    assert True in first
    assert False in first

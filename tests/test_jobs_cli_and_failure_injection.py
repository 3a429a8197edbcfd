"""`flask jobs list | retry | sweep`, and the seedable MAIL_FAILURE_RATE exercise."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from blog_api.extensions import db
from blog_api.jobs.errors import TransientJobError
from blog_api.models import Job
from blog_api.models.base import utcnow
from blog_api.services import mailer
from support import Account


def create_post_with_job(client: FlaskClient, author: Account, app: Flask) -> Job:
    response = client.post(
        "/api/v1/posts", json={"title": "Queued", "content": "x"}, headers=author.headers
    )
    assert response.status_code == 201
    with app.app_context():
        return db.session.scalars(select(Job).where(Job.post_id == response.json["id"])).one()


def set_job(app: Flask, job_id: str, **values: object) -> None:
    with app.app_context():
        db.session.execute(update(Job).where(Job.id == job_id).values(**values))
        db.session.commit()


def job_row(app: Flask, job_id: str) -> Job:
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None
        db.session.expunge(job)
        return job


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


def injected_failures(app: Flask, calls: int) -> list[bool]:
    outcomes = []
    with app.app_context():
        for _ in range(calls):
            try:
                mailer.send_email(mailer.build_post_notification("j", "a@example.com", "a", 1, "t"))
            except TransientJobError as error:
                outcomes.append("injected failure" in str(error))
    return outcomes


def test_mail_failure_rate_one_fails_every_send_before_connecting(
    make_app: Callable[..., Flask],
) -> None:
    # Port 1 refuses connections: a real attempt would report "SMTP connection failed".
    app = make_app(MAIL_FAILURE_RATE=1.0, MAIL_PORT=1)

    assert injected_failures(app, 5) == [True] * 5


def test_mail_failure_rate_is_reproducible_with_a_seed(
    make_app,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    app = make_app(MAIL_FAILURE_RATE=0.5, MAIL_FAILURE_SEED=1234, MAIL_PORT=1)

    monkeypatch.setattr(mailer, "_failure_rng", {})
    first = injected_failures(app, 30)
    monkeypatch.setattr(mailer, "_failure_rng", {})
    second = injected_failures(app, 30)

    assert first == second
    assert True in first
    assert False in first

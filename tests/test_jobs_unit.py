"""The job state machine without a broker: claim, lease take-over, dead-lettering, the
claimant-only finish, backoff, audit dedupe, the sweeper's query and the bounded dispatcher.

Real database (SQLite file and PostgreSQL, through `make_app`); no worker, no SMTP server.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import update

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.outbox import Dispatcher, add_post_jobs, claim_job, due_jobs, finish_job
from blog_api.jobs.tasks import backoff_seconds
from blog_api.models import Job, Post
from blog_api.models.base import utcnow
from blog_api.services.audit import append_audit_record
from blog_api.services.users import create_user

PASSWORD = "correct horse battery"


def new_job(app: Flask, *, email: str | None = "writer@example.com", version: str = "v1") -> str:
    """A post with its jobs, as create_post stores them (without publishing); the first job."""
    with app.app_context():
        user = create_user(f"u_{uuid.uuid4().hex[:8]}", PASSWORD, email=email)
        post = Post(user_id=user.id, title="A title", content="Some content")
        db.session.add(post)
        db.session.flush()
        jobs = add_post_jobs(post, version)
        db.session.commit()
        return jobs[0].id


def set_job(app: Flask, job_id: str, **values: Any) -> None:
    with app.app_context():
        db.session.execute(update(Job).where(Job.id == job_id).values(**values))
        db.session.commit()


def load(app: Flask, job_id: str) -> Job:
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None
        db.session.expunge(job)
        return job


def test_a_job_claimed_once_cannot_be_claimed_again_while_its_lease_runs(app: Flask) -> None:
    job_id = new_job(app)
    with app.app_context():
        first = claim_job(job_id, "worker-a")
        assert first is not None
        assert (first.status, first.attempts, first.claimed_by) == ("running", 1, "worker-a")
        assert first.lease_until is not None
        assert first.lease_until > utcnow()

        assert claim_job(job_id, "worker-b") is None

    job = load(app, job_id)
    assert (job.status, job.attempts, job.claimed_by) == ("running", 1, "worker-a")


def test_a_running_job_whose_lease_expired_is_claimed_again_with_one_more_attempt(
    app: Flask,
) -> None:
    job_id = new_job(app)
    with app.app_context():
        assert claim_job(job_id, "worker-a") is not None
    set_job(app, job_id, lease_until=utcnow() - timedelta(seconds=1))

    with app.app_context():
        second = claim_job(job_id, "worker-b")
        assert second is not None
        assert (second.status, second.attempts, second.claimed_by) == ("running", 2, "worker-b")


def test_a_job_at_max_attempts_becomes_dead_once_its_last_lease_expires(app: Flask) -> None:
    job_id = new_job(app)
    with app.app_context():
        assert claim_job(job_id, "worker-a") is not None
    max_attempts = load(app, job_id).max_attempts
    set_job(app, job_id, attempts=max_attempts)

    with app.app_context():  # the last attempt may still be running: leave it alone
        assert claim_job(job_id, "worker-b") is None
    assert load(app, job_id).status == "running"

    set_job(app, job_id, lease_until=utcnow() - timedelta(seconds=1))
    with app.app_context():
        assert claim_job(job_id, "worker-b") is None

    job = load(app, job_id)
    assert (job.status, job.attempts, job.lease_until) == ("dead", max_attempts, None)
    assert job.last_error is not None
    assert "attempts exhausted" in job.last_error
    assert job.finished_at is not None


def test_only_the_current_claimant_can_finish_a_job(app: Flask) -> None:
    job_id = new_job(app)
    with app.app_context():
        assert claim_job(job_id, "worker-a") is not None
    set_job(app, job_id, lease_until=utcnow() - timedelta(seconds=1))
    with app.app_context():
        taken_over = claim_job(job_id, "worker-b")
        assert taken_over is not None
        # The first worker comes back late and reports: ignored.
        finish_job(Job(id=job_id, claimed_by="worker-a"), "dead", "late report")
    job = load(app, job_id)
    assert (job.status, job.claimed_by, job.last_error) == ("running", "worker-b", None)

    with app.app_context():
        finish_job(Job(id=job_id, claimed_by="worker-b"), "done")
    job = load(app, job_id)
    assert (job.status, job.attempts, job.lease_until) == ("done", 2, None)
    assert job.finished_at is not None


def test_backoff_is_full_jitter_under_an_exponential_curve_with_a_cap() -> None:
    base, cap = 0.5, 10.0
    rng = random.Random(20240601)
    for attempt in range(1, 12):
        bound = min(cap, base * 2 ** (attempt - 1))
        samples = [backoff_seconds(attempt, base, cap, rng) for _ in range(300)]
        assert all(0 <= sample <= bound for sample in samples), attempt
        assert max(samples) > 0.9 * bound, attempt  # the curve grows to the cap
        assert min(samples) < 0.1 * bound, attempt  # full jitter reaches down to ~0
    first = [backoff_seconds(3, base, cap, random.Random(7)) for _ in range(3)]
    assert first == [backoff_seconds(3, base, cap, random.Random(7)) for _ in range(3)]


def test_append_audit_record_with_check_duplicate_finds_the_event_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "logs" / "post_audit.log"  # the directory is created on demand
    record = {"event_id": "event-1", "title": "two\nlines \u2028 and a \x1b[31m colour"}
    assert append_audit_record(str(path), record, check_duplicate=False) is True
    # Another record whose *title* is the next event id: a text match is not a duplicate.
    assert append_audit_record(
        str(path), {"event_id": "x", "title": "event-2"}, check_duplicate=False
    )
    written = path.read_bytes()

    assert append_audit_record(str(path), record, check_duplicate=True) is False
    assert path.read_bytes() == written

    assert append_audit_record(str(path), {"event_id": "event-2"}, check_duplicate=True) is True
    lines = path.read_bytes().decode("ascii").splitlines()
    assert len(lines) == 3
    assert lines[0].count("event-1") == 1


def test_due_jobs_returns_pending_due_and_expired_lease_jobs_and_pushes_them_back(
    app: Flask,
) -> None:
    now = utcnow()
    past, future = now - timedelta(seconds=1), now + timedelta(seconds=60)
    states: dict[str, dict[str, Any]] = {
        "due": {"status": "pending", "available_at": past},
        "not_yet": {"status": "pending", "available_at": future},
        "lease_expired": {"status": "running", "available_at": past, "lease_until": past},
        # Already re-published by an earlier sweep: not again until available_at.
        "republished": {"status": "running", "available_at": future, "lease_until": past},
        "leased": {"status": "running", "available_at": past, "lease_until": future},
        "done": {"status": "done", "available_at": past},
        "dead": {"status": "dead", "available_at": past},
    }
    ids = {}
    for name, values in states.items():
        ids[name] = new_job(app, email=f"{name}@example.com")
        set_job(app, ids[name], **values)

    with app.app_context():
        republish_after = timedelta(seconds=app.config["JOB_REPUBLISH_AFTER"])
        due = {job.id: job.available_at for job in due_jobs(now)}
        assert set(due) == {ids["due"], ids["lease_expired"]}
        assert set(due.values()) == {now + republish_after}
        # Pushed back: the next sweep leaves them alone until they are due again.
        assert due_jobs(now + timedelta(seconds=1)) == []
        again = due_jobs(now + republish_after + timedelta(seconds=1))
        assert {job.id for job in again} == {ids["due"], ids["lease_expired"]}


def test_the_sweeper_backs_off_with_the_job_s_age_up_to_a_cap(app: Flask) -> None:
    """A job still pending long after creation is most likely queued behind a backlog: each
    re-drive waits as long as the job is old (R at least, 8R at most), so a backlog of W
    seconds costs about log2(W/R) extra copies per job instead of W/R."""
    now = utcnow()
    with app.app_context():
        republish_after = timedelta(seconds=app.config["JOB_REPUBLISH_AFTER"])
    ages = {"new": timedelta(0), "older": republish_after * 3, "ancient": republish_after * 50}
    ids = {}
    for name, age in ages.items():
        ids[name] = new_job(app, email=f"{name}@example.com")
        set_job(app, ids[name], created_at=now - age, available_at=now - timedelta(seconds=1))

    with app.app_context():
        due = {job.id: job.available_at - now for job in due_jobs(now)}

    assert due == {
        ids["new"]: republish_after,
        ids["older"]: republish_after * 3,
        ids["ancient"]: republish_after * outbox.REPUBLISH_BACKOFF_CAP,
    }


def test_one_sweep_publishes_batch_after_batch_up_to_its_limit(
    make_app: Callable[..., Flask], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a broker outage thousands of jobs are due at once: one sweep keeps publishing while
    its batches come back full, up to SWEEP_MAX_BATCHES (real Celery app, real Redis queue)."""
    queue = f"sweep-{uuid.uuid4().hex}"
    app = make_app(CELERY_BROKER_URL=redis_url, CELERY_QUEUE=queue)
    monkeypatch.setattr(outbox, "SWEEP_BATCH", 2)
    ids = [new_job(app, email=f"due{n}@example.com") for n in range(5)]
    for job_id in ids:
        set_job(app, job_id, available_at=utcnow() - timedelta(seconds=1))
    broker = redis.Redis.from_url(redis_url)

    try:
        with app.app_context():
            assert outbox.sweep(app.extensions["celery"], max_batches=2) == 4
            assert broker.llen(queue) == 4
            for job_id in ids:  # due again
                set_job(app, job_id, available_at=utcnow() - timedelta(seconds=1))
            assert outbox.sweep(app.extensions["celery"]) == 5
            assert broker.llen(queue) == 9
    finally:
        broker.delete(queue)
        broker.close()


def test_a_notification_for_an_author_without_email_is_skipped(
    make_app: Callable[..., Flask],
) -> None:
    # Any SMTP attempt would fail: nothing listens on port 1.
    app = make_app(MAIL_PORT=1)
    job_id = new_job(app, email=None)
    task = app.extensions["celery"].tasks["blog_api.send_post_notification"]

    assert task.apply(args=[job_id]).get() == "skipped"

    job = load(app, job_id)
    assert (job.status, job.attempts, job.last_error) == ("skipped", 1, None)


def test_an_admin_retry_the_broker_refuses_is_due_at_the_next_sweep_and_says_so(
    make_app: Callable[..., Flask], make_account: Callable[..., Any]
) -> None:
    app = make_app(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    admin = make_account(role="admin")
    job_id = new_job(app)
    set_job(app, job_id, status="dead", attempts=6)

    response = app.test_client().post(f"/api/v1/jobs/{job_id}/retry", headers=admin.headers)

    assert response.status_code == 200, response.json
    assert (response.json["status"], response.json["attempts"]) == ("pending", 0)
    stored = load(app, job_id).available_at
    assert stored <= utcnow()
    assert response.json["available_at"] == stored.isoformat()


def test_the_dispatcher_fails_fast_then_goes_quiet_when_the_broker_is_unreachable(
    make_app: Callable[..., Flask],
    make_account: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    bound = app.config["JOB_DISPATCH_TIMEOUT"] + 1.0
    attempts: list[object] = []
    real_send = outbox.send_messages

    def counting_send(*args: Any) -> None:
        attempts.append(args)
        real_send(*args)

    monkeypatch.setattr(outbox, "send_messages", counting_send)
    author = make_account(email="nobroker@example.com")

    started = time.perf_counter()
    response = app.test_client().post(
        "/api/v1/posts", json={"title": "Still here", "content": "x"}, headers=author.headers
    )
    assert response.status_code == 201
    assert time.perf_counter() - started <= bound
    assert len(attempts) == 1

    with app.app_context():
        jobs = db.session.query(Job).filter_by(post_id=response.json["id"]).all()
        assert [(job.status, job.attempts) for job in jobs] == [("pending", 0)]
        # Not published: due at the next sweep, not JOB_REPUBLISH_AFTER from now.
        assert [job.id for job in due_jobs(utcnow())] == [job.id for job in jobs]
        messages = outbox.job_messages(jobs)
        dispatcher = app.extensions["job_dispatcher"]
        started = time.perf_counter()
        assert dispatcher.publish(messages) is False  # quiet: no second attempt
        assert time.perf_counter() - started < 0.05
        assert len(attempts) == 1

        fresh = Dispatcher()
        started = time.perf_counter()
        assert fresh.publish(messages) is False
        assert time.perf_counter() - started <= bound
        assert len(attempts) == 2

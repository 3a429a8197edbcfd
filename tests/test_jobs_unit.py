"""The job state machine without a broker: claim, lease take-over, dead-lettering, the
claimant-only finish, release for a retry, backoff, audit dedupe, the relay's query and its
push-back, retention, and the admin retry.

Real database (SQLite file and PostgreSQL, through `make_app`); no worker, no SMTP server.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from blog_api.effects.audit import append_audit_record
from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.errors import AttemptFailed
from blog_api.jobs.outbox import (
    backoff_seconds,
    claim_job,
    due_jobs,
    finish_job,
    insert_post_jobs,
    push_back,
)
from blog_api.models import ErrorCode, Job, JobStatus, Post
from blog_api.models.base import utcnow
from support import create_account_from_before_confirmations, job_row, set_job


def new_job(app: Flask, *, email: str | None = "writer@example.com", version: str = "v1") -> str:
    """A post with its jobs, as create_post stores them (without publishing); the first job."""
    with app.app_context():
        user = create_account_from_before_confirmations(f"u_{uuid.uuid4().hex[:8]}", email)
        post = Post(user_id=user.id, title="A title", content="Some content")
        db.session.add(post)
        db.session.flush()
        job_ids = insert_post_jobs(post.id, version)
        db.session.commit()
        return job_ids[0]


def claim_and_let_the_lease_expire(app: Flask, job_id: str) -> None:
    """`worker-a` claims the job, then its lease runs out (the worker died or hangs)."""
    with app.app_context():
        assert claim_job(job_id, "worker-a") is not None
    set_job(app, job_id, lease_until=utcnow() - timedelta(seconds=1))


def test_a_job_claimed_once_cannot_be_claimed_again_while_its_lease_runs(app: Flask) -> None:
    job_id = new_job(app)
    with app.app_context():
        first = claim_job(job_id, "worker-a")
        assert first is not None
        assert (first.status, first.attempts, first.claimed_by) == ("running", 1, "worker-a")
        assert first.lease_until is not None
        assert first.lease_until > utcnow()

        assert claim_job(job_id, "worker-b") is None

    job = job_row(app, job_id)
    assert (job.status, job.attempts, job.claimed_by) == ("running", 1, "worker-a")


def test_a_running_job_whose_lease_expired_is_claimed_again_with_one_more_attempt(
    app: Flask,
) -> None:
    job_id = new_job(app)
    claim_and_let_the_lease_expire(app, job_id)

    with app.app_context():
        second = claim_job(job_id, "worker-b")
        assert second is not None
        assert (second.status, second.attempts, second.claimed_by) == ("running", 2, "worker-b")


@pytest.mark.scenario("S45")
def test_a_job_at_max_attempts_becomes_dead_once_its_last_lease_expires(app: Flask) -> None:
    job_id = new_job(app)
    with app.app_context():
        assert claim_job(job_id, "worker-a") is not None
    max_attempts = job_row(app, job_id).max_attempts
    set_job(app, job_id, attempts=max_attempts)

    with app.app_context():  # the last attempt may still be running: leave it alone
        assert claim_job(job_id, "worker-b") is None
    assert job_row(app, job_id).status == "running"

    set_job(app, job_id, lease_until=utcnow() - timedelta(seconds=1))
    with app.app_context():
        assert claim_job(job_id, "worker-b") is None

    job = job_row(app, job_id)
    assert (job.status, job.attempts, job.lease_until) == ("dead", max_attempts, None)
    assert job.last_error is not None
    assert "attempts exhausted" in job.last_error
    assert job.error_code == "attempts_exhausted"
    assert job.finished_at is not None


def test_only_the_current_claimant_can_finish_a_job(app: Flask) -> None:
    job_id = new_job(app)
    claim_and_let_the_lease_expire(app, job_id)
    with app.app_context():
        taken_over = claim_job(job_id, "worker-b")
        assert taken_over is not None
        # The first worker comes back late and reports: ignored.
        finish_job(Job(id=job_id, claimed_by="worker-a"), "dead", "late report")
    job = job_row(app, job_id)
    assert (job.status, job.claimed_by, job.last_error) == ("running", "worker-b", None)

    with app.app_context():
        finish_job(Job(id=job_id, claimed_by="worker-b"), "done")
    job = job_row(app, job_id)
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


def test_due_jobs_returns_pending_due_and_expired_lease_jobs_and_push_back_hides_them(
    app: Flask,
) -> None:
    now = utcnow()
    past, future = now - timedelta(seconds=1), now + timedelta(seconds=60)
    states: dict[str, dict[str, Any]] = {
        "due": {"status": "pending", "available_at": past},
        "not_yet": {"status": "pending", "available_at": future},  # a retry's backoff
        # A claim moves available_at to the lease's end: due when the lease expired.
        "lease_expired": {"status": "running", "available_at": past, "lease_until": past},
        "leased": {"status": "running", "available_at": future, "lease_until": future},
        "done": {"status": "done", "available_at": past},
        "skipped": {"status": "skipped", "available_at": past},
        "dead": {"status": "dead", "available_at": past},
    }
    ids = {}
    for name, values in states.items():
        ids[name] = new_job(app, email=f"{name}@example.com")
        set_job(app, ids[name], **values)

    with app.app_context():
        republish_after = timedelta(seconds=app.config["JOB_REPUBLISH_AFTER"])
        due = due_jobs(now, 100)
        assert {job.id for job in due} == {ids["due"], ids["lease_expired"]}
        push_back(due, now)
        assert {job_row(app, job.id).available_at for job in due} == {now + republish_after}
        # Pushed back: the next pass leaves them alone until their message may have been lost.
        assert due_jobs(now + timedelta(seconds=1), 100) == []
        again = due_jobs(now + republish_after + timedelta(seconds=1), 100)
        assert {job.id for job in again} == {ids["due"], ids["lease_expired"]}
        db.session.commit()


def test_push_back_leaves_a_job_claimed_since_the_publish_alone(app: Flask) -> None:
    job_id = new_job(app)
    now = utcnow()
    with app.app_context():
        due = due_jobs(now, 10)
        job = claim_job(job_id, "fast-worker")
        assert job is not None
        lease_end = job.available_at
        push_back(due, now)
    assert job_row(app, job_id).available_at == lease_end


def test_due_jobs_come_earliest_first_and_at_most_limit(app: Flask) -> None:
    now = utcnow()
    ids = [new_job(app, email=f"order{n}@example.com") for n in range(4)]
    for offset, job_id in enumerate(reversed(ids)):
        set_job(app, job_id, available_at=now - timedelta(seconds=10 - offset))
    with app.app_context():
        assert [job.id for job in due_jobs(now, 3)] == list(reversed(ids))[:3]
        db.session.commit()


def test_the_republish_delay_grows_with_the_job_s_age_up_to_a_cap(app: Flask) -> None:
    """A job still unclaimed long after creation is most likely queued behind a backlog: each
    re-publish waits as long as the job is old, rounded down to R, 2R, 4R or 8R, so a backlog
    of W seconds costs about log2(W/R) extra copies per job instead of W/R."""
    now = utcnow()
    with app.app_context():
        republish_after = timedelta(seconds=app.config["JOB_REPUBLISH_AFTER"])
    ages = {
        "new": (timedelta(0), 1),
        "older": (republish_after * 3, 2),
        "old": (republish_after * 5, 4),
        "ancient": (republish_after * 50, 2**outbox.REPUBLISH_BACKOFF_STEPS),
    }
    ids = {}
    for name, (age, _factor) in ages.items():
        ids[name] = new_job(app, email=f"{name}@example.com")
        set_job(app, ids[name], created_at=now - age, available_at=now - timedelta(seconds=1))

    with app.app_context():
        push_back(due_jobs(now, 10), now)
    assert {name: job_row(app, ids[name]).available_at - now for name in ages} == {
        name: republish_after * factor for name, (_age, factor) in ages.items()
    }


@pytest.mark.scenario("S45")
def test_a_released_job_is_pending_and_due_after_its_backoff(app: Flask) -> None:
    job_id = new_job(app)
    with app.app_context():
        job = claim_job(job_id, "worker-a")
        assert job is not None
        before = utcnow()
        outbox.release_job(job, "451 try later", ErrorCode.SMTP_TRANSIENT, retry_in=30)
    released = job_row(app, job_id)
    assert (released.status, released.attempts, released.last_error, released.error_code) == (
        JobStatus.PENDING,
        1,
        "451 try later",
        "smtp_transient",
    )
    assert released.lease_until is None
    assert before + timedelta(seconds=30) <= released.available_at
    with app.app_context():
        assert due_jobs(utcnow(), 10) == []
        assert [job.id for job in due_jobs(utcnow() + timedelta(seconds=31), 10)] == [job_id]
        db.session.commit()


def test_retention_deletes_old_finished_jobs_in_batches_and_keeps_dead_and_recent_ones(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "PRUNE_BATCH", 2)
    long_ago = utcnow() - timedelta(days=31)
    kept, pruned = {}, []
    for number, status in enumerate(("done", "skipped", "done", "skipped", "done")):
        pruned.append(new_job(app, email=f"old-{number}@example.com"))
        set_job(app, pruned[-1], status=status, finished_at=long_ago)
    kept["dead"] = new_job(app, email="dead@example.com")
    set_job(app, kept["dead"], status="dead", finished_at=long_ago)
    kept["recent"] = new_job(app, email="recent@example.com")
    set_job(app, kept["recent"], status="done", finished_at=utcnow() - timedelta(days=29))
    kept["pending"] = new_job(app, email="pending@example.com")

    batches: list[int] = []
    with app.app_context():
        assert outbox.count_prunable_jobs() == len(pruned)
        assert outbox.prune_finished_jobs(on_batch=batches.append) == len(pruned)
        remaining = set(db.session.scalars(select(Job.id)))
    assert remaining == set(kept.values())
    assert batches == [2, 2, 1]  # each batch reported once committed (a progress bar)


@pytest.mark.scenario("S45")
def test_a_notification_for_an_author_without_email_is_skipped_with_the_reason(
    make_app: Callable[..., Flask],
) -> None:
    # Any SMTP attempt would fail: nothing listens on port 1.
    app = make_app(MAIL_PORT=1)
    job_id = new_job(app, email=None)
    task = app.extensions["celery"].tasks["blog_api.send_post_notification"]

    assert task.apply(args=[job_id]).get() == "skipped"

    job = job_row(app, job_id)
    assert (job.status, job.attempts, job.error_code) == ("skipped", 1, "no_address")
    assert job.last_error is not None
    assert job.last_error.endswith("has no e-mail address")


@pytest.mark.parametrize(("attempts_before", "outcome"), [(0, "retrying"), (5, "dead")])
def test_a_failed_attempt_ends_its_task_as_a_failure_once_its_outcome_is_committed(
    make_app: Callable[..., Flask], attempts_before: int, outcome: str
) -> None:
    """A failed attempt's task returned "retrying" (or "dead"): six successes in Flower for an
    e-mail that never left. Now the task raises `AttemptFailed` after the outbox recorded the
    attempt, released with its backoff (or dead at its last attempt); Celery settles the run as
    a failure, acknowledges the message and retries nothing: the relay re-drives the row."""
    # Nothing listens on port 1: the attempt fails to connect (transient).
    app = make_app(MAIL_PORT=1, MAIL_RETRY_BACKOFF=30, MAIL_RETRY_BACKOFF_MAX=30)
    job_id = new_job(app)
    set_job(app, job_id, attempts=attempts_before)
    celery_app = app.extensions["celery"]
    task = celery_app.tasks["blog_api.send_post_notification"]
    before = utcnow()

    result = task.apply(args=[job_id])

    assert result.state == "FAILURE"
    assert isinstance(result.result, AttemptFailed)
    assert result.result.outcome == outcome
    assert result.result.reason.startswith("SMTP connection failed")
    job = job_row(app, job_id)
    assert (job.status, job.attempts, job.error_code) == (
        "pending" if outcome == "retrying" else "dead",
        attempts_before + 1,
        "connection_failed",
    )
    assert job.lease_until is None
    if outcome == "retrying":
        assert before <= job.available_at <= utcnow() + timedelta(seconds=30)
    # Expected: logged without a traceback; acknowledged; never re-sent by Celery.
    assert task.throws == (AttemptFailed,)
    assert not getattr(task, "autoretry_for", ())
    assert celery_app.conf.task_acks_late
    assert celery_app.conf.task_acks_on_failure_or_timeout


def test_an_admin_retry_makes_a_dead_job_due_at_once_without_any_broker(
    make_app: Callable[..., Flask], make_account: Callable[..., Any]
) -> None:
    app = make_app(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    admin = make_account(role="admin")
    job_id = new_job(app)
    set_job(app, job_id, status="dead", attempts=6, finished_at=utcnow())

    response = app.test_client().post(f"/api/v1/jobs/{job_id}/retry", headers=admin.headers)

    assert response.status_code == 200, response.json
    assert (response.json["status"], response.json["attempts"]) == ("pending", 0)
    stored = job_row(app, job_id)
    assert stored.available_at <= utcnow()
    assert stored.finished_at is None
    assert response.json["available_at"] == stored.available_at.isoformat()
    with app.app_context():
        assert [job.id for job in due_jobs(utcnow(), 10)] == [job_id]
        db.session.commit()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (lambda: outbox.due_statement(utcnow(), 500), "ix_jobs_due"),
        (lambda: outbox.prune_batch_statement(utcnow()), "ix_jobs_prunable"),
    ],
    ids=["relay", "retention"],
)
def test_the_relay_and_retention_queries_are_served_by_their_partial_indexes(
    app: Flask, statement: Callable[[], Any], index: str
) -> None:
    """With sequential scans priced out, the plan shows the partial index is usable: the
    query's status predicate implies the index's (bench/NOTES.md has the plans at 1M rows)."""
    with app.app_context():
        compiled = statement().compile(db.engine, compile_kwargs={"literal_binds": True})
        db.session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(db.session.scalars(text(f"EXPLAIN {compiled}")))
        db.session.rollback()
    assert index in plan, plan

"""The job (outbox) state machine: create, claim, finish, release, sweep, publish.

Every transition is one short transaction whose WHERE clause checks the current state, so two
workers (or a redelivered message) can never both own a job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta

from flask import current_app, g, has_request_context
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.attributes import set_committed_value

from blog_api.extensions import db
from blog_api.models import AUDIT_POST_CREATED, NOTIFY_AUTHOR, Job, Post
from blog_api.models.base import utcnow
from blog_api.services import commit_keeping_state

log = logging.getLogger(__name__)

TASK_FOR_KIND = {
    NOTIFY_AUTHOR: "blog_api.send_post_notification",
    AUDIT_POST_CREATED: "blog_api.record_post_created",
}
SWEEP_BATCH = 500
# Batches one sweep may publish (the rest waits for the next sweep).
SWEEP_MAX_BATCHES = 20
# A job is re-published at most every REPUBLISH_BACKOFF_CAP x JOB_REPUBLISH_AFTER (see due_jobs).
REPUBLISH_BACKOFF_CAP = 8
# Test-only negative control: how far ahead naive-mode jobs are parked so the sweeper never
# re-drives them (see `naive_dispatch`).
NAIVE_PARK = timedelta(days=3650)


def naive_dispatch() -> bool:
    """True only when the testing configuration asks for the tutorial's publishing."""
    config = current_app.config
    return bool(config["TESTING"]) and config.get("JOB_DISPATCH_MODE") == "naive"


def add_post_jobs(post: Post, api_version: str) -> list[Job]:
    """Add the post's jobs to the session (the caller commits them with the post).

    `post` must have been flushed (it needs an id).
    """
    kinds = [NOTIFY_AUTHOR] + ([AUDIT_POST_CREATED] if api_version == "v2" else [])
    republish_after = timedelta(seconds=current_app.config["JOB_REPUBLISH_AFTER"])
    if naive_dispatch():  # test-only: no outbox re-drive, as in the tutorial
        republish_after = NAIVE_PARK
    max_attempts = current_app.config["MAIL_MAX_RETRIES"] + 1
    # The worker's log lines for these jobs carry the creating request's (validated) id.
    request_id = g.get("request_id") if has_request_context() else None
    jobs = [
        Job(
            kind=kind,
            post_id=post.id,
            max_attempts=max_attempts,
            request_id=request_id,
            # The fast path publishes now; the sweeper steps in only if that message is lost.
            available_at=utcnow() + republish_after,
        )
        for kind in kinds
    ]
    db.session.add_all(jobs)
    return jobs


def make_due_now(jobs: Sequence[Job]) -> None:
    """The fast path could not publish these jobs: let the next sweep re-drive them (within
    JOB_SWEEP_INTERVAL of the broker's return) instead of JOB_REPUBLISH_AFTER after creation.

    Best effort, on a connection of its own: if this write fails too, the jobs keep their
    normal re-drive time, and the caller's session (whose post the response still needs) is
    not rolled back and expired by the failure.
    """
    now = utcnow()
    try:
        with db.engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(Job.id.in_([job.id for job in jobs]), Job.status == "pending")
                .values(available_at=now)
            )
    except SQLAlchemyError:
        log.warning("Could not mark unpublished jobs as due; the sweeper finds them later")
        return
    for job in jobs:  # what was written, without reading it back
        if job.status == "pending":
            set_committed_value(job, "available_at", now)


def claim_job(job_id: str, worker_id: str) -> Job | None:
    """Take the job for one attempt, or None when it is not ours to run.

    Claimable: pending, or running with an expired lease (its worker died). The lease outlives
    the task's hard time limit, so a live attempt is never taken over.
    """
    now = utcnow()
    lease = timedelta(seconds=current_app.config["JOB_LEASE_SECONDS"])
    # One statement: the UPDATE returns the claimed row (SQLite >= 3.35, PostgreSQL), and the
    # commit keeps it in memory, so the job is not read again.
    job = db.session.scalars(
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts < Job.max_attempts,
            or_(Job.status == "pending", (Job.status == "running") & (Job.lease_until < now)),
        )
        .values(
            status="running",
            attempts=Job.attempts + 1,
            lease_until=now + lease,
            claimed_by=worker_id,
            updated_at=now,
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).first()
    commit_keeping_state()
    if job is None:
        _dead_letter_if_exhausted(job_id)
    return job


def _dead_letter_if_exhausted(job_id: str) -> None:
    """A job whose attempts are used up and whose last lease expired is dead (poison pill)."""
    now = utcnow()
    db.session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts >= Job.max_attempts,
            or_(Job.status == "pending", (Job.status == "running") & (Job.lease_until < now)),
        )
        .values(
            status="dead",
            lease_until=None,
            updated_at=now,
            finished_at=now,
            last_error="attempts exhausted: the worker was lost on every attempt",
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def finish_job(job: Job, status: str, error: str | None = None) -> None:
    """Record the outcome of the attempt that owns `job` (done, skipped or dead).

    The effect has already happened, so a database blip must not lose this write: retry it
    in-process for a bounded time instead of re-running the effect.
    """
    deadline = time.monotonic() + current_app.config["JOB_LEASE_SECONDS"] / 2
    delay = 0.2
    # Plain values: after a rollback the ORM object's attributes are expired, and reading them
    # would need the very database that just failed.
    job_id, owner = job.id, job.claimed_by
    while True:
        try:
            now = utcnow()
            db.session.execute(
                update(Job)
                .where(Job.id == job_id, Job.claimed_by == owner)
                .values(
                    status=status,
                    lease_until=None,
                    last_error=error,
                    updated_at=now,
                    finished_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
            return
        except Exception:
            db.session.rollback()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Could not record job %s as %s; retrying", job_id, status, exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def release_job(job: Job, error: str, retry_in: float) -> None:
    """Give a failed attempt back: pending again, due after `retry_in` seconds."""
    now = utcnow()
    db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.claimed_by == job.claimed_by)
        .values(
            status="pending",
            lease_until=None,
            last_error=error,
            updated_at=now,
            # The Celery retry message arrives at `retry_in`; the sweeper waits longer.
            available_at=now
            + timedelta(seconds=retry_in + current_app.config["JOB_REPUBLISH_AFTER"]),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def due_jobs(now: datetime, limit: int = SWEEP_BATCH) -> list[Job]:
    """Jobs the sweeper must (re)publish, pushed back (by their age) so that the next sweeps
    leave them alone.

    A running job whose lease expired is due too, but it also waits for `available_at`: that is
    what "pushed back" means for it, so an unclaimed copy is not re-published on every sweep.
    On PostgreSQL the rows are locked with SKIP LOCKED, so concurrent sweepers split the work.
    """
    statement = (
        select(Job)
        .where(
            Job.available_at <= now,
            or_(
                Job.status == "pending",
                (Job.status == "running") & (Job.lease_until < now),
            ),
        )
        .order_by(Job.available_at)
        .limit(limit)
    )
    if db.engine.dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    jobs = list(db.session.scalars(statement))
    republish_after = timedelta(seconds=current_app.config["JOB_REPUBLISH_AFTER"])
    longest = republish_after * REPUBLISH_BACKOFF_CAP
    for job in jobs:
        # Back off with the job's age: a job still pending long after it was published is
        # most likely queued behind a backlog, not lost, and every copy sent costs a worker a
        # claim. Re-drives come at about R, 2R, 4R, 8R ... after creation, then every 8R.
        job.available_at = now + min(max(republish_after, now - job.created_at), longest)
    db.session.commit()
    return jobs


def sweep(celery_app: object, max_batches: int = SWEEP_MAX_BATCHES) -> int:
    """Publish every due job (see `due_jobs`), batch after batch while batches come back full
    (after a broker outage thousands are due at once); returns how many."""
    published = 0
    for _ in range(max_batches):
        jobs = due_jobs(utcnow(), SWEEP_BATCH)
        send_messages(celery_app, job_messages(jobs))
        published += len(jobs)
        if len(jobs) < SWEEP_BATCH:
            break
    return published


def job_messages(jobs: Iterable[Job]) -> list[tuple[str, str]]:
    return [(TASK_FOR_KIND[job.kind], job.id) for job in jobs]


class Dispatcher:
    """Publishes job messages with a time bound; after a failure it stays quiet for a while.

    Publishing runs on one background thread per process so that a hung broker connection can
    delay a request by at most `JOB_DISPATCH_TIMEOUT`; the sweeper re-drives whatever the fast
    path could not publish.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-dispatch")
        self._quiet_until = 0.0

    def publish(self, messages: Sequence[tuple[str, str]]) -> bool:
        """Publish now if the broker looks healthy; True when every message was sent."""
        if not messages or time.monotonic() < self._quiet_until:
            return False
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        timeout = app.config["JOB_DISPATCH_TIMEOUT"]
        future = self._executor.submit(send_messages, app.extensions["celery"], messages)
        try:
            future.result(timeout=timeout)
            return True
        except FutureTimeout:
            self._go_quiet(app.config["JOB_DISPATCH_COOLDOWN"], "timed out")
        except Exception as error:  # any broker failure: the sweeper takes over
            self._go_quiet(app.config["JOB_DISPATCH_COOLDOWN"], repr(error))
        return False

    def _go_quiet(self, cooldown: float, reason: str) -> None:
        # A plain float assignment: a racing request at worst publishes once more.
        self._quiet_until = time.monotonic() + cooldown
        log.warning("Job dispatch failed (%s); leaving it to the sweeper for %ss", reason, cooldown)


def send_messages(celery_app: object, messages: Sequence[tuple[str, str]]) -> None:
    for task_name, job_id in messages:
        celery_app.send_task(task_name, args=[job_id], retry=False)  # type: ignore[attr-defined]

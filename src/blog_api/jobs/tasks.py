"""Celery tasks. Each receives only a job id, claims the job row, does the effect, records it.

A second delivery of the same job finds it claimed or finished and does nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from celery import Task, shared_task
from flask import current_app
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.errors import PermanentJobError
from blog_api.jobs.faults import crash_point
from blog_api.models import Job, Post, User
from blog_api.models.base import utcnow
from blog_api.ops.logging import bind_job
from blog_api.services import tokens
from blog_api.services.audit import append_audit_record
from blog_api.services.mailer import build_post_notification, send_email

log = logging.getLogger(__name__)
Effect = Callable[[Job], str]


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return rng.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))


def run_job(task: Task, job_id: str, effect: Effect) -> str:
    """Claim, run `effect`, record the outcome; retry transient failures with backoff."""
    job = outbox.claim_job(job_id, task.request.id or f"direct-{job_id}")
    if job is None:
        log.info("Job %s: already claimed or finished, nothing to do", job_id)
        return "skipped-duplicate"
    bind_job(job.id, job.request_id)
    post_id = job.post_id  # read now: finish_job's commit expires the object
    crash_point("after_claim", post_id)
    try:
        outcome = effect(job)
    except PermanentJobError as error:
        log.error("Job %s (%s) failed permanently: %s", job.id, job.kind, error)
        outbox.finish_job(job, "dead", str(error))
        return "dead"
    except Exception as error:  # transient, or unexpected: both get bounded retries
        message = str(error) or type(error).__name__
        if job.attempts >= job.max_attempts:
            log.error(
                "Job %s (%s) gave up after %d attempts: %s", job.id, job.kind, job.attempts, message
            )
            outbox.finish_job(job, "dead", message)
            return "dead"
        config = current_app.config
        countdown = backoff_seconds(
            job.attempts,
            config["MAIL_RETRY_BACKOFF"],
            config["MAIL_RETRY_BACKOFF_MAX"],
            random.Random(),
        )
        log.warning(
            "Job %s (%s) attempt %d failed: %s; retrying in %.1fs",
            job.id,
            job.kind,
            job.attempts,
            message,
            countdown,
        )
        outbox.release_job(job, message, countdown)
        # The job's attempt counter is the limit; the tasks set Celery's own to None (in
        # `retry()` a None max_retries would mean Celery's default of 3, not unlimited).
        raise task.retry(countdown=countdown, exc=error) from error
    outbox.finish_job(job, outcome)
    crash_point("after_commit_before_ack", post_id)
    return outcome


def notify_author(job: Job) -> str:
    row = db.session.execute(
        select(Post, User).join(User, Post.user_id == User.id).where(Post.id == job.post_id)
    ).first()
    if row is None:
        return "skipped"
    post, author = row
    if not author.email:
        log.info(
            "No e-mail address for user %s; notification for post %s skipped", author.id, post.id
        )
        return "skipped"
    message = build_post_notification(job.id, author.email, author.username, post.id, post.title)
    crash_point("before_smtp_data", post.id)
    send_email(message)
    log.info("Email sent to user %s for post %r", author.id, post.title)
    crash_point("after_smtp_250_before_commit", post.id)
    return "done"


def audit_post_created(job: Job) -> str:
    post = db.session.get(Post, job.post_id)
    if post is None:
        return "skipped"
    record = {
        "event_id": job.id,
        "event": "post_created",
        "time": utcnow().isoformat(),
        "post_id": post.id,
        "title": post.title,
        "author_id": post.user_id,
        "category": post.category,
        "created_at": post.created_at.isoformat(),
    }
    written = append_audit_record(
        current_app.config["POST_AUDIT_LOG"], record, check_duplicate=job.attempts > 1
    )
    if written:
        log.info("Audit record written for post %s", post.id)
    crash_point("after_audit_write_before_commit", post.id)
    return "done"


@shared_task(name="blog_api.send_post_notification", bind=True, max_retries=None)
def send_post_notification(self: Task, job_id: str) -> str:
    """E-mail the author that their post is published."""
    return run_job(self, job_id, notify_author)


@shared_task(name="blog_api.record_post_created", bind=True, max_retries=None)
def record_post_created(self: Task, job_id: str) -> str:
    """Append the v2 post's audit record to POST_AUDIT_LOG."""
    return run_job(self, job_id, audit_post_created)


@shared_task(name="blog_api.sweep_jobs", bind=True)
def sweep_jobs(self: Task) -> int:
    """Re-publish pending jobs that are due and running jobs whose lease expired."""
    count = outbox.sweep(self.app)
    if count:
        log.info("Sweeper re-published %d job(s)", count)
    return count


@shared_task(name="blog_api.purge_expired_tokens")
def purge_expired_tokens() -> int:
    """Drop blocklist rows of tokens that have expired anyway."""
    return tokens.purge_expired_tokens()

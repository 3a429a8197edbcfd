"""Celery tasks. Each receives only a job id, claims the job row, does the effect, records it.

A second delivery of the same job finds it claimed or finished and does nothing. A failed
attempt is given back to the outbox with its backoff; the relay publishes it again when it is
due, so no task ever holds a countdown (ETA) message. An effect that stops on purpose with work
left in rows of its own (a post's fan-out: `blog_api.effects.fanout`) defers its job instead, to
run again at a given time without spending an attempt.

`TASKS` is the one mapping from a job kind to its task; `publish_jobs` is what the relay uses.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, Task, shared_task
from flask import current_app
from sqlalchemy import bindparam, select

from blog_api.effects import fanout
from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.errors import JobDeferred, JobSkipped, PermanentJobError
from blog_api.jobs.outbox import DueJob
from blog_api.models import EmailConfirmation, Job, JobKind, JobStatus, Post, User
from blog_api.models.base import utcnow
from blog_api.ops.logging import bind_job
from blog_api.services.audit import append_audit_record
from blog_api.services.confirmations import confirmation_token
from blog_api.services.mailer import build_email_confirmation, build_post_notification, send_email
from blog_api.worker.checkpoints import Checkpoint, job_checkpoint

log = logging.getLogger(__name__)
Effect = Callable[[Job], JobStatus]

# A publish on a pooled connection the broker has closed (a restarted Redis) reconnects and
# sends again; a broker that stays away fails the batch fast, and the relay tries it later.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}


def run_job(task: Task, job_id: str, effect: Effect) -> str:
    """Claim, run `effect`, record the outcome; a transient failure is released for a retry."""
    job = outbox.claim_job(job_id, task.request.id or f"direct-{job_id}")
    if job is None:
        log.info("Job %s: already claimed or finished, nothing to do", job_id)
        return "skipped-duplicate"
    # Detached with its claimed state: an effect that commits (a fan-out) does not expire it,
    # so recording the outcome reads nothing again, even when the post was deleted meanwhile.
    db.session.expunge(job)
    bind_job(job.id, job.request_id)
    job_checkpoint.send(job, point=Checkpoint.AFTER_CLAIM)
    try:
        outcome = effect(job)
    except JobDeferred as deferred:
        log.info("Job %s (%s) continues later: %s", job.id, job.kind, deferred)
        outbox.defer_job(job, deferred.until, str(deferred))
        return "deferred"
    except JobSkipped as reason:
        log.info("Job %s (%s) skipped: %s", job.id, job.kind, reason)
        outbox.finish_job(job, JobStatus.SKIPPED, str(reason))
        return JobStatus.SKIPPED.value
    except PermanentJobError as error:
        log.error("Job %s (%s) failed permanently: %s", job.id, job.kind, error)
        outbox.finish_job(job, JobStatus.DEAD, str(error))
        return JobStatus.DEAD.value
    except Exception as error:  # transient, or unexpected: both get bounded retries
        message = str(error) or type(error).__name__
        if job.attempts >= job.max_attempts:
            log.error(
                "Job %s (%s) gave up after %d attempts: %s", job.id, job.kind, job.attempts, message
            )
            outbox.finish_job(job, JobStatus.DEAD, message)
            return JobStatus.DEAD.value
        config = current_app.config
        delay = outbox.backoff_seconds(
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
            delay,
        )
        outbox.release_job(job, message, delay)
        return "retrying"
    outbox.finish_job(job, outcome)
    job_checkpoint.send(job, point=Checkpoint.AFTER_COMMIT_BEFORE_ACK)
    return outcome.value


# Built once: building the statement cost about as much as running it.
POST_AND_AUTHOR = (
    select(Post, User).join(User, Post.user_id == User.id).where(Post.id == bindparam("post_id"))
)


def notify_author(job: Job) -> JobStatus:
    row = db.session.execute(POST_AND_AUTHOR, {"post_id": job.post_id}).first()
    if row is None:
        return JobStatus.SKIPPED
    post, author = row
    if not author.email:
        log.info(
            "No e-mail address for user %s; notification for post %s skipped", author.id, post.id
        )
        return JobStatus.SKIPPED
    if not author.email_confirmed and current_app.config["EMAIL_CONFIRMATION_REQUIRED"]:
        raise JobSkipped(
            f"e-mail address of user {author.id} is not confirmed (EMAIL_CONFIRMATION_REQUIRED)"
        )
    message = build_post_notification(job.id, author.email, author.username, post.id, post.title)
    job_checkpoint.send(job, point=Checkpoint.BEFORE_SMTP_DATA)
    send_email(message)
    log.info("Email sent to user %s for post %r", author.id, post.title)
    job_checkpoint.send(job, point=Checkpoint.AFTER_SMTP_250_BEFORE_COMMIT)
    return JobStatus.DONE


def audit_post_created(job: Job) -> JobStatus:
    post = db.session.get(Post, job.post_id)
    if post is None:
        return JobStatus.SKIPPED
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
    job_checkpoint.send(job, point=Checkpoint.AFTER_AUDIT_WRITE_BEFORE_COMMIT)
    return JobStatus.DONE


# Built once, as POST_AND_AUTHOR.
CONFIRMATION_AND_USER = (
    select(EmailConfirmation, User)
    .join(User, EmailConfirmation.user_id == User.id)
    .where(EmailConfirmation.id == bindparam("confirmation_id"))
)


def email_confirmation(job: Job) -> JobStatus:
    """Send the confirmation e-mail with its token, unless it cannot be used any more."""
    row = db.session.execute(
        CONFIRMATION_AND_USER, {"confirmation_id": job.confirmation_id}
    ).first()
    if row is None:
        return JobStatus.SKIPPED
    confirmation, user = row
    if confirmation.used_at is not None or user.email_confirmed:
        raise JobSkipped("the address is already confirmed")
    if user.email != confirmation.email:
        raise JobSkipped("the user's address changed since the confirmation was asked for")
    if confirmation.expires_at <= utcnow():
        raise JobSkipped("the confirmation expired or was superseded before it could be sent")
    message = build_email_confirmation(
        job.id,
        confirmation.email,
        user.username,
        confirmation_token(confirmation),
        confirmation.expires_at,
    )
    send_email(message)
    log.info("Confirmation e-mail sent to user %s", user.id)
    return JobStatus.DONE


def _checkpoints(job: Job) -> fanout.Checkpoint:
    """The fan-out's named points, sent as this job's `job_checkpoint`."""

    def checkpoint(point: str) -> None:
        job_checkpoint.send(job, point=Checkpoint(point))

    return checkpoint


def expand_fan_out(job: Job) -> JobStatus:
    return fanout.expand(job, _checkpoints(job))


def send_batch(job: Job) -> JobStatus:
    return fanout.deliver_batch(job, _checkpoints(job))


@shared_task(name="blog_api.send_post_notification", bind=True)
def send_post_notification(self: Task, job_id: str) -> str:
    """E-mail the author that their post is published."""
    return run_job(self, job_id, notify_author)


@shared_task(name="blog_api.record_post_created", bind=True)
def record_post_created(self: Task, job_id: str) -> str:
    """Append the v2 post's audit record to POST_AUDIT_LOG."""
    return run_job(self, job_id, audit_post_created)


@shared_task(name="blog_api.send_email_confirmation", bind=True)
def send_email_confirmation(self: Task, job_id: str) -> str:
    """E-mail a user the token that confirms their address."""
    return run_job(self, job_id, email_confirmation)


@shared_task(name="blog_api.fan_out_post", bind=True)
def fan_out_post(self: Task, job_id: str) -> str:
    """Write the post's deliveries to its author's subscribers, in batches with their jobs."""
    return run_job(self, job_id, expand_fan_out)


@shared_task(name="blog_api.deliver_batch", bind=True)
def deliver_batch(self: Task, job_id: str) -> str:
    """Send one batch of a post's deliveries over one kept SMTP connection."""
    return run_job(self, job_id, send_batch)


TASKS: dict[JobKind, Any] = {
    JobKind.NOTIFY_AUTHOR: send_post_notification,
    JobKind.AUDIT_POST_CREATED: record_post_created,
    JobKind.CONFIRM_EMAIL: send_email_confirmation,
    JobKind.FAN_OUT: fan_out_post,
    JobKind.DELIVER_BATCH: deliver_batch,
}


def publish_jobs(celery_app: Celery, jobs: Sequence[DueJob]) -> None:
    """Send one message per job (its id only), all on one producer connection."""
    with celery_app.producer_or_acquire() as producer:
        for job_id, kind, _created_at in jobs:
            celery_app.send_task(
                TASKS[kind].name,
                args=[job_id],
                producer=producer,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )

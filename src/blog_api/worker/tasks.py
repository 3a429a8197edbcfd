"""The Celery tasks: each receives only a job id and makes one attempt at the job
(`blog_api.jobs.runner.run_job`: claim, run the effect, record the outcome), counted by kind and
outcome in `blog_api_job_attempts_total` (ops/metrics.py).

`TASKS` is the one mapping from a job kind to its task; `publish_jobs` is what the relay uses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task, shared_task

from blog_api.effects import fanout
from blog_api.effects.audit import audit_post_created
from blog_api.effects.confirmations import email_confirmation
from blog_api.effects.notifications import notify_author
from blog_api.jobs.errors import AttemptFailed
from blog_api.jobs.outbox import DueJob
from blog_api.jobs.runner import Effect, run_job
from blog_api.models import JobKind
from blog_api.ops.metrics import count_job_attempt
from blog_api.tracing import publish_span

# A publish on a pooled connection the broker has closed (a restarted Redis) reconnects and
# sends again; a broker that stays away fails the batch fast, and the relay tries it later.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}


def attempt(task: Task, job_id: str, effect: Effect) -> str:
    """One attempt at job `job_id`, owned by this task run, counted by its outcome (a failed
    one too, before its AttemptFailed ends the task run as a failure)."""
    kind = kind_of_task(task.name)
    try:
        outcome = run_job(job_id, task.request.id or f"direct-{job_id}", effect)
    except AttemptFailed as failed:
        count_job_attempt(kind, failed.outcome)
        raise
    count_job_attempt(kind, outcome)
    return outcome


@shared_task(name="blog_api.send_post_notification", bind=True)
def send_post_notification(self: Task, job_id: str) -> str:
    """E-mail the author that their post is published."""
    return attempt(self, job_id, notify_author)


@shared_task(name="blog_api.record_post_created", bind=True)
def record_post_created(self: Task, job_id: str) -> str:
    """Append the v2 post's audit record to POST_AUDIT_LOG."""
    return attempt(self, job_id, audit_post_created)


@shared_task(name="blog_api.send_email_confirmation", bind=True)
def send_email_confirmation(self: Task, job_id: str) -> str:
    """E-mail a user the token that confirms their address."""
    return attempt(self, job_id, email_confirmation)


@shared_task(name="blog_api.fan_out_post", bind=True)
def fan_out_post(self: Task, job_id: str) -> str:
    """Write the post's deliveries to its author's subscribers, in batches with their jobs."""
    return attempt(self, job_id, fanout.expand)


@shared_task(name="blog_api.deliver_batch", bind=True)
def deliver_batch(self: Task, job_id: str) -> str:
    """Send one batch of a post's deliveries over one kept SMTP connection."""
    return attempt(self, job_id, fanout.deliver_batch)


TASKS: dict[JobKind, Any] = {
    JobKind.NOTIFY_AUTHOR: send_post_notification,
    JobKind.AUDIT_POST_CREATED: record_post_created,
    JobKind.CONFIRM_EMAIL: send_email_confirmation,
    JobKind.FAN_OUT: fan_out_post,
    JobKind.DELIVER_BATCH: deliver_batch,
}


@functools.cache
def kind_of_task(name: str) -> JobKind:
    """The job kind of the task named `name` (looked up at run time: resolving the shared tasks
    on import would make Celery create a default app)."""
    return next(kind for kind, task in TASKS.items() if task.name == name)


def publish_jobs(celery_app: Celery, jobs: Sequence[DueJob]) -> None:
    """Send one message per job (its id only), all on one producer connection."""
    with publish_span(len(jobs)), celery_app.producer_or_acquire() as producer:
        for job_id, kind, _created_at in jobs:
            celery_app.send_task(
                TASKS[kind].name,
                args=[job_id],
                producer=producer,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )

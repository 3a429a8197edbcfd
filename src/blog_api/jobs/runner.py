"""One attempt at a job: claim it, run its effect, record the outcome.

    claim_job ─▶ effect(job) ─▶ finish_job (done | skipped | dead)
                     ├─ transient failure ─▶ release_job (pending again, due after a backoff)
                     └─ JobDeferred ─▶ defer_job (due again later, no attempt spent)

A second delivery of the same job finds it claimed or finished and does nothing. A failed
attempt goes back to the outbox with its backoff in the row; the relay publishes it again when
it is due, so no message ever carries a countdown. Once a failed attempt is recorded (retrying
or dead), `run_job` raises `AttemptFailed`, so that the task run is a failure, not a success
returning "retrying". No Celery here: a task is one call of `run_job`
(blog_api.worker.tasks), and so is a test. With tracing on, each claimed attempt is a span
in the trace of the request that wrote the job (blog_api.tracing).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from flask import current_app

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.jobs.errors import AttemptFailed, JobDeferred, JobSkipped, PermanentJobError, code_of
from blog_api.logs import bind_job
from blog_api.models import Job, JobStatus
from blog_api.tracing import job_span

log = logging.getLogger(__name__)

# What a job does to the outside world (blog_api.effects): its outcome when it succeeds, or an
# exception (jobs/errors.py) that says why not.
Effect = Callable[[Job], JobStatus]
# The answer of an attempt that found nothing to do: the job is another attempt's, or finished.
DUPLICATE = "skipped-duplicate"
# The outcome of a failed attempt released for another one.
RETRYING = "retrying"


def run_job(job_id: str, worker_id: str, effect: Effect) -> str:
    """Claim job `job_id` for `worker_id`, run `effect`, record the outcome; returns the
    outcome (`done`, `skipped`, or `DUPLICATE`). A failed attempt raises `AttemptFailed`
    (`retrying` or `dead`) once its outcome is committed."""
    job = outbox.claim_job(job_id, worker_id)
    if job is None:
        log.info("Job %s: already claimed or finished, nothing to do", job_id)
        return DUPLICATE
    # Detached with its claimed state: an effect that commits (a fan-out) does not expire it,
    # so recording the outcome reads nothing again, even when the post was deleted meanwhile.
    db.session.expunge(job)
    bind_job(job.id, job.request_id)
    with job_span(job) as record_outcome:
        try:
            outcome = _attempt(job, effect)
        except AttemptFailed as failed:
            record_outcome(failed.outcome)
            raise
        record_outcome(outcome)
    return outcome


def _attempt(job: Job, effect: Effect) -> str:
    """Run `effect` on the claimed `job` and record the outcome; returns the outcome."""
    job_checkpoint.send(job, point=Checkpoint.AFTER_CLAIM)
    try:
        outcome = effect(job)
    except JobDeferred as deferred:
        log.info("Job %s (%s) continues later: %s", job.id, job.kind, deferred)
        outbox.defer_job(job, deferred.until, str(deferred))
        return "deferred"
    except JobSkipped as skipped:
        log.info("Job %s (%s) skipped: %s", job.id, job.kind, skipped)
        outbox.finish_job(job, JobStatus.SKIPPED, str(skipped), skipped.code)
        return JobStatus.SKIPPED.value
    except PermanentJobError as error:
        log.error("Job %s (%s) failed permanently: %s", job.id, job.kind, error)
        outbox.finish_job(job, JobStatus.DEAD, str(error), error.code)
        raise AttemptFailed(JobStatus.DEAD.value, str(error)) from error
    except Exception as error:  # transient, or unexpected: both get bounded retries
        raise _failed(job, error) from error
    outbox.finish_job(job, outcome)
    job_checkpoint.send(job, point=Checkpoint.AFTER_COMMIT_BEFORE_ACK)
    return outcome.value


def _failed(job: Job, error: Exception) -> AttemptFailed:
    """Record a failed attempt: released for a retry after its backoff, or dead when it was
    the last one; the `AttemptFailed` that says which."""
    message = str(error) or type(error).__name__
    code = code_of(error)
    if job.attempts >= job.max_attempts:
        log.error(
            "Job %s (%s) gave up after %d attempts: %s", job.id, job.kind, job.attempts, message
        )
        outbox.finish_job(job, JobStatus.DEAD, message, code)
        return AttemptFailed(JobStatus.DEAD.value, message)
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
    outbox.release_job(job, message, code, delay)
    return AttemptFailed(RETRYING, message)

"""How a job attempt can fail (or stop early on purpose), and the short code recorded with a
failure.

A failure is recorded twice on its job: `last_error`, the full text, which may name mail
servers, file paths and addresses (for admins and operators), and `error_code`, a short code,
which is all a post's author is shown (`GET /posts/<id>/jobs`). The codes are `ErrorCode`.
"""

from __future__ import annotations

from datetime import datetime

from blog_api.models import ErrorCode


class JobError(Exception):
    """A failed attempt: the message (`last_error`) and its code (`error_code`)."""

    def __init__(self, message: str, code: ErrorCode) -> None:
        super().__init__(message)
        self.code = code


class TransientJobError(JobError):
    """Worth another attempt later (connection error, timeout, SMTP 4xx)."""


class PermanentJobError(JobError):
    """Retrying cannot help (SMTP 5xx); the job is dead until an admin retries it."""


class JobSkipped(JobError):
    """The effect must not happen (e.g. the address is not confirmed); the job ends `skipped`
    with this reason as its `last_error`."""


class AttemptFailed(Exception):
    """An attempt failed and its outcome is recorded: the job was released for a retry
    (`retrying`, due after its backoff) or is `dead`. `run_job` raises it after the outbox
    committed, so that the task run ends as a failure (Flower shows it so) and not as a success
    returning "retrying"; the outbox row alone decides what comes next, and only the relay
    publishes the job again (no Celery retry: see `blog_api.worker.FlaskTask`)."""

    def __init__(self, outcome: str, reason: str) -> None:
        # Both in `args`: a prefork pool child pickles the exception back to its parent.
        super().__init__(outcome, reason)
        self.outcome = outcome
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.outcome}: {self.reason}"


def code_of(error: BaseException) -> ErrorCode:
    """The code of a failed attempt; `unknown` for an exception no effect foresaw."""
    return error.code if isinstance(error, JobError) else ErrorCode.UNKNOWN


class JobDeferred(Exception):
    """The effect stopped on purpose with work left, kept in rows of its own (a fan-out at its
    time budget, a batch whose deliveries wait for their retries): the job runs again at
    `until`, and this run does not count as an attempt."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(reason)
        self.until = until

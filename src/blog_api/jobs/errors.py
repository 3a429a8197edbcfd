"""How a job attempt can fail, or stop early on purpose."""

from __future__ import annotations

from datetime import datetime


class TransientJobError(Exception):
    """Worth another attempt later (connection error, timeout, SMTP 4xx)."""


class PermanentJobError(Exception):
    """Retrying cannot help (SMTP 5xx); the job is dead until an admin retries it."""


class JobSkipped(Exception):
    """The effect must not happen (e.g. the address is not confirmed); the job ends `skipped`
    with this reason as its `last_error`."""


class JobDeferred(Exception):
    """The effect stopped on purpose with work left, kept in rows of its own (a fan-out at its
    time budget, a batch whose deliveries wait for their retries): the job runs again at
    `until`, and this run does not count as an attempt."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(reason)
        self.until = until

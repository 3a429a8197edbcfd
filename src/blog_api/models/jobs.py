"""Jobs: the outbox. One row per side effect, written in the transaction of what causes it.

A job's subject is a post (its notification, audit record and fan-out to subscribers) or an
e-mail confirmation (the confirmation e-mail): exactly one of `post_id` and `confirmation_id` is
set. A post's fan-out is sent by one `deliver_batch` job per batch of its deliveries: `batch`
numbers them (0 for every other job).

The row, not the broker message, is the source of truth: a message only says "look at job X".
Life cycle: pending -> running -> done | skipped | dead (a failed attempt goes back to pending).
`available_at` is when the relay should (re)publish the job: a new job is due at once, a failed
attempt after its backoff, a published job again after JOB_REPUBLISH_AFTER (in case its message
was lost), and a running job when its lease runs out (its worker died).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime, utcnow


class JobKind(StrEnum):
    NOTIFY_AUTHOR = "notify_author"
    AUDIT_POST_CREATED = "audit_post_created"
    CONFIRM_EMAIL = "confirm_email"
    FAN_OUT = "fan_out"
    DELIVER_BATCH = "deliver_batch"


# The kinds of job a post can have; `(kind, post_id)` is unique, so a post has at most one each.
POST_JOB_KINDS = (JobKind.NOTIFY_AUTHOR, JobKind.AUDIT_POST_CREATED)


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    DEAD = "dead"


class ErrorCode(StrEnum):
    """Why a job's last attempt failed or was skipped (`error_code`, beside `last_error`)."""

    SMTP_TRANSIENT = "smtp_transient"  # the mail server answered 4xx: retried
    SMTP_PERMANENT = "smtp_permanent"  # the mail server answered 5xx: dead
    CONNECTION_FAILED = "connection_failed"  # no SMTP connection, or it broke: retried
    ADDRESS_UNSUPPORTED = "address_unsupported"  # an internationalised address (SMTPUTF8)
    AUDIT_LOG_UNWRITABLE = "audit_log_unwritable"  # POST_AUDIT_LOG could not be written
    NO_ADDRESS = "no_address"  # the author has no e-mail address: skipped
    ADDRESS_NOT_CONFIRMED = "address_not_confirmed"  # EMAIL_CONFIRMATION_REQUIRED: skipped
    ALREADY_CONFIRMED = "already_confirmed"  # a confirmation e-mail no longer needed
    ADDRESS_CONFIRMED_ELSEWHERE = "address_confirmed_elsewhere"  # another account confirmed it
    ADDRESS_CHANGED = "address_changed"  # the confirmation names an address no longer the user's
    CONFIRMATION_EXPIRED = "confirmation_expired"  # expired or superseded before it was sent
    INJECTED_FAILURE = "injected_failure"  # MAIL_FAILURE_RATE (the tutorial's exercise)
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # the worker was lost on every attempt
    UNKNOWN = "unknown"  # anything unforeseen (a bug, the database): see `last_error`


# Jobs the relay may have to publish; the others are finished.
ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
# Finished jobs that retention deletes; `dead` ones stay until an admin acts.
PRUNABLE_STATUSES = (JobStatus.DONE, JobStatus.SKIPPED)


def new_job_id() -> str:
    return str(uuid.uuid4())


def string_enum(enum: type[StrEnum], length: int) -> Enum:
    """A plain VARCHAR column read back as `enum` (no database enum type, no CHECK)."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
    )


def _in_statuses(statuses: tuple[JobStatus, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{status}'" for status in statuses))


class Job(Model):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("kind", "post_id", "batch"),
        CheckConstraint("(post_id IS NULL) <> (confirmation_id IS NULL)", name="one_subject"),
        # The relay's query (due jobs, earliest first) reads only active rows.
        Index(
            "ix_jobs_due",
            "available_at",
            sqlite_where=_in_statuses(ACTIVE_STATUSES),
            postgresql_where=_in_statuses(ACTIVE_STATUSES),
        ),
        # The admin's job list, newest first, page by page.
        Index("ix_jobs_created_at_id", "created_at", "id"),
        # Retention deletes finished jobs by age, oldest first.
        Index(
            "ix_jobs_prunable",
            "finished_at",
            sqlite_where=_in_statuses(PRUNABLE_STATUSES),
            postgresql_where=_in_statuses(PRUNABLE_STATUSES),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_job_id)
    kind: Mapped[JobKind] = mapped_column(string_enum(JobKind, 30))
    post_id: Mapped[int | None] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), index=True
    )
    confirmation_id: Mapped[int | None] = mapped_column(
        # One job per confirmation: a re-sent confirmation is a new confirmation.
        ForeignKey("email_confirmations.id", ondelete="CASCADE"),
        unique=True,
    )
    batch: Mapped[int] = mapped_column(default=0, server_default="0")
    status: Mapped[JobStatus] = mapped_column(string_enum(JobStatus, 10), default=JobStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    available_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A running job whose lease has expired is presumed lost (worker killed) and re-driven.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # The last failure's ErrorCode: what a post's author is shown
    # instead of `last_error`, whose text may name servers, paths and addresses.
    error_code: Mapped[str | None] = mapped_column(String(32))
    # X-Request-ID of the request that created the post: the worker's log lines for this job
    # carry it, so one grep follows a post from the API into the worker.
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The W3C trace context (`traceparent`, `tracestate`) of the span that created the job when
    # tracing is on: each attempt's span joins that request's trace (blog_api.tracing).
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

"""Jobs: the outbox. One row per side effect of a post, written in the post's transaction.

The row, not the broker message, is the source of truth: a message only says "look at job X".
Life cycle: pending -> running -> done | skipped | dead (a failed attempt goes back to pending).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime, utcnow

NOTIFY_AUTHOR = "notify_author"
AUDIT_POST_CREATED = "audit_post_created"
JOB_KINDS = (NOTIFY_AUTHOR, AUDIT_POST_CREATED)
JOB_STATUSES = ("pending", "running", "done", "skipped", "dead")


def new_job_id() -> str:
    return str(uuid.uuid4())


class Job(Model):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("kind", "post_id"),
        # The sweeper's query: pending or running jobs ordered by when they are due.
        Index("ix_jobs_status_available_at", "status", "available_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_job_id)
    kind: Mapped[str] = mapped_column(String(30))
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    # A pending job is (re)published by the sweeper once this time has passed.
    available_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A running job whose lease has expired is presumed lost (worker killed) and re-driven.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # X-Request-ID of the request that created the post: the worker's log lines for this job
    # carry it, so one grep follows a post from the API into the worker.
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

"""Jobs as operators see them: listing and the admin's retry of a dead job."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import Select, select, update

from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.models import Job
from blog_api.models.base import utcnow


def job_query(status: str | None = None) -> Select[Job]:
    statement = select(Job).order_by(Job.created_at.desc(), Job.id)
    if status:
        statement = statement.where(Job.status == status)
    return statement


def jobs_of_post(post_id: int) -> list[Job]:
    return list(db.session.scalars(select(Job).where(Job.post_id == post_id).order_by(Job.kind)))


def retry_job(job: Job) -> Job:
    """Give a dead job a fresh set of attempts and publish it; ConflictError if not dead."""
    now = utcnow()
    republish_after = timedelta(seconds=current_app.config["JOB_REPUBLISH_AFTER"])
    result = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == "dead")
        .values(
            status="pending",
            attempts=0,
            available_at=now + republish_after,
            lease_until=None,
            claimed_by=None,
            finished_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(f"Only dead jobs can be retried (this one is {job.status})")
    db.session.refresh(job)
    if not current_app.extensions["job_dispatcher"].publish(outbox.job_messages([job])):
        outbox.make_due_now([job])
    return job

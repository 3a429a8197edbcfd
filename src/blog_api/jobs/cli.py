"""`flask jobs list | retry | sweep | workers | forget-worker`: the operator's view of the outbox
and of the workers' heartbeats."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import delete, select

from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.models import JOB_STATUSES, Job, WorkerHeartbeat
from blog_api.models.base import utcnow
from blog_api.services import jobs

jobs_cli = AppGroup("jobs", help="Inspect and re-drive background jobs.")


@jobs_cli.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50)
def list_jobs(status: str | None, limit: int) -> None:
    """List jobs, newest first."""
    for job in db.session.scalars(jobs.job_query(status).limit(limit)):
        error = f"  {job.last_error}" if job.last_error else ""
        click.echo(
            f"{job.id}  {job.kind:<20} post={job.post_id:<6} {job.status:<8} "
            f"attempts={job.attempts}/{job.max_attempts}{error}"
        )


@jobs_cli.command("retry")
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Retry a dead job."""
    job = db.session.get(Job, job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    try:
        jobs.retry_job(job)
    except ConflictError as error:
        raise click.ClickException(str(error))
    click.echo(f"Job {job_id} is pending again")


@jobs_cli.command("sweep")
def sweep() -> None:
    """Publish every due job now (what the periodic sweeper does)."""
    click.echo(f"Published {outbox.sweep(current_app.extensions['celery'])} job(s)")


@jobs_cli.command("workers")
def list_workers() -> None:
    """List the workers that recorded a heartbeat, with how long ago they were last seen."""
    now = utcnow()
    for row in db.session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.worker)):
        age = max((now - row.last_seen).total_seconds(), 0.0)
        click.echo(
            f"{row.worker}  last seen {age:.0f}s ago  up since {row.started_at:%Y-%m-%d %H:%M:%S}Z"
        )


@jobs_cli.command("forget-worker")
@click.argument("worker")
def forget_worker(worker: str) -> None:
    """Drop a worker's heartbeat row now (a planned scale-down), instead of waiting for
    WORKER_HEARTBEAT_FORGET_AFTER. A worker still running writes its row again."""
    result = db.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker == worker))
    db.session.commit()
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise click.ClickException(f"no heartbeat recorded for {worker}")
    click.echo(f"Forgot worker {worker}")

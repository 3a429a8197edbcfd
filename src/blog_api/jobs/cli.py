"""`flask jobs list | retry | sweep`: the operator's view of the outbox."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.models import JOB_STATUSES, Job
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

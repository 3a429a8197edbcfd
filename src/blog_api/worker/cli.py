"""`flask jobs list | retry | sweep | prune | workers | forget-worker | deliveries`: the
operator's view of the outbox, of the workers' heartbeats and of a post's fan-out. Every state
change goes through `blog_api.jobs.outbox` (and `blog_api.jobs.deliveries`).

A command that can run long (`prune` over a large backlog, `deliveries` following a fan-out)
shows a progress bar when its output is a terminal (`prune --progress` forces it); otherwise it
prints only its summary lines, as scripts and logs expect."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from blog_api.database import BatchDone
from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.jobs import deliveries, heartbeats, outbox
from blog_api.jobs.relay import relay_due_jobs
from blog_api.models import Job, JobStatus, Post, WorkerHeartbeat
from blog_api.models.base import utcnow
from blog_api.services.idempotency import count_expired_keys, prune_expired_keys
from blog_api.worker.tasks import publish_jobs

jobs_cli = AppGroup("jobs", help="Inspect and re-drive background jobs.")


@jobs_cli.command("list")
@click.option("--status", type=click.Choice([status.value for status in JobStatus]), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50)
def list_jobs(status: str | None, limit: int) -> None:
    """List jobs, newest first."""
    query = outbox.job_query(JobStatus(status) if status else None)
    for job in db.session.scalars(query.limit(limit)):
        error = f"  {job.last_error}" if job.last_error else ""
        subject = (
            f"post={job.post_id:<6}"
            if job.post_id is not None
            else f"confirmation={job.confirmation_id}"
        )
        click.echo(
            f"{job.id}  {job.kind:<20} {subject} {job.status:<8} "
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
        outbox.retry_job(job)
    except ConflictError as error:
        raise click.ClickException(str(error))
    click.echo(f"Job {job_id} is pending again")


@jobs_cli.command("sweep")
def sweep() -> None:
    """Publish every due job now (one pass of the relay that runs in each worker)."""
    published = relay_due_jobs(partial(publish_jobs, current_app.extensions["celery"]))
    click.echo(f"Published {published} job(s)")


@jobs_cli.command("prune")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar per table (default: when the output is a terminal).",
)
def prune(progress: bool | None) -> None:
    """Delete finished jobs older than JOB_RETENTION_DAYS and expired idempotency keys now
    (the relay does it hourly)."""
    if progress is None:
        progress = sys.stdout.isatty()
    jobs = _deleted(
        "Finished jobs", outbox.count_prunable_jobs, outbox.prune_finished_jobs, progress
    )
    click.echo(f"Deleted {jobs} finished job(s)")
    click.echo(f"Deleted {deliveries.prune_finished_deliveries()} finished delivery(ies)")
    keys = _deleted("Idempotency keys", count_expired_keys, prune_expired_keys, progress)
    click.echo(f"Deleted {keys} expired idempotency key(s)")


def _deleted(
    label: str, count: Callable[[], int], delete: Callable[..., int], progress: bool
) -> int:
    """Run `delete` (which takes `on_batch`), with a progress bar over `count()` rows when
    `progress`; how many rows it deleted."""
    if not progress:
        return delete()
    with click.progressbar(length=count(), label=label, show_pos=True) as bar:
        on_batch: BatchDone = bar.update
        return delete(on_batch=on_batch)


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
    if not heartbeats.forget_worker(worker):
        raise click.ClickException(f"no heartbeat recorded for {worker}")
    click.echo(f"Forgot worker {worker}")


# How often `flask jobs deliveries --follow` reads the figures again, in seconds.
FOLLOW_EVERY = 1.0


@jobs_cli.command("deliveries")
@click.argument("post_id", type=click.IntRange(1))
@click.option(
    "--follow/--once",
    default=None,
    help="Follow the fan-out until every delivery is finished (default on a terminal).",
)
def show_deliveries(post_id: int, follow: bool | None) -> None:
    """Show a post's fan-out to its author's subscribers: deliveries by status; on a terminal,
    a progress bar that follows until every delivery is finished."""
    if db.session.get(Post, post_id) is None:
        raise click.ClickException(f"no post {post_id}")
    if follow is None:
        follow = sys.stdout.isatty()
    progress = deliveries.progress(post_id)
    if follow:
        progress = _follow(post_id, progress)
    click.echo(_figures(progress))


def _figures(progress: deliveries.Progress) -> str:
    counts = "  ".join(
        f"{name}={getattr(progress, name)}"
        for name in ("total", "sent", "pending", "failed", "dead", "skipped", "cancelled")
    )
    started = progress.started_at.isoformat() if progress.started_at else "-"
    finished = progress.finished_at.isoformat() if progress.finished_at else "-"
    return f"{counts}  started_at={started}  finished_at={finished}"


def _follow(post_id: int, progress: deliveries.Progress) -> deliveries.Progress:
    """Redraw a progress bar of finished deliveries until the fan-out has finished."""
    with click.progressbar(length=max(progress.total, 1), label=f"post {post_id}") as bar:
        shown = 0
        while True:
            bar.length = max(progress.total, 1)
            bar.update(progress.done - shown)
            shown = progress.done
            if progress.finished_at is not None:
                return progress
            db.session.commit()  # end the read transaction: the next read sees new commits
            time.sleep(FOLLOW_EVERY)
            progress = deliveries.progress(post_id)

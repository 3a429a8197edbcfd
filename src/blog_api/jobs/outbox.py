"""The job (outbox) state machine: every change of a job's state is a function of this module.

create (`insert_post_jobs`, `insert_confirmation_job`, `insert_batch_jobs`) -> due (`due_jobs`,
`push_back`: the relay publishes) -> `claim_job` -> `finish_job` (done | skipped | dead),
`release_job` (pending again, due after a backoff) or `defer_job` (pending again at a given time,
the attempt given back: the effect keeps its progress in rows of its own, as a fan-out does);
`_dead_letter_if_exhausted` when attempts run out, `retry_job` (an admin's second chance),
`prune_finished_jobs` (retention).

Every transition is one short transaction whose WHERE clause checks the current state, so two
workers (or a redelivered message) can never both own a job. Nothing here talks to a broker:
the relay (`blog_api.jobs.relay`) is the only publisher.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app, g, has_request_context
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from blog_api.database import BatchDone, commit_keeping_state, delete_in_batches
from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.models import ErrorCode, Job, JobKind, JobStatus
from blog_api.models.base import utcnow
from blog_api.models.jobs import ACTIVE_STATUSES, PRUNABLE_STATUSES, new_job_id
from blog_api.tracing import current_trace_context

log = logging.getLogger(__name__)

# A job still unclaimed after a publish is published again, waiting as long as the job is old,
# rounded down to R, 2R, 4R or 8R (R = JOB_REPUBLISH_AFTER): a job queued behind a backlog is
# not copied into the queue again and again.
REPUBLISH_BACKOFF_STEPS = 3
PRUNE_BATCH = 1000
JOBS = cast(Table, Job.__table__)
# What the relay publishes: (id, kind, created_at) of a due job.
DueJob = Row[str, JobKind, datetime]


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return rng.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))


def _job_rows(
    kinds: list[JobKind], request_id: str | None = None, **subject: int
) -> list[dict[str, Any]]:
    """The columns of new jobs about one subject (`post_id=` or `confirmation_id=`, and a
    fan-out's `batch=`), due at once."""
    max_attempts = current_app.config["MAIL_MAX_RETRIES"] + 1
    # The worker's log lines for these jobs carry the creating request's (validated) id.
    if request_id is None and has_request_context():
        request_id = g.get("request_id")
    # Their attempts' spans join the trace of the span writing them (the request's).
    trace_context = current_trace_context()
    now = utcnow()
    return [
        {
            "id": new_job_id(),
            "kind": kind,
            "post_id": None,
            "confirmation_id": None,
            "batch": 0,
            **subject,
            "status": JobStatus.PENDING,
            "attempts": 0,
            "max_attempts": max_attempts,
            "request_id": request_id,
            "trace_context": trace_context,
            "available_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for kind in kinds
    ]


def insert_post_jobs(post_id: int, api_version: str, *, fan_out: bool = False) -> list[str]:
    """Write the post's jobs, due at once, by one INSERT in the session's transaction (the
    caller commits them with the post); their ids. `fan_out`: the author has subscribers, so
    the post gets its fan-out job too. No objects enter the session: the unit of work's flush
    of new jobs cost more than the post's whole INSERT."""
    kinds = [JobKind.NOTIFY_AUTHOR]
    if fan_out:
        kinds.append(JobKind.FAN_OUT)
    if api_version == "v2":
        kinds.append(JobKind.AUDIT_POST_CREATED)
    rows = _job_rows(kinds, post_id=post_id)
    db.session.execute(insert(JOBS), rows)
    return [row["id"] for row in rows]


def insert_confirmation_job(confirmation_id: int) -> str:
    """Write the job that e-mails confirmation `confirmation_id`, due at once, in the session's
    transaction (the caller commits it with the confirmation); its id."""
    [row] = _job_rows([JobKind.CONFIRM_EMAIL], confirmation_id=confirmation_id)
    db.session.execute(insert(JOBS), [row])
    return str(row["id"])


def insert_batch_jobs(post_id: int, batches: list[int], request_id: str | None) -> None:
    """Write one `deliver_batch` job per batch number of the post's fan-out, due at once, in the
    session's transaction (the expansion commits them with the deliveries they send). A batch
    that has its job already keeps it. `request_id`: the post's, so its log lines follow it."""
    if not batches:
        return
    rows = [
        row
        for batch in batches
        for row in _job_rows(
            [JobKind.DELIVER_BATCH], request_id=request_id, post_id=post_id, batch=batch
        )
    ]
    db.session.execute(insert_ignoring_duplicates(JOBS), rows)


def insert_ignoring_duplicates(table: Table) -> Insert:
    """`INSERT ... ON CONFLICT DO NOTHING` for the session's database."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


# -- the relay's side -----------------------------------------------------------------------------


def _status_in(statuses: tuple[JobStatus, ...]) -> ColumnElement[bool]:
    """`status IN (...)` with the values written into the SQL, as in the partial indexes'
    predicates: the planner can then prove that the index covers the query, whatever plan
    (custom or generic) a prepared statement gets."""
    values = [status.value for status in statuses]
    return Job.status.in_(bindparam("statuses", values, expanding=True, literal_execute=True))


ACTIVE = _status_in(ACTIVE_STATUSES)
PRUNABLE = _status_in(PRUNABLE_STATUSES)


def due_statement(now: datetime, limit: int) -> Select[str, JobKind, datetime]:
    """The relay's query (index `ix_jobs_due`)."""
    return (
        select(Job.id, Job.kind, Job.created_at)
        .where(ACTIVE, Job.available_at <= now)
        .order_by(Job.available_at)
        .limit(limit)
    )


def due_jobs(now: datetime, limit: int) -> list[DueJob]:
    """(id, kind, created_at) of the jobs to publish now, earliest due first: pending jobs whose
    time has come and running jobs whose lease expired (a claim moves `available_at` to the end
    of the lease).

    On PostgreSQL the rows stay locked (FOR UPDATE SKIP LOCKED) until the caller commits, so
    concurrent relays split the work. SQLite has one relay, and its read transaction ends here:
    a read transaction that later writes fails at once if another connection wrote meanwhile.
    """
    statement = due_statement(now, limit)
    if db.engine.dialect.name == "postgresql":
        return list(db.session.execute(statement.with_for_update(skip_locked=True)))
    rows = list(db.session.execute(statement))
    db.session.commit()
    return rows


def push_back(jobs: list[DueJob], now: datetime) -> None:
    """After their messages were published: due again only if nobody claims them meanwhile
    (the message was lost), after R, 2R, 4R or 8R by the job's age. One UPDATE per step; the
    rows a worker claimed since `now` are left alone."""
    republish_after = timedelta(seconds=current_app.config["JOB_REPUBLISH_AFTER"])
    by_delay: dict[timedelta, list[str]] = defaultdict(list)
    for job_id, _kind, created_at in jobs:
        by_delay[_republish_delay(now - created_at, republish_after)].append(job_id)
    for delay, ids in by_delay.items():
        db.session.execute(
            update(Job)
            .where(Job.id.in_(ids), ACTIVE, Job.available_at <= now)
            .values(available_at=now + delay)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()


def _republish_delay(age: timedelta, republish_after: timedelta) -> timedelta:
    step = 0
    while step < REPUBLISH_BACKOFF_STEPS and age >= republish_after * 2 ** (step + 1):
        step += 1
    return republish_after * 2**step


def next_due_at() -> datetime | None:
    """When the earliest active job falls due (None: no active job)."""
    return db.session.scalar(select(func.min(Job.available_at)).where(ACTIVE))


# -- the worker's side ----------------------------------------------------------------------------


def claim_job(job_id: str, worker_id: str) -> Job | None:
    """Take the job for one attempt, or None when it is not ours to run.

    Claimable: pending, or running with an expired lease (its worker died). The lease outlives
    the task's hard time limit, so a live attempt is never taken over; the relay looks at the
    job again when the lease ends.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=current_app.config["JOB_LEASE_SECONDS"])
    # One statement: the UPDATE returns the claimed row (SQLite >= 3.35, PostgreSQL), and the
    # commit keeps it in memory, so the job is not read again.
    job = db.session.scalars(
        CLAIM,
        {"claim_id": job_id, "claim_now": now, "claim_lease": lease_until, "worker": worker_id},
    ).first()
    commit_keeping_state()
    if job is None:
        _dead_letter_if_exhausted(job_id)
    return job


def _claimable(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    return or_(
        Job.status == JobStatus.PENDING,
        (Job.status == JobStatus.RUNNING) & (Job.lease_until < now),
    )


def _bound(name: str, column: str) -> BindParameter[Any]:
    """A parameter named `name`, of the type of the jobs column `column`."""
    return bindparam(name, type_=JOBS.c[column].type)


# The statements a job's run sends, built once (building one cost about as much as running it).
CLAIM = (
    update(Job)
    .where(
        Job.id == bindparam("claim_id"),
        Job.attempts < Job.max_attempts,
        _claimable(_bound("claim_now", "lease_until")),
    )
    .values(
        status=JobStatus.RUNNING,
        attempts=Job.attempts + 1,
        lease_until=_bound("claim_lease", "lease_until"),
        available_at=_bound("claim_lease", "available_at"),
        claimed_by=bindparam("worker"),
        updated_at=_bound("claim_now", "updated_at"),
    )
    .returning(Job)
    .execution_options(synchronize_session=False, populate_existing=True)
)
FINISH = (
    update(Job)
    .where(Job.id == bindparam("finish_id"), Job.claimed_by == bindparam("owner"))
    .values(
        status=_bound("outcome", "status"),
        lease_until=None,
        last_error=_bound("error", "last_error"),
        error_code=_bound("code", "error_code"),
        updated_at=_bound("finish_now", "updated_at"),
        finished_at=_bound("finish_now", "finished_at"),
    )
    .execution_options(synchronize_session=False)
)


def _dead_letter_if_exhausted(job_id: str) -> None:
    """A job whose attempts are used up and whose last lease expired is dead (poison pill)."""
    now = utcnow()
    db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempts >= Job.max_attempts, _claimable(now))
        .values(
            status=JobStatus.DEAD,
            lease_until=None,
            updated_at=now,
            finished_at=now,
            last_error="attempts exhausted: the worker was lost on every attempt",
            error_code=ErrorCode.ATTEMPTS_EXHAUSTED,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def finish_job(
    job: Job, status: JobStatus, error: str | None = None, code: ErrorCode | None = None
) -> None:
    """Record the outcome of the attempt that owns `job` (done, skipped or dead), with the
    failure's text and code when it failed or was skipped for a reason.

    The effect has already happened, so a database blip must not lose this write: retry it
    in-process for a bounded time instead of re-running the effect.
    """
    deadline = time.monotonic() + current_app.config["JOB_LEASE_SECONDS"] / 2
    delay = 0.2
    # Plain values: after a rollback the ORM object's attributes are expired, and reading them
    # would need the very database that just failed.
    job_id, owner = job.id, job.claimed_by
    while True:
        try:
            now = utcnow()
            db.session.execute(
                FINISH,
                {
                    "finish_id": job_id,
                    "owner": owner,
                    "outcome": status,
                    "error": error,
                    "code": code,
                    "finish_now": now,
                },
            )
            db.session.commit()
            return
        except Exception:
            db.session.rollback()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Could not record job %s as %s; retrying", job_id, status, exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def release_job(job: Job, error: str, code: ErrorCode, retry_in: float) -> None:
    """Give a failed attempt back, with its text and code: pending again, due (for the
    relay) after `retry_in` seconds.

    The delay lives in the row, not in a broker message held by a worker: no ETA message can
    outlive the broker's visibility timeout or be stranded in a worker when the broker dies.
    """
    now = utcnow()
    _give_back(
        job,
        now,
        last_error=error,
        error_code=code,
        available_at=now + timedelta(seconds=retry_in),
    )


def defer_job(job: Job, until: datetime, reason: str) -> None:
    """Give a running job back to run again at `until`, without spending its attempt: the effect
    made progress that it keeps in rows of its own and stopped on purpose (a fan-out at its time
    budget, a batch whose deliveries wait for their retries). Attempts still count the runs that
    never came back (a worker killed every time ends the job `dead`)."""
    _give_back(job, utcnow(), attempts=Job.attempts - 1, last_error=reason, available_at=until)


def _give_back(job: Job, now: datetime, **values: Any) -> None:
    """Make the job pending again with `values`, if this attempt's claim still holds it (after
    a lost lease another worker's claim does, and it is left to that one); commits."""
    db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.claimed_by == job.claimed_by)
        .values(status=JobStatus.PENDING, lease_until=None, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


# -- operators ------------------------------------------------------------------------------------


def fresh_attempts(now: datetime) -> dict[str, Any]:
    """The values that make a finished job pending again with a fresh set of attempts, due
    `now` (an admin's retry, a fan-out's re-drive)."""
    return {
        "status": JobStatus.PENDING,
        "attempts": 0,
        "available_at": now,
        "lease_until": None,
        "claimed_by": None,
        "finished_at": None,
        "updated_at": now,
    }


def retry_job(job: Job) -> Job:
    """Give a dead job a fresh set of attempts, due at once; ConflictError if it is not dead."""
    result = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.DEAD)
        .values(**fresh_attempts(utcnow()))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(f"Only dead jobs can be retried (this one is {job.status})")
    db.session.refresh(job)
    return job


def prune_finished_jobs(
    older_than: timedelta | None = None, on_batch: BatchDone | None = None
) -> int:
    """Delete done and skipped jobs finished longer ago than JOB_RETENTION_DAYS, a batch per
    transaction (a large backlog never holds a long lock); dead jobs stay until an admin acts.
    Returns how many were deleted; `on_batch` hears of each batch."""
    batch = prune_batch_statement(_retention_cutoff(older_than))
    return delete_in_batches(
        delete(Job)
        .where(Job.id.in_(batch.scalar_subquery()))
        .execution_options(synchronize_session=False),
        PRUNE_BATCH,
        on_batch,
    )


def count_prunable_jobs(older_than: timedelta | None = None) -> int:
    """How many jobs `prune_finished_jobs` would delete now (a progress bar's length)."""
    cutoff = _retention_cutoff(older_than)
    statement = select(func.count()).select_from(Job).where(PRUNABLE, Job.finished_at < cutoff)
    return db.session.scalar(statement) or 0


def _retention_cutoff(older_than: timedelta | None) -> datetime:
    if older_than is None:
        older_than = timedelta(days=current_app.config["JOB_RETENTION_DAYS"])
    return utcnow() - older_than


def prune_batch_statement(cutoff: datetime) -> Select[str]:
    """One batch of the retention query (index `ix_jobs_prunable`)."""
    return (
        select(Job.id)
        .where(PRUNABLE, Job.finished_at < cutoff)
        .order_by(Job.finished_at)
        .limit(PRUNE_BATCH)
    )


def job_query(status: JobStatus | None = None) -> Select[Job]:
    # One direction for both keys, so that pages are index range scans (ix_jobs_created_at_id).
    statement = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if status:
        statement = statement.where(Job.status == status)
    return statement


def jobs_of_post(post_id: int) -> list[Job]:
    """The post's jobs, without the batches of its fan-out (one per DELIVERY_BATCH_SIZE
    subscribers: the post's deliveries show their progress)."""
    statement = (
        select(Job)
        .where(Job.post_id == post_id, Job.kind != JobKind.DELIVER_BATCH)
        .order_by(Job.kind)
    )
    return list(db.session.scalars(statement))

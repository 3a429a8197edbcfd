"""The deliveries' state machine: a post's fan-out to its author's subscribers, in rows.

expand (`expand_chunk`: a chunk of subscribers becomes deliveries, numbered in batches, with one
`deliver_batch` job per batch, in one transaction) -> `claim_batch` (one statement) -> each
message's outcome (`OutcomeRecorder`: sent, failed with its retry time, dead, each counting an
attempt; skipped and cancelled in bulk by `finish_many`) or back to waiting (`release`);
`next_due` says when a batch has work again. Around it: `cancel_for_unsubscribe`, `retry_dead`
(an admin's re-drive),
`prune_finished_deliveries` (retention, counts kept in the post's summary), `progress` and
`watched_counts` (what the API, the CLI and /metrics show).

Every transition checks the state it starts from in its WHERE clause. A claim writes its lease
into the rows it takes, and an outcome is recorded only while the row still holds that lease:
a worker that lost its rows (its lease ran out, or the post was deleted) learns it from the
recorded row count and stops. No Celery here, and no SMTP: `blog_api.effects.fanout` does the
sending.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import (
    Row,
    Table,
    bindparam,
    case,
    delete,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.models import (
    Delivery,
    DeliveryStatus,
    DeliverySummary,
    Job,
    JobKind,
    JobStatus,
    Post,
    Subscription,
    User,
)
from blog_api.models.base import UTCDateTime, utcnow
from blog_api.models.deliveries import (
    PRUNABLE_STATUSES,
    UNFINISHED_STATUSES,
    WAITING_STATUSES,
)

log = logging.getLogger(__name__)
DELIVERIES = cast(Table, Delivery.__table__)
SUMMARIES = cast(Table, DeliverySummary.__table__)
PRUNE_BATCH = 1000


def _values(statuses: Iterable[DeliveryStatus]) -> list[str]:
    return [status.value for status in statuses]


def _status_in(statuses: Iterable[DeliveryStatus]) -> Any:
    """`status IN (...)` with the values written into the SQL, so that the planner can match
    the partial indexes' predicates (as `outbox._status_in`)."""
    return Delivery.status.in_(
        bindparam("statuses", _values(statuses), expanding=True, literal_execute=True)
    )


# -- expansion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FanOut:
    """What the expansion needs to know about a post."""

    post_id: int
    author_id: int
    published_at: datetime
    request_id: str | None


# One chunk: the next subscribers after the largest one already expanded for the post, in
# subscriber order, numbered in batches after the post's last batch. The subscribers are those
# who followed the author when the post was published, with an address (a confirmed one when
# `confirmed_only`); the unique (post, subscriber) makes a second insert of one do nothing.
# `WHERE true`: SQLite reads `ON CONFLICT` after a bare FROM as a join constraint.
EXPAND_SQL = """
INSERT INTO deliveries (post_id, subscriber_id, batch, status, attempts, available_at, created_at)
SELECT :post_id, chunk.subscriber_id,
       :first_batch + (row_number() OVER (ORDER BY chunk.subscriber_id) - 1) / :batch_size,
       'pending', 0, :now, :now
FROM (
    SELECT s.subscriber_id
    FROM subscriptions AS s JOIN users AS u ON u.id = s.subscriber_id
    WHERE s.author_id = :author_id AND s.subscriber_id > :after
      AND s.created_at <= :published_at AND u.email IS NOT NULL {confirmed}
    ORDER BY s.subscriber_id
    LIMIT :chunk
) AS chunk
WHERE true
ON CONFLICT DO NOTHING
"""
CONFIRMED_ONLY = "AND u.email_confirmed_at IS NOT NULL"
_EXPAND = {
    confirmed_only: text(EXPAND_SQL.format(confirmed=CONFIRMED_ONLY if confirmed_only else ""))
    .bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("published_at", type_=UTCDateTime())
    )
    .execution_options(synchronize_session=False)
    for confirmed_only in (False, True)
}


def _subscribers_after(fan_out: FanOut, after: int, confirmed_only: bool) -> Any:
    """Whether any subscriber the post owes a delivery comes after subscriber `after`."""
    statement = (
        select(literal(1))
        .select_from(Subscription)
        .join(User, User.id == Subscription.subscriber_id)
        .where(
            Subscription.author_id == fan_out.author_id,
            Subscription.subscriber_id > after,
            Subscription.created_at <= fan_out.published_at,
            User.email.is_not(None),
        )
        .limit(1)
    )
    if confirmed_only:
        statement = statement.where(User.email_confirmed_at.is_not(None))
    return statement


def resume_point(post_id: int) -> tuple[int, int]:
    """Where the post's expansion goes on: after its largest subscriber id written so far, from
    the batch after its last one (both read from the unique index and the batch index)."""
    after, last_batch = db.session.execute(
        select(func.max(Delivery.subscriber_id), func.max(Delivery.batch)).where(
            Delivery.post_id == post_id
        )
    ).one()
    return after or 0, (-1 if last_batch is None else last_batch) + 1


def expand_chunk(fan_out: FanOut, chunk: int, batch_size: int, confirmed_only: bool) -> bool:
    """Write the next `chunk` deliveries of the post and the jobs of their batches, in one
    transaction; True once every subscriber the post owes a delivery has one.

    Resumable at any point: a chunk that did not commit left nothing, and the next one starts
    after the largest subscriber id already expanded, so a crash neither repeats nor skips
    anyone.
    """
    now = utcnow()
    session = db.session()
    session.execute(
        outbox.insert_ignoring_duplicates(SUMMARIES),
        [
            {
                "post_id": fan_out.post_id,
                "started_at": now,
                "pruned_sent": 0,
                "pruned_skipped": 0,
                "pruned_cancelled": 0,
            }
        ],
    )
    after, first_batch = resume_point(fan_out.post_id)
    result = session.execute(
        _EXPAND[confirmed_only],
        {
            "post_id": fan_out.post_id,
            "author_id": fan_out.author_id,
            "published_at": fan_out.published_at,
            "after": after,
            "chunk": chunk,
            "first_batch": first_batch,
            "batch_size": batch_size,
            "now": now,
        },
    )
    inserted = int(result.rowcount)  # type: ignore[attr-defined]
    if inserted:
        batches = session.scalars(
            select(Delivery.batch)
            .distinct()
            .where(Delivery.post_id == fan_out.post_id, Delivery.batch >= first_batch)
        ).all()
        outbox.insert_batch_jobs(fan_out.post_id, list(batches), fan_out.request_id)
    finished = False
    if inserted < chunk:
        # Fewer rows than asked: the last chunk, unless some conflicted (a concurrent run).
        newest = session.scalar(
            select(func.max(Delivery.subscriber_id)).where(Delivery.post_id == fan_out.post_id)
        )
        more = session.execute(_subscribers_after(fan_out, newest or 0, confirmed_only)).first()
        finished = more is None
    if finished:
        session.execute(
            update(DeliverySummary)
            .where(
                DeliverySummary.post_id == fan_out.post_id, DeliverySummary.expanded_at.is_(None)
            )
            .values(expanded_at=now)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    log.debug(
        "Post %s: %d deliveries written (from batch %d)", fan_out.post_id, inserted, first_batch
    )
    return finished


# -- a batch --------------------------------------------------------------------------------------


def _claimable(now: Any) -> Any:
    return or_(
        Delivery.status.in_(_values(WAITING_STATUSES)) & (Delivery.available_at <= now),
        (Delivery.status == DeliveryStatus.SENDING) & (Delivery.lease_until < now),
    )


def _in_batch() -> Any:
    return (Delivery.post_id == bindparam("of_post")) & (Delivery.batch == bindparam("of_batch"))


NOW = bindparam("now", type_=UTCDateTime())
LEASE = bindparam("lease", type_=UTCDateTime())
# One statement claims every delivery of the batch that is due: waiting ones whose time has
# come, and `sending` ones whose lease ran out (their worker died mid-batch). A claim spends no
# attempt: an attempt is counted when its outcome is recorded, so a batch whose worker is killed
# again and again loses no delivery to it (its job's attempts count the kills, and end it
# `dead` for an admin to look at).
CLAIM = (
    update(Delivery)
    .where(_in_batch(), _claimable(NOW))
    .values(status=DeliveryStatus.SENDING, lease_until=LEASE)
    .execution_options(synchronize_session=False)
)


@dataclass(frozen=True)
class Recipient:
    """A claimed delivery with its subscriber as they are now."""

    delivery_id: int
    attempts: int
    subscriber_id: int | None
    username: str | None
    email: str | None
    confirmed: bool
    subscribed: bool


def claim_batch(post_id: int, author_id: int, batch: int, lease_until: datetime) -> list[Recipient]:
    """Take every due delivery of the batch under `lease_until` (one statement) and read their
    subscribers' current address, confirmation and subscription to `author_id`; commits."""
    now = utcnow()
    params = {"of_post": post_id, "of_batch": batch, "now": now, "lease": lease_until}
    session = db.session()
    claimed = session.execute(CLAIM, params).rowcount  # type: ignore[attr-defined]
    session.commit()
    if not claimed:
        return []
    rows = session.execute(
        CLAIMED, {"of_post": post_id, "of_batch": batch, "lease": lease_until, "author": author_id}
    ).all()
    session.commit()
    return [Recipient(*row) for row in rows]


# The deliveries a claim took, with their subscribers as they are now.
CLAIMED = (
    select(
        Delivery.id,
        Delivery.attempts,
        Delivery.subscriber_id,
        User.username,
        User.email,
        User.email_confirmed_at.is_not(None),
        Subscription.subscriber_id.is_not(None),
    )
    .outerjoin(User, User.id == Delivery.subscriber_id)
    .outerjoin(
        Subscription,
        (Subscription.subscriber_id == Delivery.subscriber_id)
        & (Subscription.author_id == bindparam("author")),
    )
    .where(_in_batch(), Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until == LEASE)
    .order_by(Delivery.id)
)


def finish_many(
    delivery_ids: Sequence[int], status: DeliveryStatus, reason: str, lease_until: datetime
) -> None:
    """Record one outcome (skipped, cancelled) for several claimed deliveries at once."""
    if not delivery_ids:
        return
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.lease_until == lease_until)
        .values(status=status, lease_until=None, finished_at=utcnow(), last_error=reason)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def release(delivery_ids: Sequence[int], lease_until: datetime) -> None:
    """Give claimed deliveries that were not tried back: waiting again (`failed` if an earlier
    attempt failed, else `pending`), due as they were."""
    if not delivery_ids:
        return
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.lease_until == lease_until)
        .values(
            status=case(
                (Delivery.last_error.is_(None), DeliveryStatus.PENDING.value),
                else_=DeliveryStatus.FAILED.value,
            ),
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def next_due(post_id: int, batch: int) -> datetime | None:
    """When the batch has work again: its earliest waiting delivery's time, or the end of a
    lease still held on one (None: every delivery of the batch is finished)."""
    when = func.min(
        func.coalesce(
            # A `sending` row is due when its lease ends; a waiting one at its available_at.
            Delivery.lease_until,
            Delivery.available_at,
        )
    )
    return db.session.scalar(
        select(when).where(
            Delivery.post_id == post_id,
            Delivery.batch == batch,
            Delivery.status.in_(_values(UNFINISHED_STATUSES)),
        )
    )


def _processor(type_: Any, dialect: Any) -> Callable[[Any], Any]:
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    return process or (lambda value: value)


class OutcomeRecorder:
    """Records one message's outcome, committed, before the next message is sent, at the lowest
    cost the database allows: one UPDATE, compiled once for the engine's dialect, run in
    autocommit on a DBAPI connection of the recorder's own (a statement that is its own
    transaction: one round trip, no COMMIT after it); psycopg prepares it after its first runs.

    With `synchronous=False` on PostgreSQL the connection runs with `synchronous_commit = off`:
    the commit returns before the WAL is flushed. A worker that dies loses nothing (PostgreSQL
    has the commit); a PostgreSQL server crash may lose the last few hundred milliseconds of
    outcomes, whose messages are then sent again (same Message-ID).
    """

    STATEMENT = (
        update(Delivery)
        .where(Delivery.id == bindparam("delivery_id"), Delivery.lease_until == LEASE)
        .values(
            status=bindparam("outcome", type_=Delivery.status.type),
            attempts=Delivery.attempts + literal_column("1"),
            lease_until=null(),
            available_at=bindparam("due", type_=UTCDateTime()),
            finished_at=bindparam("finished", type_=UTCDateTime()),
            last_error=bindparam("error"),
        )
    )

    def __init__(self, engine: Engine, lease_until: datetime, synchronous: bool) -> None:
        dialect = engine.dialect
        compiled = self.STATEMENT.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or []) if compiled.positional else None
        # The values as SQLAlchemy would bind them (SQLite stores timestamps as text in its
        # own format: the lease must compare equal to the one the claim wrote).
        self.timestamp = _processor(UTCDateTime(), dialect)
        self.status = _processor(Delivery.status.type, dialect)
        self.lease = self.timestamp(lease_until)
        self.engine = engine
        self.postgresql = dialect.name == "postgresql"
        self.synchronous = synchronous
        self.connection: Any = None
        self.cursor: Any = None
        self.isolation_level: Any = None

    def _connect(self) -> None:
        self.connection = self.engine.raw_connection()
        driver = self.connection.driver_connection
        if self.postgresql:
            driver.autocommit = True
            if not self.synchronous:
                driver.execute("SET synchronous_commit = off")
        else:
            self.isolation_level = driver.isolation_level
            driver.isolation_level = None  # sqlite3's autocommit
        self.cursor = self.connection.cursor()

    def record(
        self,
        delivery_id: int,
        outcome: DeliveryStatus,
        *,
        due: datetime | None = None,
        error: str | None = None,
        retry_for: float = 0.0,
    ) -> bool:
        """Write the outcome (committed); False when the row is no longer this claim's (its
        lease was taken over, or the post was deleted). A database error is retried on a new
        connection for `retry_for` seconds (the message has been sent: only this write is
        repeated), then raised."""
        now = utcnow()
        values = {
            "outcome": self.status(outcome),
            "due": self.timestamp(due or now),
            "finished": None if outcome == DeliveryStatus.FAILED else self.timestamp(now),
            "error": error,
            "delivery_id": delivery_id,
            "lease": self.lease,
        }
        params: Any = [values[name] for name in self.order] if self.order else values
        deadline = time.monotonic() + retry_for
        delay = 0.2
        while True:
            try:
                if self.connection is None:
                    self._connect()
                self.cursor.execute(self.sql, params)
                return bool(self.cursor.rowcount == 1)
            except Exception:
                self._discard()
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("Could not record delivery %s; retrying", delivery_id, exc_info=True)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _discard(self) -> None:
        connection, self.connection, self.cursor = self.connection, None, None
        if connection is not None:
            connection.invalidate()

    def close(self) -> None:
        """Return the connection to the pool as it was lent (transactions, settings)."""
        if self.connection is None:
            return
        try:
            self.cursor.close()
            driver = self.connection.driver_connection
            if self.postgresql:
                if not self.synchronous:
                    driver.execute("RESET synchronous_commit")
                driver.autocommit = False
            else:
                driver.isolation_level = self.isolation_level
            self.connection.close()
        except Exception:
            self._discard()
        self.connection = self.cursor = None


# -- unsubscribes and operators -------------------------------------------------------------------


def cancel_for_unsubscribe(subscriber_id: int, author_id: int) -> list[int]:
    """Cancel the subscriber's waiting deliveries of the author's posts, in the caller's
    transaction; the ids of the posts whose delivery was cancelled. A delivery being sent
    (`sending`) is in a worker's hands already and is left to it."""
    now = utcnow()
    result = db.session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber_id,
            _status_in(WAITING_STATUSES),
            Delivery.post_id.in_(select(Post.id).where(Post.user_id == author_id)),
        )
        .values(
            status=DeliveryStatus.CANCELLED,
            finished_at=now,
            lease_until=None,
            last_error="unsubscribed",
        )
        .returning(Delivery.post_id)
        .execution_options(synchronize_session=False)
    )
    return sorted(int(post_id) for post_id in result.scalars())


@dataclass(frozen=True)
class Redriven:
    """What an admin's re-drive of a post's fan-out took up again."""

    deliveries: int
    batch_jobs: int


def retry_dead(post_id: int) -> Redriven:
    """Give the post's dead deliveries a fresh set of attempts, due at once, and make pending
    again the jobs of their batches and every dead batch job of the post (its worker was lost on
    every attempt: its deliveries still wait), writing a job anew where retention deleted it;
    commits."""
    now = utcnow()
    session = db.session()
    batches = session.scalars(
        update(Delivery)
        .where(Delivery.post_id == post_id, Delivery.status == DeliveryStatus.DEAD)
        .values(
            status=DeliveryStatus.PENDING,
            attempts=0,
            available_at=now,
            lease_until=None,
            finished_at=None,
            last_error=None,
        )
        .returning(Delivery.batch)
        .execution_options(synchronize_session=False)
    ).all()
    redriven = sorted(set(batches))
    batch_of_post = (Job.kind == JobKind.DELIVER_BATCH) & (Job.post_id == post_id)
    revived = session.execute(
        update(Job)
        .where(
            batch_of_post,
            or_(
                Job.status == JobStatus.DEAD,
                Job.batch.in_(redriven) & Job.status.in_([JobStatus.DONE, JobStatus.SKIPPED]),
            ),
        )
        .values(**outbox.fresh_attempts(now), last_error=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if redriven:
        request_id = session.scalar(
            select(Job.request_id).where(Job.post_id == post_id, Job.kind == JobKind.FAN_OUT)
        )
        outbox.insert_batch_jobs(post_id, redriven, request_id)
    session.commit()
    return Redriven(len(batches), int(revived))


def prune_finished_deliveries(older_than: timedelta | None = None) -> int:
    """Delete sent, skipped and cancelled deliveries finished longer ago than
    JOB_RETENTION_DAYS, a batch per transaction, adding their counts to their posts' summaries
    in the same transaction; dead ones stay until an admin acts. Returns how many went."""
    if older_than is None:
        older_than = timedelta(days=current_app.config["JOB_RETENTION_DAYS"])
    cutoff = utcnow() - older_than
    batch = (
        select(Delivery.id)
        .where(_status_in(PRUNABLE_STATUSES), Delivery.finished_at < cutoff)
        .order_by(Delivery.finished_at)
        .limit(PRUNE_BATCH)
    )
    deleted = 0
    session = db.session()
    while True:
        rows = session.execute(
            delete(Delivery)
            .where(Delivery.id.in_(batch.scalar_subquery()))
            .returning(Delivery.post_id, Delivery.status, Delivery.finished_at)
            .execution_options(synchronize_session=False)
        ).all()
        _add_to_summaries(rows)
        session.commit()
        deleted += len(rows)
        if len(rows) < PRUNE_BATCH:
            return deleted


def _add_to_summaries(rows: Sequence[Row[int, DeliveryStatus, datetime | None]]) -> None:
    """Add deleted deliveries (post, status, finish time) to their posts' summaries."""
    counts: Counter[tuple[int, str]] = Counter()
    latest: dict[int, datetime] = {}
    for post_id, status, finished_at in rows:
        counts[(post_id, status)] += 1
        assert finished_at is not None  # finished deliveries only
        if post_id not in latest or finished_at > latest[post_id]:
            latest[post_id] = finished_at
    for post_id, finished_at in latest.items():
        db.session.execute(
            update(DeliverySummary)
            .where(DeliverySummary.post_id == post_id)
            .values(
                pruned_sent=DeliverySummary.pruned_sent + counts[(post_id, DeliveryStatus.SENT)],
                pruned_skipped=DeliverySummary.pruned_skipped
                + counts[(post_id, DeliveryStatus.SKIPPED)],
                pruned_cancelled=DeliverySummary.pruned_cancelled
                + counts[(post_id, DeliveryStatus.CANCELLED)],
                pruned_finished_at=case(
                    (
                        DeliverySummary.pruned_finished_at > finished_at,
                        DeliverySummary.pruned_finished_at,
                    ),
                    else_=finished_at,
                ),
            )
            .execution_options(synchronize_session=False)
        )


# -- what is shown ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """A post's fan-out in figures (SPEC §4.7). `pending` counts deliveries waiting for their
    first attempt and those being sent; `failed` those waiting for a retry."""

    total: int
    sent: int
    pending: int
    failed: int
    dead: int
    skipped: int
    cancelled: int
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> int:
        return self.total - self.pending - self.failed


def progress(post_id: int) -> Progress:
    """The post's deliveries by status, those deleted by retention included."""
    by_status = dict(
        db.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.post_id == post_id)
            .group_by(Delivery.status)
        ).all()
    )
    summary = db.session.get(DeliverySummary, post_id)
    latest = db.session.scalar(
        select(func.max(Delivery.finished_at)).where(Delivery.post_id == post_id)
    )
    pruned = Counter[str]()
    if summary is not None:
        pruned.update(
            {
                DeliveryStatus.SENT: summary.pruned_sent,
                DeliveryStatus.SKIPPED: summary.pruned_skipped,
                DeliveryStatus.CANCELLED: summary.pruned_cancelled,
            }
        )
    count = Counter[str]({str(status): int(n) for status, n in by_status.items()}) + pruned
    pending = count[DeliveryStatus.PENDING] + count[DeliveryStatus.SENDING]
    finished_at = None
    unfinished = pending + count[DeliveryStatus.FAILED]
    if summary is not None and summary.expanded_at is not None and not unfinished:
        times = [t for t in (summary.expanded_at, latest, summary.pruned_finished_at) if t]
        finished_at = max(times)
    return Progress(
        total=sum(count.values()),
        sent=count[DeliveryStatus.SENT],
        pending=pending,
        failed=count[DeliveryStatus.FAILED],
        dead=count[DeliveryStatus.DEAD],
        skipped=count[DeliveryStatus.SKIPPED],
        cancelled=count[DeliveryStatus.CANCELLED],
        started_at=None if summary is None else summary.started_at,
        finished_at=finished_at,
    )


@dataclass(frozen=True)
class Watched:
    """Every post's unfinished and dead deliveries, for /metrics."""

    by_status: dict[str, int]
    oldest_waiting: datetime | None


def watched_counts() -> Watched:
    """Counts of the statuses the partial index `ix_deliveries_watched` holds (unfinished and
    dead: what needs a worker or an admin), and the creation time of the oldest waiting one.
    Finished deliveries are not counted here: that would read the whole table at every scrape;
    each post's figures are its deliveries endpoint's."""
    watched = (*UNFINISHED_STATUSES, DeliveryStatus.DEAD)
    rows = db.session.execute(
        select(Delivery.status, func.count()).where(_status_in(watched)).group_by(Delivery.status)
    ).all()
    oldest = db.session.scalar(
        select(func.min(Delivery.available_at)).where(_status_in(WAITING_STATUSES))
    )
    counts = {status.value: 0 for status in watched}
    counts.update({str(status): int(count) for status, count in rows})
    return Watched(counts, oldest)

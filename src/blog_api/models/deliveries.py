"""Deliveries: one fan-out e-mail, a post to one subscriber, and what became of it.

A post's fan-out job writes one row per subscriber with an address (a confirmed one when
EMAIL_CONFIRMATION_REQUIRED) and numbers the rows in batches of DELIVERY_BATCH_SIZE; one
`deliver_batch` job per batch sends them (blog_api.jobs.deliveries is the state machine).
Unique (post, subscriber): a post reaches a subscriber at most once, whatever is re-run.

Life cycle: pending -> sending (claimed by a worker, with a lease) -> sent | failed (a transient
failure: claimable again at `available_at`) | dead (permanent, or out of attempts) | skipped
(no address, not confirmed, or the subscriber was deleted) | cancelled (unsubscribed first).
A `sending` row whose lease ran out belonged to a worker that died: it is claimable again.

`DeliverySummary` is one row per fanned-out post: when the fan-out started, when it had written
every delivery, and the counts of finished deliveries that retention has since deleted, so the
post's figures stay whole.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime, utcnow
from blog_api.models.jobs import string_enum


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# Waiting for a worker (first attempt, or a retry once `available_at` has come).
WAITING_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# Not finished: waiting, or in a worker's hands.
UNFINISHED_STATUSES = (*WAITING_STATUSES, DeliveryStatus.SENDING)
# Finished deliveries that retention deletes (their counts move to the post's summary); dead
# ones stay until an admin re-drives them.
PRUNABLE_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.SKIPPED, DeliveryStatus.CANCELLED)


def _in_statuses(statuses: tuple[DeliveryStatus, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{status}'" for status in statuses))


# The metrics' counts and the backlog's age read only these rows (a small partial index).
WATCHED = _in_statuses((*UNFINISHED_STATUSES, DeliveryStatus.DEAD))
PRUNABLE = _in_statuses(PRUNABLE_STATUSES)


class Delivery(Model):
    __tablename__ = "deliveries"
    __table_args__ = (
        # The last guard against a second e-mail: the expansion inserts with ON CONFLICT DO
        # NOTHING, and resumes after the largest subscriber id of the post (this index).
        UniqueConstraint("post_id", "subscriber_id"),
        # A batch's claim, and the per-post counts.
        Index("ix_deliveries_post_id_batch_status", "post_id", "batch", "status"),
        Index(
            "ix_deliveries_watched",
            "status",
            "available_at",
            sqlite_where=WATCHED,
            postgresql_where=WATCHED,
        ),
        Index(
            "ix_deliveries_prunable",
            "finished_at",
            sqlite_where=PRUNABLE,
            postgresql_where=PRUNABLE,
        ),
    )

    # 64-bit: a hundred thousand rows per post add up (SQLite's INTEGER key is 64-bit already).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    # NULL once the subscriber's account is deleted: the delivery is then skipped, and the
    # post's counts keep it. Indexed for that, and for an unsubscribe's cancellation.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    batch: Mapped[int]
    status: Mapped[DeliveryStatus] = mapped_column(
        string_enum(DeliveryStatus, 10), default=DeliveryStatus.PENDING
    )
    # Attempts whose outcome was recorded (sent, failed, dead). A claim spends none: a worker
    # killed mid-batch costs its batch job an attempt, never its deliveries.
    attempts: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The claim's lease; also the claim's token: an outcome is recorded only by the claim
    # that still holds the row.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeliverySummary(Model):
    __tablename__ = "delivery_summaries"

    post_id: Mapped[int] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set when the expansion has written every delivery of the post.
    expanded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Finished deliveries deleted by retention, by status, and the latest of their finish times.
    pruned_sent: Mapped[int] = mapped_column(default=0)
    pruned_skipped: Mapped[int] = mapped_column(default=0)
    pruned_cancelled: Mapped[int] = mapped_column(default=0)
    pruned_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

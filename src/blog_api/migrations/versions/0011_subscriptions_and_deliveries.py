"""subscriptions and fan-out deliveries: subscriptions (with users.subscriber_count kept by
triggers), deliveries, delivery_summaries, and jobs numbered by batch

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 12:00:00.000000

`jobs` gains `batch` (0 for every job but a fan-out's `deliver_batch` jobs), and its unique
(kind, post_id) becomes (kind, post_id, batch): a post has one job of each kind per batch. SQLite
cannot change a table's UNIQUE constraint in place, so `jobs` is rebuilt (batch mode); nothing
refers to `jobs`, so the rebuild deletes nothing, but it loses the partial indexes, which are made
again.

`users.subscriber_count` is kept by triggers on `subscriptions`: an insert adds one to the
author's count, a delete (an unsubscribe, or a cascade from a deleted user) takes one off, on
both databases, so the count is right whatever deletes a subscription.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

from blog_api.migrations.partial_indexes import (
    create_job_indexes,
    create_partial_index,
    drop_job_indexes,
)

# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DELIVERIES_WATCHED = "status IN ('pending', 'failed', 'sending', 'dead')"
DELIVERIES_PRUNABLE = "status IN ('sent', 'skipped', 'cancelled')"

SQLITE_COUNT_TRIGGERS = [
    """
    CREATE TRIGGER subscriptions_count_insert AFTER INSERT ON subscriptions
    BEGIN
        UPDATE users SET subscriber_count = subscriber_count + 1 WHERE id = NEW.author_id;
    END
    """,
    """
    CREATE TRIGGER subscriptions_count_delete AFTER DELETE ON subscriptions
    BEGIN
        UPDATE users SET subscriber_count = subscriber_count - 1 WHERE id = OLD.author_id;
    END
    """,
]
# PostgreSQL counts per statement (transition tables): a bulk insert of 100,000 subscriptions
# updates the author's row once, where a row trigger would stack 100,000 versions of it in one
# transaction, each update walking the ones before (minutes instead of a second). SQLite updates
# in place and has row triggers only.
POSTGRESQL_COUNT_TRIGGERS = [
    """
    CREATE FUNCTION blog_api_count_subscribers() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE users SET subscriber_count = subscriber_count + added.n
            FROM (SELECT author_id, count(*) AS n FROM new_rows GROUP BY author_id) AS added
            WHERE users.id = added.author_id;
        ELSE
            UPDATE users SET subscriber_count = subscriber_count - removed.n
            FROM (SELECT author_id, count(*) AS n FROM old_rows GROUP BY author_id) AS removed
            WHERE users.id = removed.author_id;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER subscriptions_count_insert AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION blog_api_count_subscribers()
    """,
    """
    CREATE TRIGGER subscriptions_count_delete AFTER DELETE ON subscriptions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION blog_api_count_subscribers()
    """,
]


@contextmanager
def rebuilding_jobs() -> Iterator[None]:
    """Around a batch change of `jobs`: its partial indexes are dropped and made again (SQLite's
    rebuild would lose their WHERE), and the reflection of the tables `jobs` refers to may skip
    `users`' expression index, which it does not need."""
    drop_job_indexes()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
        yield
    create_job_indexes()


def upgrade():
    op.add_column(
        "users",
        sa.Column("subscriber_count", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("subscriber_id <> author_id", name=op.f("ck_subscriptions_not_self")),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_subscriptions_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["users.id"],
            name=op.f("fk_subscriptions_subscriber_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "author_id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        "ix_subscriptions_author_id_subscriber_id",
        "subscriptions",
        ["author_id", "subscriber_id"],
        unique=False,
    )
    dialect = op.get_bind().dialect.name
    for statement in (
        POSTGRESQL_COUNT_TRIGGERS if dialect == "postgresql" else SQLITE_COUNT_TRIGGERS
    ):
        op.execute(statement)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name=op.f("fk_deliveries_post_id_posts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["users.id"],
            name=op.f("fk_deliveries_subscriber_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("post_id", "subscriber_id", name=op.f("uq_deliveries_post_id")),
    )
    op.create_index(
        "ix_deliveries_post_id_batch_status", "deliveries", ["post_id", "batch", "status"]
    )
    op.create_index(op.f("ix_deliveries_subscriber_id"), "deliveries", ["subscriber_id"])
    create_partial_index(
        "ix_deliveries_watched", "deliveries", ["status", "available_at"], DELIVERIES_WATCHED
    )
    create_partial_index(
        "ix_deliveries_prunable", "deliveries", ["finished_at"], DELIVERIES_PRUNABLE
    )
    op.create_table(
        "delivery_summaries",
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expanded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pruned_sent", sa.Integer(), nullable=False),
        sa.Column("pruned_skipped", sa.Integer(), nullable=False),
        sa.Column("pruned_cancelled", sa.Integer(), nullable=False),
        sa.Column("pruned_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_delivery_summaries_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("post_id", name=op.f("pk_delivery_summaries")),
    )

    with rebuilding_jobs(), op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_constraint("uq_jobs_kind", type_="unique")
        batch_op.create_unique_constraint("uq_jobs_kind", ["kind", "post_id", "batch"])


def downgrade():
    # A post had one job of each kind before: its fan-out jobs go.
    op.execute("DELETE FROM jobs WHERE kind IN ('fan_out', 'deliver_batch')")
    with rebuilding_jobs(), op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_kind", type_="unique")
        batch_op.create_unique_constraint("uq_jobs_kind", ["kind", "post_id"])
        batch_op.drop_column("batch")

    op.drop_table("delivery_summaries")
    op.drop_index("ix_deliveries_prunable", table_name="deliveries")
    op.drop_index("ix_deliveries_watched", table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_subscriber_id"), table_name="deliveries")
    op.drop_index("ix_deliveries_post_id_batch_status", table_name="deliveries")
    op.drop_table("deliveries")

    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER subscriptions_count_insert ON subscriptions")
        op.execute("DROP TRIGGER subscriptions_count_delete ON subscriptions")
        op.execute("DROP FUNCTION blog_api_count_subscribers()")
    else:
        op.execute("DROP TRIGGER subscriptions_count_insert")
        op.execute("DROP TRIGGER subscriptions_count_delete")
    op.drop_index("ix_subscriptions_author_id_subscriber_id", table_name="subscriptions")
    op.drop_table("subscriptions")
    # In place on both databases (SQLite >= 3.35): a rebuild of `users` would cascade.
    op.execute("ALTER TABLE users DROP COLUMN subscriber_count")

"""e-mail confirmation: email_confirmations, users.email_confirmed_at, addresses unique among
confirmed accounts only, and jobs whose subject is a post or a confirmation

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:00:00.000000

Existing users are not confirmed: nobody ever proved owning those addresses. They keep working,
and `POST /api/v1/me/confirm-email` sends them a confirmation; with EMAIL_CONFIRMATION_REQUIRED
on, their post notifications are skipped until they confirm. The partial unique index on
confirmed addresses is empty at first, so it can always be created.

SQLite cannot drop a table's UNIQUE constraint or make a column nullable in place: `users` and
`jobs` are rebuilt (batch mode), which drops and re-creates each table. Dropping `users` while
foreign keys are enforced would delete every post and to-do by cascade, so foreign keys are
switched off for the rebuild (a pragma that only takes effect outside a transaction) and checked
afterwards. The rebuild also loses the expression and partial indexes, which are made again.
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
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CONFIRMED = "email_confirmed_at IS NOT NULL"
ONE_SUBJECT = "(post_id IS NULL) <> (confirmation_id IS NULL)"


@contextmanager
def foreign_keys_off_on_sqlite() -> Iterator[None]:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        yield
        return
    with op.get_context().autocommit_block():
        op.execute("PRAGMA foreign_keys=OFF")
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar() != 0:
        raise RuntimeError("could not switch SQLite foreign keys off for the table rebuild")
    try:
        with warnings.catch_warnings():
            # Reflecting `jobs` reflects the tables it refers to, `users` with its expression
            # index, which SQLAlchemy cannot read (and batch mode need not: see above).
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            yield
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise RuntimeError(f"foreign key violations after the rebuild: {violations}")
    finally:
        with op.get_context().autocommit_block():
            op.execute("PRAGMA foreign_keys=ON")


def upgrade():
    op.create_table(
        "email_confirmations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("nonce", sa.String(length=43), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_confirmations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_confirmations")),
    )
    op.create_index(
        op.f("ix_email_confirmations_user_id"), "email_confirmations", ["user_id"], unique=False
    )

    with foreign_keys_off_on_sqlite():
        op.drop_index("uq_users_username_lower", table_name="users")
        with op.batch_alter_table("users", schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("email_confirmed_at", sa.DateTime(timezone=True), nullable=True)
            )
            batch_op.drop_constraint("uq_users_email", type_="unique")
        op.create_index(
            "uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True
        )
        create_partial_index("uq_users_email_confirmed", "users", ["email"], CONFIRMED, unique=True)

        drop_job_indexes()
        with op.batch_alter_table("jobs", schema=None) as batch_op:
            batch_op.alter_column("post_id", existing_type=sa.Integer(), nullable=True)
            batch_op.add_column(sa.Column("confirmation_id", sa.Integer(), nullable=True))
            batch_op.create_foreign_key(
                batch_op.f("fk_jobs_confirmation_id_email_confirmations"),
                "email_confirmations",
                ["confirmation_id"],
                ["id"],
                ondelete="CASCADE",
            )
            batch_op.create_unique_constraint(
                batch_op.f("uq_jobs_confirmation_id"), ["confirmation_id"]
            )
            batch_op.create_check_constraint(batch_op.f("ck_jobs_one_subject"), ONE_SUBJECT)
        create_job_indexes()


def downgrade():
    # Confirmation jobs have no post: they go with their confirmations.
    op.execute("DELETE FROM jobs WHERE post_id IS NULL")
    with foreign_keys_off_on_sqlite():
        drop_job_indexes()
        with op.batch_alter_table("jobs", schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f("ck_jobs_one_subject"), type_="check")
            batch_op.drop_constraint(batch_op.f("uq_jobs_confirmation_id"), type_="unique")
            batch_op.drop_constraint(
                batch_op.f("fk_jobs_confirmation_id_email_confirmations"), type_="foreignkey"
            )
            batch_op.drop_column("confirmation_id")
            batch_op.alter_column("post_id", existing_type=sa.Integer(), nullable=False)
        create_job_indexes()

        # Fails when unconfirmed accounts share an address: resolve those before going back.
        op.drop_index("uq_users_email_confirmed", table_name="users")
        op.drop_index("uq_users_username_lower", table_name="users")
        with op.batch_alter_table("users", schema=None) as batch_op:
            batch_op.create_unique_constraint("uq_users_email", ["email"])
            batch_op.drop_column("email_confirmed_at")
        op.create_index(
            "uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True
        )

    op.drop_index(op.f("ix_email_confirmations_user_id"), table_name="email_confirmations")
    op.drop_table("email_confirmations")

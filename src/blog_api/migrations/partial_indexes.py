"""Partial indexes, the same on both databases, for the migrations that make them.

`jobs` has two (0004); each migration that rebuilds `jobs` (0008, 0011) drops them first and
makes them again after: SQLite's batch mode re-creates a table without a partial index's WHERE.

The migrations import these functions, so what they emit is history: never change it. A new
shape of an index belongs in a new migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

ACTIVE = "status IN ('pending', 'running')"
PRUNABLE = "status IN ('done', 'skipped')"
# Name, column, predicate: what the relay reads, what retention deletes.
JOB_INDEXES = (
    ("ix_jobs_due", "available_at", ACTIVE),
    ("ix_jobs_prunable", "finished_at", PRUNABLE),
)


def create_partial_index(
    name: str, table: str, columns: Sequence[str], where: str, *, unique: bool = False
) -> None:
    """`CREATE [UNIQUE] INDEX name ON table (columns) WHERE where` on either database."""
    predicate = sa.text(where)
    op.create_index(
        name,
        table,
        list(columns),
        unique=unique,
        sqlite_where=predicate,
        postgresql_where=predicate,
    )


def create_job_indexes() -> None:
    for name, column, where in JOB_INDEXES:
        create_partial_index(name, "jobs", [column], where)


def drop_job_indexes() -> None:
    for name, _, _ in reversed(JOB_INDEXES):
        op.drop_index(name, table_name="jobs")

"""jobs.trace_context: the W3C trace context of the request that created a job, so that the
job's spans join that request's trace when tracing is on

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-21 12:00:00.000000

Jobs written before this migration, and every job written while tracing is off, have none.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("jobs", sa.Column("trace_context", sa.JSON(none_as_null=True), nullable=True))


def downgrade():
    # SQLite (3.35+) drops a column in place: no table rebuild, so the partial indexes stay.
    op.drop_column("jobs", "trace_context")

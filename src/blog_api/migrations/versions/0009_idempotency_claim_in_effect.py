"""idempotency keys claimed in the effect's own transaction: no owner, no lock time

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 12:00:00.000000

A key used to be claimed in a transaction of its own, committed as in flight with the random
`owner` of the request holding it since `locked_at`, so that a retry could take over a key whose
request had died. Now the claim is the first statement of the effect's own transaction and never
commits without its answer: a dead request leaves nothing, and both columns have no use. Every
row is kept; one left in flight by the old claim (no answer) is free for the next claim.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("owner")
        batch_op.drop_column("locked_at")


def downgrade():
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True))
    # Every row has its answer, so the old code never looks at these two: any value will do.
    op.execute("UPDATE idempotency_keys SET owner = '', locked_at = expires_at")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("owner", existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column("locked_at", existing_type=sa.DateTime(timezone=True), nullable=False)

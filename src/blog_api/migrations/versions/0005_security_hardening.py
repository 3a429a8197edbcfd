"""users.security_stamp, the random value tokens carry instead of password_changed_at;
token families on the blocklist

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 14:30:00.000000

Every existing user gets a random stamp of their own. Tokens issued before this revision carry
the old timestamp claim and stop working: everyone signs in once more.

The column is added NOT NULL with an empty server default, which SQLite can do in place: making
it NOT NULL afterwards would rebuild the table there, and the rebuild would drop the
expression index that keeps usernames unique regardless of case. An empty stamp matches no
token (auth/tokens.py), and the application always writes a random one.

token_blocklist.family and family_revoked: a refresh token presented again after it was spent
revokes every token of its family (services/tokens.py). Rows written before carry no family.
"""

import secrets

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

users = sa.table("users", sa.column("id", sa.Integer), sa.column("security_stamp", sa.String))


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("security_stamp", sa.String(length=32), nullable=False, server_default="")
        )
    connection = op.get_bind()
    for (user_id,) in connection.execute(sa.select(users.c.id)).all():
        connection.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(security_stamp=secrets.token_urlsafe(24))
        )
    with op.batch_alter_table("token_blocklist", schema=None) as batch_op:
        batch_op.add_column(sa.Column("family", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("family_revoked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_token_blocklist_family"), ["family"], unique=False)


def downgrade():
    with op.batch_alter_table("token_blocklist", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_blocklist_family"))
        batch_op.drop_column("family_revoked")
        batch_op.drop_column("family")
    # Not in batch mode: SQLite (3.35+) drops a column in place, keeping the expression index.
    op.drop_column("users", "security_stamp")

"""keyset indexes: every listing's filter column followed by its sort keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 15:00:00.000000

A page of a listing is `WHERE <filter> = ? AND (<sort keys>) > (<cursor>) ORDER BY <sort keys>
LIMIT n`. With an index on the filter column followed by the sort keys, both databases read it
as one index range scan of n rows, however many rows the filter matches. SQLite appends the
rowid (the id) to every index, PostgreSQL does not: `(user_id, id)` replaces `(user_id)`,
and also serves the foreign-key lookups the single-column index served.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (table, old single-column index or None, new index, its columns)
INDEXES = [
    ("posts", "ix_posts_user_id", "ix_posts_user_id_id", ["user_id", "id"]),
    ("posts", "ix_posts_category", "ix_posts_category_id", ["category", "id"]),
    ("todos", "ix_todos_user_id", "ix_todos_user_id_id", ["user_id", "id"]),
    # The admin's job list: newest first.
    ("jobs", None, "ix_jobs_created_at_id", ["created_at", "id"]),
]


def upgrade():
    for table, old, new, columns in INDEXES:
        op.create_index(new, table, columns)
        if old:
            op.drop_index(old, table_name=table)


def downgrade():
    for table, old, new, columns in reversed(INDEXES):
        if old:
            op.create_index(old, table, columns[:1])
        op.drop_index(new, table_name=table)

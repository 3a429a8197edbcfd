"""idempotency keys store every header of their answer (`response_headers`), not only its
`location`: a post's 201 also carries a Link to its jobs, and a replay sends the same headers

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-21 12:00:00.000000

`response_headers` is the JSON list of the answer's [name, value] pairs. A stored answer keeps
its Location; a post's (`/api/v<n>/posts/<id>`) also gets the Link its request is answered with
now, so that a replay after the upgrade sends what the same request gets. A downgrade keeps the
Location of each answer.
"""

import json
import re

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

POST_LOCATION = re.compile(r"/api/v\d+/posts/\d+")

keys = sa.table(
    "idempotency_keys",
    sa.column("scope", sa.String),
    sa.column("key", sa.String),
    sa.column("location", sa.String),
    sa.column("response_headers", sa.Text),
)


def _headers_of(location: str) -> list[list[str]]:
    headers = [["Location", location]]
    if POST_LOCATION.fullmatch(location):
        headers.append(["Link", f'<{location}/jobs>; rel="jobs"'])
    return headers


def _location_in(headers: str) -> str | None:
    return next((value for name, value in json.loads(headers) if name == "Location"), None)


def _rewrite(source: sa.Column, target: str, convert) -> None:
    """Set `target` of every key whose `source` is set to `convert(source)`; the keys alive at
    any moment are those of the last IDEMPOTENCY_TTL (a day), few enough to go one by one."""
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(keys.c.scope, keys.c.key, source).where(source.is_not(None))
    )
    for scope, key, value in rows.all():
        connection.execute(
            keys.update()
            .where(keys.c.scope == scope, keys.c.key == key)
            .values({target: convert(value)})
        )


def upgrade():
    op.add_column("idempotency_keys", sa.Column("response_headers", sa.Text(), nullable=True))
    _rewrite(
        keys.c.location, "response_headers", lambda location: json.dumps(_headers_of(location))
    )
    # SQLite (3.35+, which the app needs for RETURNING) drops a column in place.
    op.drop_column("idempotency_keys", "location")


def downgrade():
    op.add_column("idempotency_keys", sa.Column("location", sa.String(length=255), nullable=True))
    _rewrite(keys.c.response_headers, "location", _location_in)
    op.drop_column("idempotency_keys", "response_headers")

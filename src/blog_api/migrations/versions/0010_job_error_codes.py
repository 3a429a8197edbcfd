"""jobs.error_code: the short reason of a job's last failure, which a post's author is shown
instead of the full text in last_error

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-20 12:00:00.000000

Jobs that failed before this migration get the code their `last_error` text shows (the texts the
worker wrote until now), `unknown` for any other text.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The start (or, for a skip of an unconfirmed address, a part) of each text the worker wrote.
CODES_BY_TEXT = [
    ("SMTP 5%", "smtp_permanent"),
    ("SMTP 4%", "smtp_transient"),
    ("SMTP connection failed%", "connection_failed"),
    ("Internationalised address not supported%", "address_unsupported"),
    ("audit log %", "audit_log_unwritable"),
    ("%is not confirmed (EMAIL_CONFIRMATION_REQUIRED)%", "address_not_confirmed"),
    ("the address is already confirmed%", "already_confirmed"),
    ("the user's address changed%", "address_changed"),
    ("the confirmation expired or was superseded%", "confirmation_expired"),
    ("injected failure (MAIL_FAILURE_RATE)%", "injected_failure"),
    ("attempts exhausted%", "attempts_exhausted"),
]


def upgrade():
    op.add_column("jobs", sa.Column("error_code", sa.String(length=32), nullable=True))
    last_error = sa.column("last_error", sa.Text)
    code = sa.case(
        *[(last_error.like(pattern), value) for pattern, value in CODES_BY_TEXT],
        else_="unknown",
    )
    jobs = sa.table("jobs", last_error, sa.column("error_code", sa.String))
    op.execute(jobs.update().where(last_error.is_not(None)).values(error_code=code))


def downgrade():
    # SQLite (3.35+, which the app needs for RETURNING) drops a column in place: no table
    # rebuild, so the partial indexes stay.
    op.drop_column("jobs", "error_code")

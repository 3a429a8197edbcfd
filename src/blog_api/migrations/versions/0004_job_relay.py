"""job relay: due and retention indexes, and the doorbell on PostgreSQL

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 12:00:00.000000

The relay replaces the dispatcher: each worker publishes the jobs that are due, found by one
query. `ix_jobs_due` (on `available_at`, only the pending and running rows) answers it without
reading the finished history, and `ix_jobs_prunable` (on `finished_at`, only the done and
skipped rows) serves retention; together they replace `ix_jobs_status_available_at`. On
PostgreSQL a trigger rings the relay (NOTIFY) when a job becomes pending, delivered at commit.
"""

from alembic import op

from blog_api.migrations.partial_indexes import create_job_indexes, drop_job_indexes

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# The relay LISTENs on this channel (blog_api/jobs/relay.py). A job that becomes pending (a new
# job, a failed attempt given back, an admin's retry) rings it from its own transaction, and
# PostgreSQL delivers the notification when that transaction commits, never before.
NOTIFY_FUNCTION = """
CREATE FUNCTION blog_api_jobs_ring() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('blog_api_jobs', '');
    RETURN NULL;
END
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER jobs_ring_relay AFTER INSERT OR UPDATE OF status ON jobs
FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION blog_api_jobs_ring()
"""


def upgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_available_at")
    create_job_indexes()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_ring_relay ON jobs")
        op.execute("DROP FUNCTION blog_api_jobs_ring()")
    drop_job_indexes()
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_status_available_at", ["status", "available_at"], unique=False
        )

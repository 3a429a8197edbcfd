"""The Postman collection, run by newman against a live stack: gunicorn, a Celery worker with
its relay, a private Redis and the SMTP sink. newman's own assertions (status codes, bodies,
negative cases, the post's jobs polled until `done`) must all pass; then the database and the
sink confirm the background effects happened exactly once.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Delivery, JobKind
from harness.launcher import free_port
from support import require_service
from support.integration_stack import (
    POSTGRESQL_ONLY,
    Stack,
    fan_out_message_id,
    job_views,
    message_id,
)
from support.live_server import (
    create_admin,
    node_tool,
    start_gunicorn,
    wait_until_serving,
    without_proxy,
)

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

HERE = Path(__file__).resolve().parent
COLLECTION = HERE / "blog_api.postman_collection.json"
ENVIRONMENT = HERE / "blog_api.postman_environment.json"
ADMIN_USERNAME = "postman_admin"
ADMIN_PASSWORD = "postman admin password"


def run_newman(stack: Stack, base_url: str) -> subprocess.CompletedProcess[str]:
    newman = node_tool("newman")
    if not newman.exists():
        require_service("newman", FileNotFoundError(f"{newman}; run `make test-tools`"))
    return stack.run(
        [
            str(newman),
            "run",
            str(COLLECTION),
            "--environment",
            str(ENVIRONMENT),
            "--env-var",
            f"baseUrl={base_url}",
            "--env-var",
            f"adminUsername={ADMIN_USERNAME}",
            "--env-var",
            f"adminPassword={ADMIN_PASSWORD}",
            "--reporters",
            "cli,junit",
            "--reporter-junit-export",
            str(stack.tmp_path / "newman-junit.xml"),
            "--color",
            "off",
            "--timeout-request",
            "15000",
        ],
        timeout=300,
        env=without_proxy(stack.env()),
    )


def test_postman_collection_passes_against_a_live_stack(live_stack: Stack) -> None:
    port = free_port()
    live_stack.start_redis(port)
    live_stack.configure(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    # Everything boots at once; the admin is created while the servers start.
    sink = live_stack.start_sink(wait=False)
    worker = live_stack.start_worker(wait=False)
    server = start_gunicorn(live_stack, wait=False)
    create_admin(live_stack, ADMIN_USERNAME, ADMIN_PASSWORD, "postman-admin@example.com")
    live_stack.wait_until_ready(sink, worker)
    wait_until_serving(server)

    result = run_newman(live_stack, server.url)

    assert result.returncode == 0, f"newman failed:\n{result.stdout[-30_000:]}\n{result.stderr}"
    assert "AssertionError" not in result.stdout

    jobs = job_views(live_stack.app())
    assert jobs, "the collection created no post"
    assert {job.status for job in jobs} == {"done"}, jobs
    notify = [job for job in jobs if job.kind == JobKind.NOTIFY_AUTHOR]
    audit = [job for job in jobs if job.kind == JobKind.AUDIT_POST_CREATED]
    assert Counter(r["message_id"] for r in live_stack.deliveries()) == Counter(
        message_id(job.id) for job in notify
    )
    assert Counter(r["event_id"] for r in live_stack.audit_records()) == Counter(
        job.id for job in audit
    )
    # The Subscriptions folder's post reached its one subscriber once.
    with live_stack.app().app_context():
        fan_out = db.session.scalars(select(Delivery.id)).all()
    assert len(fan_out) == 1
    assert Counter(r["message_id"] for r in live_stack.fan_out_deliveries()) == Counter(
        fan_out_message_id(delivery_id) for delivery_id in fan_out
    )
    # Registering (the collection's users and the admin) sent confirmation e-mails, each once.
    confirmations = Counter(r["message_id"] for r in live_stack.confirmation_deliveries())
    assert confirmations, "no confirmation e-mail was delivered"
    assert set(confirmations.values()) == {1}, confirmations

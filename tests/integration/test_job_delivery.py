"""Posts created through the API reach a real worker, a real broker and a real SMTP server:
exactly one e-mail per post, exactly one audit line per v2 post, every job `done`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Job, JobKind
from harness.launcher import wait_until
from support.integration_stack import (
    POSTGRESQL_ONLY,
    Stack,
    assert_each_effect_once,
    create_posts,
    wait_for_jobs,
)

pytestmark = pytest.mark.integration


def test_fifty_mixed_posts_send_one_email_each_and_one_audit_line_per_v2_post(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    # No re-publishing for a minute: every job must arrive through its first publish.
    stack.configure(JOB_REPUBLISH_AFTER=60)
    stack.up(concurrency=2)
    app = stack.app()
    client = app.test_client()
    author = make_account(email="author@example.com")

    posts = create_posts(client, author.headers, 50, versions=("v1", "v2"))
    assert_each_effect_once(stack, app, posts, within=90)
    deliveries = stack.deliveries()
    assert all(record["rcpt_tos"] == ["author@example.com"] for record in deliveries)
    for post in posts:
        response = client.get(f"/api/{post.version}/posts/{post.id}/jobs", headers=author.headers)
        assert response.status_code == 200
        kinds = {job["kind"]: job for job in response.json["jobs"]}
        expected = {JobKind.NOTIFY_AUTHOR} | (
            {JobKind.AUDIT_POST_CREATED} if post.version == "v2" else set()
        )
        assert set(kinds) == expected
        assert {job["status"] for job in kinds.values()} == {"done"}
    by_post = {record["post_id"]: record for record in stack.audit_records()}
    assert set(by_post) == {post.id for post in posts if post.version == "v2"}
    assert {record["author_id"] for record in by_post.values()} == {author.id}
    assert {record["category"] for record in by_post.values()} == {"integration"}


@pytest.mark.scenario("S31")
@POSTGRESQL_ONLY
def test_title_with_crlf_cannot_add_a_bcc_and_stays_one_audit_line(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    """PostgreSQL only: the e-mail and the audit line are under test, not the database."""
    title = "Hi\r\nBcc: x@example.com"
    stack.up()
    app = stack.app()
    client = app.test_client()
    author = make_account(email="victim@example.com")

    response = client.post(
        "/api/v2/posts", json={"title": title, "content": "payload"}, headers=author.headers
    )
    assert response.status_code == 201
    jobs = wait_for_jobs(stack, app, [response.json["id"]], timeout=30)

    assert {job.status for job in jobs} == {"done"}
    [mail] = stack.mail_records()
    assert mail["event"] == "delivered"
    assert mail["rcpt_tos"] == ["victim@example.com"]
    assert "bcc" not in mail["headers"]
    assert "\r" not in mail["subject"]
    assert "\n" not in mail["subject"]
    assert "Bcc: x@example.com" in mail["subject"]  # flattened into the subject text
    [line] = stack.audit_lines()
    assert "\r" not in line[:-1]
    assert "\n" not in line[:-1]
    assert json.loads(line)["title"] == title


@POSTGRESQL_ONLY
def test_posts_are_delivered_once_with_rabbitmq_as_the_broker(
    rabbitmq_stack: Stack, make_account: Callable[..., Any]
) -> None:
    """PostgreSQL only: the broker is under test; the Redis tests cover both databases."""
    stack = rabbitmq_stack
    stack.up()
    app = stack.app()
    author = make_account(email="rabbit@example.com")

    posts = create_posts(app.test_client(), author.headers, 6, versions=("v1", "v2"))
    assert_each_effect_once(stack, app, posts, within=60)


@POSTGRESQL_ONLY
def test_registering_sends_a_confirmation_email_through_a_worker_and_its_token_confirms(
    stack: Stack,
) -> None:
    """PostgreSQL only: the outbox path is the posts' one, covered on both databases above.
    With EMAIL_CONFIRMATION_REQUIRED, the author's post notification then goes out."""
    stack.configure(EMAIL_CONFIRMATION_REQUIRED="true")
    stack.up()
    app = stack.app()
    client = app.test_client()
    body = {"username": "carol", "password": "correct horse battery", "email": "carol@example.com"}
    assert client.post("/api/v1/users", json=body).status_code == 201

    [mail] = wait_until(stack.confirmation_deliveries, 30, "the confirmation e-mail")

    assert mail["rcpt_tos"] == ["carol@example.com"]
    match = re.search(r"Your confirmation token: (\S+)", mail["text"])
    assert match, mail["text"]
    assert client.post("/api/v1/users/confirm-email", json={"token": match[1]}).status_code == 200
    with app.app_context():
        [job] = db.session.scalars(select(Job).where(Job.kind == JobKind.CONFIRM_EMAIL)).all()
        assert (job.status, job.attempts, job.post_id) == ("done", 1, None)
        assert mail["message_id"] == f"<confirm-{job.id}@blog-api.local>"
    login = client.post("/api/v1/login", json={k: body[k] for k in ("username", "password")})
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}

    posts = create_posts(client, headers, 1, versions=("v1",))
    assert_each_effect_once(stack, app, posts, within=30)


@POSTGRESQL_ONLY
def test_a_failed_attempt_ends_its_task_as_a_failure_and_only_the_relay_sends_it_again(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    """PostgreSQL only: the worker's task outcome is under test. The first DATA gets 451: the
    attempt is recorded (pending, due after its backoff) and its task run is a failure, as
    Flower shows it (Celery's "raised expected" line, no traceback), not a success returning
    "retrying"; Celery retries nothing, the relay publishes the job again and it is done."""
    stack.configure(JOB_REPUBLISH_AFTER=60)  # the retry comes from the backoff alone
    [worker] = stack.up("--fail-codes", "451")
    app = stack.app()
    author = make_account(email="retried@example.com")

    posts = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    [job] = wait_for_jobs(stack, app, [post.id for post in posts], timeout=30)

    assert (job.status, job.attempts) == ("done", 2)
    assert_each_effect_once(stack, app, posts, attempts=2)
    runs = [line for line in worker.log().splitlines() if "send_post_notification[" in line]
    failed = [line for line in runs if " raised expected: AttemptFailed('retrying', " in line]
    assert len(failed) == 1, runs
    assert "SMTP 451" in failed[0]
    assert len([line for line in runs if " succeeded in " in line]) == 1, runs
    assert not [line for line in runs if "raised unexpected" in line or " retry: " in line]
    assert "Traceback" not in worker.log()

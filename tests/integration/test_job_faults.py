"""Faults around the jobs, with real processes: the broker down or frozen, SMTP refusing
(transient and permanent), a message delivered twice, a worker killed in the middle of a job."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from integration_stack import (
    POSTGRESQL_ONLY,
    Stack,
    assert_each_effect_once,
    create_posts,
    free_port,
    job_views,
    message_id,
    wait_for_jobs,
    wait_until,
)

pytestmark = pytest.mark.integration

RESPONSE_MARGIN = 1.0  # seconds on top of JOB_DISPATCH_TIMEOUT for the request itself


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def dispatch_warnings() -> Iterator[list[str]]:
    """The dispatcher's warnings (our app loggers do not propagate to caplog's root handler)."""
    recorder = Recorder()
    logger = logging.getLogger("blog_api.jobs.outbox")
    logger.addHandler(recorder)
    yield recorder.messages
    logger.removeHandler(recorder)


def test_posts_while_the_broker_is_stopped_return_201_fast_and_are_mailed_once_it_is_back(
    bare_stack: Stack, make_account: Callable[..., Any], dispatch_warnings: list[str]
) -> None:
    """Connections refused; the dispatcher's default cool-down after the first failure."""
    check_broker_outage(bare_stack, make_account, dispatch_warnings, "stopped", cooldown="5")


@POSTGRESQL_ONLY
def test_posts_while_the_broker_is_frozen_each_return_201_within_the_dispatch_timeout(
    bare_stack: Stack, make_account: Callable[..., Any], dispatch_warnings: list[str]
) -> None:
    """The broker accepts TCP but never answers (SIGSTOP), and no cool-down: every request
    waits for, and survives, the dispatch timeout. PostgreSQL only: the database plays no part
    beyond what the stopped-broker test covers on both."""
    check_broker_outage(bare_stack, make_account, dispatch_warnings, "frozen", cooldown="0")


def check_broker_outage(
    stack: Stack,
    make_account: Callable[..., Any],
    dispatch_warnings: list[str],
    outage: str,
    cooldown: str,
) -> None:
    port = free_port()
    stack.configure(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0", JOB_DISPATCH_COOLDOWN=cooldown)
    broker = stack.start_redis(port)
    stack.up(beat=True)
    app = stack.app()
    client = app.test_client()
    author = make_account(email="outage@example.com")
    # Before the outage the whole path works, so silence during it means something.
    before = create_posts(client, author.headers, 1)
    wait_for_jobs(stack, app, [post.id for post in before], timeout=30)
    assert len(stack.deliveries()) == 1

    if outage == "stopped":
        broker.stop(signal.SIGKILL)
    else:
        broker.send(signal.SIGSTOP)
    posts = create_posts(client, author.headers, 20, versions=("v1", "v2"))

    bound = app.config["JOB_DISPATCH_TIMEOUT"] + RESPONSE_MARGIN
    assert [post.status_code for post in posts] == [201] * 20
    assert max(post.elapsed for post in posts) <= bound, [round(p.elapsed, 3) for p in posts]
    if outage == "frozen":
        # Each request gave up at the dispatch timeout (not at a socket error).
        assert len(dispatch_warnings) == 20, dispatch_warnings
        assert all("(timed out)" in warning for warning in dispatch_warnings)
    else:
        # Refused at once; then quiet for the cool-down instead of trying on every request.
        quiet_periods = int(sum(post.elapsed for post in posts) // float(cooldown))
        assert 1 <= len(dispatch_warnings) <= 1 + quiet_periods, dispatch_warnings
        assert "Connection refused" in dispatch_warnings[0]
    # Keep the broker away for longer than a sweep + republish cycle: nothing may go out.
    time.sleep(app.config["JOB_REPUBLISH_AFTER"] + 2 * app.config["JOB_SWEEP_INTERVAL"])
    assert len(stack.deliveries()) == 1
    assert {(job.status, job.attempts) for job in job_views(app, [p.id for p in posts])} == {
        ("pending", 0)
    }

    if outage == "stopped":
        stack.start_redis(port)
    else:
        broker.send(signal.SIGCONT)
    wait_for_jobs(stack, app, [post.id for post in posts], timeout=90)

    assert_each_effect_once(stack, app, before + posts)


def test_smtp_451_twice_is_retried_and_the_third_attempt_delivers_once(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    stack.up("--fail-codes", "451,451")
    app = stack.app()
    author = make_account(email="retry@example.com")

    [post] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    [job] = wait_for_jobs(stack, app, [post.id], timeout=60)

    assert (job.status, job.attempts) == ("done", 3)
    records = stack.mail_records()
    assert [(r["event"], r.get("code")) for r in records] == [
        ("refused", 451),
        ("refused", 451),
        ("delivered", None),
    ]
    assert {r["message_id"] for r in records} == {message_id(job.id)}


@POSTGRESQL_ONLY
def test_smtp_451_on_every_attempt_retries_up_to_mail_max_retries_then_the_job_is_dead(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    """No sweeper: the retry chain alone must run all MAIL_MAX_RETRIES + 1 attempts.
    PostgreSQL only: retry bookkeeping is covered on both databases by the 451-twice test."""
    stack.configure(MAIL_RETRY_BACKOFF=0.2, MAIL_RETRY_BACKOFF_MAX=1)
    [worker] = stack.up("--always", "451")
    app = stack.app()
    author = make_account(email="greylisted@example.com")

    [post] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    [job] = wait_for_jobs(stack, app, [post.id], timeout=60)

    attempts = app.config["MAIL_MAX_RETRIES"] + 1
    assert (job.status, job.attempts) == ("dead", attempts)
    assert job.last_error is not None
    assert "451" in job.last_error
    records = stack.mail_records()
    assert [(r["event"], r["code"]) for r in records] == [("refused", 451)] * attempts
    assert "raised unexpected" not in worker.log()


def test_smtp_550_kills_the_job_without_retry_and_an_admin_retry_delivers_once(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    stack.up("--always", "550")
    app = stack.app()
    client = app.test_client()
    author = make_account(email="bounce@example.com")
    admin = make_account(role="admin", email="admin@example.com")

    [post] = create_posts(client, author.headers, 1, versions=("v1",))
    [job] = wait_for_jobs(stack, app, [post.id], timeout=30)

    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error is not None
    assert "550" in job.last_error
    assert [r["event"] for r in stack.mail_records()] == ["refused"]
    assert client.get(f"/api/v1/posts/{post.id}").status_code == 200
    dead = client.get("/api/v1/jobs?status=dead", headers=admin.headers)
    assert [item["id"] for item in dead.json["jobs"]] == [job.id]

    # The mailbox is fixed: the same port now accepts.
    [sink] = [service for service in stack.services if service.name == "smtp-sink"]
    sink.stop()
    stack.start_sink()
    response = client.post(f"/api/v1/jobs/{job.id}/retry", headers=admin.headers)
    assert response.status_code == 200
    assert (response.json["status"], response.json["attempts"]) == ("pending", 0)
    [job] = wait_for_jobs(stack, app, [post.id], timeout=30)

    assert (job.status, job.attempts, job.last_error) == ("done", 1, None)
    assert [(r["event"], r["message_id"]) for r in stack.mail_records()] == [
        ("refused", message_id(job.id)),
        ("delivered", message_id(job.id)),
    ]


def test_the_same_job_published_twice_to_two_workers_sends_one_email(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    stack.configure(JOB_REPUBLISH_AFTER=60)  # only the two messages below, no sweeper
    app = stack.app()
    author = make_account(email="twice@example.com")
    # No worker yet: both messages wait in the queue.
    [post] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    [job] = job_views(app, [post.id])
    app.extensions["celery"].send_task("blog_api.send_post_notification", args=[job.id])

    workers = stack.up(workers=2)
    [job] = wait_for_jobs(stack, app, [post.id], timeout=30)

    def outcomes() -> list[str]:
        logs = "".join(worker.log() for worker in workers)
        return [
            line.rsplit(": ", 1)[-1]
            for line in logs.splitlines()
            if "send_post_notification[" in line and " succeeded in " in line
        ]

    # Both copies were consumed; the second one found the job taken and did nothing.
    wait_until(lambda: len(outcomes()) == 2, 30, lambda: f"two task results, got {outcomes()}")
    assert sorted(outcomes()) == ["'done'", "'skipped-duplicate'"]
    assert (job.status, job.attempts) == ("done", 1)
    assert [r["message_id"] for r in stack.deliveries()] == [message_id(job.id)]


def test_a_worker_killed_before_smtp_data_is_recovered_by_the_sweeper_with_one_email(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    # Short lease (still ordered: mail timeout < soft < hard limit < lease < visibility).
    stack.configure(MAIL_TIMEOUT=1, TASK_SOFT_TIME_LIMIT=2, TASK_TIME_LIMIT=3, JOB_LEASE_SECONDS=4)
    stack.start_sink()
    doomed = stack.start_worker(pool="solo", FAULT_POINT="before_smtp_data")
    app = stack.app()
    author = make_account(email="crash@example.com")

    [post] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    wait_until(lambda: not doomed.alive, 30, "the worker to SIGKILL itself in the job")

    assert doomed.stop() == -signal.SIGKILL
    [job] = job_views(app, [post.id])
    assert (job.status, job.attempts) == ("running", 1)
    assert stack.mail_records() == []

    stack.start_worker(beat=True)
    # Within the visibility timeout (30 s): the sweeper recovers it, not Redis redelivery.
    [job] = wait_for_jobs(stack, app, [post.id], timeout=25)

    assert (job.status, job.attempts) == ("done", 2)
    assert [r["message_id"] for r in stack.mail_records()] == [message_id(job.id)]

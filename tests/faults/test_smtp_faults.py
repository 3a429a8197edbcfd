"""SMTP faults (reliability §6.2): transient 451 (R15), permanent 550 and an admin retry (R16),
the server unreachable past the retry budget, then re-driven (R17), a server that stalls (R18)
or drops the connection after DATA."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from oracle import Accepted, Figures, assert_clean, quiescence

from support.integration_stack import (
    POSTGRESQL_ONLY,
    Stack,
    create_posts,
    job_views,
    message_id,
)

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]


def one_post(stack: Stack, make_account: Callable[..., Any], name: str) -> tuple[Any, int]:
    app = stack.app()
    author = make_account(email=f"{name}@example.com")
    [post] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    return app, post.id


def settle(stack: Stack, app: Any, post_id: int, deadline: float = 60) -> Figures:
    return quiescence(
        stack, app, [Accepted(post_id, "v1")], deadline=deadline, broker=stack.broker_url
    )


@pytest.mark.scenario("R15")
def test_smtp_451_twice_is_retried_and_the_third_attempt_delivers_once(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R15: SMTP transient, 451 twice then accepted."""
    redis_stack.up("--fail-codes", "451,451")
    app, post_id = one_post(redis_stack, make_account, "r15")

    figures = settle(redis_stack, app, post_id)
    [job] = job_views(app, [post_id])
    records = redis_stack.mail_records()
    gaps = [round(b["time"] - a["time"], 2) for a, b in itertools.pairwise(records)]
    report_figures("R15", "sink answers 451 twice", figures, smtp_sessions=len(records), gaps=gaps)

    assert (job.status, job.attempts) == ("done", 3)
    assert [(r["event"], r.get("code")) for r in records] == [
        ("refused", 451),
        ("refused", 451),
        ("delivered", None),
    ]
    assert {r["message_id"] for r in records} == {message_id(job.id)}
    # Full jitter: each wait is at most the backoff cap (plus the task's own overhead).
    assert all(gap <= app.config["MAIL_RETRY_BACKOFF_MAX"] + 2 for gap in gaps), gaps
    assert_clean(figures)


@pytest.mark.scenario("R16")
def test_smtp_550_kills_the_job_without_retry_and_an_admin_retry_delivers_once(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R16: SMTP permanent 550; the post stays, the job is dead; an admin retry delivers."""
    stack = redis_stack
    stack.up("--always", "550")
    app, post_id = one_post(stack, make_account, "r16")
    client = app.test_client()
    admin = make_account(role="admin", email="admin@example.com")

    dead_figures = settle(stack, app, post_id)
    [job] = job_views(app, [post_id])
    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error is not None
    assert "550" in job.last_error
    assert [r["event"] for r in stack.mail_records()] == ["refused"]
    assert client.get(f"/api/v1/posts/{post_id}").status_code == 200
    dead = client.get("/api/v1/jobs?status=dead", headers=admin.headers)
    assert [item["id"] for item in dead.json["jobs"]] == [job.id]
    assert_clean(dead_figures, dead=1)

    # The mailbox is fixed: the same port now accepts.
    [sink] = [service for service in stack.services if service.name == "smtp-sink"]
    sink.stop()
    stack.start_sink()
    response = client.post(f"/api/v1/jobs/{job.id}/retry", headers=admin.headers)
    assert response.status_code == 200
    assert (response.json["status"], response.json["attempts"]) == ("pending", 0)
    figures = settle(stack, app, post_id)
    report_figures("R16", "sink answers 550; then admin retry", figures, dead_before=1)

    [job] = job_views(app, [post_id])
    assert (job.status, job.attempts, job.last_error) == ("done", 1, None)
    assert [(r["event"], r["message_id"]) for r in stack.mail_records()] == [
        ("refused", message_id(job.id)),
        ("delivered", message_id(job.id)),
    ]
    assert_clean(figures)


@pytest.mark.scenario("R17")
def test_smtp_unreachable_past_the_retry_budget_is_dead_then_re_driven_once(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R17: SMTP refuses connections (proxy reset) longer than the retry budget; admin re-drive."""
    stack = redis_stack
    stack.configure(MAIL_RETRY_BACKOFF=0.2, MAIL_RETRY_BACKOFF_MAX=1)
    stack.start_sink()
    proxy = stack.proxy(stack.mail_port)
    proxy.set_mode("reset")
    stack.configure(MAIL_PORT=proxy.port)
    worker = stack.start_worker()
    app, post_id = one_post(stack, make_account, "r17")
    admin = make_account(role="admin", email="admin17@example.com")

    dead_figures = settle(stack, app, post_id)
    [job] = job_views(app, [post_id])
    attempts = app.config["MAIL_MAX_RETRIES"] + 1
    assert (job.status, job.attempts) == ("dead", attempts)
    assert stack.mail_records() == []
    assert worker.log().count("gave up after") == 1
    assert_clean(dead_figures, dead=1)

    proxy.set_mode("pass")
    response = app.test_client().post(f"/api/v1/jobs/{job.id}/retry", headers=admin.headers)
    assert response.status_code == 200
    figures = settle(stack, app, post_id)
    report_figures(
        "R17", "proxy resets SMTP past 6 attempts; admin retry", figures, attempts=attempts
    )
    [job] = job_views(app, [post_id])
    assert (job.status, job.attempts) == ("done", 1)
    assert_clean(figures)


@pytest.mark.parametrize(
    ("script", "event"),
    [
        pytest.param("stall,stall", "stalled", marks=pytest.mark.scenario("R18")),
        pytest.param("drop,drop", "dropped", marks=pytest.mark.scenario("R18-drop")),
    ],
)
def test_smtp_that_stalls_or_drops_after_data_is_retried_until_one_delivery(
    redis_stack: Stack,
    make_account: Callable[..., Any],
    report_figures: Callable[..., None],
    script: str,
    event: str,
) -> None:
    """R18: SMTP stalls (takes the message, never answers) or drops the line after DATA."""
    stack = redis_stack
    [worker] = stack.up("--fail-codes", script)
    app, post_id = one_post(stack, make_account, "r18")

    figures = settle(stack, app, post_id)
    [job] = job_views(app, [post_id])
    records = stack.mail_records()
    report_figures(
        "R18" if event == "stalled" else "R18-drop",
        f"sink {event} twice, then accepts",
        figures,
        attempts=job.attempts,
    )
    assert [r["event"] for r in records] == [event, event, "delivered"]
    assert (job.status, job.attempts) == ("done", 3)
    assert "TimeLimitExceeded" not in worker.log()  # the mail timeout fired, not the hard limit
    assert_clean(figures)

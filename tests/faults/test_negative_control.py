"""R12 (reliability §6.2) and its negative control: Redis without persistence is SIGKILLed while
every job message still sits in it. The relay publishes all of them again; the tutorial's naive
publish (the rig's FAULT_DISPATCH=naive hook, workers without a relay) loses them, which proves
the oracle can fail."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from oracle import Accepted, Figures, assert_clean, queued_messages, quiescence

from harness.launcher import free_port
from support.integration_stack import POSTGRESQL_ONLY, Stack, create_posts

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

POSTS = 10
QUIESCENCE_DEADLINE = 40.0


def run_r12(stack: Stack, make_account: Callable[..., Any], naive: bool) -> Figures:
    port = free_port()
    broker_url = f"redis://127.0.0.1:{port}/0"
    stack.configure(CELERY_BROKER_URL=broker_url)
    if naive:
        stack.configure(FAULT_DISPATCH="naive")
    redis_server = stack.start_redis(port)  # --save "" --appendonly no: no persistence
    stack.start_sink()
    app = stack.app()
    author = make_account(email=f"r12-{'naive' if naive else 'outbox'}@example.com")

    # No worker yet: every job message waits in Redis (published by the naive hook at each
    # commit, or by one relay pass).
    created = create_posts(app.test_client(), author.headers, POSTS, versions=("v1", "v2"))
    if not naive:
        result = app.test_cli_runner().invoke(args=["jobs", "sweep"])
        assert result.exit_code == 0, result.output
    accepted = [Accepted(post.id, post.version) for post in created]
    v2_posts = sum(post.version == "v2" for post in accepted)
    assert queued_messages(broker_url, stack.queue) == POSTS + v2_posts

    redis_server.stop(signal.SIGKILL)
    stack.start_redis(port)
    assert queued_messages(broker_url, stack.queue) == 0  # the restart lost every message

    stack.start_worker(relay=not naive)
    return quiescence(stack, app, accepted, deadline=QUIESCENCE_DEADLINE, broker=broker_url)


@pytest.mark.scenario("R12")
def test_outbox_redelivers_every_job_once_after_redis_loses_its_queue(
    fault_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R12: Redis without persistence SIGKILLed with every job message in it."""
    figures = run_r12(fault_stack, make_account, False)
    report_figures("R12", f"no persistence, {POSTS} queued messages, kill -9 Redis", figures)

    # Every post's e-mail and every v2 post's audit line exactly once, nothing else.
    assert_clean(figures)
    counted = (figures.posts_accepted, figures.emails_delivered, figures.audit_written)
    assert counted == (POSTS, POSTS, POSTS // 2), figures
    assert figures.requests_rejected == 0, figures


@pytest.mark.scenario("R12-naive")
def test_naive_publish_loses_every_job_when_redis_loses_its_queue_and_the_oracle_says_so(
    fault_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R12, negative control: the same with the naive publish and no relay."""
    figures = run_r12(fault_stack, make_account, True)
    report_figures("R12-naive", "as R12, naive publish (negative control)", figures)

    assert figures.emails_lost == POSTS
    assert figures.audit_lost == POSTS // 2
    assert (figures.emails_delivered, figures.audit_written) == (0, 0)
    assert (figures.emails_duplicated, figures.audit_duplicated) == (0, 0)

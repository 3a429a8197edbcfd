"""R1 (reliability §6.2): the happy path over real HTTP, gunicorn with 2 workers."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from oracle import assert_clean, post_over_http, quiescence

from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = [pytest.mark.scenario("R1"), pytest.mark.integration, POSTGRESQL_ONLY]


def run_happy_path(stack: Stack, report_figures: Callable[..., None], posts: int) -> None:
    stack.up(concurrency=2)
    server = stack.start_gunicorn(workers=2)
    app = stack.app()
    author = server.account(f"r1_{uuid.uuid4().hex[:8]}")

    traffic = post_over_http(server, author, posts, "R1", versions=("v1", "v2"))

    assert traffic.statuses == {201: posts}
    figures = quiescence(
        stack, app, traffic.accepted, deadline=60 + posts / 2, broker=stack.broker_url
    )
    report_figures("R1", f"none: {posts} sequential posts, v1 and v2", figures, **traffic.summary())
    assert_clean(figures)
    assert figures.emails_delivered == posts
    assert figures.audit_written == posts // 2
    assert len({r["message_id"] for r in stack.deliveries()}) == posts


def test_every_post_over_http_is_mailed_once_and_every_v2_post_audited_once(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R1: happy path, 40 sequential posts over HTTP (200 in make test-faults-long)."""
    run_happy_path(redis_stack, report_figures, 40)


@pytest.mark.long
def test_200_posts_over_http_are_each_mailed_once_and_audited_once(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R1: happy path at the spec's N = 200."""
    run_happy_path(redis_stack, report_figures, 200)

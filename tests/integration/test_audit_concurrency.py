"""Several worker processes append to one audit file: whole lines, one per event, never two."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from integration_stack import (
    POSTGRESQL_ONLY,
    Stack,
    assert_each_effect_once,
    create_posts,
    wait_for_jobs,
)

pytestmark = pytest.mark.integration


@POSTGRESQL_ONLY
def test_two_workers_write_200_audit_records_as_200_whole_json_lines(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    """PostgreSQL only (the file, not the database, is under test; two processes writing
    SQLite are covered by the happy path's two pool processes)."""
    stack.configure(JOB_REPUBLISH_AFTER=60)  # the fast path only: no re-published copies
    workers = stack.up(workers=2)
    app = stack.app()
    author = make_account(email="auditor@example.com")

    posts = create_posts(app.test_client(), author.headers, 200, versions=("v2",))
    wait_for_jobs(stack, app, [post.id for post in posts], timeout=180)

    lines = stack.audit_lines()
    assert len(lines) == 200
    records = stack.audit_records()  # each line is exactly one JSON object
    assert len({record["event_id"] for record in records}) == 200
    assert {record["post_id"] for record in records} == {post.id for post in posts}
    assert_each_effect_once(stack, app, posts)
    # Both processes really did write to the file.
    for worker in workers:
        assert "Audit record written" in worker.log(), worker.name

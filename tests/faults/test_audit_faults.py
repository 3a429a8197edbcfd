"""The v2 audit file under concurrency and outage (reliability §6.2): two worker processes
appending (R25), the file's directory unwritable for a while (R26)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
from oracle import Accepted, assert_clean, quiescence

from harness.launcher import wait_until
from support.integration_stack import POSTGRESQL_ONLY, Stack, create_posts

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]


def run_concurrent_writers(
    stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None], n: int
) -> None:
    stack.configure(JOB_REPUBLISH_AFTER=60)  # the fast path only: no re-published copies
    workers = stack.up(workers=2)
    app = stack.app()
    author = make_account(email="auditor@example.com")

    posts = create_posts(app.test_client(), author.headers, n, versions=("v2",))
    accepted = [Accepted(post.id, post.version) for post in posts]
    figures = quiescence(stack, app, accepted, deadline=60 + n / 2, broker=stack.broker_url)
    report_figures("R25", f"2 worker processes, {n} v2 posts", figures)

    lines = stack.audit_lines()
    assert len(lines) == n
    records = stack.audit_records()  # each line is exactly one JSON object
    assert {record["post_id"] for record in records} == {post.id for post in posts}
    assert_clean(figures)
    # Both processes really did write to the file.
    for worker in workers:
        assert "Audit record written" in worker.log(), worker.name


@pytest.mark.scenario("R25")
def test_two_workers_write_200_audit_records_as_200_whole_json_lines(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R25: concurrent audit writers, 2 worker processes, 200 posts (500 with -m long)."""
    run_concurrent_writers(redis_stack, make_account, report_figures, 200)


@pytest.mark.scenario("R25")
@pytest.mark.long
def test_two_workers_write_500_audit_records_as_500_whole_json_lines(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R25: concurrent audit writers at the spec's 500 posts."""
    run_concurrent_writers(redis_stack, make_account, report_figures, 500)


@pytest.mark.scenario("R26")
def test_an_unwritable_audit_directory_delays_the_lines_and_loses_none(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R26: the audit log's directory is unusable for 3 s (a plain file stands in its place:
    chmod 000 does not stop root, which runs this suite in CI)."""
    stack = redis_stack
    directory = stack.tmp_path / "audit"
    audit_log = directory / "post_audit.log"
    stack.audit_log = audit_log
    # A retry budget (about 20 s) well beyond the outage.
    stack.configure(POST_AUDIT_LOG=audit_log, MAIL_MAX_RETRIES=20, MAIL_RETRY_BACKOFF=1)
    [worker] = stack.up()
    app = stack.app()
    author = make_account(email="r26@example.com")
    directory.write_text("not a directory\n")  # makedirs and open both fail now

    posts = create_posts(app.test_client(), author.headers, 6, versions=("v2",))
    assert {post.status_code for post in posts} == {201}
    wait_until(lambda: "audit log not writable" in worker.log(), 20, "an audit write to fail")
    time.sleep(3)
    assert not audit_log.exists()
    directory.unlink()  # the operator fixes the directory
    directory.mkdir()

    accepted = [Accepted(post.id, post.version) for post in posts]
    figures = quiescence(
        stack, app, accepted, deadline=60, broker=stack.broker_url, audit_log=audit_log
    )
    report_figures("R26", "audit directory unusable for 3 s, 6 v2 posts", figures)
    assert len(stack.audit_records()) == 6
    assert_clean(figures)
    assert "gave up" not in worker.log()
    shutil.rmtree(directory)

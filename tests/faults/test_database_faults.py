"""Database faults (reliability §6.2): a slow commit (R3), PostgreSQL cut by the fault proxy
before the claim and right after SMTP 250 (R22), and SQLite under concurrent writers (R27)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from oracle import Accepted, Figures, Traffic, assert_clean, post_over_http, quiescence

from harness.launcher import wait_until
from support.integration_stack import POSTGRESQL_ONLY, Stack, create_posts, job_views

pytestmark = pytest.mark.integration

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.mark.scenario("R3")
@POSTGRESQL_ONLY
def test_a_slow_commit_never_lets_the_worker_see_a_missing_post(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R3: commit race, a test hook sleeps 2 s between the flush and the commit."""
    stack = redis_stack
    [worker] = stack.up()
    server = stack.start_gunicorn(FAULT_POINT="between_flush_and_commit:2")
    app = stack.app()
    author = server.account(f"r3_{uuid.uuid4().hex[:8]}")

    traffic = post_over_http(server, author, 2, "R3")
    figures = quiescence(stack, app, traffic.accepted, deadline=30, broker=stack.broker_url)
    report_figures("R3", "2 s sleep between flush and commit", figures, **traffic.summary())

    assert traffic.statuses == {201: 2}
    assert min(traffic.latencies) >= 2.0  # the hook really held the transaction open
    jobs = job_views(app, [post.post_id for post in traffic.accepted])
    # A worker that ran before the commit would have found no post and "skipped" the job.
    assert {(job.status, job.attempts) for job in jobs} == {("done", 1)}
    assert "'skipped'" not in worker.log()
    assert_clean(figures)


def done_at_the_first_attempt(stack: Stack, app: Flask, post_id: int) -> Figures:
    """Once PostgreSQL is back, the oracle's figures for the v1 post, whose job is done at its
    first attempt: the outage cost no attempt."""
    figures = quiescence(
        stack, app, [Accepted(post_id, "v1")], deadline=60, broker=stack.broker_url
    )
    [job] = job_views(app, [post_id])
    assert (job.status, job.attempts) == ("done", 1)
    return figures


def proxied(database_url: str, port: int) -> str:
    assert ":5432/" in database_url, database_url
    return database_url.replace(":5432/", f":{port}/")


@pytest.mark.scenario("R22a")
@POSTGRESQL_ONLY
def test_postgresql_cut_before_the_claim_delays_the_job_and_it_is_mailed_once(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R22 (a): the worker's PostgreSQL is cut (proxy reset) before the claim, for 5 s."""
    stack = redis_stack
    stack.start_sink()
    proxy = stack.proxy(5432)
    worker = stack.start_worker(DATABASE_URL=proxied(stack.database_url, proxy.port))
    app = stack.app()
    author = make_account(email="r22a@example.com")

    proxy.set_mode("reset")
    [created] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    stack.wait_for_log(worker, "OperationalError", 20)
    time.sleep(5)  # the outage lasts; nothing can be claimed meanwhile
    assert stack.mail_records() == []
    proxy.set_mode("pass")

    figures = done_at_the_first_attempt(stack, app, created.id)
    report_figures("R22a", "proxy resets PostgreSQL for 5 s before the claim", figures)
    assert_clean(figures)


@pytest.mark.scenario("R22b")
@POSTGRESQL_ONLY
def test_postgresql_cut_right_after_smtp_250_retries_only_the_done_write(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R22 (b): PostgreSQL cut right after SMTP 250 (a 2 s hook holds the task there)."""
    stack = redis_stack
    stack.start_sink()
    proxy = stack.proxy(5432)
    worker = stack.start_worker(
        DATABASE_URL=proxied(stack.database_url, proxy.port),
        FAULT_POINT="after_smtp_250_before_commit:2",
    )
    app = stack.app()
    author = make_account(email="r22b@example.com")

    [created] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    wait_until(stack.deliveries, 30, "the SMTP 250")
    proxy.set_mode("reset")
    stack.wait_for_log(worker, "Could not record job", 20)
    proxy.set_mode("pass")

    figures = done_at_the_first_attempt(stack, app, created.id)
    report_figures("R22b", "proxy resets PostgreSQL right after SMTP 250", figures)
    assert_clean(figures)


def run_sqlite_writers(
    stack: Stack,
    report_figures: Callable[..., None],
    writers: int,
    seconds: float,
    think: float = 0.0,
) -> None:
    """`writers` threads post over HTTP for `seconds`, each pausing `think` seconds between
    posts (pacing of the generator: the worker must be able to drain what it produces)."""
    stack.up(concurrency=2)
    server = stack.start_gunicorn(workers=2)
    app = stack.app()
    accounts = [server.account(f"r27_{n}_{uuid.uuid4().hex[:6]}") for n in range(writers)]
    traffic = Traffic()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def write(headers: dict[str, str]) -> None:
        while time.monotonic() < stop_at:
            mine = post_over_http(server, headers, 2, "R27")
            time.sleep(think)
            with lock:
                traffic.accepted += mine.accepted
                traffic.rejected += mine.rejected
                traffic.latencies += mine.latencies
                traffic.statuses.update(mine.statuses)

    threads = [threading.Thread(target=write, args=(headers,)) for headers in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    figures = quiescence(
        stack,
        app,
        traffic.accepted,
        deadline=60 + len(traffic.accepted) / 5,
        broker=stack.broker_url,
        rejected=traffic.rejected,
    )
    logs = stack.all_logs()
    report_figures(
        "R27",
        f"SQLite WAL, {writers} concurrent writers for {seconds:g} s"
        + (f", {think:g} s between pairs of posts" if think else ""),
        figures,
        locked_errors=logs.count("database is locked"),
        **traffic.summary(),
    )
    assert traffic.statuses == {201: len(traffic.accepted)}
    assert "database is locked" not in logs
    assert_clean(figures)


@pytest.mark.scenario("R27")
@SQLITE_ONLY
def test_sqlite_with_concurrent_writers_has_no_locked_errors_and_loses_nothing(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R27: SQLite default mode, gunicorn 2 workers + celery with its relay, 6 writers for 6 s."""
    run_sqlite_writers(redis_stack, report_figures, writers=6, seconds=6)


@pytest.mark.scenario("R27")
@pytest.mark.long
@SQLITE_ONLY
def test_sqlite_with_20_concurrent_writers_for_60s_has_no_locked_errors(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R27: SQLite default mode at the spec's 20 writers for 60 s (each pauses 1 s after every
    pair of posts, so that celery -c 2 on this machine can drain them)."""
    run_sqlite_writers(redis_stack, report_figures, writers=20, seconds=60, think=1.0)

"""Worker crashes (reliability §6.2) at each named crash point and by signal: SIGKILL before
SMTP DATA (R6), a pool child killed mid-task (R7), a poison pill (R8), the residual window
after SMTP 250 (R9), after the commit before the ack (R10), warm shutdown (R14), after the audit
write (R24), and every task run twice (R28).

A worker that SIGKILLs itself runs with `-P solo` (the whole worker dies, as a machine crash);
the poison pill runs in a prefork child, whose parent survives and replaces it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oracle import Accepted, Figures, assert_clean, quiescence

from harness.launcher import Service, wait_until
from support.integration_stack import POSTGRESQL_ONLY, Stack, create_posts, job_views, message_id

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

# A short lease, still ordered: mail timeout < soft < hard limit < lease < visibility timeout.
SHORT_LEASE = {
    "MAIL_TIMEOUT": "1",
    "TASK_SOFT_TIME_LIMIT": "2",
    "TASK_TIME_LIMIT": "3",
    "JOB_LEASE_SECONDS": "4",
}
TASK_FOR_KIND = {
    "notify_author": "blog_api.send_post_notification",
    "audit_post_created": "blog_api.record_post_created",
}


def settle(
    stack: Stack,
    app: Any,
    accepted: list[Accepted],
    deadline: float = 60,
    crashed: bool = False,
    **options: Any,
) -> Figures:
    """Quiescence of the jobs and, unless a worker was killed (`crashed`), of the broker: a
    killed worker's message stays unacknowledged in Redis until the visibility timeout brings
    it back (the long variants wait for that), and its redelivery finds the job finished."""
    return quiescence(
        stack,
        app,
        accepted,
        deadline=deadline,
        broker=None if crashed else stack.broker_url,
        **options,
    )


def crash_once(
    stack: Stack, make_account: Callable[..., Any], point: str, version: str = "v1"
) -> tuple[Any, Accepted, Service]:
    """One post; a solo worker with FAULT_POINT=`point` dies at it; returns (app, post, corpse)."""
    stack.configure(**SHORT_LEASE)
    stack.start_sink()
    doomed = stack.start_worker(pool="solo", FAULT_POINT=point)
    app = stack.app()
    author = make_account(email=f"{point}@example.com")
    [post] = create_posts(app.test_client(), author.headers, 1, versions=(version,))
    wait_until(lambda: not doomed.alive, 30, f"the worker to SIGKILL itself at {point}")
    assert doomed.stop() == -signal.SIGKILL
    return app, Accepted(post.id, version), doomed


@pytest.mark.scenario("R6")
def test_a_worker_killed_before_smtp_data_is_recovered_by_the_relay_with_one_email(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R6: whole worker SIGKILL mid-task (FAULT_POINT=before_smtp_data); the relay recovers."""
    stack = redis_stack
    app, post, _ = crash_once(stack, make_account, "before_smtp_data")
    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("running", 1)
    assert stack.mail_records() == []

    restarted = time.monotonic()
    stack.start_worker()
    # Within the visibility timeout (30 s): the relay recovers it, not Redis redelivery.
    figures = settle(stack, app, [post], deadline=25, crashed=True)
    recovery = round(time.monotonic() - restarted, 1)
    report_figures("R6", "FAULT_POINT=before_smtp_data", figures, recovery_s=recovery)

    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 2)
    assert [r["message_id"] for r in stack.mail_records()] == [message_id(job.id)]
    assert_clean(figures)


@pytest.mark.scenario("R6-slow")
@pytest.mark.long
def test_a_worker_killed_before_smtp_data_is_redelivered_by_redis_without_the_relay(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R6 slow: no relay; Redis redelivers after the visibility timeout (kombu's cadence)."""
    stack = redis_stack
    app, post, _ = crash_once(stack, make_account, "before_smtp_data")
    restarted = time.monotonic()
    stack.start_worker(relay=False)  # only the broker can bring the message back
    vt = float(stack.settings["BROKER_VISIBILITY_TIMEOUT"])
    figures = settle(stack, app, [post], deadline=vt + 150)
    recovery = round(time.monotonic() - restarted, 1)
    report_figures("R6-slow", "before_smtp_data, no relay", figures, recovery_s=recovery)
    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 2)
    assert_clean(figures)


def pool_children(worker: Service) -> list[int]:
    pid = worker.process.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


@pytest.mark.scenario("R7")
def test_a_pool_child_killed_mid_task_is_re_driven_after_its_lease_with_one_email(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R7: kill -9 of the prefork child running the task (task_reject_on_worker_lost=False)."""
    stack = redis_stack
    stack.configure(MAIL_TIMEOUT=5)  # the first DATA stalls this long: time to find the child
    [worker] = stack.up("--fail-codes", "stall")  # its only child is the pool process
    app = stack.app()
    author = make_account(email="r7@example.com")
    [created] = create_posts(app.test_client(), author.headers, 1, versions=("v1",))
    post = Accepted(created.id, "v1")

    wait_until(lambda: stack.mail_records(), 30, "the task to reach SMTP DATA")
    [child] = pool_children(worker)
    os.kill(child, signal.SIGKILL)
    stack.wait_for_log(worker, "WorkerLostError", 15)
    [job] = job_views(app, [post.post_id])
    assert job.status == "running"  # not dead: the lease decides

    figures = settle(stack, app, [post], crashed=True)
    report_figures("R7", "kill -9 of the pool child during SMTP", figures)
    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 2)
    assert_clean(figures)


@pytest.mark.scenario("R8")
def test_a_poison_pill_is_dead_after_max_attempts_while_other_posts_are_all_delivered(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R8: one job always SIGKILLs its pool child (FAULT_POINT=after_claim@post); 30 others."""
    stack = redis_stack
    stack.configure(**SHORT_LEASE, MAIL_MAX_RETRIES=2)
    stack.start_sink()
    app = stack.app()
    client = app.test_client()
    author = make_account(email="r8@example.com")
    [poison] = create_posts(client, author.headers, 1, versions=("v1",), title="Poison")

    stack.start_worker(concurrency=2, FAULT_POINT=f"after_claim@{poison.id}")
    started = time.monotonic()
    others = create_posts(client, author.headers, 30, versions=("v1", "v2"))
    accepted = [Accepted(post.id, post.version) for post in others]
    figures_others = settle(stack, app, accepted)
    others_s = round(time.monotonic() - started, 1)
    figures = settle(stack, app, [*accepted, Accepted(poison.id, "v1")])
    report_figures(
        "R8", "FAULT_POINT=after_claim@poison post, 30 others", figures, others_done_s=others_s
    )

    [job] = job_views(app, [poison.id])
    assert (job.status, job.attempts) == ("dead", 3)
    assert job.last_error is not None
    assert "attempts exhausted" in job.last_error
    assert_clean(figures_others)
    assert_clean(figures, dead=1)


@pytest.mark.scenario("R9")
def test_a_crash_after_smtp_250_before_commit_resends_with_the_same_message_id(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R9: the residual window (FAULT_POINT=after_smtp_250_before_commit): 2 deliveries, one
    Message-ID; the oracle reports it as ambiguous, not duplicated."""
    stack = redis_stack
    app, post, _ = crash_once(stack, make_account, "after_smtp_250_before_commit")
    stack.start_worker()
    figures = settle(stack, app, [post], ambiguous_allowed=True, crashed=True)
    report_figures("R9", "FAULT_POINT=after_smtp_250_before_commit", figures)

    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 2)
    assert [r["message_id"] for r in stack.deliveries()] == [message_id(job.id)] * 2
    assert_clean(figures, ambiguous=1)


@pytest.mark.scenario("R10")
def test_a_crash_after_commit_before_ack_sends_nothing_on_redelivery(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R10: crash after marking done, before the ack; the redelivered message (here re-sent
    at once, as Redis does after the visibility timeout; see the long variant) sends nothing."""
    stack = redis_stack
    app, post, _ = crash_once(stack, make_account, "after_commit_before_ack")
    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 1)
    worker = stack.start_worker()
    app.extensions["celery"].send_task("blog_api.send_post_notification", args=[job.id])
    stack.wait_for_log(worker, "'skipped-duplicate'", 20)
    figures = settle(stack, app, [post], deadline=45, crashed=True)
    report_figures("R10", "FAULT_POINT=after_commit_before_ack, message redelivered", figures)

    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 1)
    assert_clean(figures)


@pytest.mark.scenario("R10-slow")
@pytest.mark.long
def test_a_crash_after_commit_before_ack_is_redelivered_by_redis_and_sends_nothing(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R10 slow: the unacknowledged message really comes back after the visibility timeout."""
    stack = redis_stack
    app, post, _ = crash_once(stack, make_account, "after_commit_before_ack")
    worker = stack.start_worker(relay=False)
    vt = float(stack.settings["BROKER_VISIBILITY_TIMEOUT"])
    stack.wait_for_log(worker, "'skipped-duplicate'", vt + 150)
    figures = settle(stack, app, [post])
    report_figures("R10-slow", "after_commit_before_ack, Redis redelivery", figures)
    [job] = job_views(app, [post.post_id])
    assert (job.status, job.attempts) == ("done", 1)
    assert_clean(figures)


@pytest.mark.scenario("R14")
def test_a_warm_shutdown_during_20_in_flight_tasks_loses_and_duplicates_nothing(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R14: SIGTERM the worker while 20 tasks are in flight (SMTP slowed by the proxy)."""
    stack = redis_stack
    stack.start_sink()
    proxy = stack.proxy(stack.mail_port)
    proxy.set_mode("latency", latency=0.1)
    stack.configure(MAIL_PORT=proxy.port)
    app = stack.app()
    author = make_account(email="r14@example.com")
    created = create_posts(app.test_client(), author.headers, 20, versions=("v1", "v2"))
    accepted = [Accepted(post.id, post.version) for post in created]

    worker = stack.start_worker(concurrency=2)
    wait_until(lambda: stack.deliveries(), 30, "the first delivery")
    assert worker.stop(signal.SIGTERM, timeout=30) == 0  # warm: finishes what it runs
    in_flight_done = len(stack.deliveries())
    proxy.set_mode("pass")  # the rest at full speed
    stack.start_worker(concurrency=2)
    figures = settle(stack, app, accepted)
    report_figures(
        "R14", "SIGTERM during 20 tasks, restart", figures, delivered_before_restart=in_flight_done
    )
    assert 0 < in_flight_done < 20
    assert_clean(figures)


@pytest.mark.scenario("R24")
def test_a_crash_after_the_audit_write_leaves_exactly_one_line(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R24: FAULT_POINT=after_audit_write_before_commit; the retry finds its event id."""
    stack = redis_stack
    app, post, _ = crash_once(stack, make_account, "after_audit_write_before_commit", "v2")
    assert len(stack.audit_lines()) == 1
    stack.start_worker()
    figures = settle(stack, app, [post], crashed=True)
    report_figures("R24", "FAULT_POINT=after_audit_write_before_commit", figures)

    jobs = {job.kind: job for job in job_views(app, [post.post_id])}
    assert (jobs["audit_post_created"].status, jobs["audit_post_created"].attempts) == ("done", 2)
    assert len(stack.audit_records()) == 1
    assert_clean(figures)


@pytest.mark.scenario("R28")
def test_every_task_run_twice_with_the_same_job_changes_nothing_the_second_time(
    redis_stack: Stack, make_account: Callable[..., Any], report_figures: Callable[..., None]
) -> None:
    """R28: each task kind run twice in a row with the same outbox id, by a real worker."""
    stack = redis_stack
    [worker] = stack.up()
    app = stack.app()
    author = make_account(email="r28@example.com")
    [created] = create_posts(app.test_client(), author.headers, 1, versions=("v2",))
    post = Accepted(created.id, "v2")
    settle(stack, app, [post])
    before = {job.kind: job for job in job_views(app, [post.post_id])}

    for kind, job in before.items():
        app.extensions["celery"].send_task(TASK_FOR_KIND[kind], args=[job.id])
    wait_until(lambda: worker.log().count("'skipped-duplicate'") == 2, 30, "two duplicate runs")
    figures = settle(stack, app, [post])
    report_figures("R28", "each task kind sent again with the same job id", figures)

    assert {job.kind: job for job in job_views(app, [post.post_id])} == before
    assert {(job.status, job.attempts) for job in before.values()} == {("done", 1)}
    assert len(stack.deliveries()) == 1
    assert len(stack.audit_lines()) == 1
    assert_clean(figures)

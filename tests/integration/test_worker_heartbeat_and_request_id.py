"""With a real worker: its heartbeat shows in `/metrics` and ages once it stops; the log lines
it writes for a job carry the X-Request-ID of the POST that created the job."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harness.launcher import wait_until
from support import heartbeat_ages
from support.integration_stack import POSTGRESQL_ONLY, Stack, wait_for_jobs

pytestmark = pytest.mark.integration


@POSTGRESQL_ONLY
def test_a_workers_heartbeat_appears_in_metrics_and_ages_after_it_stops(stack: Stack) -> None:
    """PostgreSQL only: the unit tier reads heartbeat rows on both databases."""
    stack.configure(WORKER_HEARTBEAT_INTERVAL=0.5)
    worker = stack.start_worker()
    client = stack.app().test_client()
    prefix = f"{stack.queue}-w1@"

    def own_age() -> float | None:
        ages = {
            name: age for name, age in heartbeat_ages(client).items() if name.startswith(prefix)
        }
        assert len(ages) <= 1, ages
        return next(iter(ages.values()), None)

    # Alive: the age stays below a few intervals, scrape after scrape.
    wait_until(lambda: (age := own_age()) is not None and age < 3, 30, "a fresh heartbeat")
    assert worker.stop() == 0

    stopped = wait_until(own_age, 10, "the stopped worker's heartbeat row")
    wait_until(
        lambda: (age := own_age()) is not None and age >= stopped + 2,
        30,
        lambda: f"the heartbeat age to grow past {stopped + 2:.1f}s (now {own_age()})",
    )


@POSTGRESQL_ONLY
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_workers_log_lines_for_a_job_carry_the_request_id_of_its_post(
    stack: Stack, make_account: Callable[..., Any], log_format: str
) -> None:
    """PostgreSQL only: the worker's logging is under test, not the database."""
    stack.configure(LOG_FORMAT=log_format)
    [worker] = stack.up()
    app = stack.app()
    author = make_account(email="traced@example.com")

    response = app.test_client().post(
        "/api/v2/posts",
        json={"title": "Traced", "content": "x"},
        headers={**author.headers, "X-Request-ID": "abc-123"},
    )
    assert response.status_code == 201
    jobs = wait_for_jobs(stack, app, [response.json["id"]], timeout=30)
    assert {job.status for job in jobs} == {"done"}

    # Ours (the effects) and Celery's own line at the end of each task run.
    markers = ("Email sent to user", "Audit record written for post", "] succeeded in ")
    lines = [line for line in worker.log().splitlines() if any(m in line for m in markers)]
    assert len(lines) == 4, worker.log()
    if log_format == "text":
        assert all("[request_id=abc-123]" in line for line in lines), lines
    else:
        records = [json.loads(line) for line in lines]
        assert {record["request_id"] for record in records} == {"abc-123"}
        assert {record["job_id"] for record in records} == {job.id for job in jobs}

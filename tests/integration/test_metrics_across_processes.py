"""`/metrics` is exact however many processes count: gunicorn with two workers and a Celery worker
with two prefork pool processes, each server summing the files its processes write in its
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode). Without it, scrapes answered by
different workers read different counts.

Each directory starts with a file an earlier run left (a pid used again would take its counts
over): the server empties it when it starts.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from blog_api.extensions import db
from blog_api.models import Job
from blog_api.models.jobs import ACTIVE_STATUSES
from harness.launcher import free_port, wait_until
from support import Account
from support.integration_stack import (
    POSTGRESQL_ONLY,
    HttpClient,
    Stack,
    create_posts,
    wait_for_jobs,
)

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]
SCRAPES = 10
REQUESTS = "blog_api_http_requests_total"
FAILED_LOGINS = {"method": "POST", "route": "/api/v1/login", "status": "401"}
# A login hashes a password even for an unknown user; this cost (tens of ms, as in
# tests/security/gunicorn_pair.py) keeps both sync workers busy while four clients send.
SLOW_LOGINS = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "32768"}
IN_PROGRESS = "blog_api_http_requests_in_progress"
ATTEMPTS = "blog_api_job_attempts_total"
NOTIFICATIONS_DONE = {"kind": "notify_author", "outcome": "done"}


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one series in a scrape, or None when the scrape has no such series."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == (labels or {}):
                return found.value
    return None


def counts_per_process(directory: Path, name: str, labels: dict[str, str]) -> dict[int, float]:
    """What each process's counter file in `directory` holds for one series, by pid."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            for found in metric.samples:
                if found.name == name and found.labels == labels:
                    counts[int(path.stem.rsplit("_", 1)[1])] = found.value
    return counts


def left_by_an_earlier_run(directory: Path, name: str, labels: dict[str, str]) -> None:
    """A counter file of pid 1 holding 1000 for the series `name{labels}`."""
    directory.mkdir(exist_ok=True)
    stale = MmapedDict(str(directory / "counter_1.db"))
    key = mmap_key(name.removesuffix("_total"), name, list(labels), list(labels.values()), "")
    stale.write_value(key, 1000.0, 0.0)
    stale.close()


def scrapes(client: HttpClient) -> list[str]:
    answers = [client.request("GET", "/metrics") for _ in range(SCRAPES)]
    assert {answer.status for answer in answers} == {200}
    return [answer.body for answer in answers]


def fail_logins(server: HttpClient, count: int) -> None:
    """`count` failed logins from four clients at once: both sync workers answer some."""
    wrong = {"username": "nobody", "password": "not the password"}
    with ThreadPoolExecutor(max_workers=4) as clients:
        answers = list(
            clients.map(lambda _: server.request("POST", "/api/v1/login", wrong), range(count))
        )
    assert [answer.status for answer in answers] == [401] * count


def test_requests_answered_by_two_gunicorn_workers_read_the_same_in_every_scrape(
    stack: Stack,
) -> None:
    """The request counter sums both workers; the job figures, read from the database at scrape
    time by the worker that answers, are not multiplied by the number of workers."""
    directory = stack.tmp_path / "web-metrics"
    left_by_an_earlier_run(directory, REQUESTS, FAILED_LOGINS)
    server = stack.start_gunicorn(workers=2, PROMETHEUS_MULTIPROC_DIR=str(directory), **SLOW_LOGINS)
    author = server.account("counted")
    for number in range(3):
        post = {"title": f"Counted {number}", "content": "x"}
        assert server.request("POST", "/api/v1/posts", post, author).status == 201
    requests = 24

    fail_logins(server, requests)

    per_worker = counts_per_process(directory, REQUESTS, FAILED_LOGINS)
    assert len(per_worker) == 2, per_worker
    assert sum(per_worker.values()) == requests
    with stack.app().app_context():
        backlog = db.session.scalar(select(func.count()).where(Job.status.in_(ACTIVE_STATUSES)))
    for text in scrapes(server):
        assert sample(text, REQUESTS, FAILED_LOGINS) == requests
        assert sample(text, IN_PROGRESS) == 1  # this scrape
        assert sample(text, "blog_api_jobs", {"kind": "notify_author", "status": "pending"}) == 3
        assert sample(text, "blog_api_outbox_backlog") == backlog


def test_a_killed_gunicorn_worker_keeps_its_counts_and_leaves_the_live_gauges(
    stack: Stack,
) -> None:
    directory = stack.tmp_path / "web-metrics"
    server = stack.start_gunicorn(workers=2, PROMETHEUS_MULTIPROC_DIR=str(directory), **SLOW_LOGINS)
    requests = 24
    fail_logins(server, requests)
    per_worker = counts_per_process(directory, REQUESTS, FAILED_LOGINS)
    assert len(per_worker) == 2, per_worker
    killed = next(iter(per_worker))
    assert (directory / f"gauge_livesum_{killed}.db").exists()

    os.kill(killed, signal.SIGKILL)

    wait_until(
        lambda: not (directory / f"gauge_livesum_{killed}.db").exists(),
        15,
        f"gunicorn to mark worker {killed} dead (child_exit)",
    )
    for text in scrapes(server):
        assert sample(text, REQUESTS, FAILED_LOGINS) == requests
        assert sample(text, IN_PROGRESS) == 1


def test_jobs_run_by_two_pool_processes_read_the_same_in_every_scrape_of_the_worker(
    stack: Stack, make_account: Callable[..., Account]
) -> None:
    directory = stack.tmp_path / "worker-metrics"
    left_by_an_earlier_run(directory, ATTEMPTS, NOTIFICATIONS_DONE)
    port = free_port()
    stack.up(concurrency=2, WORKER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(directory))
    app = stack.app()
    author = make_account(email="attempts@example.com")
    jobs = 20

    posts = create_posts(app.test_client(), author.headers, jobs, versions=("v1",))
    wait_for_jobs(stack, app, [post.id for post in posts], timeout=60)

    # A task records its job's outcome, then counts it: the last count may follow a moment later.
    endpoint = HttpClient(port)
    wait_until(
        lambda: (
            sample(endpoint.request("GET", "/metrics").body, ATTEMPTS, NOTIFICATIONS_DONE) == jobs
        ),
        10,
        f"the worker's endpoint to count {jobs} notifications done",
    )
    per_process = counts_per_process(directory, ATTEMPTS, NOTIFICATIONS_DONE)
    assert len(per_process) == 2, per_process
    assert sum(per_process.values()) == jobs
    for text in scrapes(endpoint):
        assert sample(text, ATTEMPTS, NOTIFICATIONS_DONE) == jobs

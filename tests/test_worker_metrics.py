"""What a worker counts and serves: every attempt at a job by kind and outcome
(`blog_api_job_attempts_total`), on its own endpoint (WORKER_METRICS_PORT).

Tasks run in-process through Celery's `apply`, in one process without a multiprocess directory;
tests/integration/test_metrics_across_processes.py runs a prefork pool whose processes' counts
the worker sums.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from flask import Flask
from sqlalchemy import select
from werkzeug.test import Client

from blog_api.config import ConfigError, read_environment
from blog_api.extensions import db
from blog_api.jobs.runner import DUPLICATE
from blog_api.models import Job, JobKind
from blog_api.ops.metrics import MetricsServer, metrics_endpoint, worker_registry
from blog_api.worker.bootsteps import MetricsServerStep
from harness.launcher import free_port
from support import Account, set_job
from support.fanout import attempt

ATTEMPTS = "blog_api_job_attempts_total"
TOKEN = "a-long-random-metrics-token"


def attempts(kind: str, outcome: str) -> float:
    """What the worker's endpoint would show for `kind` and `outcome` now."""
    value = worker_registry().get_sample_value(ATTEMPTS, {"kind": kind, "outcome": outcome})
    return value or 0.0


def jobs_of_a_new_post(app: Flask, author: Account) -> dict[str, str]:
    """A v2 post by `author` (a notification and an audit job): job id by kind."""
    response = app.test_client().post(
        "/api/v2/posts", json={"title": "Counted", "content": "x"}, headers=author.headers
    )
    assert response.status_code == 201
    with app.app_context():
        rows = db.session.execute(
            select(Job.kind, Job.id).where(Job.post_id == response.json["id"])
        ).all()
    return {row.kind: row.id for row in rows}


def test_each_attempt_at_a_job_is_counted_by_kind_and_outcome(
    make_app: Callable[..., Flask], make_account: Callable[..., Account], tmp_path: Path
) -> None:
    # Nothing listens on port 1: every e-mail fails, and is retried.
    app = make_app(MAIL_PORT=1, POST_AUDIT_LOG=str(tmp_path / "audit.log"))
    tasks = app.extensions["celery"].tasks
    notify, audit = tasks["blog_api.send_post_notification"], tasks["blog_api.record_post_created"]
    with_address = jobs_of_a_new_post(app, make_account(email="counted@example.com"))
    without_address = jobs_of_a_new_post(app, make_account(email=None))
    outcomes = [
        (JobKind.AUDIT_POST_CREATED, "done"),
        (JobKind.AUDIT_POST_CREATED, "duplicate"),
        (JobKind.NOTIFY_AUTHOR, "retrying"),
        (JobKind.NOTIFY_AUTHOR, "dead"),
        (JobKind.NOTIFY_AUTHOR, "skipped"),
    ]
    before = {outcome: attempts(*outcome) for outcome in outcomes}

    assert audit.apply(args=[with_address[JobKind.AUDIT_POST_CREATED]]).get() == "done"
    assert audit.apply(args=[with_address[JobKind.AUDIT_POST_CREATED]]).get() == DUPLICATE
    failing = with_address[JobKind.NOTIFY_AUTHOR]
    assert attempt(app, notify.name, failing) == "retrying"
    with app.app_context():
        last = db.session.scalar(select(Job.max_attempts).where(Job.id == failing))
    set_job(app, failing, attempts=(last or 1) - 1)
    assert attempt(app, notify.name, failing) == "dead"
    assert notify.apply(args=[without_address[JobKind.NOTIFY_AUTHOR]]).get() == "skipped"

    counted = {outcome: attempts(*outcome) - before[outcome] for outcome in outcomes}
    assert counted == dict.fromkeys(outcomes, 1.0)


def test_the_worker_endpoint_serves_the_attempts_to_the_metrics_token_bearer_only() -> None:
    client = Client(metrics_endpoint(worker_registry(), TOKEN))

    refused = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    served = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    elsewhere = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json == {
        "error": "Unauthorized",
        "message": "Missing or wrong metrics token (Authorization: Bearer <METRICS_TOKEN>)",
    }
    assert served.status_code == 200
    assert f"# TYPE {ATTEMPTS} counter" in served.text
    assert (elsewhere.status_code, elsewhere.json["error"]) == (404, "Not Found")


def test_the_worker_endpoint_answers_over_http_until_stopped() -> None:
    port = free_port()
    server = MetricsServer("127.0.0.1", port, None)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert answer.status == 200
            assert f"# TYPE {ATTEMPTS} counter" in answer.read().decode()
    finally:
        server.stop()

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def worker_with(pool: type, **config: Any) -> Any:
    """What the bootstep reads of a worker: its pool class and its Flask app's settings."""
    settings = {"WORKER_METRICS_PORT": None, "WORKER_METRICS_ADDRESS": "127.0.0.1"}
    flask_app = SimpleNamespace(config={**settings, "METRICS_TOKEN": None, **config})
    return SimpleNamespace(pool_cls=pool, app=SimpleNamespace(flask_app=flask_app))


def test_a_worker_serves_metrics_only_with_worker_metrics_port() -> None:
    off, on = worker_with(SoloPool), worker_with(SoloPool, WORKER_METRICS_PORT=free_port())

    assert not MetricsServerStep(off).include_if(off)
    assert MetricsServerStep(on).include_if(on)


def test_a_prefork_worker_without_a_metrics_directory_refuses_to_serve_metrics() -> None:
    """Its pool processes count in their own memory: the endpoint would read 0 for ever."""
    worker = worker_with(PreforkPool, WORKER_METRICS_PORT=free_port())

    with pytest.raises(ConfigError, match="prefork pool needs PROMETHEUS_MULTIPROC_DIR"):
        MetricsServerStep(worker).create(worker)


@pytest.mark.parametrize(("value", "port"), [("9808", 9808), ("", None), (" ", None)])
def test_worker_metrics_port_is_a_port_or_empty_for_none(value: str, port: int | None) -> None:
    assert read_environment({"WORKER_METRICS_PORT": value})["WORKER_METRICS_PORT"] == port


@pytest.mark.parametrize("value", ["0", "65536", "metrics", "-1"])
def test_a_worker_metrics_port_out_of_range_is_a_startup_error(value: str) -> None:
    with pytest.raises(ConfigError, match="WORKER_METRICS_PORT"):
        read_environment({"WORKER_METRICS_PORT": value})

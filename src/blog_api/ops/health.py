"""`/health` (the process is alive), `/ready` (database and broker reachable) and `/metrics`
(the request metrics of ops/metrics.py, and job figures read from the database at scrape time).

`/ready` answers from its last check for `READY_CACHE_SECONDS` (per process): each check opens
a broker connection, which a balancer probing several times a second would otherwise pay each
time. `/metrics` and `/ready` name worker hosts and counts: with `METRICS_TOKEN` set they need
`Authorization: Bearer <METRICS_TOKEN>`; unset, they are open, for a proxy to restrict.
`/health` is always open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, text

from blog_api.broker import check_broker
from blog_api.errors import error_response
from blog_api.extensions import db, limiter
from blog_api.jobs.deliveries import Watched, watched_counts
from blog_api.jobs.heartbeats import forget_after
from blog_api.models import Job, JobStatus, WorkerHeartbeat
from blog_api.models.base import utcnow
from blog_api.models.deliveries import WAITING_STATUSES
from blog_api.models.jobs import ACTIVE_STATUSES
from blog_api.ops.metrics import NOT_THE_METRICS_BEARER, bears_token, register_request_metrics

blp = Blueprint("ops", __name__)
F = TypeVar("F", bound=Callable[..., Any])
READY_CHECK_TIMEOUT = 1  # seconds
READY_CACHE = "blog_api_ready_cache"  # the app's `ReadyCache`, in `app.extensions`


@blp.get("/health")
@limiter.exempt
def health() -> dict[str, str]:
    return {"status": "ok"}


def metrics_token_required(view: F) -> F:
    """With `METRICS_TOKEN` set, `view` answers only requests bearing it (401 otherwise),
    compared in constant time; unset, everyone."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = current_app.config["METRICS_TOKEN"]
        if token and not bears_token(request.headers.get("Authorization", ""), token):
            return error_response(
                401, NOT_THE_METRICS_BEARER, headers={"WWW-Authenticate": "Bearer"}
            )
        return view(*args, **kwargs)

    return cast(F, guarded)


@dataclass
class ReadyCache:
    """The last checks of `/ready` in this process, and until when (by `clock`) they stand."""

    checks: dict[str, str] = field(default_factory=dict)
    expires: float = float("-inf")
    clock: Callable[[], float] = time.monotonic
    # One check at a time: concurrent probes wait for it and share its result.
    lock: threading.Lock = field(default_factory=threading.Lock)


@blp.get("/ready")
@limiter.exempt
@metrics_token_required
def ready() -> Any:
    """200 when the database and the broker answer within a second each, else 503; the
    result of the last check while it is younger than READY_CACHE_SECONDS."""
    cache: ReadyCache = current_app.extensions[READY_CACHE]
    with cache.lock:
        if cache.clock() >= cache.expires:
            cache.checks = _check_dependencies()
            cache.expires = cache.clock() + current_app.config["READY_CACHE_SECONDS"]
        checks = cache.checks
    failing = sorted(name for name, state in checks.items() if state != "ok")
    if failing:
        return error_response(503, f"Not ready: {', '.join(failing)}", checks=checks)
    return {"status": "ready", "checks": checks}


def _check_database() -> None:
    db.session.execute(text("SELECT 1"))


def _check_dependencies() -> dict[str, str]:
    """ "ok" or the error, for the database and for the broker."""
    checks: dict[str, str] = {}
    try:
        _check_database()
        checks["database"] = "ok"
    except Exception as error:
        db.session.rollback()
        checks["database"] = f"error: {type(error).__name__}"
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(check_broker, current_app.config["CELERY"], READY_CHECK_TIMEOUT)
        try:
            future.result(timeout=READY_CHECK_TIMEOUT + 0.5)
            checks["broker"] = "ok"
        except FutureTimeout:
            checks["broker"] = "error: timed out"
        except Exception as error:
            checks["broker"] = f"error: {type(error).__name__}"
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
    return checks


class JobCollector:
    """Job and worker figures read from the database at scrape time (any process can serve
    them, and they are the same whichever process answers)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Any:
        with self.app.app_context():
            rows = db.session.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ).all()
            oldest = db.session.scalar(
                select(func.min(Job.created_at)).where(Job.status == JobStatus.PENDING)
            )
            now = utcnow()
            heartbeats = db.session.execute(
                select(WorkerHeartbeat.worker, WorkerHeartbeat.last_seen)
                .where(WorkerHeartbeat.last_seen >= now - forget_after())
                .order_by(WorkerHeartbeat.worker)
            ).all()
            fan_out = watched_counts()
        jobs = GaugeMetricFamily(
            "blog_api_jobs", "Background jobs by kind and status", labels=["kind", "status"]
        )
        backlog = 0
        for kind, status, count in rows:
            jobs.add_metric([kind, status], count)
            backlog += count if status in ACTIVE_STATUSES else 0
        yield jobs
        yield GaugeMetricFamily("blog_api_outbox_backlog", "Jobs pending or running", value=backlog)
        age = (now - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "blog_api_outbox_oldest_pending_age_seconds", "Age of the oldest pending job", value=age
        )
        worker_ages = GaugeMetricFamily(
            "blog_api_worker_heartbeat_age_seconds",
            "Seconds since each Celery worker last recorded its heartbeat",
            labels=["worker"],
        )
        for worker, last_seen in heartbeats:
            # Clocks of two machines may disagree slightly: never report a negative age.
            worker_ages.add_metric([worker], max((now - last_seen).total_seconds(), 0.0))
        yield worker_ages
        yield from _fan_out_metrics(fan_out, now)


def _fan_out_metrics(fan_out: Watched, now: datetime) -> Iterator[GaugeMetricFamily]:
    """Deliveries that need a worker or an admin, by status, and the fan-out backlog."""
    statuses = GaugeMetricFamily(
        "blog_api_deliveries",
        "Fan-out deliveries not finished (pending, sending, failed) and dead, by status",
        labels=["status"],
    )
    for status, count in fan_out.by_status.items():
        statuses.add_metric([status], count)
    yield statuses
    waiting = sum(fan_out.by_status[status] for status in WAITING_STATUSES)
    yield GaugeMetricFamily(
        "blog_api_fanout_backlog",
        "Deliveries waiting to be sent (pending or failed)",
        value=waiting,
    )
    oldest = fan_out.oldest_waiting
    age = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    yield GaugeMetricFamily(
        "blog_api_fanout_oldest_pending_age_seconds",
        "How long the longest-waiting delivery has been due",
        value=age,
    )


def register_ops(app: Flask) -> None:
    """Health endpoints, and `/metrics`: the requests of every route (counted in this process,
    or summed over every process of the server in multiprocess mode) and the job figures."""
    registry = register_request_metrics(app)
    registry.register(JobCollector(app))
    app.extensions[READY_CACHE] = ReadyCache()
    app.register_blueprint(blp)

    @app.get("/metrics")
    @limiter.exempt
    @metrics_token_required
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

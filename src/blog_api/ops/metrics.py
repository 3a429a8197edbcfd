"""The Prometheus figures processes count (requests, job attempts), exact however many processes
answer: gunicorn runs several workers and a Celery worker several pool processes, and a counter
kept in each one's memory read 1, then 5, as scrapes landed on one worker, then another.

With `PROMETHEUS_MULTIPROC_DIR` set in the environment a process starts with (prometheus-client
reads it on import), each process writes its values to its own files in that directory and a
scrape adds them all up (prometheus-client's multiprocess mode):

- gunicorn: `gunicorn.conf.py` empties the directory when the server starts and, when a worker
  exits, drops its live gauges (its counts stay: they happened). `/metrics` sums every worker.
- Celery worker: its main process empties the directory before it starts its pool
  (worker/signals.py), and serves the sum of its pool processes' counts on `WORKER_METRICS_PORT`
  (`MetricsServer`, started by worker/bootsteps.py).

Each server (one gunicorn, one worker) needs a directory of its own, on a local disk: another
server starting on the same directory would empty it under the first. Unset (tests, `flask run`,
the solo and threads pools), every figure stays in the memory of the one process that counts it.
The job and worker figures read from the database at scrape time are not here (ops/health.py):
whichever process answers reads them once.
"""

from __future__ import annotations

import functools
import glob
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import Flask, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from blog_api.config import ConfigError
from blog_api.errors import reason_phrase
from blog_api.extensions import rate_limit_storage_failed
from blog_api.jobs.runner import DUPLICATE

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
NOT_THE_METRICS_BEARER = "Missing or wrong metrics token (Authorization: Bearer <METRICS_TOKEN>)"
# Label values of the request metrics come from a fixed set, so that a client cannot add series
# by inventing methods or paths: any other method is "OTHER", a path no route matched
# "<unmatched>".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED_ROUTE = "<unmatched>"

# One attempt at a job in a worker (worker/tasks.py), by kind and by what came of it: done,
# skipped, dead, retrying, or duplicate (the job was another attempt's, or already finished).
# Counted in the process that ran the task: a pool process, or the worker itself (solo, threads).
JOB_ATTEMPTS = Counter(
    "blog_api_job_attempts",
    "Attempts at background jobs in this worker, by kind and outcome",
    ["kind", "outcome"],
    registry=None,
)


def multiprocess_directory() -> str | None:
    """The directory every process of this server counts in, or None: each counts alone.

    Raises `ConfigError` when `PROMETHEUS_MULTIPROC_DIR` appeared after prometheus-client was
    imported (from `.env`, which the app reads later): the counts would silently stay per process.
    """
    directory = os.environ.get(MULTIPROCESS_DIRECTORY) or None
    counting_alone = values.ValueClass is values.MutexValue
    if directory and counting_alone:
        raise ConfigError(
            f"{MULTIPROCESS_DIRECTORY} must be set in the environment the process starts with, "
            "not in .env (prometheus-client reads it on import)"
        )
    return None if counting_alone else directory


def empty_multiprocess_directory() -> None:
    """Delete the files of the processes that counted here before this server started (what
    gunicorn.conf.py's `on_starting` does for gunicorn); creates the directory if missing."""
    directory = multiprocess_directory()
    if directory:
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)


def _registry_of(directory: str | None) -> CollectorRegistry:
    """A registry that, with a multiprocess directory, reads the sum of its files."""
    registry = CollectorRegistry()
    if directory:
        os.makedirs(directory, exist_ok=True)
        MultiProcessCollector(registry, directory)
    return registry


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpMetrics:
    """What a web process counts about the requests it answers."""

    requests: Counter
    latency: Histogram
    in_progress: Gauge
    storage_fallbacks: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> HttpMetrics:
        return cls(
            requests=Counter(
                "blog_api_http_requests",
                "HTTP requests answered, by method, route and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "blog_api_http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route",
                ["method", "route"],
                registry=registry,
            ),
            # The sum over the live processes: a worker killed in a request leaves no phantom
            # request behind (gunicorn.conf.py's child_exit drops its file).
            in_progress=Gauge(
                "blog_api_http_requests_in_progress",
                "HTTP requests being answered (sync workers busy)",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            storage_fallbacks=Counter(
                "blog_api_rate_limit_storage_fallbacks",
                "Times the rate limiter lost its storage and began counting in process memory",
                registry=registry,
            ),
        )


@functools.cache
def _metrics_of_this_process() -> HttpMetrics:
    return HttpMetrics.create(registry=None)


_creating_metrics = threading.Lock()


def process_http_metrics() -> HttpMetrics:
    """This process's request metrics in multiprocess mode, created at their first use.

    One set per process whatever the apps it builds (two metrics of one name in one process would
    write the same file entry over each other), and only in processes that answer requests: a
    Celery worker builds the app too, before it empties the directory, and must not hold files
    there from before that.
    """
    with _creating_metrics:
        return _metrics_of_this_process()


def register_request_metrics(app: Flask) -> CollectorRegistry:
    """Count and time every request of `app`; returns the registry `/metrics` reads.

    In multiprocess mode, the sum of every process's files; otherwise this app's own counters
    (tests build many apps, each counting from zero).
    """
    directory = multiprocess_directory()
    registry = _registry_of(directory)
    own = None if directory else HttpMetrics.create(registry)

    def metrics() -> HttpMetrics:
        return own if own is not None else process_http_metrics()

    @rate_limit_storage_failed.connect_via(app)
    def count_storage_fallback(_sender: Flask, **_: Any) -> None:
        metrics().storage_fallbacks.inc()

    @app.before_request
    def start_timer() -> None:
        metrics().in_progress.inc()
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response: Any) -> Any:
        route = request.url_rule.rule if request.url_rule else UNMATCHED_ROUTE
        method = request.method if request.method in HTTP_METHODS else OTHER_METHOD
        metrics().requests.labels(method, route, str(response.status_code)).inc()
        if "request_started" in g:
            latency = time.perf_counter() - g.request_started
            metrics().latency.labels(method, route).observe(latency)
        return response

    @app.teardown_request
    def end_in_progress(_error: BaseException | None) -> None:
        # Teardown runs for every request whose timer started, whatever happened after.
        if g.pop("request_started", None) is not None:
            metrics().in_progress.dec()

    return registry


# --- job attempts in a worker ---------------------------------------------------------------


def count_job_attempt(kind: str, outcome: str) -> None:
    """One attempt at a job of `kind` ended with `outcome` (`run_job`'s answer)."""
    JOB_ATTEMPTS.labels(kind, "duplicate" if outcome == DUPLICATE else outcome).inc()


def worker_registry() -> CollectorRegistry:
    """What a worker's metrics endpoint serves: the sum of its pool processes' files in
    multiprocess mode, else the counts of this very process (the solo and threads pools run
    their tasks in it)."""
    directory = multiprocess_directory()
    registry = _registry_of(directory)
    if not directory:
        registry.register(JOB_ATTEMPTS)
    return registry


def bears_token(authorization: str, token: str) -> bool:
    """Whether an `Authorization` header value is `Bearer <token>`, compared in constant time."""
    scheme, _, credentials = authorization.partition(" ")
    # Bytes: compare_digest takes only ASCII strings, and a header may hold any Latin-1.
    given = credentials.strip().encode("utf-8", "surrogateescape")
    expected = token.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, expected) and scheme.lower() == "bearer"


def metrics_endpoint(registry: CollectorRegistry, token: str | None) -> Callable[..., Any]:
    """A WSGI app answering `GET /metrics` with `registry`, to `token`'s bearer only when set;
    any other path is a JSON 404, as in the API."""

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _json_error(start_response, 404, "No metrics here: GET /metrics")
        if token and not bears_token(environ.get("HTTP_AUTHORIZATION", ""), token):
            return _json_error(
                start_response, 401, NOT_THE_METRICS_BEARER, [("WWW-Authenticate", "Bearer")]
            )
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [body]

    return answer


def _json_error(
    start_response: Callable[..., Any],
    status: int,
    message: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json.dumps({"error": reason_phrase(status), "message": message}).encode()
    start_response(
        f"{status} {reason_phrase(status)}",
        [("Content-Type", "application/json"), *(headers or [])],
    )
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape every few seconds is not worth a log line."""


class MetricsServer:
    """The worker's metrics endpoint: an HTTP server in a daemon thread of its main process."""

    def __init__(self, address: str, port: int, token: str | None) -> None:
        self._server = make_server(
            address,
            port,
            metrics_endpoint(worker_registry(), token),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"metrics-{port}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

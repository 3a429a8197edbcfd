"""The integration rig: real subprocesses (SMTP sink, Celery workers, a private Redis, gunicorn)
configured like the in-process app of the test, and the helpers that read what they recorded.

The processes are started, waited for and stopped by the launcher the benchmark uses too
(`harness.launcher`): every wait has a deadline; every process is started in its own session
and stopped (SIGTERM, then SIGKILL of its process group) when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from blog_api.config import read_environment
from blog_api.extensions import db
from blog_api.models import Job, JobKind
from harness.launcher import (
    REPOSITORY,
    SMTP_SINK_READY,
    Launcher,
    Service,
    clean_environment,
    free_port,
    wait_until,
)
from support import redis_server
from support.fault_hooks import FaultHooks
from support.fault_proxy import FaultProxy

# The processes the rig starts load the app through this module (test-only fault hooks), found
# on their PYTHONPATH (`RIG_PATH`) as the tests find it: tests/ holds the support package, which
# imports the launcher from bench/ (pyproject's pythonpath).
RIG_APP = "support.rig_wsgi"
RIG_PATH = [str(REPOSITORY / "tests"), str(REPOSITORY / "bench")]
FINISHED = frozenset({"done", "skipped", "dead"})
MESSAGE_ID_DOMAIN = "blog-api.local"

# For scenarios whose subject does not depend on the database (broker, SMTP, file): run them
# once, on PostgreSQL (the production database), to keep the tier within its time budget.
POSTGRESQL_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

# Small timings with the order the app insists on (MAIL_TIMEOUT < soft < hard < lease <
# visibility timeout, backoff cap < visibility timeout), so recovery takes seconds, not minutes.
FAST_TIMINGS: dict[str, str] = {
    "JOB_RELAY_INTERVAL": "1",
    "JOB_REPUBLISH_AFTER": "2",
    "JOB_LEASE_SECONDS": "10",
    "TASK_TIME_LIMIT": "8",
    "TASK_SOFT_TIME_LIMIT": "6",
    "MAIL_TIMEOUT": "2",
    "BROKER_VISIBILITY_TIMEOUT": "30",
    "MAIL_RETRY_BACKOFF": "0.5",
    "MAIL_RETRY_BACKOFF_MAX": "2",
}


def message_id(job_id: str) -> str:
    return f"<notify-{job_id}@{MESSAGE_ID_DOMAIN}>"


def confirmation_message_id(job_id: str) -> str:
    return f"<confirm-{job_id}@{MESSAGE_ID_DOMAIN}>"


def _is_confirmation(record: dict[str, Any]) -> bool:
    return str(record.get("message_id") or "").startswith("<confirm-")


def _is_fan_out(record: dict[str, Any]) -> bool:
    return str(record.get("message_id") or "").startswith("<fanout-")


def fan_out_message_id(delivery_id: int) -> str:
    return f"<fanout-{delivery_id}@{MESSAGE_ID_DOMAIN}>"


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    post_id: int
    status: str
    attempts: int
    last_error: str | None
    claimed_by: str | None


@dataclass(frozen=True)
class CreatedPost:
    id: int
    version: str
    status_code: int
    elapsed: float


@dataclass
class Stack:
    """Settings shared by the worker subprocesses and the in-process app, plus the processes.

    `settings` are environment variables (strings); the app gets the same values parsed by the
    app's own `read_environment`, so the test client and the worker agree on broker, queue,
    SMTP port, audit file and timings. The processes belong to `launcher` (logs in `tmp_path`).
    """

    tmp_path: Path
    database_url: str
    queue: str
    make_app: Callable[..., Flask]
    settings: dict[str, str] = field(default_factory=dict)
    apps: list[Flask] = field(default_factory=list)
    proxies: list[FaultProxy] = field(default_factory=list)
    hooks: list[FaultHooks] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.launcher = Launcher(self.tmp_path)
        self.mail_port = free_port()
        self.mail_log = self.tmp_path / "mail.jsonl"
        self.audit_log = self.tmp_path / "audit.log"
        self.settings = {
            "DATABASE_URL": self.database_url,
            "CELERY_QUEUE": self.queue,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.mail_port),
            "POST_AUDIT_LOG": str(self.audit_log),
            **FAST_TIMINGS,
            **self.settings,
        }

    # -- configuration -------------------------------------------------------------------

    def configure(self, **settings: str | float) -> None:
        """Change settings; only before the processes and apps that should see them start."""
        self.settings.update({key: str(value) for key, value in settings.items()})

    @property
    def broker_url(self) -> str:
        return self.settings["CELERY_BROKER_URL"]

    def app(self, **overrides: Any) -> Flask:
        """An app on the test database with exactly the workers' settings (and the fault
        hooks of `settings`, e.g. FAULT_DISPATCH=naive)."""
        environ = {k: v for k, v in self.settings.items() if k != "DATABASE_URL"}
        app = self.make_app(**{**read_environment(environ), **overrides})
        self.apps.append(app)
        self.hooks.append(FaultHooks.from_environment(app, self.settings))
        return app

    def env(self, **extra: str) -> dict[str, str]:
        """The processes' environment: the calling shell's without its blog-api settings (only
        ours count), the testing configuration, `RIG_PATH` on the path, `settings` and
        `extra`."""
        pythonpath = os.pathsep.join(filter(None, [*RIG_PATH, os.environ.get("PYTHONPATH")]))
        return {
            **clean_environment(),
            "FLASK_ENV": "testing",
            "PYTHONPATH": pythonpath,
            **self.settings,
            **extra,
        }

    # -- processes -------------------------------------------------------------------------

    @property
    def services(self) -> list[Service]:
        """Every process started so far, stopped ones included (their logs stay readable)."""
        return self.launcher.services

    def start(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Service:
        """Start `args` in the stack's directory with `env` (default: `env()`)."""
        return self.launcher.start(name, args, env or self.env())

    def run(
        self, args: Sequence[str], timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end beside the processes (an operator's command, a client): in
        the stack's directory with `env` (default: `env()`), no input, its output captured."""
        return subprocess.run(
            list(args),
            env=env or self.env(),
            cwd=self.tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def wait_for_log(self, service: Service, text: str, timeout: float = 30.0) -> None:
        service.wait_for_log(text, timeout)

    def start_sink(self, *flags: str, wait: bool = True) -> Service:
        """The SMTP sink on this stack's mail port, recording to `mail_log`.

        `flags`: e.g. "--fail-codes", "451,451" or "--always", "550".
        """
        return self.launcher.start_smtp_sink(
            self.mail_port, *flags, record=self.mail_log, env=self.env(), wait=wait
        )

    def start_worker(
        self,
        *,
        relay: bool = True,
        pool: str = "prefork",
        concurrency: int = 1,
        wait: bool = True,
        **env: str,
    ) -> Service:
        """A `celery worker` on this stack's queue, with its relay unless `relay` is False;
        returns once it logs "ready." (`wait`).

        `env`: extra environment variables for this worker only (e.g. FAULT_POINT).
        """
        number = sum(1 for s in self.services if s.name.startswith("worker")) + 1
        options = [
            *("-n", f"{self.queue}-w{number}@%h", "-P", pool, "--loglevel=INFO"),
            *("-Q", self.queue, "--without-gossip", "--without-mingle", "--without-heartbeat"),
        ]
        if pool != "solo":
            options += ["-c", str(concurrency)]
        if not relay:
            env["JOB_RELAY"] = "false"
        worker = self.launcher.start_celery_worker(
            f"worker{number}", f"{RIG_APP}.celery_app", *options, env=self.env(**env)
        )
        if wait:
            self.wait_until_ready(worker)
        return worker

    def wait_until_ready(self, *services: Service, timeout: float = 60.0) -> None:
        for service in services:
            text = " ready." if service.name.startswith("worker") else SMTP_SINK_READY
            self.wait_for_log(service, text, timeout)

    def up(
        self,
        *sink_flags: str,
        workers: int = 1,
        concurrency: int = 1,
        relay: bool = True,
        **env: str,
    ) -> list[Service]:
        """Start the sink and `workers` workers (each with its relay unless `relay` is False)
        at once, then wait until all of them are ready; returns the workers."""
        sink = self.start_sink(*sink_flags, wait=False)
        started = [
            self.start_worker(relay=relay, concurrency=concurrency, wait=False, **env)
            for _ in range(workers)
        ]
        self.wait_until_ready(sink, *started)
        return started

    def start_redis(self, port: int) -> Service:
        """A private, non-persistent redis-server (`make run`'s: see `redis_server`) on `port`."""
        return self.launcher.start_redis(port, "--appendonly", "no", binary=redis_server())

    def proxy(self, target_port: int) -> FaultProxy:
        """A TCP fault proxy (pass / latency / reset / blackhole) in front of `target_port`."""
        proxy = FaultProxy(target_port).start()
        self.proxies.append(proxy)
        return proxy

    def start_gunicorn(self, workers: int = 2, **env: str) -> HttpClient:
        """gunicorn with `workers` sync workers serving the app with this stack's settings
        (production's gunicorn.conf.py, testing configuration); returns a client for it."""
        port = free_port()
        server = self.launcher.start_gunicorn(
            "gunicorn",
            f"{RIG_APP}:flask_app",
            *("-c", str(REPOSITORY / "gunicorn.conf.py")),
            env=self.env(
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS=str(workers),
                RATELIMIT_ENABLED="false",
                **env,
            ),
        )
        server.wait_for_http(f"http://127.0.0.1:{port}/health", timeout=30)
        return HttpClient(port)

    def close(self) -> None:
        """Stop every process (see `Launcher.close`) and release the apps' broker connections."""
        self.launcher.close()
        for hooks in self.hooks:
            hooks.remove()
        self.hooks.clear()
        for app in self.apps:
            app.extensions["celery"].close()
        self.apps.clear()
        for proxy in self.proxies:
            proxy.close()
        self.proxies.clear()

    def log_sections(self) -> list[tuple[str, str]]:
        return self.launcher.log_sections()

    def all_logs(self) -> str:
        return "\n".join(f"=== {title}\n{text}" for title, text in self.log_sections())

    # -- what the processes recorded --------------------------------------------------------

    def mail_records(self) -> list[dict[str, Any]]:
        """Every SMTP DATA the sink saw (complete lines only: the sink may be mid-write)."""
        if not self.mail_log.exists():
            return []
        text = self.mail_log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def deliveries(self) -> list[dict[str, Any]]:
        """The post notifications delivered (registering over HTTP also sends a confirmation
        e-mail: see `confirmation_deliveries`; a post to subscribers, one e-mail each: see
        `fan_out_deliveries`)."""
        return [
            record
            for record in self.mail_records()
            if record["event"] == "delivered"
            and not _is_confirmation(record)
            and not _is_fan_out(record)
        ]

    def fan_out_deliveries(self) -> list[dict[str, Any]]:
        return [
            record
            for record in self.mail_records()
            if record["event"] == "delivered" and _is_fan_out(record)
        ]

    def confirmation_deliveries(self) -> list[dict[str, Any]]:
        return [
            record
            for record in self.mail_records()
            if record["event"] == "delivered" and _is_confirmation(record)
        ]

    def audit_lines(self) -> list[str]:
        if not self.audit_log.exists():
            return []
        return self.audit_log.read_bytes().decode("ascii").splitlines(keepends=True)

    def audit_records(self) -> list[dict[str, Any]]:
        """Each line of the audit file as one JSON object; fails on any torn or merged line."""
        records = []
        for number, line in enumerate(self.audit_lines(), 1):
            assert line.endswith("\n"), f"line {number} is cut short: {line!r}"
            record = json.loads(line)
            assert isinstance(record, dict), f"line {number} is not an object: {line!r}"
            records.append(record)
        return records


# -- the application side ---------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Any
    elapsed: float


class HttpClient:
    """JSON over real HTTP to a server on 127.0.0.1 (one connection per request)."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.port = port
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        started = time.perf_counter()
        try:
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        elapsed = time.perf_counter() - started
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return HttpResponse(response.status, parsed, elapsed)

    def account(self, name: str, email: str | None = None) -> dict[str, str]:
        """Register `name` and log in over HTTP; returns the Authorization header."""
        password = "correct horse battery"
        body = {"username": name, "password": password, "email": email or f"{name}@example.com"}
        created = self.request("POST", "/api/v1/users", body)
        assert created.status == 201, created
        login = self.request("POST", "/api/v1/login", {"username": name, "password": password})
        assert login.status == 200, login
        return {"Authorization": f"Bearer {login.body['access_token']}"}


@contextlib.contextmanager
def stack_in(
    tmp_path_factory: pytest.TempPathFactory,
    queue: str,
    database_url: str,
    make_app: Callable[..., Flask],
) -> Iterator[Stack]:
    """A stack on the run's database, its queue `queue`, in a new temp directory of that name
    (short: worker logs and the beat schedule live there). When the block ends, pass or fail,
    every process it started is stopped and the directory removed; a failed test's process logs
    are in its report by then (the root conftest's hook reads `Stack.log_sections`)."""
    directory = tmp_path_factory.mktemp(queue)
    stack = Stack(directory, database_url, queue, make_app)
    try:
        yield stack
    finally:
        stack.close()
        shutil.rmtree(directory, ignore_errors=True)


def create_posts(
    client: FlaskClient,
    headers: dict[str, str],
    count: int,
    versions: Sequence[str] = ("v1", "v2"),
    title: str = "Post",
) -> list[CreatedPost]:
    """Create `count` posts, cycling through `versions`; records status and response time."""
    created = []
    for number in range(count):
        version = versions[number % len(versions)]
        body: dict[str, Any] = {"title": f"{title} {number}", "content": f"Body of post {number}."}
        if version == "v2":
            body["category"] = "integration"
        started = time.perf_counter()
        response = client.post(f"/api/{version}/posts", json=body, headers=headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 201, response.get_data(as_text=True)
        created.append(CreatedPost(response.json["id"], version, response.status_code, elapsed))
    return created


def job_views(app: Flask, post_ids: Iterable[int] | None = None) -> list[JobView]:
    """The jobs of posts (of `post_ids`, or of every post); confirmation e-mails' jobs apart."""
    with app.app_context():
        statement = select(Job).where(Job.post_id.is_not(None)).order_by(Job.post_id, Job.kind)
        if post_ids is not None:
            statement = statement.where(Job.post_id.in_(list(post_ids)))
        views = [
            JobView(
                job.id,
                job.kind,
                job.post_id,
                job.status,
                job.attempts,
                job.last_error,
                job.claimed_by,
            )
            for job in db.session.scalars(statement)
        ]
        db.session.remove()
        return views


def wait_for_jobs(
    stack: Stack,
    app: Flask,
    post_ids: Iterable[int],
    timeout: float,
    statuses: frozenset[str] = FINISHED,
) -> list[JobView]:
    """Wait until every job of `post_ids` has one of `statuses`; returns the jobs."""
    ids = list(post_ids)

    def settled() -> list[JobView] | None:
        jobs = job_views(app, ids)
        return jobs if jobs and all(job.status in statuses for job in jobs) else None

    def progress() -> str:
        jobs = job_views(app, ids)
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return f"jobs of {len(ids)} post(s) to reach {sorted(statuses)}; now {counts}"

    return wait_until(settled, timeout, progress, interval=0.2)


def assert_each_effect_once(
    stack: Stack,
    app: Flask,
    posts: Sequence[CreatedPost],
    attempts: int = 1,
    within: float = 0.0,
) -> None:
    """The oracle, once every job of `posts` has finished (waited for up to `within` seconds):
    one e-mail (by Message-ID) per post, one audit line per v2 post, every job `done` after
    `attempts` attempt(s)."""
    wait_for_jobs(stack, app, [post.id for post in posts], timeout=within)
    jobs = job_views(app, [post.id for post in posts])
    assert {(job.status, job.attempts) for job in jobs} == {("done", attempts)}, jobs
    notify = [job for job in jobs if job.kind == JobKind.NOTIFY_AUTHOR]
    audit = [job for job in jobs if job.kind == JobKind.AUDIT_POST_CREATED]
    assert len(notify) == len(posts)
    assert len(audit) == sum(post.version == "v2" for post in posts)

    mail_ids = Counter(record["message_id"] for record in stack.deliveries())
    assert mail_ids == Counter(message_id(job.id) for job in notify)

    audit_ids = Counter(record["event_id"] for record in stack.audit_records())
    assert audit_ids == Counter(job.id for job in audit)


def purge_redis_queue(url: str, queue: str) -> None:
    """Delete this test's queue keys from the shared Redis (never FLUSHALL / FLUSHDB)."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
        # Our workers' remote-control bindings (their node names carry the queue name).
        pidbox = "_kombu.binding.celery.pidbox"
        for member in client.smembers(pidbox):  # type: ignore[union-attr]
            if queue.encode() in member:
                client.srem(pidbox, member)
        if not client.exists(pidbox):  # no worker of anyone left on this db
            client.zrem("_kombu.binding_deadlines", "celery.pidbox")
        # Messages a killed worker never acknowledged: [message, exchange, routing_key].
        for tag, payload in client.hscan_iter("unacked"):
            try:
                routing_key = json.loads(payload)[2]
            except (ValueError, IndexError, TypeError):
                continue
            if routing_key == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()

"""OpenTelemetry tracing: a post's request, its SQL and its notification job's attempt are one
trace, carried across the outbox by the job row; a job written outside a request has a trace of
its own; with no OTEL_* variable nothing of OpenTelemetry is even imported.

The spans go to an in-memory exporter (no network); the jobs run through their Celery tasks in
this process, as the relay's messages would make a worker run them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from flask import Flask
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select

from blog_api import create_app
from blog_api.config import ConfigError
from blog_api.effects.mailer import close_kept_connections
from blog_api.extensions import db
from blog_api.jobs.outbox import insert_post_jobs
from blog_api.jobs.relay import relay_due_jobs
from blog_api.models import Job, JobKind, Post
from blog_api.tracing import configure_tracing, trace_exporter_names
from blog_api.worker.tasks import TASKS, publish_jobs
from harness.launcher import free_port
from support import Account, create_account_from_before_confirmations, job_row
from support.fanout import attempt


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def mail_port() -> Iterator[int]:
    """An SMTP server in this process that accepts every message."""
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port
    close_kept_connections()
    controller.stop()


@pytest.fixture
def traced_app(
    make_app: Callable[..., Flask], exporter: InMemorySpanExporter, mail_port: int
) -> Iterator[Callable[..., Flask]]:
    """Build an app traced into `exporter` (as the OTEL_* variables would, with the in-memory
    exporter in place of theirs)."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def build(**overrides: Any) -> Flask:
        app = make_app(**{"MAIL_PORT": mail_port, **overrides})
        configure_tracing(app, provider)
        return app

    yield build
    # The SQLAlchemy instrumentation is process-wide: later tests' engines are left alone.
    SQLAlchemyInstrumentor().uninstrument()
    provider.shutdown()


def run_job(app: Flask, job_id: str) -> str:
    """One attempt at the job, through its Celery task in this process: its outcome."""
    return attempt(app, TASKS[job_row(app, job_id).kind].name, job_id)


def notification_job_of(app: Flask, post_id: int) -> Job:
    with app.app_context():
        job_id = db.session.scalar(
            select(Job.id).where(Job.post_id == post_id, Job.kind == JobKind.NOTIFY_AUTHOR)
        )
    assert job_id is not None
    return job_row(app, job_id)


def descends_from(span: ReadableSpan, ancestor: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    """Whether `ancestor` is `span`'s parent, or its parent's parent, and so on."""
    by_id = {s.context.span_id: s for s in spans}
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return False


def test_a_post_and_its_notification_job_are_one_trace(
    traced_app: Callable[..., Flask], exporter: InMemorySpanExporter, alice: Account
) -> None:
    app = traced_app()

    response = app.test_client().post(
        "/api/v1/posts",
        json={"title": "Traced", "content": "From the request to the e-mail"},
        headers={**alice.headers, "X-Request-ID": "trace-me-1"},
    )
    assert response.status_code == 201, response.json
    job = notification_job_of(app, response.json["id"])
    assert run_job(app, job.id) == "done"

    spans = list(exporter.get_finished_spans())
    [request] = [span for span in spans if span.kind is SpanKind.SERVER]
    assert request.name == "POST /api/v1/posts"
    assert request.parent is None
    assert request.attributes is not None
    assert request.attributes["blog_api.request_id"] == "trace-me-1"
    # One trace: the request is its only root.
    assert {span.context.trace_id for span in spans} == {request.context.trace_id}
    assert [span for span in spans if span.parent is None] == [request]

    # The job row carries the request span's context across the outbox and the relay.
    assert job.trace_context is not None
    _version, trace_id, parent_id, flags = job.trace_context["traceparent"].split("-")
    assert (trace_id, parent_id) == (
        f"{request.context.trace_id:032x}",
        f"{request.context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled

    # The request's SQL, its INSERT of the job among it.
    request_sql = [
        span
        for span in spans
        if span.kind is SpanKind.CLIENT
        and span.parent == request.context
        # the connect span of the request's transaction is not a statement
        and span.name != "connect"
    ]
    statements = [str((span.attributes or {}).get("db.statement", "")) for span in request_sql]
    assert any(statement.startswith("INSERT INTO jobs") for statement in statements), statements

    [attempt] = [span for span in spans if span.kind is SpanKind.CONSUMER]
    assert attempt.name == "notify_author"
    # Its parent is the request's span, as read back from the row (a remote parent).
    assert attempt.parent is not None
    assert attempt.parent.is_remote
    assert descends_from(attempt, request, spans)
    assert attempt.attributes == {
        "blog_api.job.id": job.id,
        "blog_api.job.kind": "notify_author",
        "blog_api.job.attempt": 1,
        "blog_api.request_id": "trace-me-1",
        "blog_api.job.outcome": "done",
    }
    assert attempt.status.status_code is StatusCode.UNSET
    # The attempt's own SQL (the post and its author, the outcome) is in the trace under it.
    assert any(span.parent == attempt.context and span.kind is SpanKind.CLIENT for span in spans)


CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("tracestate", "kept"),
    [
        ("vendor=a1b2", "vendor=a1b2"),
        # 30 entries, 629 characters: past the 512 that W3C asks a platform to carry.
        (",".join(f"v{number:02d}=" + "x" * 16 for number in range(30)), None),
    ],
)
def test_a_clients_trace_goes_on_through_the_job_with_a_bounded_tracestate(
    traced_app: Callable[..., Flask], alice: Account, tracestate: str, kept: str | None
) -> None:
    """A `traceparent` header makes the request, and so its jobs, part of the client's trace;
    the job row keeps the client's `tracestate` only up to 512 characters."""
    app = traced_app()

    response = app.test_client().post(
        "/api/v1/posts",
        json={"title": "Traced", "content": "x"},
        headers={**alice.headers, "traceparent": CLIENT_TRACEPARENT, "tracestate": tracestate},
    )

    assert response.status_code == 201
    context = notification_job_of(app, response.json["id"]).trace_context
    assert context is not None
    assert context["traceparent"].split("-")[1] == CLIENT_TRACE_ID
    assert context.get("tracestate") == kept


def test_a_job_written_outside_a_request_has_a_trace_of_its_own(
    traced_app: Callable[..., Flask], exporter: InMemorySpanExporter
) -> None:
    """Nothing was current when the job was written: no context in its row, and its attempt is a
    root. Nobody listens on port 1, so the attempt fails and its span says so."""
    app = traced_app(MAIL_PORT=1)
    with app.app_context():
        author = create_account_from_before_confirmations(
            f"u_{uuid.uuid4().hex[:8]}", "writer@example.com"
        )
        post = Post(user_id=author.id, title="A title", content="Some content")
        db.session.add(post)
        db.session.flush()
        [job_id] = insert_post_jobs(post.id, "v1")
        db.session.commit()
    assert job_row(app, job_id).trace_context is None

    assert run_job(app, job_id) == "retrying"

    spans = list(exporter.get_finished_spans())
    [attempt] = [span for span in spans if span.kind is SpanKind.CONSUMER]
    assert attempt.parent is None
    assert attempt.attributes is not None
    assert attempt.attributes["blog_api.job.outcome"] == "retrying"
    assert attempt.status.status_code is StatusCode.ERROR
    # Statements sent outside every span (the post written above, the claim) are not traced.
    assert [span for span in spans if span.parent is None] == [attempt]


def test_the_relays_publish_is_a_trace_of_its_own(
    traced_app: Callable[..., Flask], exporter: InMemorySpanExporter, alice: Account
) -> None:
    """One batch serves many requests: its span belongs to none of their traces."""
    app = traced_app(CELERY_BROKER_URL="memory://")
    client = app.test_client()
    for title in ("One", "Two"):
        response = client.post(
            "/api/v2/posts", json={"title": title, "content": "x"}, headers=alice.headers
        )
        assert response.status_code == 201
    celery_app = app.extensions["celery"]

    with app.app_context():
        assert relay_due_jobs(lambda jobs: publish_jobs(celery_app, jobs)) == 4

    spans = list(exporter.get_finished_spans())
    [publish] = [span for span in spans if span.name == "relay publish"]
    assert publish.parent is None
    assert publish.attributes == {"blog_api.jobs.count": 4}
    requests = [span for span in spans if span.kind is SpanKind.SERVER]
    assert len(requests) == 2
    assert publish.context.trace_id not in {span.context.trace_id for span in requests}


def test_a_request_refused_by_the_body_check_still_has_its_span(
    traced_app: Callable[..., Flask], exporter: InMemorySpanExporter, alice: Account
) -> None:
    """The body is read before the rate limiter and the view (api/bodies.py); the request's
    span starts before that check."""
    response = (
        traced_app()
        .test_client()
        .post(
            "/api/v1/posts",
            data=b'{"title": ',
            headers={**alice.headers, "Content-Type": "application/json"},
        )
    )

    assert response.status_code == 400
    [request] = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert request.attributes is not None
    assert request.attributes["http.status_code"] == 400


def test_with_tracing_off_a_job_row_has_no_trace_context(app: Flask, alice: Account) -> None:
    response = app.test_client().post(
        "/api/v1/posts", json={"title": "Untraced", "content": "x"}, headers=alice.headers
    )

    assert response.status_code == 201
    assert notification_job_of(app, response.json["id"]).trace_context is None
    assert "tracing" not in app.extensions


def load_servers_app(tmp_path: Path, **environ: str) -> list[str]:
    """Whether a server process (`blog_api.wsgi`) loaded OpenTelemetry and traces its app."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(FLASK_ENV="testing", LOG_FILE=str(tmp_path / "app.log"), **environ)
    probe = (
        "import sys, blog_api.wsgi as w; "
        "print('opentelemetry' in sys.modules, 'tracing' in w.flask_app.extensions)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_without_otel_variables_a_server_never_imports_opentelemetry(tmp_path: Path) -> None:
    """Off costs nothing: no SDK, no instrumentation, no span can be recorded."""
    assert load_servers_app(tmp_path) == ["False", "False"]
    assert load_servers_app(tmp_path, OTEL_TRACES_EXPORTER="none") == ["False", "False"]
    assert load_servers_app(tmp_path, OTEL_TRACES_EXPORTER="console") == ["True", "True"]
    assert load_servers_app(tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true") == [
        "False",
        "False",
    ]


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "blog"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        # The specification's default exporter, once an endpoint says where to send.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        (
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            [],
        ),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_otel_variables_decide_whether_and_where_to_export(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert trace_exporter_names(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "no span exporter 'zipkin' is installed"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "'http/json' is neither http/protobuf nor grpc",
        ),
        # The SDK's gRPC exporter is not in the tracing lock (it needs grpcio).
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "no span exporter 'otlp_proto_grpc' is installed",
        ),
    ],
)
def test_an_exporter_that_cannot_be_had_stops_the_start_with_its_name(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], message: str
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=message):
        create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://")


def test_tracing_asked_for_without_opentelemetry_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed

    with pytest.raises(ConfigError, match="pip install --require-hashes -r requirements-tracing"):
        create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://")

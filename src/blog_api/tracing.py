"""OpenTelemetry tracing: off unless the standard `OTEL_*` variables turn it on, and then one
trace from a request to the jobs it created.

On when `OTEL_TRACES_EXPORTER` names exporters (`console`, `otlp`, or any installed one; `none`
is off), or when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the exporter is then `otlp`, the specification's default);
`OTEL_SDK_DISABLED=true` turns it off whatever else is set. The SDK reads the other variables
itself: `OTEL_SERVICE_NAME` (default here `blog-api`), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, the OTLP exporter's endpoint, headers and timeout.

What is traced:
- each request: a server span (the Flask instrumentation), and the SQL it sends (the SQLAlchemy
  instrumentation on the app's engines);
- each attempt at a job: a span named by the job's kind (`job_span`), a child of the span that
  wrote the job. The job row carries that span's W3C trace context (`jobs.trace_context`, written
  by the outbox), because nothing else goes the whole way: the relay's messages hold only a job
  id, and the worker reads the context from the row it claims;
- each batch the relay publishes (`publish_span`), a trace of its own.
SQL sent outside all of these (the relay's polling, the heartbeats, the claim of a job) is not
recorded: a trace of one statement every few seconds per worker would bury the rest.

Off, nothing of OpenTelemetry is imported, so a web server loads nothing more than before; its
packages are a lock of their own (`requirements-tracing.txt`), which production installs to trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, g

from blog_api.config import ConfigError
from blog_api.extensions import db

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
    from opentelemetry.trace import Link, SpanKind, TraceState
    from opentelemetry.util.types import Attributes

    from blog_api.models import Job

INSTALL_HINT = "pip install --require-hashes -r requirements-tracing.txt"
SERVICE_NAME = "blog-api"
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# `otlp` is the exporter of the protocol asked for; the specification's default protocol is
# http/protobuf (the SDK's own `otlp` entry point is gRPC, whose exporter needs grpcio).
OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
# W3C Trace Context: a platform must pass on at least 512 characters of `tracestate` and may drop
# a longer one; a job row keeps no more.
MAX_TRACESTATE = 512
# The outcomes of an attempt that did not get its job done (blog_api.jobs.runner).
FAILED_OUTCOMES = frozenset({"dead", "retrying"})


def trace_exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters the OTEL_* variables in `environ` ask for; none: tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [name for name in names if name]
    if "none" in names:
        return []
    if names:
        return names
    # Off by default means no export to a collector nobody said exists: the default exporter
    # applies only once an endpoint is set.
    return ["otlp"] if any(environ.get(name) for name in OTLP_ENDPOINTS) else []


def configure_tracing(app: Flask, provider: TracerProvider | None = None) -> None:
    """Trace `app`'s requests, its SQL and its jobs' attempts into `provider`, or (without one)
    into the exporters the OTEL_* variables name; without either, or when `app` is traced
    already, do nothing.

    One app per process is traced with its SQL (a server or a worker builds one): the SQLAlchemy
    instrumentation is process-wide, and moves to the last app traced.
    """
    if "tracing" in app.extensions or (provider is None and not trace_exporter_names(os.environ)):
        return
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        if provider is None:
            provider = _provider_from_environment()
    except ImportError as error:
        raise ConfigError(
            f"The OTEL_* variables turn tracing on, but {error.name} is not installed: "
            f"{INSTALL_HINT}"
        ) from None

    sampler_class = _statements_need_a_parent()
    if not isinstance(provider.sampler, sampler_class):
        # Read by every tracer the provider hands out from now on.
        provider.sampler = sampler_class(provider.sampler)

    FlaskInstrumentor.instrument_app(app, tracer_provider=provider, enable_commenter=False)
    # The request's span starts first, so that it also covers a request that an earlier hook
    # refuses (a malformed or oversized body).
    before_request = app.before_request_funcs[None]
    before_request.insert(0, before_request.pop())
    app.before_request(_tag_request_span)

    with app.app_context():
        engines = list(db.engines.values())
    sqlalchemy = SQLAlchemyInstrumentor()
    if sqlalchemy.is_instrumented_by_opentelemetry:
        sqlalchemy.uninstrument()
    # The instrumentation declares SQLAlchemy < 2.1 and would refuse 2.1; it listens to the
    # engines' cursor events, which 2.1 keeps (tests/test_tracing.py reads the spans).
    sqlalchemy.instrument(engines=engines, tracer_provider=provider, skip_dep_check=True)
    app.extensions["tracing"] = Tracing(provider)


@cache
def _provider_from_environment() -> TracerProvider:
    """The process's tracer provider (an app built again in the same process, as the `flask`
    commands do, shares it), exporting in batches to the exporters the OTEL_* variables name;
    also OpenTelemetry's global provider, for any other instrumentation in the process."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter_class(name)() for name in trace_exporter_names(os.environ)]
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # and OTEL_TRACES_SAMPLER, OTEL_SDK_DISABLED
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    trace.set_tracer_provider(provider)
    return provider


def _exporter_class(name: str) -> Any:
    """The span exporter an OTEL_TRACES_EXPORTER name stands for: an entry point of the group
    `opentelemetry_traces_exporter` (`console` is the SDK's, `otlp_proto_http` the OTLP one's)."""
    if name == "otlp":
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in OTLP_EXPORTERS:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is neither http/protobuf nor grpc"
            )
        name = OTLP_EXPORTERS[protocol]
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed")
    return next(iter(found)).load()


@cache
def _statements_need_a_parent() -> type[Any]:
    """The sampler that drops a client span without a parent (SQL sent outside a request, a job
    or a publish) and leaves every other decision to the sampler it wraps (the one
    OTEL_TRACES_SAMPLER names)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class StatementsNeedAParent(Sampler):
        def __init__(self, delegate: Sampler) -> None:
            self.delegate = delegate

        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> SamplingResult:
            parent = get_current_span(parent_context).get_span_context()
            if kind is SpanKind.CLIENT and not parent.is_valid:
                return SamplingResult(Decision.DROP)
            return self.delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"StatementsNeedAParent{{{self.delegate.get_description()}}}"

    return StatementsNeedAParent


def _tag_request_span() -> None:
    """Put the request id, which every log line of the request and of its jobs carries, on the
    request's span."""
    from opentelemetry.trace import get_current_span

    get_current_span().set_attribute("blog_api.request_id", g.get("request_id", "-"))


class Tracing:
    """An app's tracer, and the W3C Trace Context format of its job rows (not the process's
    OTEL_PROPAGATORS: the row is the app's own hop, and keeps no baggage)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = provider.get_tracer("blog_api")
        self.propagator = TraceContextTextMapPropagator()

    def current_context(self) -> dict[str, str] | None:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        if len(carrier.get("tracestate", "")) > MAX_TRACESTATE:
            del carrier["tracestate"]
        return carrier or None

    @contextmanager
    def job_span(self, job: Job) -> Iterator[Callable[[str], None]]:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        def record_outcome(outcome: str) -> None:
            span.set_attribute("blog_api.job.outcome", outcome)
            if outcome in FAILED_OUTCOMES:
                span.set_status(Status(StatusCode.ERROR, f"attempt {outcome}"))

        with self.tracer.start_as_current_span(
            str(job.kind),
            context=self.propagator.extract(job.trace_context or {}),
            kind=SpanKind.CONSUMER,
            attributes={
                "blog_api.job.id": job.id,
                "blog_api.job.kind": str(job.kind),
                "blog_api.job.attempt": job.attempts,
                "blog_api.request_id": job.request_id or "-",
            },
        ) as span:
            yield record_outcome

    @contextmanager
    def publish_span(self, count: int) -> Iterator[None]:
        with self.tracer.start_as_current_span(
            "relay publish", attributes={"blog_api.jobs.count": count}
        ):
            yield


def _tracing() -> Tracing | None:
    """The current app's tracing; None when it is off."""
    return current_app.extensions.get("tracing")


def current_trace_context() -> dict[str, str] | None:
    """The W3C trace context of the current span (the request's), for a new job's row; None
    when tracing is off or no span is current (the job's attempts then start a trace)."""
    tracing = _tracing()
    return None if tracing is None else tracing.current_context()


def job_span(job: Job) -> AbstractContextManager[Callable[[str], None]]:
    """A span around one attempt at `job`, named by its kind, in the trace of the span that
    wrote the job (`jobs.trace_context`); it gives the function that records the attempt's
    outcome (an attempt that failed has the error status). Without tracing, nothing."""
    tracing = _tracing()
    return nullcontext(_ignore) if tracing is None else tracing.job_span(job)


def publish_span(count: int) -> AbstractContextManager[None]:
    """A span around the relay's publish of `count` jobs' messages (a trace of its own: one
    batch serves many requests). Without tracing, nothing."""
    tracing = _tracing()
    return nullcontext() if tracing is None else tracing.publish_span(count)


def _ignore(_outcome: str) -> None:
    """Tracing is off: an attempt's outcome goes nowhere."""

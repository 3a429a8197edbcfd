"""With real processes and `OTEL_TRACES_EXPORTER=console`: the span a Celery worker's pool
process records for a post's notification belongs to the trace of the request that gunicorn
served, although the relay's message carried only the job's id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harness.launcher import wait_until
from support.integration_stack import POSTGRESQL_ONLY, Stack, wait_for_jobs

pytestmark = pytest.mark.integration

# Console export, in batches flushed every 50 ms instead of 5 s.
CONSOLE_TRACING = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}


def spans_in(log: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed (indented JSON objects) among the log lines."""
    decoder = json.JSONDecoder()
    spans = []
    position = 0
    while (start := log.find("\n{", position)) != -1:
        try:
            span, position = decoder.raw_decode(log, start + 1)
        except ValueError:
            position = start + 1
            continue
        if isinstance(span, dict) and "context" in span:
            spans.append(span)
    return spans


def span_named(log: Callable[[], str], name: str) -> dict[str, Any]:
    def printed() -> dict[str, Any] | None:
        return next((span for span in spans_in(log()) if span["name"] == name), None)

    return wait_until(printed, 15, f"the span {name!r} to be printed")


@POSTGRESQL_ONLY
def test_the_workers_span_for_a_job_is_in_the_trace_of_the_request_that_wrote_it(
    stack: Stack, make_account: Callable[..., Any]
) -> None:
    """PostgreSQL only: the trace's way through the processes is under test, not the database."""
    [worker] = stack.up(**CONSOLE_TRACING, OTEL_SERVICE_NAME="blog-api-worker")
    web = stack.start_gunicorn(workers=1, **CONSOLE_TRACING)
    gunicorn = next(service for service in stack.services if service.name == "gunicorn")
    author = make_account(email="traced@example.com")

    response = web.request(
        "POST", "/api/v1/posts", {"title": "Traced", "content": "x"}, author.headers
    )
    assert response.status == 201, response.body
    [job] = wait_for_jobs(stack, stack.app(), [response.body["id"]], timeout=30)
    assert job.status == "done"

    request = span_named(gunicorn.log, "POST /api/v1/posts")
    attempt = span_named(worker.log, "notify_author")
    assert request["kind"] == "SpanKind.SERVER"
    assert request["resource"]["attributes"]["service.name"] == "blog-api"
    assert attempt["kind"] == "SpanKind.CONSUMER"
    assert attempt["resource"]["attributes"]["service.name"] == "blog-api-worker"
    assert attempt["context"]["trace_id"] == request["context"]["trace_id"]
    assert attempt["parent_id"] == request["context"]["span_id"]
    assert attempt["attributes"]["blog_api.job.id"] == job.id
    assert attempt["attributes"]["blog_api.job.outcome"] == "done"

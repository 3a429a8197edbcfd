"""One log format for gunicorn, the app and the Celery worker (`LOG_FORMAT`), and one post
followed through all of them by its request id: gunicorn's access line, the app's line about the
post, the worker's e-mail line and Celery's own line about the task.

With `LOG_FORMAT=json` every line of gunicorn's output (access and error logs, the app's lines)
and of the worker's is one JSON object with the same keys.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.integration_stack import POSTGRESQL_ONLY, Stack, wait_for_jobs

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]
REQUEST_ID = "followed-post-1"
COMMON_KEYS = {"time", "level", "logger", "message", "request_id"}


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of `output` as a JSON object with the common keys (fails on any other line)."""
    records = []
    for line in output.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert record.keys() >= COMMON_KEYS, line
        records.append(record)
    return records


def follow_a_post(stack: Stack, log_format: str) -> tuple[str, str]:
    """A post created through gunicorn (two workers) with `X-Request-ID: REQUEST_ID`, its jobs
    run by a worker; the output of gunicorn and of the worker once its e-mail is sent."""
    stack.configure(LOG_FORMAT=log_format)
    [worker] = stack.up()
    server = stack.start_gunicorn(workers=2)
    author = server.account("followed", "followed@example.com")

    created = server.request(
        "POST",
        "/api/v1/posts",
        {"title": "Followed", "content": "x"},
        {**author, "X-Request-ID": REQUEST_ID},
    )

    assert created.status == 201
    [job] = wait_for_jobs(stack, stack.app(), [created.body["id"]], timeout=30)
    assert job.status == "done"
    stack.wait_for_log(worker, "] succeeded in ")
    gunicorn = next(service for service in stack.services if service.name == "gunicorn")
    return gunicorn.log(), worker.log()


def test_with_json_logs_one_post_is_followed_by_its_request_id_from_gunicorn_to_its_e_mail(
    stack: Stack,
) -> None:
    web_output, worker_output = follow_a_post(stack, "json")

    web, worker = json_lines(web_output), json_lines(worker_output)

    assert {"gunicorn.error", "gunicorn.access", "blog_api"} <= {r["logger"] for r in web}
    assert any(r["logger"] == "celery.apps.worker" for r in worker)  # "ready."
    followed = [
        (record["logger"], record["message"])
        for record in web + worker
        if record["request_id"] == REQUEST_ID
    ]
    loggers = [logger for logger, _ in followed]
    assert loggers.count("gunicorn.access") == 1
    assert ("blog_api", "Post created: Followed by followed") in followed
    assert any(message.startswith("Email sent to user") for _, message in followed)
    assert any("succeeded in" in message for _, message in followed)
    [access] = [message for logger, message in followed if logger == "gunicorn.access"]
    assert '"POST /api/v1/posts HTTP/1.1" 201' in access


def test_with_text_logs_one_post_is_followed_by_its_request_id_from_gunicorn_to_its_e_mail(
    stack: Stack,
) -> None:
    web_output, worker_output = follow_a_post(stack, "text")

    followed = [
        line
        for line in (web_output + worker_output).splitlines()
        if f"request_id={REQUEST_ID}" in line
    ]

    [access] = [line for line in followed if '"POST /api/v1/posts HTTP/1.1" 201' in line]
    assert access.endswith(f" request_id={REQUEST_ID}")
    assert any(f"[request_id={REQUEST_ID}] Post created: Followed" in line for line in followed)
    assert any(f"[request_id={REQUEST_ID}] Email sent to user" in line for line in followed)
    assert any(f"[request_id={REQUEST_ID}] Task blog_api" in line for line in followed)
    # gunicorn's own lines in the app's layout, and no worker line ending in an empty URL.
    assert "INFO [request_id=-] Booting worker with pid" in web_output
    assert not any(line.endswith("[-]") for line in worker_output.splitlines())

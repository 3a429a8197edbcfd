"""S53: forwarded headers sent straight to gunicorn change nothing and never produce HTML.

gunicorn's defaults trust forwarded headers from 127.0.0.1 (where nginx, and every local client,
connects from): a `SCRIPT_NAME` header cut the path the app saw (`/health` became a 404), or
gave gunicorn's HTML 500 when the path did not start with it, and X-Forwarded-Proto headers
that disagree (repeated, or against X-Forwarded-Ssl) were refused with gunicorn's HTML 400.
`gunicorn.conf.py` now has gunicorn act on none of them; the app alone reads X-Forwarded-*
(`TRUSTED_PROXIES`).

Integration tier: gunicorn (the shipped configuration, 2 sync workers, bound to 127.0.0.1) runs
as a subprocess on the run's PostgreSQL database and Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from nginx_front import send

from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

FORWARDED_HEADERS = {
    "SCRIPT_NAME": [("SCRIPT_NAME", "/x")],
    "SCRIPT_NAME-prefix": [("SCRIPT_NAME", "/health")],
    "PATH_INFO": [("PATH_INFO", "/nowhere")],
    "X-Forwarded-Proto": [("X-Forwarded-Proto", "https")],
    "X-Forwarded-Proto-twice": [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
    "X-Forwarded-Ssl-disagrees": [("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")],
    "X-Forwarded-For": [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")],
    "X-Forwarded-Host": [("X-Forwarded-Host", "evil.example")],
    "Forwarded": [("Forwarded", 'for=10.0.0.1;proto=https;host="evil.example"')],
    "underscores": [("X_Forwarded_For", "10.0.0.1"), ("X_Forwarded_Proto", "https")],
    "all-of-them": [
        ("SCRIPT_NAME", "/x"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Ssl", "off"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("X_Forwarded_For", "10.0.0.1"),
    ],
}


@pytest.fixture
def gunicorn(
    start_gunicorn_pair: Callable[..., AbstractContextManager[tuple[Stack, int]]],
) -> Iterator[int]:
    """gunicorn as shipped, reached from 127.0.0.1 (its default trusted address); the port."""
    with start_gunicorn_pair("s53") as (_stack, port):
        yield port


@pytest.mark.scenario("S53")
def test_forwarded_headers_straight_to_gunicorn_get_the_apps_json(gunicorn: int) -> None:
    plain = send(gunicorn, "GET", "/health", [("Host", "localhost")])
    answers = {
        case: send(gunicorn, "GET", "/health", [("Host", "localhost"), *headers])
        for case, headers in FORWARDED_HEADERS.items()
    }

    assert plain.status == 200
    for case, answer in answers.items():
        assert answer.status == 200, (case, answer)
        assert answer.headers.get_content_type() == "application/json", (case, answer)
        assert json.loads(answer.body) == json.loads(plain.body), case
        assert "X-Request-ID" in answer.headers, case  # the app answered, not gunicorn

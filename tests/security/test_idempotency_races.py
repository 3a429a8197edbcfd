"""Idempotency-Key across processes: two identical keyed requests racing on the two workers of
gunicorn create one post and one set of jobs (so one e-mail), on SQLite and PostgreSQL. The
primary key of `idempotency_keys` decides each race; the loser answers `409` (the winner still
in flight) or the winner's stored `201`.

Integration tier: gunicorn runs as a subprocess (stopped by its PID, its temp directory removed)
on the run's database.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Job, Post
from support import Account
from support.integration_stack import Stack

pytestmark = pytest.mark.integration

KEYS = 25
REPLAYED = "Idempotent-Replayed"


@pytest.fixture
def gunicorn(
    start_gunicorn_pair: Callable[..., AbstractContextManager[tuple[Stack, int]]],
) -> Iterator[tuple[Stack, int]]:
    with start_gunicorn_pair("idem") as pair:
        yield pair


def post(
    port: int, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    """One POST on a connection of its own: (status, headers, raw body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            "/api/v2/posts",
            json.dumps(body),
            {"Content-Type": "application/json", **headers},
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_identical_keyed_requests_racing_on_two_workers_create_one_post_each(
    gunicorn: tuple[Stack, int], make_account: Callable[..., Account], app: Flask
) -> None:
    _, port = gunicorn
    alice = make_account("alice", email="alice@example.com")

    def race(number: int) -> list[tuple[int, dict[str, str], bytes]]:
        """The same request twice, released together from two threads."""
        headers = {**alice.headers, "Idempotency-Key": f"race-{number}"}
        body = {"title": f"race {number}", "content": "sent twice at once"}
        start = threading.Barrier(2)

        def send(_: int) -> tuple[int, dict[str, str], bytes]:
            start.wait()
            return post(port, headers, body)

        with ThreadPoolExecutor(max_workers=2) as pair:
            return list(pair.map(send, range(2)))

    answers = [race(number) for number in range(KEYS)]
    retries = [
        post(
            port,
            {**alice.headers, "Idempotency-Key": f"race-{number}"},
            {"title": f"race {number}", "content": "sent twice at once"},
        )
        for number in range(KEYS)
    ]

    with app.app_context():
        posts = db.session.execute(select(Post.id, Post.title)).all()
        jobs = Counter(db.session.scalars(select(Job.post_id)))
    titles = Counter(title for _, title in posts)
    assert titles == Counter(f"race {number}" for number in range(KEYS))
    assert all(jobs[post_id] == 2 for post_id, _ in posts)  # notify_author + audit_post_created
    assert sum(jobs.values()) == 2 * KEYS
    statuses = Counter(status for pair in answers for status, _, _ in pair)
    assert set(statuses) <= {201, 409}, statuses
    pids = {headers["X-Worker-Pid"] for pair in answers for _, headers, _ in pair}
    assert len(pids) == 2
    for pair, retry in zip(answers, retries, strict=True):
        # One of the pair did the work; the other found it in flight or replayed its answer.
        outcomes = sorted((status, REPLAYED in headers) for status, headers, _ in pair)
        assert outcomes in ([(201, False), (201, True)], [(201, False), (409, False)]), pair
        created = next(raw for status, headers, raw in pair if status == 201)
        assert all(raw == created for status, _, raw in pair if status == 201)
        assert retry[0] == 201
        assert retry[1][REPLAYED] == "true"
        assert retry[2] == created

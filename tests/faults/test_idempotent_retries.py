"""R30 (the client's edge) and its negative control: a client that retries every POST on a
timeout or a dropped connection, while gunicorn workers are SIGKILLed and PostgreSQL is slowed
by the fault proxy. With an `Idempotency-Key` per post every key ends with exactly one post, one
e-mail and (v2) one audit line, and every answer the client got for a key is the same `201`;
without the header the same client duplicates posts.

Posts go over real HTTP to gunicorn (3 sync workers) whose database connections pass through
the proxy; the Celery worker reaches PostgreSQL directly.

R31: the gunicorn worker holding a key is SIGKILLed between its claim and its commit; the
client's retry with the same key is created at once, on PostgreSQL and SQLite.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from oracle import Accepted, Figures, assert_clean, quiescence
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Job, Post
from blog_api.models.jobs import JobKind
from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = pytest.mark.integration

KEYS = 30
CLIENTS = 3
# Every chunk between gunicorn and PostgreSQL waits 10-30 ms: a POST takes a few tenths of a
# second, so the client's first timeouts fire while the server is still working on it.
DB_LATENCY, DB_JITTER = 0.01, 0.02
FIRST_TIMEOUT, TIMEOUT_GROWTH, MAX_TIMEOUT = 0.25, 1.6, 5.0
KILL_EVERY = 1.5


@dataclass
class Answer:
    status: int  # 0: no answer (timeout or dropped connection)
    body: Any = None
    replayed: bool = False


@dataclass
class Attempts:
    """What the client saw for one post it wanted (one key)."""

    title: str
    version: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def created(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status == 201]


def send(
    port: int, path: str, body: dict[str, str], headers: dict[str, str], timeout: float
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST", path, json.dumps(body), {"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        raw = response.read()
        replayed = response.getheader("Idempotent-Replayed") == "true"
        return Answer(response.status, json.loads(raw) if raw else None, replayed)
    except (OSError, http.client.HTTPException):
        return Answer(0)
    finally:
        connection.close()


def post_until_created(
    port: int, auth: dict[str, str], number: int, keyed: bool, deadline: float
) -> Attempts:
    """Retry one post until a 201, as a careful client does: on no answer, a 409 (after its
    Retry-After) or a 5xx, with a longer timeout each time."""
    version = ("v1", "v2")[number % 2]
    attempts = Attempts(f"R30 {uuid.uuid4().hex[:12]}", version)
    body = {"title": attempts.title, "content": f"Body of {attempts.title}."}
    headers = {**auth, "Idempotency-Key": f"r30-{uuid.uuid4()}"} if keyed else auth
    timeout = FIRST_TIMEOUT
    while time.monotonic() < deadline:
        answer = send(port, f"/api/{version}/posts", body, headers, timeout)
        attempts.answers.append(answer)
        if answer.status == 201:
            return attempts
        assert answer.status in (0, 409, 500, 502, 503), answer
        if answer.status == 409:
            time.sleep(0.2)  # our Retry-After is 1 s; a retry sooner only gets 409 again
        timeout = min(timeout * TIMEOUT_GROWTH, MAX_TIMEOUT)
    raise AssertionError(f"no 201 for {attempts.title} before the deadline: {attempts.answers}")


def gunicorn_workers(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    try:
        return [int(pid) for pid in children.read_text().split()]
    except (OSError, ValueError):
        return []


def kill_workers(master_pid: int, stop: threading.Event, kills: list[int]) -> None:
    """SIGKILL one gunicorn worker every KILL_EVERY seconds (the master forks a new one)."""
    chooser = random.Random(30)
    while not stop.wait(KILL_EVERY):
        workers = gunicorn_workers(master_pid)
        if workers:
            victim = chooser.choice(workers)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills.append(victim)


def run_r30(
    stack: Stack, keyed: bool
) -> tuple[list[Attempts], dict[str, int], Figures, dict[str, Any]]:
    stack.up(concurrency=2)
    proxy = stack.proxy(5432)
    assert ":5432/" in stack.database_url
    server = stack.start_gunicorn(
        workers=3, DATABASE_URL=stack.database_url.replace(":5432/", f":{proxy.port}/")
    )
    [master] = [service for service in stack.services if service.name == "gunicorn"]
    app = stack.app()
    auth = server.account(f"r30_{uuid.uuid4().hex[:8]}")
    proxy.set_mode("latency", latency=DB_LATENCY, jitter=DB_JITTER)

    stop, kills = threading.Event(), []
    killer = threading.Thread(target=kill_workers, args=(master.process.pid, stop, kills))
    results: list[Attempts] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 90

    def client(numbers: range) -> None:
        for number in numbers:
            attempts = post_until_created(server.port, auth, number, keyed, deadline)
            with lock:
                results.append(attempts)

    clients = [
        threading.Thread(target=client, args=(range(start, KEYS, CLIENTS),))
        for start in range(CLIENTS)
    ]
    killer.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=120)
    stop.set()
    killer.join()
    proxy.set_mode("pass")
    assert len(results) == KEYS, "a client thread failed; see its assertion above"

    titles = [attempts.title for attempts in results]
    with app.app_context():
        rows = db.session.execute(select(Post.id, Post.title).where(Post.title.in_(titles)))
        posts: dict[str, list[int]] = defaultdict(list)
        for post_id, title in rows:
            posts[title].append(post_id)
        db.session.remove()
    version = {attempts.title: attempts.version for attempts in results}
    accepted = [
        Accepted(post_id, version[title]) for title, ids in posts.items() for post_id in ids
    ]
    figures = quiescence(stack, app, accepted, deadline=60, broker=stack.broker_url)
    statuses = Counter(answer.status for attempts in results for answer in attempts.answers)
    extra = {
        "keys": KEYS,
        "requests": sum(statuses.values()),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "replayed": sum(answer.replayed for attempts in results for answer in attempts.answers),
        "gunicorn_kills": len(kills),
        "duplicate_posts": sum(len(ids) - 1 for ids in posts.values()),
        # Killed or timed out after the commit: the retry got the stored answer.
        "keys_replayed_after_a_lost_answer": sum(
            attempts.answers[0].status == 0 and attempts.answers[-1].replayed
            for attempts in results
        ),
        # Killed or timed out before the commit: the retry did the work (R31's case).
        "keys_created_after_a_lost_answer": sum(
            attempts.answers[0].status == 0 and not attempts.answers[-1].replayed
            for attempts in results
        ),
        # Found in flight (409: its holder ran on for IDEMPOTENCY_WAIT), then created by this
        # client: the holder failed or died after all.
        "keys_created_after_a_409": sum(
            any(answer.status == 409 for answer in attempts.answers)
            and not attempts.answers[-1].replayed
            for attempts in results
        ),
    }
    return results, {title: len(ids) for title, ids in posts.items()}, figures, extra


@pytest.mark.scenario("R30")
@POSTGRESQL_ONLY
def test_retried_posts_with_an_idempotency_key_are_created_mailed_and_audited_once(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R30: 30 posts by 3 clients that retry on timeouts and dropped connections with one
    Idempotency-Key per post, gunicorn workers SIGKILLed every 1.5 s, PostgreSQL slowed."""
    results, posts_per_key, figures, extra = run_r30(redis_stack, keyed=True)
    report_figures(
        "R30",
        "gunicorn worker SIGKILL every 1.5 s, PostgreSQL +10-30 ms per chunk, client retries",
        figures,
        **extra,
    )

    assert posts_per_key == {attempts.title: 1 for attempts in results}
    for attempts in results:
        [first, *replays] = attempts.created
        assert all(answer.body == first.body for answer in replays), attempts
        assert first.body["title"] == attempts.title
    assert extra["gunicorn_kills"] > 0
    assert extra["statuses"].get("0", 0) > 0  # the client did lose answers and retry
    assert_clean(figures)


@pytest.mark.scenario("R30-nokey")
@POSTGRESQL_ONLY
def test_the_same_retrying_client_without_the_header_duplicates_posts(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R30, negative control: the same client and faults without the Idempotency-Key header."""
    _, posts_per_key, figures, extra = run_r30(redis_stack, keyed=False)
    report_figures("R30-nokey", "as R30, no Idempotency-Key (negative control)", figures, **extra)

    assert extra["duplicate_posts"] > 0
    assert max(posts_per_key.values()) > 1
    # Inside the system each stored post still gets its one e-mail: the duplicates are the
    # client's, made by its retries.
    assert_clean(figures)


# The bound: before the claim moved into the effect's transaction, the retry got 409
# until IDEMPOTENCY_LOCK_TIMEOUT (60 s) had passed.
RETRY_CREATED_WITHIN = 2.0


@pytest.mark.scenario("R31", "R31-sqlite")
def test_the_retry_after_the_worker_holding_its_key_was_killed_is_created_at_once(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R31: the gunicorn worker holding an Idempotency-Key is SIGKILLed after its claim and
    before its commit; the client's retry with the same key is created within 2 s, with one
    post, one set of jobs, one e-mail and one audit line."""
    stack = redis_stack
    stack.up()
    struck = stack.tmp_path / "fault-struck"
    server = stack.start_gunicorn(FAULT_POINT="between_flush_and_commit", FAULT_ONCE=str(struck))
    app = stack.app()
    auth = server.account(f"r31_{uuid.uuid4().hex[:8]}")
    title = f"R31 {uuid.uuid4().hex[:12]}"
    body = {"title": title, "content": f"Body of {title}."}
    headers = {**auth, "Idempotency-Key": f"r31-{uuid.uuid4()}"}

    killed = send(server.port, "/api/v2/posts", body, headers, timeout=15)
    lost_at = time.monotonic()
    retry = send(server.port, "/api/v2/posts", body, headers, timeout=15)
    retry_s = time.monotonic() - lost_at
    again = send(server.port, "/api/v2/posts", body, headers, timeout=15)

    assert struck.exists()  # the holder died
    assert killed.status == 0, killed  # with no answer
    assert (retry.status, retry.replayed) == (201, False), retry
    assert retry_s < RETRY_CREATED_WITHIN
    assert (again.status, again.replayed, again.body) == (201, True, retry.body)
    with app.app_context():
        posts = db.session.scalars(select(Post.id).where(Post.title == title)).all()
        kinds = db.session.scalars(select(Job.kind).where(Job.post_id.in_(posts))).all()
        db.session.remove()
    assert posts == [retry.body["id"]]
    assert sorted(kinds) == sorted([JobKind.NOTIFY_AUTHOR, JobKind.AUDIT_POST_CREATED])
    figures = quiescence(
        stack, app, [Accepted(retry.body["id"], "v2")], deadline=30, broker=stack.broker_url
    )
    on_sqlite = stack.database_url.startswith("sqlite")
    report_figures(
        "R31-sqlite" if on_sqlite else "R31",
        "gunicorn worker SIGKILLed between a keyed POST's claim and its commit, client retries",
        figures,
        statuses=[killed.status, retry.status, again.status],
        retry_created_s=round(retry_s, 2),
    )
    assert_clean(figures)

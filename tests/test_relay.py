"""The relay: one query and one code path publish every due job; the doorbells that wake it; the
SQLite one-relay lock and PostgreSQL's SKIP LOCKED split; a request that never touches the broker.

Real database (SQLite file and PostgreSQL), real Redis where a broker is involved; no worker.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from kombu.exceptions import OperationalError
from sqlalchemy import select, text, update

from blog_api.extensions import db
from blog_api.jobs.outbox import DueJob, due_jobs
from blog_api.jobs.relay import Relay, RelayLock, SqliteDoorbell, open_doorbell, relay_due_jobs
from blog_api.models import Job
from blog_api.models.base import utcnow
from blog_api.worker.tasks import publish_jobs
from harness.launcher import Launcher, Service, free_port, wait_until
from support import Account, redis_server


def create_posts(app: Flask, author: Account, count: int) -> list[str]:
    """`count` posts through the API; the ids of their jobs."""
    client = app.test_client()
    for number in range(count):
        response = client.post(
            "/api/v1/posts",
            json={"title": f"Relay {number}", "content": "x"},
            headers=author.headers,
        )
        assert response.status_code == 201, response.json
    with app.app_context():
        return list(db.session.scalars(select(Job.id).order_by(Job.created_at, Job.id)))


def make_due(app: Flask) -> None:
    with app.app_context():
        db.session.execute(update(Job).values(available_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


class Recorder:
    """A `publish` that records job ids, or fails while `failing` is set."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.failing = False
        self.failures = 0

    def __call__(self, jobs: Sequence[DueJob]) -> None:
        if self.failing:
            self.failures += 1
            raise ConnectionError("broker down")
        self.ids.extend(job.id for job in jobs)


@pytest.fixture
def author(make_account: Callable[..., Account]) -> Account:
    return make_account(email="relay@example.com")


def test_one_pass_publishes_batch_after_batch_and_pushes_each_back(
    make_app: Callable[..., Flask], author: Account, redis_url: str
) -> None:
    """Real Celery app, real Redis queue: one message per job, then nothing until it is due."""
    queue = f"relay-{uuid.uuid4().hex}"
    app = make_app(CELERY_BROKER_URL=redis_url, CELERY_QUEUE=queue)
    ids = create_posts(app, author, 5)
    broker = redis.Redis.from_url(redis_url)
    celery_app = app.extensions["celery"]
    try:
        with app.app_context():
            assert relay_due_jobs(lambda jobs: publish_jobs(celery_app, jobs), batch=2) == 5
            assert broker.llen(queue) == 5
            assert relay_due_jobs(lambda jobs: publish_jobs(celery_app, jobs), batch=2) == 0
            assert due_jobs(utcnow(), 10) == []
            db.session.commit()
        assert len(ids) == 5
    finally:
        broker.delete(queue)
        broker.close()
        celery_app.close()


def test_a_batch_whose_publish_fails_is_due_again_at_once(
    make_app: Callable[..., Flask], author: Account
) -> None:
    app = make_app()
    ids = create_posts(app, author, 3)
    publish = Recorder()
    publish.failing = True
    with app.app_context():
        with pytest.raises(ConnectionError):
            relay_due_jobs(publish, batch=2)
        assert [job.id for job in due_jobs(utcnow(), 10)] == ids
        db.session.commit()
        publish.failing = False
        assert relay_due_jobs(publish, batch=2) == 3
    assert publish.ids == ids


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_relays_on_postgresql_split_the_due_jobs_with_skip_locked(
    make_app: Callable[..., Flask], author: Account
) -> None:
    app = make_app()
    ids = create_posts(app, author, 5)
    locked = threading.Event()
    done = threading.Event()
    first: list[str] = []

    def first_relay() -> None:
        with app.app_context():
            first.extend(job.id for job in due_jobs(utcnow(), 2))  # locked until commit
            locked.set()
            done.wait(10)
            db.session.rollback()
            db.session.remove()

    thread = threading.Thread(target=first_relay)
    thread.start()
    try:
        assert locked.wait(10)
        with app.app_context():
            second = [job.id for job in due_jobs(utcnow(), 10)]
            db.session.rollback()
    finally:
        done.set()
        thread.join(10)
    assert first == ids[:2]
    assert second == ids[2:]


def test_on_sqlite_one_relay_holds_the_lock_and_another_takes_over_when_it_goes(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "blog.db")
    holder, standby = RelayLock(database), RelayLock(database)
    assert holder.acquire()
    assert not standby.acquire()
    holder.release()
    assert standby.acquire()
    standby.release()


def run_relays(app: Flask, publishers: Sequence[Recorder]) -> list[Relay]:
    relays = [
        Relay(app, publish, name=f"relay-{number}") for number, publish in enumerate(publishers)
    ]
    for each in relays:
        each.start()
    return relays


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_standby_relay_on_sqlite_publishes_nothing_until_the_holder_stops(
    make_app: Callable[..., Flask], author: Account
) -> None:
    app = make_app(JOB_RELAY_INTERVAL=0.2)
    first, second = Recorder(), Recorder()
    [holder] = run_relays(app, [first])
    standby = None
    try:
        [job_id] = create_posts(app, author, 1)
        wait_until(lambda: first.ids, 5, "the first relay to publish")  # it holds the lock
        [standby] = run_relays(app, [second])
        later = create_posts(app, author, 1)[-1]
        wait_until(lambda: later in first.ids, 5, "the holder to publish the next job")
        assert (first.ids, second.ids) == ([job_id, later], [])
        holder.stop()
        make_due(app)
        wait_until(lambda: len(second.ids) == 2, 5, "the standby relay to take over")
        assert sorted(second.ids) == sorted([job_id, later])
    finally:
        holder.stop()
        if standby is not None:
            standby.stop()


def test_the_relay_publishes_a_new_post_s_job_as_soon_as_it_is_committed(
    make_app: Callable[..., Flask], author: Account
) -> None:
    """The doorbell (LISTEN/NOTIFY, or PRAGMA data_version) wakes it, not the timer: the
    interval here is longer than the test may wait."""
    app = make_app(JOB_RELAY_INTERVAL=60, JOB_REPUBLISH_AFTER=60)
    publish = Recorder()
    [each] = run_relays(app, [publish])
    try:
        [first] = create_posts(app, author, 1)
        wait_until(lambda: publish.ids, 5, "the relay's first pass")
        # The relay now waits for its doorbell: nothing else is due within a minute.
        started = time.monotonic()
        second = create_posts(app, author, 1)[-1]
        wait_until(lambda: len(publish.ids) == 2, 5, "the doorbell", interval=0.005)
        assert publish.ids == [first, second]
        assert time.monotonic() - started < 5
    finally:
        each.stop()


def test_a_failed_publish_is_retried_by_the_relay_without_waiting_for_the_republish_delay(
    make_app: Callable[..., Flask], author: Account
) -> None:
    app = make_app(JOB_RELAY_INTERVAL=1, JOB_REPUBLISH_AFTER=60)
    publish = Recorder()
    publish.failing = True
    [each] = run_relays(app, [publish])
    try:
        [job_id] = create_posts(app, author, 1)
        wait_until(lambda: publish.failures >= 3, 5, "a few failed passes", interval=0.01)
        publish.failing = False
        wait_until(lambda: publish.ids, 5, "the relay to publish after the broker returned")
        assert publish.ids == [job_id]
    finally:
        each.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sqlite_doorbell_rings_when_another_connection_commits(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    with app.app_context():
        path = str(db.engine.url.database)
        doorbell = open_doorbell(db.engine, 0.005, threading.Event())
    assert isinstance(doorbell, SqliteDoorbell)

    def write() -> None:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            with connection:
                connection.execute("CREATE TABLE t_ring (x INTEGER)")
            with connection:
                connection.execute("DROP TABLE t_ring")

    try:
        started = time.monotonic()
        doorbell.wait(0.2)
        assert time.monotonic() - started >= 0.2  # nothing happened: the full wait
        writer = threading.Timer(0.05, write)
        started = time.monotonic()
        writer.start()
        doorbell.wait(5)
        writer.join()
        assert time.monotonic() - started < 2
    finally:
        doorbell.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_postgresql_doorbell_rings_only_when_the_inserting_transaction_commits(
    make_app: Callable[..., Flask], author: Account
) -> None:
    app = make_app()
    [job_id] = create_posts(app, author, 1)
    stopping = threading.Event()
    with app.app_context():
        doorbell = open_doorbell(db.engine, 0.005, stopping)
        try:
            doorbell.wait(1)  # connects and returns: it starts listening
            with db.engine.connect() as connection:
                connection.execute(
                    text("UPDATE jobs SET status = 'done' WHERE id = :id"), {"id": job_id}
                )
                connection.commit()
                connection.execute(
                    text("UPDATE jobs SET status = 'pending' WHERE id = :id"), {"id": job_id}
                )
                started = time.monotonic()
                doorbell.wait(0.3)  # notified, but not committed yet: no ring
                assert time.monotonic() - started >= 0.3
                connection.commit()
            started = time.monotonic()
            doorbell.wait(5)
            assert time.monotonic() - started < 2
        finally:
            doorbell.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], Service]]:
    """Starts (and restarts) a non-persistent redis-server on a port of its own."""
    port = free_port()
    with Launcher(tmp_path) as launcher:

        def start() -> Service:
            return launcher.start_redis(port, "--appendonly", "no", binary=redis_server())

        start.port = port  # type: ignore[attr-defined]
        yield start


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_first_publish_after_a_redis_restart_reconnects_instead_of_failing(
    make_app: Callable[..., Flask], author: Account, private_redis: Any
) -> None:
    """The pooled producer connection died with Redis; the publish must not fail on it."""
    server = private_redis()
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    queue = f"relay-{uuid.uuid4().hex}"
    app = make_app(CELERY_BROKER_URL=url, CELERY_QUEUE=queue)
    celery_app = app.extensions["celery"]
    create_posts(app, author, 1)
    try:
        with app.app_context():
            assert relay_due_jobs(lambda jobs: publish_jobs(celery_app, jobs)) == 1
            server.stop(signal.SIGKILL)
            make_due(app)
            with pytest.raises(OperationalError):  # the broker is away: the batch stays due
                relay_due_jobs(lambda jobs: publish_jobs(celery_app, jobs))
            private_redis()  # empty: the message was lost with the old server
            assert relay_due_jobs(lambda jobs: publish_jobs(celery_app, jobs)) == 1
        assert redis.Redis.from_url(url).llen(queue) == 1
    finally:
        celery_app.close()


def test_a_post_never_opens_a_connection_to_the_broker(
    make_app: Callable[..., Flask], author: Account
) -> None:
    """The broker's port accepts connections and never answers: the POST is as fast as ever,
    because the request only writes the post and its jobs; the relay publishes later."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    app = make_app(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        create_posts(app, author, 3)
        assert time.monotonic() - started < 2
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
        app.extensions["celery"].close()

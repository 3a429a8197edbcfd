"""The relay: the one publisher of job messages. The database row owns the job and its time;
the broker is only the doorbell that tells a worker "look at job X now".

`relay_due_jobs` publishes every due job with one query and one code path: new jobs (due when
created), failed attempts whose backoff has passed, running jobs whose lease expired (their
worker died), and published jobs nobody claimed within JOB_REPUBLISH_AFTER (their message was
lost, e.g. Redis restarted empty). It publishes in batches of RELAY_BATCH and moves each
batch's `available_at` forward only after the batch was handed to the broker: a batch whose
publish fails stays due and goes out on the next pass.

`Relay` runs that pass on a thread whenever a job may have become due:
- PostgreSQL: it LISTENs on `blog_api_jobs`; a trigger (migration 0004) notifies from the
  transaction that makes a job pending, and PostgreSQL delivers it when that transaction
  commits, never before;
- SQLite: it reads `PRAGMA data_version` on a connection of its own every JOB_RELAY_POLL
  seconds: the value changes when any other connection commits;
- both: when the earliest active job falls due (a retry's backoff, a lease's end), and at the
  latest every JOB_RELAY_INTERVAL (the safety net for a missed notification).

Several relays on PostgreSQL split the work (FOR UPDATE SKIP LOCKED). On SQLite exactly one
publishes: it holds an exclusive `flock` on `<database file>.relay-lock`; the others stand by and
one takes over within JOB_RELAY_INTERVAL of the holder's exit (the kernel drops the lock with the
process).

Nothing here knows Celery: the caller hands the relay its `publish` function.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
from flask import Flask
from sqlalchemy.engine import Engine

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.outbox import DueJob
from blog_api.jobs.threads import WorkerThread
from blog_api.models.base import utcnow

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[DueJob]], None]
Chore = Callable[[], object]

RELAY_BATCH = 500
NOTIFY_CHANNEL = "blog_api_jobs"
# Retention and other chores run when the relay starts and then this often, in seconds.
CHORES_EVERY = 3600.0
# The shortest wait between passes: a due row locked by another relay is being published by
# it, and asking again at once would spin.
MIN_WAIT = 0.01
# The longest a PostgreSQL wait blocks before it looks at the stop flag.
LISTEN_SLICE = 0.5


def relay_due_jobs(publish: Publish, batch: int = RELAY_BATCH) -> int:
    """Publish every job due now, batch after batch; returns how many were published.

    Raises what `publish` raised; the jobs of that batch are still due.
    """
    published = 0
    while True:
        now = utcnow()
        jobs = outbox.due_jobs(now, batch)
        if not jobs:
            db.session.commit()
            return published
        try:
            publish(jobs)
        except BaseException:
            db.session.rollback()  # PostgreSQL: the rows are unlocked, still due
            raise
        outbox.push_back(jobs, now)
        published += len(jobs)
        if len(jobs) < batch:
            return published


class Relay(WorkerThread):
    """A thread that relays due jobs until `stop()`, and runs `chores` (retention) hourly."""

    def __init__(
        self, app: Flask, publish: Publish, chores: Sequence[Chore] = (), name: str = "relay"
    ) -> None:
        super().__init__(app, name)
        self.publish = publish
        self.chores = tuple(chores)
        self.interval = float(app.config["JOB_RELAY_INTERVAL"])
        self._retry_in = MIN_WAIT

    def run(self) -> None:
        """Relay in this thread until `stop()` (on SQLite, only while holding the relay lock)."""
        with self.app.app_context():
            lock = RelayLock.for_engine(db.engine)
            try:
                if lock is not None and not self._wait_for_turn(lock):
                    return
                poll = float(self.app.config["JOB_RELAY_POLL"])
                doorbell = open_doorbell(db.engine, poll, self._stopping)
                try:
                    self._relay(doorbell)
                finally:
                    doorbell.close()
            finally:
                if lock is not None:
                    lock.release()
                db.session.remove()

    def _wait_for_turn(self, lock: RelayLock) -> bool:
        """SQLite: stand by until this relay holds the lock; False when stopped first."""
        if lock.acquire():
            return True
        log.info("Relay standing by: another relay holds %s", lock.path)
        while not self._stopping.wait(self.interval):
            if lock.acquire():
                log.info("Relay took over %s", lock.path)
                return True
        return False

    def _relay(self, doorbell: Doorbell) -> None:
        next_chores = time.monotonic()
        while not self._stopping.is_set():
            wait = self.relay_once()
            if time.monotonic() >= next_chores:
                self.run_chores()
                next_chores = time.monotonic() + CHORES_EVERY
            doorbell.wait(wait)

    def relay_once(self) -> float:
        """One pass; returns how long to wait for the next one (unless the doorbell rings)."""
        try:
            published = relay_due_jobs(self.publish)
            due = outbox.next_due_at()
            db.session.commit()
        except Exception as error:
            db.session.rollback()
            if not self._failing:
                log.warning("Relay could not publish due jobs (retrying): %r", error)
            self._failing = True
            # A broker or database outage: try again soon, then less often.
            self._retry_in = min(self._retry_in * 2, self.interval)
            return self._retry_in
        if self._failing:
            log.info("Relay publishing again (%d job(s) published)", published)
        elif published:
            log.debug("Relay published %d job(s)", published)
        self._failing, self._retry_in = False, MIN_WAIT
        if due is None:
            return self.interval
        return min(max((due - utcnow()).total_seconds(), MIN_WAIT), self.interval)

    def run_chores(self) -> None:
        for chore in self.chores:
            try:
                chore()
            except Exception:
                db.session.rollback()
                log.exception("Relay chore %s failed", getattr(chore, "__name__", chore))


# -- waking up ------------------------------------------------------------------------------------


class Doorbell:
    """Waits until a job may have become due, the timeout passes or the relay stops."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping

    def wait(self, timeout: float) -> None:
        self.stopping.wait(timeout)

    def close(self) -> None:
        """Release what the doorbell holds."""


class SqliteDoorbell(Doorbell):
    """Polls `PRAGMA data_version` (a few microseconds) on its own connection."""

    def __init__(self, path: str, poll: float, stopping: threading.Event) -> None:
        super().__init__(stopping)
        self.poll = poll
        self.connection = sqlite3.connect(path)
        self.version = self._data_version()

    def _data_version(self) -> int:
        return int(self.connection.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping.wait(min(self.poll, remaining)):
                return
            version = self._data_version()
            if version != self.version:
                self.version = version
                return

    def close(self) -> None:
        self.connection.close()


class PostgresDoorbell(Doorbell):
    """LISTENs on NOTIFY_CHANNEL on its own autocommit connection, reconnecting after a loss
    (and then returning at once: notifications sent meanwhile were missed)."""

    def __init__(self, conninfo: str, stopping: threading.Event) -> None:
        super().__init__(stopping)
        self.conninfo = conninfo
        self.connection: psycopg.Connection[object] | None = None
        self._failing = False

    def _listen(self) -> psycopg.Connection[object]:
        connection: psycopg.Connection[object] = psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=3
        )
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return connection

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                if self.connection is None:
                    self.connection = self._listen()
                    if self._failing:
                        log.info("Relay listening again on %s", NOTIFY_CHANNEL)
                    self._failing = False
                    return
                rung = any(
                    True
                    for _ in self.connection.notifies(
                        timeout=min(remaining, LISTEN_SLICE), stop_after=1
                    )
                )
                if rung:
                    # Notifications of the same burst: one pass serves them all.
                    for _ in self.connection.notifies(timeout=0):
                        pass
                    return
            except psycopg.Error as error:
                if not self._failing:
                    log.warning("Relay lost its LISTEN connection: %r", error)
                self._failing = True
                self.close()
                self.stopping.wait(min(remaining, 1.0))

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(psycopg.Error):
                self.connection.close()
            self.connection = None


def open_doorbell(engine: Engine, poll: float, stopping: threading.Event) -> Doorbell:
    """The doorbell for `engine`'s database (a plain timer for an in-memory SQLite)."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresDoorbell(conninfo, stopping)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return SqliteDoorbell(str(url.database), poll, stopping)
    return Doorbell(stopping)


class RelayLock:
    """SQLite's one-relay rule: an exclusive flock on a file beside the database."""

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}.relay-lock"
        self._fd: int | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> RelayLock | None:
        """The lock for a SQLite file database; None where relays need none (PostgreSQL)."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(os.path.abspath(str(url.database)))

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

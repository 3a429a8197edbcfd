"""Worker heartbeats: every worker records "I am alive" in the database every few seconds.

A worker bootstep starts one daemon thread in the worker's main process (never in a pool child,
so a task is never delayed by it, and a stuck database only stalls this thread). The thread
writes the worker's node name and the time to `worker_heartbeats`, and drops rows silent for
longer than `WORKER_HEARTBEAT_FORGET_AFTER`. `/metrics` reads the rows (see ops/health.py), so
any API process on any machine shows every worker's heartbeat age.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from celery import Celery, bootsteps
from flask import Flask, current_app
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from blog_api.extensions import db
from blog_api.models import WorkerHeartbeat
from blog_api.models.base import utcnow

log = logging.getLogger(__name__)


def record_heartbeat(worker: str, started_at: datetime, now: datetime | None = None) -> None:
    """Upsert `worker`'s row; a restarted worker with the same node name takes its row over."""
    now = now or utcnow()
    values = {"started_at": started_at, "last_seen": now}
    result = db.session.execute(
        update(WorkerHeartbeat).where(WorkerHeartbeat.worker == worker).values(**values)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        db.session.add(WorkerHeartbeat(worker=worker, **values))
        try:
            db.session.commit()
            return
        except IntegrityError:  # a same-named worker inserted it first: update that row
            db.session.rollback()
            db.session.execute(
                update(WorkerHeartbeat).where(WorkerHeartbeat.worker == worker).values(**values)
            )
    db.session.commit()


def forget_silent_workers(now: datetime | None = None) -> int:
    """Delete the rows of workers silent for longer than WORKER_HEARTBEAT_FORGET_AFTER."""
    horizon = (now or utcnow()) - forget_after()
    result = db.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_seen < horizon))
    db.session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def forget_after() -> timedelta:
    return timedelta(seconds=current_app.config["WORKER_HEARTBEAT_FORGET_AFTER"])


class Heartbeat:
    """The thread that beats for one worker until `stop()`."""

    def __init__(self, app: Flask, worker: str) -> None:
        self.app = app
        self.worker = worker
        self.interval = float(app.config["WORKER_HEARTBEAT_INTERVAL"])
        self.started_at = utcnow()
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{worker}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def beat(self) -> None:
        """One heartbeat; a database failure is logged (once per outage) and never raised."""
        try:
            with self.app.app_context():
                record_heartbeat(self.worker, self.started_at)
                forget_silent_workers()
        except Exception as error:
            if not self._failing:
                log.warning("Worker heartbeat of %s not recorded: %r", self.worker, error)
            self._failing = True
        else:
            if self._failing:
                log.info("Worker heartbeat of %s recorded again", self.worker)
            self._failing = False

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stopping.wait(self.interval):
                return


def install_heartbeat(celery_app: Celery[Any], app: Flask) -> None:
    """Make every worker of `celery_app` run a `Heartbeat` while it is up."""

    class HeartbeatStep(bootsteps.StartStopStep):
        """Worker bootstep: started after the pool, stopped at worker shutdown."""

        requires = ("celery.worker.components:Pool",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.heartbeat: Heartbeat | None = None

        def start(self, parent: Any) -> None:
            self.heartbeat = Heartbeat(app, parent.hostname)
            self.heartbeat.start()

        def stop(self, parent: Any) -> None:
            if self.heartbeat is not None:
                self.heartbeat.stop()
                self.heartbeat = None

    celery_app.steps["worker"].add(HeartbeatStep)

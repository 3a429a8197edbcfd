"""Worker heartbeat records: one row per Celery node name, refreshed by that worker's heartbeat
thread (`blog_api.worker.heartbeat`) and read by `/metrics` from any API process."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from blog_api.extensions import db
from blog_api.models import WorkerHeartbeat
from blog_api.models.base import utcnow


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


def forget_worker(worker: str) -> bool:
    """Delete `worker`'s row now (a planned scale-down); False when there was none."""
    result = db.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker == worker))
    db.session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def forget_after() -> timedelta:
    return timedelta(seconds=current_app.config["WORKER_HEARTBEAT_FORGET_AFTER"])

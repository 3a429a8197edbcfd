"""Worker heartbeats: one row per Celery node name, refreshed every few seconds by that worker.

Stored in the database because every API process on every machine can read it there; `/metrics`
turns each row into the age of that worker's last heartbeat.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime, utcnow


class WorkerHeartbeat(Model):
    __tablename__ = "worker_heartbeats"

    # The Celery node name (`-n worker1@%h`), unique per running worker by Celery's own rule.
    worker: Mapped[str] = mapped_column(String(255), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

"""What a request can leave behind besides rows: e-mails in the sink and lines in the audit file,
and the means to make pending jobs produce them now (see conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Job, JobStatus
from blog_api.worker.tasks import TASKS


@dataclass
class MailSink:
    """The in-process SMTP sink: where it listens and what it received."""

    port: int
    record: Path

    def messages(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [entry for entry in map(json.loads, lines) if entry["event"] == "delivered"]


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, int]
    audit_bytes: int
    mails: int


def run_pending_jobs(app: Flask) -> int:
    """Run every pending job through its Celery task in this process; how many ran."""
    with app.app_context():
        pending = db.session.execute(
            select(Job.id, Job.kind).where(Job.status == JobStatus.PENDING)
        )
        jobs = [(row.id, row.kind) for row in pending]
        db.session.remove()
    # This app's task (a shared task's proxy would take the most recently created app).
    tasks = app.extensions["celery"].tasks
    for job_id, kind in jobs:
        tasks[TASKS[kind].name].apply(args=[job_id], throw=True)
    return len(jobs)


def audit_lines_since(audit: Path, offset: int) -> list[str]:
    """The audit file's lines written after it was `offset` bytes long."""
    if not audit.exists():
        return []
    with audit.open("rb") as audit_file:
        audit_file.seek(offset)
        return audit_file.read().decode("ascii").splitlines()

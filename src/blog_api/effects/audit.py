"""The v2 audit file (job kind `audit_post_created`): one JSON object per line, appended under
an exclusive file lock.

Several worker processes (on one machine) may append at once: `flock` serialises them and each
record is a single `write()` on an O_APPEND descriptor, so lines never interleave. A redelivered
job finds its `event_id` already in the file and writes nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from typing import Any

from flask import current_app

from blog_api.extensions import db
from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.jobs.errors import TransientJobError
from blog_api.models import ErrorCode, Job, JobStatus, Post
from blog_api.models.base import utcnow

log = logging.getLogger(__name__)


def audit_post_created(job: Job) -> JobStatus:
    """Append the v2 post's `post_created` record to POST_AUDIT_LOG, once."""
    post = db.session.get(Post, job.post_id)
    if post is None:
        return JobStatus.SKIPPED
    record = {
        "event_id": job.id,
        "event": "post_created",
        "time": utcnow().isoformat(),
        "post_id": post.id,
        "title": post.title,
        "author_id": post.user_id,
        "category": post.category,
        "created_at": post.created_at.isoformat(),
    }
    written = append_audit_record(
        current_app.config["POST_AUDIT_LOG"], record, check_duplicate=job.attempts > 1
    )
    if written:
        log.info("Audit record written for post %s", post.id)
    job_checkpoint.send(job, point=Checkpoint.AFTER_AUDIT_WRITE_BEFORE_COMMIT)
    return JobStatus.DONE


def audit_line(record: dict[str, Any]) -> bytes:
    # ensure_ascii escapes CR, LF, U+2028 and ANSI escapes: one record is always one line.
    return (json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")


def append_audit_record(path: str, record: dict[str, Any], *, check_duplicate: bool) -> bool:
    """Append `record` unless a line with its `event_id` exists; True when it was written.

    `check_duplicate` scans the file first (under the lock); only a job's second or later
    attempt can find its own line, so first attempts skip the scan.
    """
    try:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as error:
        raise TransientJobError(
            f"audit log not writable: {error}", ErrorCode.AUDIT_LOG_UNWRITABLE
        ) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if check_duplicate and _contains_event(path, record["event_id"]):
            return False
        os.write(fd, audit_line(record))
        os.fsync(fd)
        return True
    except OSError as error:
        raise TransientJobError(
            f"audit log write failed: {error}", ErrorCode.AUDIT_LOG_UNWRITABLE
        ) from error
    finally:
        os.close(fd)  # also releases the lock


def _contains_event(path: str, event_id: str) -> bool:
    needle = json.dumps(event_id)
    with open(path, encoding="ascii", errors="replace") as audit_file:
        for line in audit_file:
            if needle in line:
                try:
                    if json.loads(line).get("event_id") == event_id:
                        return True
                except ValueError:
                    continue
    return False

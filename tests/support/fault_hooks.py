"""The fault rig's hooks into a real process (tests only): crash points and the naive control.

The product sends `job_checkpoint` at named points of a job's run and never asks who listens;
`FaultHooks` subscribes to it and to SQLAlchemy's session events (among them the INSERT of
a post's jobs), in the processes the rig starts (`support.rig_wsgi` is their entry module) or
in an app built by a test:

- `FAULT_POINT=<point>[:<seconds>][@<post id>][#<n>]`: at that point the process SIGKILLs
  itself, or with seconds sleeps that long (a hook that widens a race window); `@<post id>`
  limits it to that post's jobs (or request); `#<n>` strikes only the n-th time this process
  reaches the point (a fan-out batch's n-th message). Points: the checkpoints of a job's run,
  and `between_flush_and_commit`: a request's transaction that has written a post and is about
  to commit it with its jobs (and, with an Idempotency-Key, holds the key and its answer).
- `FAULT_ONCE=<file>`: the fault strikes once for all the processes sharing the file: where it
  creates the file. A crashed gunicorn worker's replacement, or the next request, then passes.
- `register_naive_fan_out`: the fan-out's negative control (below).
- `FAULT_DISPATCH=naive`: the negative control. Every new job is published right after its
  transaction commits, as the tutorial's `.delay()` does: a broker error reaches the request.
  Its rows are parked (due in ten years) and the workers of such a rig run without the relay
  (JOB_RELAY=false), so nothing re-drives a job whose message was lost.
"""

from __future__ import annotations

import os
import signal
import smtplib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event, update
from sqlalchemy.orm import ORMExecuteState, Session

from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.jobs.outbox import JOBS
from blog_api.models import Job
from blog_api.models.base import utcnow
from blog_api.worker.tasks import TASKS

COMMIT_POINT = "between_flush_and_commit"
# session.info key: the post jobs the transaction INSERTed, as (id, kind, post id).
INSERTED = "fault_rig_inserted_jobs"
# How far ahead the naive control parks its jobs' rows (the oracle ignores such rows).
PARKED_FOR = timedelta(days=3650)
FAULT_POINTS = frozenset({*Checkpoint, COMMIT_POINT})


@dataclass
class FaultPoint:
    point: str
    seconds: float | None = None
    post_id: int | None = None
    nth: int | None = None
    once: str | None = None  # FAULT_ONCE's file
    reached: int = 0

    @classmethod
    def parse(cls, value: str, once: str | None = None) -> FaultPoint:
        """`<point>[:<seconds>][@<post id>][#<n>]`, and FAULT_ONCE's file if any."""
        value, _, nth = value.partition("#")
        spec, _, post = value.partition("@")
        name, _, seconds = spec.partition(":")
        if name not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {name!r}")
        return cls(
            name,
            float(seconds) if seconds else None,
            int(post) if post else None,
            int(nth) if nth else None,
            once,
        )

    def strike(self, point: str, post_id: int | None) -> None:
        """Kill this process, or pause, if `point` (of `post_id`) is this fault's (and, with
        `once`, if no process struck before)."""
        if point != self.point or self.post_id not in (None, post_id):
            return
        self.reached += 1
        if self.nth is not None and self.reached != self.nth:
            return
        if self.once is not None and not _first_to_create(self.once):
            return
        if self.seconds is None:
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            time.sleep(self.seconds)


def _first_to_create(path: str) -> bool:
    """Create `path`; False if it exists already (O_EXCL: one winner among processes)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class FaultHooks:
    """The hooks of one app; they act only inside that app's context."""

    def __init__(
        self,
        app: Flask,
        fault_point: str | None = None,
        naive: bool = False,
        once: str | None = None,
    ) -> None:
        self.app = app
        self.fault = FaultPoint.parse(fault_point, once) if fault_point else None
        self.naive = naive
        job_checkpoint.connect(self.on_checkpoint, weak=False)
        event.listen(Session, "do_orm_execute", self.on_execute)
        event.listen(Session, "before_commit", self.before_commit)
        event.listen(Session, "after_commit", self.after_commit)
        event.listen(Session, "after_rollback", self.after_rollback)

    @classmethod
    def from_environment(cls, app: Flask, environ: Mapping[str, str] = os.environ) -> FaultHooks:
        return cls(
            app,
            environ.get("FAULT_POINT"),
            environ.get("FAULT_DISPATCH") == "naive",
            environ.get("FAULT_ONCE"),
        )

    def remove(self) -> None:
        job_checkpoint.disconnect(self.on_checkpoint)
        event.remove(Session, "do_orm_execute", self.on_execute)
        event.remove(Session, "before_commit", self.before_commit)
        event.remove(Session, "after_commit", self.after_commit)
        event.remove(Session, "after_rollback", self.after_rollback)

    def _ours(self) -> bool:
        return has_app_context() and current_app._get_current_object() is self.app  # type: ignore[attr-defined]

    def on_checkpoint(self, job: Job, *, point: Checkpoint, **_: Any) -> None:
        if self.fault is not None and self._ours():
            self.fault.strike(point, job.post_id)

    def on_execute(self, state: ORMExecuteState) -> None:
        """Note the post jobs a transaction INSERTs (Core INSERTs into `jobs`, not objects of
        the session: the outbox writes them so)."""
        statement = state.statement
        if not (state.is_insert and getattr(statement, "table", None) is JOBS and self._ours()):
            return
        params = state.parameters
        rows = params if isinstance(params, list) else [params or {}]
        jobs = [(row["id"], row["kind"], row["post_id"]) for row in rows if row.get("post_id")]
        state.session.info.setdefault(INSERTED, []).extend(jobs)

    def before_commit(self, session: Session) -> None:
        inserted: list[tuple[str, str, int]] = session.info.get(INSERTED, [])
        if not inserted or not self._ours():
            return
        if self.naive:
            # The tutorial has no outbox: its jobs exist only as messages. Parked rows keep
            # the claim working for the workers while nothing else ever looks at them.
            session.execute(
                update(Job)
                .where(Job.id.in_([job_id for job_id, _kind, _post in inserted]))
                .values(available_at=utcnow() + PARKED_FOR)
                .execution_options(synchronize_session=False)
            )
        if self.fault is not None:
            self.fault.strike(COMMIT_POINT, inserted[0][2])

    def after_commit(self, session: Session) -> None:
        inserted = session.info.pop(INSERTED, [])
        if inserted and self.naive and self._ours():
            celery_app = self.app.extensions["celery"]
            for job_id, kind, _post in inserted:
                celery_app.send_task(TASKS[kind].name, args=[job_id])

    def after_rollback(self, session: Session) -> None:
        session.info.pop(INSERTED, None)


# -- the fan-out's negative control ---------------------------------------------------------------

NAIVE_FAN_OUT_TASK = "rig.naive_fan_out_email"
_naive_sent = 0


def register_naive_fan_out(celery_app: Any) -> None:
    """The fan-out without per-delivery records: one Celery message per e-mail, published by
    the test after the post's commit (as a `.delay()` per subscriber would), each sent over a
    new SMTP connection and recorded nowhere. `FAULT_NAIVE_KILL_AT=<n>`: the process SIGKILLs
    itself at its n-th message, before sending it."""

    @celery_app.task(name=NAIVE_FAN_OUT_TASK)
    def naive_fan_out_email(author: str, title: str, address: str) -> None:
        global _naive_sent
        _naive_sent += 1
        if os.environ.get("FAULT_NAIVE_KILL_AT") == str(_naive_sent):
            os.kill(os.getpid(), signal.SIGKILL)
        config = current_app.config
        message = (
            f"From: {config['MAIL_DEFAULT_SENDER']}\r\nTo: <{address}>\r\n"
            f"Subject: New post by {author}: {title}\r\n"
            f"Message-ID: <naive-{uuid.uuid4().hex}@{config['MAIL_MESSAGE_ID_DOMAIN']}>\r\n\r\n"
            f"{author} published a new post.\r\n"
        )
        with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=10) as smtp:
            smtp.sendmail("noreply@blog-api.local", [address], message.encode())

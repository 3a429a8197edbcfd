"""The loss/duplication oracle of the fault suite (reliability §6.1).

Given the posts the API accepted (201) with their API version, the SMTP sink's record file, the
audit file and the database (read in an app context), `measure` counts what was expected and
what actually happened. `quiescence` first waits, with a hard deadline, until the job system
has nothing left to do.

E-mails are matched to posts through the jobs table: the Message-ID of a notification is
`<notify-{job_id}@domain>`; an audit line carries its job id as `event_id`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
from flask import Flask
from integration_stack import message_id, wait_until
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import AUDIT_POST_CREATED, NOTIFY_AUTHOR, Job
from blog_api.models.base import utcnow

# A pending job due further ahead than this is parked: nothing will ever run it (the naive
# negative control parks its jobs for years), so it does not keep the system busy.
PARKED_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Accepted:
    """A post the API answered 201 for."""

    post_id: int
    version: str


@dataclass(frozen=True)
class Figures:
    posts_accepted: int
    emails_expected: int
    emails_delivered: int
    emails_duplicated: int
    emails_lost: int
    emails_dead: int
    emails_ambiguous: int
    audit_expected: int
    audit_written: int
    audit_duplicated: int
    audit_lost: int
    audit_malformed: int


def _jobs(app: Flask, post_ids: list[int]) -> list[tuple[str, str, int, str]]:
    """(id, kind, post_id, status) of every job of `post_ids`."""
    with app.app_context():
        statement = select(Job.id, Job.kind, Job.post_id, Job.status).where(
            Job.post_id.in_(post_ids)
        )
        rows = [
            (row.id, row.kind, row.post_id, row.status) for row in db.session.execute(statement)
        ]
        db.session.remove()
    return rows


def _delivered_message_ids(mail_log: Path) -> Counter[str]:
    if not mail_log.exists():
        return Counter()
    lines = mail_log.read_text(encoding="utf-8").splitlines(keepends=True)
    records = [json.loads(line) for line in lines if line.endswith("\n")]  # skip a torn tail
    return Counter(r["message_id"] for r in records if r["event"] == "delivered")


def _audit_event_ids(audit_log: Path) -> tuple[Counter[str], int]:
    """Event ids of the audit file's lines, and how many lines are not one JSON object."""
    if not audit_log.exists():
        return Counter(), 0
    ids: Counter[str] = Counter()
    malformed = 0
    for line in audit_log.read_bytes().decode("utf-8", errors="replace").splitlines(True):
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            record = None
        if isinstance(record, dict) and "event_id" in record:
            ids[str(record["event_id"])] += 1
        else:
            malformed += 1
    return ids, malformed


def measure(
    app: Flask,
    accepted: Iterable[Accepted],
    mail_log: Path,
    audit_log: Path,
    *,
    ambiguous_allowed: bool = False,
) -> Figures:
    """Count expected, delivered, duplicated, lost and dead effects of the accepted posts.

    A Message-ID delivered more than once is `duplicated`, or `ambiguous` when the scenario
    injects the crash between SMTP 250 and the commit (`ambiguous_allowed`, R9). `lost`: an
    expected effect that did not happen although its job is not `dead`.
    """
    posts = list(accepted)
    v2_posts = {post.post_id for post in posts if post.version == "v2"}
    jobs = _jobs(app, [post.post_id for post in posts])
    notify = {
        (post_id): (job_id, status)
        for job_id, kind, post_id, status in jobs
        if kind == NOTIFY_AUTHOR
    }
    audit = {
        post_id: (job_id, status)
        for job_id, kind, post_id, status in jobs
        if kind == AUDIT_POST_CREATED and post_id in v2_posts
    }

    mails = _delivered_message_ids(mail_log)
    delivered = duplicated = lost = dead = 0
    for post in posts:
        job_id, status = notify.get(post.post_id, ("", "missing"))
        copies = mails[message_id(job_id)] if job_id else 0
        delivered += copies > 0
        duplicated += copies > 1
        if status == "dead":
            dead += copies == 0
        elif copies == 0:
            lost += 1

    lines, malformed = _audit_event_ids(audit_log)
    written = audit_duplicated = audit_lost = 0
    for post_id in v2_posts:
        job_id, status = audit.get(post_id, ("", "missing"))
        copies = lines[job_id] if job_id else 0
        written += copies > 0
        audit_duplicated += copies > 1
        audit_lost += copies == 0 and status != "dead"

    return Figures(
        posts_accepted=len(posts),
        emails_expected=len(posts),
        emails_delivered=delivered,
        emails_duplicated=0 if ambiguous_allowed else duplicated,
        emails_lost=lost,
        emails_dead=dead,
        emails_ambiguous=duplicated if ambiguous_allowed else 0,
        audit_expected=len(v2_posts),
        audit_written=written,
        audit_duplicated=audit_duplicated,
        audit_lost=audit_lost,
        audit_malformed=malformed,
    )


def busy_jobs(app: Flask, post_ids: list[int]) -> int:
    """Jobs the system will still act on: running, or pending and due within PARKED_AFTER."""
    horizon = utcnow() + PARKED_AFTER
    with app.app_context():
        statement = select(Job.status, Job.available_at).where(Job.post_id.in_(post_ids))
        count = sum(
            status == "running" or (status == "pending" and available_at < horizon)
            for status, available_at in db.session.execute(statement)
        )
        db.session.remove()
    return count


def queued_messages(redis_url: str, queue: str) -> int:
    """Messages waiting in `queue` plus unacknowledged ones (the broker must be private)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return int(client.llen(queue)) + int(client.hlen("unacked"))  # type: ignore[arg-type]
    finally:
        client.close()


def quiescence(
    app: Flask,
    accepted: Iterable[Accepted],
    mail_log: Path,
    audit_log: Path,
    *,
    deadline: float,
    broker: tuple[str, str] | None = None,
    ambiguous_allowed: bool = False,
) -> Figures:
    """Wait (at most `deadline` seconds, then fail) until no job of the accepted posts is
    running or waiting to run and, given `broker` = (private Redis URL, queue), no message is
    queued or unacknowledged there; then measure."""
    posts = list(accepted)
    post_ids = [post.post_id for post in posts]

    def busy() -> int:
        return busy_jobs(app, post_ids) + (queued_messages(*broker) if broker else 0)

    wait_until(
        lambda: busy() == 0,
        deadline,
        lambda: f"quiescence; {busy()} job(s) or message(s) still in flight",
        interval=0.2,
    )
    return measure(app, posts, mail_log, audit_log, ambiguous_allowed=ambiguous_allowed)

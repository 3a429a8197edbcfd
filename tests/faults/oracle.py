"""The loss/duplication oracle of the fault suite (reliability §6.1).

Given the posts the API accepted (201) with their API version, the SMTP sink's record file, the
audit file and the database (read in an app context), `measure` counts what was expected and
what actually happened. `quiescence` first waits, with a hard deadline, until the job system
has nothing left to do.

E-mails are matched to posts through the jobs table: the Message-ID of a notification is
`<notify-{job_id}@domain>`; an audit line carries its job id as `event_id`.

Rejected requests (any non-2xx answer, or no answer at all) are matched by their post title,
which the generator makes unique: for each one there must be no post, no job, no e-mail and no
audit line (`rejected_with_effects`). A rejected request whose post was stored anyway still owes
its e-mail and audit line (the author sees the post): it is counted as expected too, so an
effect it never gets shows up as lost.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis
from flask import Flask
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Job, JobKind, Post
from blog_api.models.base import utcnow
from harness.launcher import wait_until
from support.integration_stack import HttpClient, Stack, message_id

# A pending job due further ahead than this is parked: nothing will ever run it (the naive
# negative control parks its jobs for years), so it does not keep the system busy.
PARKED_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Accepted:
    """A post the API answered 201 for."""

    post_id: int
    version: str


@dataclass(frozen=True)
class Rejected:
    """A create-post request that did not get a 201 (status 0: no answer)."""

    title: str
    version: str
    status: int


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
    requests_rejected: int = 0
    rejected_with_effects: int = 0


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


def _mail_records(mail_log: Path) -> list[dict[str, object]]:
    if not mail_log.exists():
        return []
    lines = mail_log.read_text(encoding="utf-8").splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]  # skip a torn tail


def _delivered_message_ids(mail_log: Path) -> Counter[str]:
    records = _mail_records(mail_log)
    return Counter(str(r["message_id"]) for r in records if r["event"] == "delivered")


def _posts_titled(app: Flask, titles: list[str]) -> dict[str, int]:
    with app.app_context():
        statement = select(Post.title, Post.id).where(Post.title.in_(titles))
        found = {str(row[0]): int(row[1]) for row in db.session.execute(statement)}
        db.session.remove()
    return found


def _rejected_effects(
    app: Flask, rejected: list[Rejected], mail_log: Path, audit_log: Path
) -> tuple[int, list[Accepted]]:
    """How many rejected requests left any trace, and the posts they stored anyway."""
    titles = [r.title for r in rejected]
    stored = _posts_titled(app, titles) if titles else {}
    subjects = " ".join(str(r.get("subject")) for r in _mail_records(mail_log))
    audit_text = audit_log.read_text(encoding="utf-8") if audit_log.exists() else ""
    audit_titles = set()
    for line in audit_text.splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            audit_titles.add(json.loads(line).get("title"))
    traced = sum(
        r.title in stored or r.title in subjects or r.title in audit_titles for r in rejected
    )
    by_title = {r.title: r for r in rejected}
    return traced, [Accepted(post_id, by_title[t].version) for t, post_id in stored.items()]


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
    rejected: Iterable[Rejected] = (),
    ambiguous_allowed: bool = False,
) -> Figures:
    """Count expected, delivered, duplicated, lost and dead effects of the accepted posts.

    A Message-ID delivered more than once is `duplicated`, or `ambiguous` when the scenario
    injects the crash between SMTP 250 and the commit (`ambiguous_allowed`, R9). `lost`: an
    expected effect that did not happen although its job is not `dead`.
    """
    refused = list(rejected)
    traced, stored_anyway = _rejected_effects(app, refused, mail_log, audit_log)
    posts = list(accepted) + stored_anyway
    v2_posts = {post.post_id for post in posts if post.version == "v2"}
    jobs = _jobs(app, [post.post_id for post in posts])
    notify = {
        (post_id): (job_id, status)
        for job_id, kind, post_id, status in jobs
        if kind == JobKind.NOTIFY_AUTHOR
    }
    audit = {
        post_id: (job_id, status)
        for job_id, kind, post_id, status in jobs
        if kind == JobKind.AUDIT_POST_CREATED and post_id in v2_posts
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
        requests_rejected=len(refused),
        rejected_with_effects=traced,
    )


def assert_clean(figures: Figures, dead: int = 0, ambiguous: int = 0) -> None:
    """Every scenario's verdict: nothing lost, nothing duplicated, nothing torn, no effect of a
    rejected request; `dead` e-mails and `ambiguous` (R9) duplicates only where injected."""
    assert (figures.emails_lost, figures.emails_duplicated) == (0, 0), figures
    assert (figures.audit_lost, figures.audit_duplicated, figures.audit_malformed) == (0, 0, 0)
    assert figures.rejected_with_effects == 0, figures
    assert (figures.emails_dead, figures.emails_ambiguous) == (dead, ambiguous), figures
    assert figures.emails_delivered + figures.emails_dead == figures.emails_expected, figures
    assert figures.audit_written == figures.audit_expected, figures


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
    stack: Stack,
    app: Flask,
    accepted: Iterable[Accepted],
    *,
    deadline: float,
    broker: str | None = None,
    audit_log: Path | None = None,
    rejected: Iterable[Rejected] = (),
    ambiguous_allowed: bool = False,
) -> Figures:
    """Wait (at most `deadline` seconds, then fail) until no job of the accepted posts is
    running or waiting to run and, given `broker` (a private Redis's URL), no message of the
    stack's queue is queued or unacknowledged there; then measure what the stack's SMTP sink
    recorded and what its audit file holds (`audit_log`: another one)."""
    posts = list(accepted)
    refused = list(rejected)
    stored_anyway = _posts_titled(app, [r.title for r in refused]) if refused else {}
    post_ids = [post.post_id for post in posts] + list(stored_anyway.values())

    def busy() -> int:
        in_broker = queued_messages(broker, stack.queue) if broker else 0
        return busy_jobs(app, post_ids) + in_broker

    wait_until(
        lambda: busy() == 0,
        deadline,
        lambda: f"quiescence; {busy()} job(s) or message(s) still in flight",
        interval=0.2,
    )
    return measure(
        app,
        posts,
        stack.mail_log,
        audit_log or stack.audit_log,
        rejected=refused,
        ambiguous_allowed=ambiguous_allowed,
    )


@dataclass
class Traffic:
    """What a generator sent: the 201s, the rest, and the time each request took."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "post_p99_s": round(self.p99(), 3),
            "post_max_s": round(max(self.latencies, default=0.0), 3),
        }


def post_over_http(
    client: HttpClient,
    headers: dict[str, str],
    count: int,
    prefix: str,
    versions: tuple[str, ...] = ("v1", "v2"),
    traffic: Traffic | None = None,
) -> Traffic:
    """Create `count` posts with unique titles over real HTTP, recording every answer."""
    traffic = traffic if traffic is not None else Traffic()
    for number in range(count):
        version = versions[number % len(versions)]
        title = f"{prefix} {uuid.uuid4().hex[:12]}"
        body: dict[str, str] = {"title": title, "content": f"Body of {title}."}
        if version == "v2":
            body["category"] = "faults"
        started = time.perf_counter()
        try:
            response = client.request("POST", f"/api/{version}/posts", body, headers)
            status = response.status
        except OSError:
            status = 0
        traffic.latencies.append(time.perf_counter() - started)
        traffic.statuses[status] += 1
        if status == 201:
            assert response.body["title"] == title
            traffic.accepted.append(Accepted(int(response.body["id"]), version))
        else:
            traffic.rejected.append(Rejected(title, version, status))
    return traffic

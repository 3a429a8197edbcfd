"""Shared by the subscription and fan-out tests: an SMTP server in this process that keeps every
message whole and answers as scripted, authors with subscribers made through the services, and
the means to run a post's jobs (fan-out, batches) through their Celery tasks without a broker.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from flask import Flask
from sqlalchemy import func, select, update

from blog_api.extensions import db
from blog_api.jobs.checkpoints import job_checkpoint
from blog_api.jobs.errors import AttemptFailed
from blog_api.models import Delivery, Job, JobKind, JobStatus, Subscription, User
from blog_api.models.base import utcnow
from blog_api.services import subscriptions
from blog_api.worker.tasks import TASKS
from harness.launcher import free_port
from support import create_account_from_before_confirmations


@dataclass
class Received:
    """One message the server accepted: its envelope recipients and the parsed message."""

    rcpt_tos: list[str]
    message: EmailMessage
    peer: str

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())


@dataclass
class ScriptedHandler:
    """aiosmtpd handler: answers each DATA with the next scripted action (a code, or `drop`:
    close the connection instead of answering), RCPT of an address in `refuse` with its code;
    otherwise accepts and keeps the message."""

    received: list[Received] = field(default_factory=list)
    data_script: list[str] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)
    always: str | None = None
    pipelining: bool = True
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # aiosmtpd reads pipelined commands; it only does not say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        code = self.refuse.get(address)
        if code:
            return f"{code} {'Try again later' if code < 500 else 'No such mailbox'}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.attempts += 1
            action = self.data_script.pop(0) if self.data_script else self.always
        if action == "drop":
            server.transport.abort()
            return "421 dropped"  # never reaches the client
        if action:
            return f"{action} {'Try again later' if int(action) < 500 else 'Refused'}"
        message = BytesParser(policy=default_policy).parsebytes(envelope.content)
        peer = ":".join(str(part) for part in session.peer or ())
        with self.lock:
            self.received.append(Received(list(envelope.rcpt_tos), message, peer))  # type: ignore[arg-type]
        return "250 Message accepted"


class MailServer:
    """An SMTP server on a free local port in this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = ScriptedHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def fan_out(self) -> list[Received]:
        """The fan-out messages accepted (not the authors' own notifications)."""
        return [r for r in self.received if r.message_id.startswith("<fanout-")]

    def copies(self) -> Counter[str]:
        """Fan-out messages accepted per Message-ID."""
        return Counter(received.message_id for received in self.fan_out())

    def recipients(self) -> Counter[str]:
        """Fan-out messages accepted per envelope recipient."""
        return Counter(address for received in self.fan_out() for address in received.rcpt_tos)


def make_user(app: Flask, name: str, *, email: bool = True, confirmed: bool = False) -> int:
    """A user made by the service (no confirmation e-mail job); its id."""
    with app.app_context():
        user = create_account_from_before_confirmations(
            name, f"{name}@example.com" if email else None
        )
        if confirmed:
            user.email_confirmed_at = utcnow()
            db.session.commit()
        return user.id


def subscribe(app: Flask, subscriber_id: int, author_id: int) -> None:
    """`subscriber_id` follows `author_id` through the service."""
    with app.app_context():
        subscriber = db.session.get_one(User, subscriber_id)
        author = db.session.get_one(User, author_id)
        subscriptions.subscribe(subscriber, author)
        db.session.remove()


def add_subscribers(app: Flask, author_id: int, count: int, prefix: str, **kind: bool) -> list[int]:
    """`count` new users following `author_id`; their ids in creation order. `kind`: the
    users' `email` / `confirmed` (see `make_user`). The subscription rows are written directly:
    no service subscribes a user without an address, and accounts of an earlier time (or
    before EMAIL_CONFIRMATION_REQUIRED was turned on) can be such subscribers."""
    ids = [make_user(app, f"{prefix}{number}", **kind) for number in range(count)]
    with app.app_context():
        db.session.add_all(
            Subscription(subscriber_id=user_id, author_id=author_id, created_at=utcnow())
            for user_id in ids
        )
        db.session.commit()
    return ids


def attempt(app: Flask, task_name: str, job_id: str) -> str:
    """One attempt at a job through its Celery task, in this process: its outcome, a failed
    attempt's too (the task raises `AttemptFailed` once the outcome is recorded, as a worker
    shows it)."""
    task = app.extensions["celery"].tasks[task_name]
    try:
        return str(task.apply(args=[job_id], throw=True).get())
    except AttemptFailed as failed:
        return failed.outcome


def run_due_jobs(app: Flask, *, rounds: int = 100, kinds: tuple[JobKind, ...] | None = None) -> int:
    """Run every due pending job through its Celery task in this process, again and again
    until none is due (a fan-out writes batch jobs, a deferred batch is due again); returns
    how many runs there were."""
    runs = 0
    for _ in range(rounds):
        with app.app_context():
            statement = select(Job.id, Job.kind).where(
                Job.status == JobStatus.PENDING, Job.available_at <= utcnow()
            )
            if kinds:
                statement = statement.where(Job.kind.in_(kinds))
            due = [
                (row.id, row.kind) for row in db.session.execute(statement.order_by(Job.created_at))
            ]
            db.session.remove()
        if not due:
            return runs
        for job_id, kind in due:
            attempt(app, TASKS[kind].name, job_id)
            runs += 1
    raise AssertionError(f"jobs still due after {rounds} rounds")


def fast_forward(app: Flask, post_id: int) -> None:
    """Make every waiting delivery and job of the post due now, and every lease expired: as
    if their time had come."""
    past = utcnow() - timedelta(seconds=1)
    with app.app_context():
        db.session.execute(
            update(Delivery).where(Delivery.post_id == post_id).values(available_at=past)
        )
        db.session.execute(
            update(Delivery)
            .where(Delivery.post_id == post_id, Delivery.lease_until.is_not(None))
            .values(lease_until=past)
        )
        db.session.execute(
            update(Job)
            .where(Job.post_id == post_id, Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
            .values(available_at=past, lease_until=past)
        )
        db.session.commit()


def deliveries_by_status(app: Flask, post_id: int) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.post_id == post_id)
            .group_by(Delivery.status)
        ).all()
        return {str(status): int(count) for status, count in rows}


@contextmanager
def at_checkpoint(point: str, action: Callable[[Any], None]) -> Iterator[None]:
    """Call `action(job)` whenever a task reaches `point` inside the block."""

    def receiver(job: Any, *, point: str, **_: Any) -> None:
        if point == wanted:
            action(job)

    wanted = point
    job_checkpoint.connect(receiver, weak=False)
    try:
        yield
    finally:
        job_checkpoint.disconnect(receiver)

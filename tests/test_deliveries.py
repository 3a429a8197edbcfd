"""A post's fan-out to its author's subscribers (SPEC §6.10): the expansion into deliveries (in
chunks, resumable, confirmed addresses only), batches sent over one kept SMTP connection with
each outcome recorded before the next, per-delivery retries, cancellation, retention, the
throttle, and what the API, /metrics and the CLI show.

Real database (SQLite file and PostgreSQL), the jobs run through their Celery tasks in this
process without a broker, against an SMTP server in this process.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Select, delete, func, select, update

from blog_api.effects import fanout, throttle
from blog_api.effects.mailer import close_kept_connections
from blog_api.effects.throttle import MailThrottle, mail_throttle
from blog_api.extensions import db
from blog_api.jobs import deliveries
from blog_api.models import (
    Delivery,
    DeliveryStatus,
    Job,
    JobKind,
    JobStatus,
    Post,
    Subscription,
    User,
)
from blog_api.models.base import utcnow
from blog_api.services import subscriptions
from harness.launcher import free_port
from support import Account, assert_error, statements_run_by
from support.fanout import (
    MailServer,
    add_subscribers,
    at_checkpoint,
    attempt,
    deliveries_by_status,
    fast_forward,
    make_user,
    run_due_jobs,
)
from support.resources import create_post

FANOUT_ID = re.compile(r"<fanout-(\d+)@blog-api\.local>")


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer()
    server.start()
    yield server
    close_kept_connections()  # the authors' own notifications keep theirs
    server.stop()


@pytest.fixture
def fan_app(make_app: Callable[..., Flask], mail: MailServer) -> Callable[..., Flask]:
    """An app whose workers e-mail the in-process server; small batches and chunks."""

    def build(**overrides: Any) -> Flask:
        settings: dict[str, Any] = {
            "MAIL_PORT": mail.port,
            "DELIVERY_BATCH_SIZE": 4,
            "DELIVERY_EXPANSION_CHUNK": 8,
            "MAIL_RETRY_BACKOFF": 0.01,
            "MAIL_RETRY_BACKOFF_MAX": 0.02,
            **overrides,
        }
        return make_app(**settings)

    return build


def author_account(app: Flask, client: FlaskClient, name: str = "author") -> Account:
    user_id = make_user(app, name)
    response = client.post(
        "/api/v1/login", json={"username": name, "password": "correct horse battery"}
    )
    assert response.status_code == 200
    return Account(user_id, name, "", response.json["access_token"], response.json["refresh_token"])


def detached(app: Flask, statement: Select[Any]) -> list[Any]:
    """The rows `statement` selects, detached from their session so they can be read after."""
    with app.app_context():
        rows = list(db.session.scalars(statement))
        db.session.expunge_all()
        return rows


def deliveries_of(app: Flask, post_id: int) -> list[Delivery]:
    return detached(app, select(Delivery).where(Delivery.post_id == post_id).order_by(Delivery.id))


def jobs_of(app: Flask, post_id: int, kind: JobKind) -> list[Job]:
    return detached(
        app, select(Job).where(Job.post_id == post_id, Job.kind == kind).order_by(Job.batch)
    )


# A delivery's (status, attempts), as `outcomes` lists them.
SENT_ONCE = (DeliveryStatus.SENT, 1)
FAILED_ONCE = (DeliveryStatus.FAILED, 1)
UNTRIED = (DeliveryStatus.PENDING, 0)


def outcomes(rows: list[Delivery]) -> list[tuple[DeliveryStatus, int]]:
    return [(row.status, row.attempts) for row in rows]


def each_reader_once(readers: int) -> dict[str, int]:
    """The fan-out e-mails received when each of `readers` readers got theirs once."""
    return {f"reader{n}@example.com": 1 for n in range(readers)}


@dataclass
class FanOut:
    """An author with subscribers (reader0, reader1, ...) and a v1 post of theirs whose fan-out
    is expanded into deliveries (the author's own notification sent); no batch is sent yet."""

    app: Flask
    client: FlaskClient
    author: Account
    post: dict[str, Any]
    readers: list[int]

    @property
    def post_id(self) -> int:
        return int(self.post["id"])

    def deliveries(self) -> list[Delivery]:
        return deliveries_of(self.app, self.post_id)

    def batch_job(self, batch: int = 0) -> Job:
        jobs = jobs_of(self.app, self.post_id, JobKind.DELIVER_BATCH)
        return next(job for job in jobs if job.batch == batch)

    def run_batch(self, batch: int = 0) -> str:
        """One attempt at the batch's job through its Celery task; its outcome."""
        return attempt(self.app, "blog_api.deliver_batch", self.batch_job(batch).id)

    def run_batch_after_backoff(self) -> str:
        """The batch's next attempt, once the waits of the post's jobs and deliveries are over."""
        fast_forward(self.app, self.post_id)
        return self.run_batch()


@pytest.fixture
def fanned_out(fan_app: Callable[..., Flask]) -> Callable[..., FanOut]:
    """`fanned_out(subscribers, **settings)`: a `FanOut` on `fan_app(**settings)`; `title`:
    the post's; `confirmed`: the readers' addresses are confirmed; `run`: the jobs run before
    it returns."""

    def build(
        subscribers: int,
        *,
        title: str = "A post",
        confirmed: bool = False,
        run: tuple[JobKind, ...] = (JobKind.FAN_OUT, JobKind.NOTIFY_AUTHOR),
        **settings: Any,
    ) -> FanOut:
        app = fan_app(**settings)
        client = app.test_client()
        author = author_account(app, client)
        readers = add_subscribers(app, author.id, subscribers, "reader", confirmed=confirmed)
        post = create_post(client, author, "v1", title=title)
        run_due_jobs(app, kinds=run)
        return FanOut(app, client, author, post, readers)

    return build


def test_a_post_reaches_every_subscriber_once_in_batches_over_one_connection_each(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(10, title="Fan-out day")

    run_due_jobs(fan.app)

    rows = fan.deliveries()
    assert sorted(row.subscriber_id for row in rows) == sorted(fan.readers)
    assert {row.status for row in rows} == {DeliveryStatus.SENT}
    assert [row.batch for row in rows] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    batch_jobs = jobs_of(fan.app, fan.post_id, JobKind.DELIVER_BATCH)
    assert [(job.batch, job.status, job.attempts) for job in batch_jobs] == [
        (0, JobStatus.DONE, 1),
        (1, JobStatus.DONE, 1),
        (2, JobStatus.DONE, 1),
    ]
    received = mail.fan_out()
    assert mail.recipients() == each_reader_once(10)
    assert {FANOUT_ID.fullmatch(r.message_id).group(1) for r in received} == {  # type: ignore[union-attr]
        str(row.id) for row in rows
    }
    # One connection per batch: the client's port is shared by a batch's messages.
    by_batch = {row.id: row.batch for row in rows}
    peers: dict[int, set[str]] = {}
    for message in received:
        delivery_id = int(FANOUT_ID.fullmatch(message.message_id).group(1))  # type: ignore[union-attr]
        peers.setdefault(by_batch[delivery_id], set()).add(message.peer)
    assert all(len(ports) == 1 for ports in peers.values()), peers
    assert len(set().union(*peers.values())) == 3


def test_every_fan_out_e_mail_carries_its_one_click_unsubscribe_link(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(1, title="Über 'links'\r\nBcc: x@evil.example")
    [reader] = fan.readers
    run_due_jobs(fan.app)

    [received] = mail.fan_out()
    message = received.message
    link = str(message["List-Unsubscribe"])
    assert re.fullmatch(
        r"<https://blog-api\.test/api/v1/unsubscribe\?token=[A-Za-z0-9_-]{32}>", link
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("reader0", "reader0@example.com")
    assert message["Bcc"] is None  # the title's line break added no header
    assert "Über 'links' Bcc: x@evil.example" in str(message["Subject"])
    text = received.text()
    assert link.strip("<>") in text
    assert f"https://blog-api.test/api/v1/posts/{fan.post_id}" in text
    assert "Hello reader0," in text

    # The link works: a one-click POST ends the subscription.
    url = link.strip("<>").removeprefix("https://blog-api.test")
    response = fan.client.post(
        url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200, response.json
    with fan.app.app_context():
        assert db.session.get_one(User, fan.author.id).subscriber_count == 0
    assert reader


def test_without_pipelining_each_command_waits_for_its_reply_and_every_message_arrives(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    mail.handler.pipelining = False
    fan = fanned_out(5)
    run_due_jobs(fan.app)

    assert mail.recipients() == each_reader_once(5)
    assert deliveries_by_status(fan.app, fan.post_id) == {"sent": 5}


def test_an_author_nobody_follows_gets_no_fan_out_job_and_a_post_costs_the_same_statements(
    fan_app: Callable[..., Flask],
) -> None:
    app = fan_app()
    client = app.test_client()
    lonely = author_account(app, client, "lonely")
    followed = author_account(app, client, "followed")
    add_subscribers(app, followed.id, 3, "reader")

    with statements_run_by(app) as alone:
        lonely_post = create_post(client, lonely, "v1")
    with statements_run_by(app) as with_readers:
        followed_post = create_post(client, followed, "v1")

    assert len(alone) == len(with_readers)
    assert jobs_of(app, lonely_post["id"], JobKind.FAN_OUT) == []
    [fan_out] = jobs_of(app, followed_post["id"], JobKind.FAN_OUT)
    assert fan_out.status == JobStatus.PENDING
    # The post's jobs as the API shows them: the fan-out, never its batches.
    run_due_jobs(app, kinds=(JobKind.FAN_OUT,))
    response = client.get(f"/api/v1/posts/{followed_post['id']}/jobs", headers=followed.headers)
    assert {job["kind"] for job in response.json["jobs"]} == {"notify_author", "fan_out"}


def test_expansion_writes_one_delivery_per_confirmed_subscriber_in_chunks_and_batches(
    fan_app: Callable[..., Flask],
) -> None:
    app = fan_app(EMAIL_CONFIRMATION_REQUIRED=True)
    client = app.test_client()
    author = author_account(app, client)
    confirmed = add_subscribers(app, author.id, 19, "ok", confirmed=True)
    add_subscribers(app, author.id, 3, "unconfirmed")
    add_subscribers(app, author.id, 2, "nomail", email=False)
    post = create_post(client, author, "v1")
    add_subscribers(app, author.id, 2, "late", confirmed=True)  # after the post: not owed it

    run_due_jobs(app, kinds=(JobKind.FAN_OUT,))

    rows = deliveries_of(app, post["id"])
    assert [row.subscriber_id for row in rows] == confirmed
    # Chunks of 8 (settings), batches of 4 numbered per chunk: 8 + 8 + 3.
    assert [row.batch for row in rows] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 3
    assert [job.batch for job in jobs_of(app, post["id"], JobKind.DELIVER_BATCH)] == [
        0,
        1,
        2,
        3,
        4,
    ]
    [fan_out] = jobs_of(app, post["id"], JobKind.FAN_OUT)
    assert (fan_out.status, fan_out.attempts) == (JobStatus.DONE, 1)
    with app.app_context():
        progress = deliveries.progress(post["id"])
    assert (progress.total, progress.pending, progress.finished_at) == (19, 19, None)
    assert progress.started_at is not None


def test_an_expansion_out_of_time_continues_later_without_spending_attempts(
    fan_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero time budget: every run writes one chunk and hands the job back, due at once."""
    monkeypatch.setattr(fanout, "BUDGET_SHARE", 0.0)
    app = fan_app()
    client = app.test_client()
    author = author_account(app, client)
    subscribers = add_subscribers(app, author.id, 20, "reader")
    post = create_post(client, author, "v1")
    [fan_out] = jobs_of(app, post["id"], JobKind.FAN_OUT)
    task = app.extensions["celery"].tasks["blog_api.fan_out_post"]

    outcomes = [task.apply(args=[fan_out.id], throw=True).get() for _ in range(3)]

    assert outcomes == ["deferred", "deferred", "done"]
    [fan_out] = jobs_of(app, post["id"], JobKind.FAN_OUT)
    assert (fan_out.status, fan_out.attempts) == (JobStatus.DONE, 1)
    assert [row.subscriber_id for row in deliveries_of(app, post["id"])] == subscribers


def test_an_expansion_that_crashed_after_a_chunk_resumes_without_duplicates_or_gaps(
    fan_app: Callable[..., Flask],
) -> None:
    app = fan_app()
    client = app.test_client()
    author = author_account(app, client)
    subscribers = add_subscribers(app, author.id, 21, "reader")
    post = create_post(client, author, "v1")
    crashes = []

    def crash_once(_job: Any) -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("worker lost after its first chunk")

    with at_checkpoint("after_expansion_chunk", crash_once):
        run_due_jobs(app, kinds=(JobKind.FAN_OUT,))
        fast_forward(app, post["id"])  # the retry's backoff
        run_due_jobs(app, kinds=(JobKind.FAN_OUT,))

    assert crashes == [1]
    rows = deliveries_of(app, post["id"])
    assert [row.subscriber_id for row in rows] == subscribers
    [fan_out] = jobs_of(app, post["id"], JobKind.FAN_OUT)
    assert (fan_out.status, fan_out.attempts) == (JobStatus.DONE, 2)
    # Every batch has its job once.
    batches = sorted({row.batch for row in rows})
    assert [job.batch for job in jobs_of(app, post["id"], JobKind.DELIVER_BATCH)] == batches


def test_two_expansions_from_the_same_resume_point_write_each_delivery_once(
    fan_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run that read the resume point before the first one's chunk committed (its
    lease ran out meanwhile) inserts the same subscribers again: the unique (post, subscriber)
    with ON CONFLICT DO NOTHING keeps one delivery each, and the run goes on after them."""
    app = fan_app()
    client = app.test_client()
    author = author_account(app, client)
    subscribers = add_subscribers(app, author.id, 20, "reader")
    post = create_post(client, author, "v1")
    with app.app_context():
        published = db.session.get_one(Post, post["id"]).created_at
        fan_out = deliveries.FanOut(post["id"], author.id, published, None)
        assert deliveries.expand_chunk(fan_out, 8, 4, False) is False
        stale = iter([(0, 0)])
        real = deliveries.resume_point
        monkeypatch.setattr(
            deliveries, "resume_point", lambda post_id: next(stale, None) or real(post_id)
        )
        finished = [deliveries.expand_chunk(fan_out, 8, 4, False) for _ in range(3)]

    assert finished == [False, False, True]
    rows = deliveries_of(app, post["id"])
    assert [row.subscriber_id for row in rows] == subscribers


def test_a_refused_recipient_waits_for_its_retry_while_the_batch_goes_on(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    mail.handler.refuse["reader1@example.com"] = 450

    assert fan.run_batch() == "deferred"

    rows = fan.deliveries()
    assert outcomes(rows) == [SENT_ONCE, FAILED_ONCE, SENT_ONCE, SENT_ONCE]
    assert "450" in (rows[1].last_error or "")
    job = fan.batch_job()
    # Waiting for the delivery's retry: the job's attempt was given back.
    assert (job.status, job.attempts, job.available_at) == (
        JobStatus.PENDING,
        0,
        rows[1].available_at,
    )

    del mail.handler.refuse["reader1@example.com"]
    assert fan.run_batch_after_backoff() == "done"
    assert mail.recipients() == each_reader_once(4)
    assert outcomes(fan.deliveries())[1] == (DeliveryStatus.SENT, 2)


def test_a_permanent_refusal_ends_that_delivery_only(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    mail.handler.refuse["reader2@example.com"] = 550
    mail.handler.data_script = ["", "", "554"]  # the third message's DATA is refused for good

    assert fan.run_batch() == "done"

    rows = fan.deliveries()
    assert [row.status for row in rows] == [
        DeliveryStatus.SENT,
        DeliveryStatus.SENT,
        DeliveryStatus.DEAD,
        DeliveryStatus.DEAD,
    ]
    assert "550" in (rows[2].last_error or "")
    assert "554" in (rows[3].last_error or "")
    assert fan.batch_job().status == JobStatus.DONE


def test_a_server_that_answers_451_pauses_the_batch_at_one_attempt(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    mail.handler.always = "451"

    assert fan.run_batch() == "deferred"

    rows = fan.deliveries()
    assert outcomes(rows) == [FAILED_ONCE, UNTRIED, UNTRIED, UNTRIED]
    job = fan.batch_job()
    assert (job.status, job.attempts, job.available_at) == (
        JobStatus.PENDING,
        0,
        rows[0].available_at,
    )

    mail.handler.always = None
    assert fan.run_batch_after_backoff() == "done"
    assert mail.recipients() == each_reader_once(4)


def test_a_connection_dropped_mid_batch_is_reopened_for_the_next_message(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    mail.handler.data_script = ["", "drop"]  # the second message's connection is cut

    assert fan.run_batch() == "deferred"

    assert outcomes(fan.deliveries()) == [SENT_ONCE, FAILED_ONCE, SENT_ONCE, SENT_ONCE]
    peers = [message.peer for message in mail.fan_out()]
    assert len(set(peers)) == 2  # a new connection after the drop
    assert fan.run_batch_after_backoff() == "done"
    assert mail.recipients() == each_reader_once(4)


def test_an_unreachable_server_pauses_the_batch_and_a_failure_at_the_last_attempt_is_dead(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(3, MAIL_PORT=1, MAIL_MAX_RETRIES=1)  # port 1 refuses connections

    assert fan.run_batch() == "deferred"
    assert fan.run_batch_after_backoff() == "deferred"

    rows = fan.deliveries()
    assert outcomes(rows) == [(DeliveryStatus.DEAD, 2), UNTRIED, UNTRIED]
    assert "gave up after 2 attempts" in (rows[0].last_error or "")
    assert mail.received == []


def test_mail_failure_rate_fails_each_message_before_it_is_sent(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(2, run=(JobKind.FAN_OUT,), MAIL_FAILURE_RATE=1.0)

    assert fan.run_batch() == "deferred"
    rows = fan.deliveries()
    assert {(row.status, row.last_error) for row in rows} == {
        (DeliveryStatus.FAILED, "injected failure (MAIL_FAILURE_RATE)")
    }
    assert mail.received == []


def test_a_worker_killed_mid_batch_leaves_only_the_message_in_flight_to_send_again(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    """The third message was accepted and the worker died before recording it: after the
    lease, the rest of the batch is sent once, and that message again with its Message-ID."""
    fan = fanned_out(4)
    sent: list[int] = []

    class WorkerKilled(Exception):
        pass

    def die_at_the_third(_job: Any) -> None:
        sent.append(1)
        if len(sent) == 3:
            raise WorkerKilled()

    with at_checkpoint("after_smtp_250_before_commit", die_at_the_third):
        assert fan.run_batch() == "retrying"

    rows = fan.deliveries()
    assert [row.status for row in rows] == [
        DeliveryStatus.SENT,
        DeliveryStatus.SENT,
        DeliveryStatus.SENDING,  # in flight: its lease runs
        DeliveryStatus.PENDING,  # given back untried
    ]
    assert fan.run_batch_after_backoff() == "done"

    in_flight = f"<fanout-{rows[2].id}@blog-api.local>"
    assert mail.copies() == {
        **{f"<fanout-{row.id}@blog-api.local>": 1 for row in rows},
        in_flight: 2,
    }
    # An attempt counts when recorded: the lost one left no trace but its second copy.
    assert outcomes(fan.deliveries()) == [SENT_ONCE] * 4


def test_a_batch_that_kills_its_worker_every_time_ends_its_job_dead_and_loses_no_delivery(
    fanned_out: Callable[..., FanOut], mail: MailServer, admin: Account
) -> None:
    """Each run dies after its first message; the job's attempts count the kills and end it
    `dead`; the deliveries are all still owed (none dead), and an admin's re-drive finishes."""
    fan = fanned_out(3, MAIL_MAX_RETRIES=1)

    def die(_job: Any) -> None:
        raise RuntimeError("killed")

    with at_checkpoint("after_smtp_250_before_commit", die):
        for _ in range(3):
            fan.run_batch()
            fast_forward(fan.app, fan.post_id)

    job = fan.batch_job()
    assert (job.status, job.attempts) == (JobStatus.DEAD, 2)
    assert {row.status for row in fan.deliveries()} == {
        DeliveryStatus.SENDING,
        DeliveryStatus.PENDING,
    }
    retry = f"/api/v1/posts/{fan.post_id}/deliveries/retry"
    response = fan.client.post(retry, headers=admin.headers)
    assert response.status_code == 200, response.json
    assert fan.run_batch_after_backoff() == "done"
    assert deliveries_by_status(fan.app, fan.post_id) == {"sent": 3}
    assert set(mail.recipients()) == {f"reader{n}@example.com" for n in range(3)}


def test_unsubscribing_cancels_exactly_the_waiting_deliveries_and_says_which(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    app, client, author, post, readers = fan.app, fan.client, fan.author, fan.post, fan.readers
    other = create_post(client, author, "v1", title="second")
    run_due_jobs(app, kinds=(JobKind.FAN_OUT,))
    with app.app_context():  # reader1's delivery of the first post is in a worker's hands
        db.session.execute(
            update(Delivery)
            .where(Delivery.post_id == post["id"], Delivery.subscriber_id == readers[1])
            .values(status=DeliveryStatus.SENDING, lease_until=utcnow() + timedelta(minutes=1))
        )
        db.session.commit()
        first = subscriptions.unsubscribe(readers[0], author.id)
        second = subscriptions.unsubscribe(readers[1], author.id)

    assert (first.existed, first.cancelled_post_ids) == (True, [post["id"], other["id"]])
    assert (second.existed, second.cancelled_post_ids) == (True, [other["id"]])
    assert deliveries_by_status(app, post["id"]) == {"cancelled": 1, "sending": 1, "pending": 2}


def test_a_batch_settles_unsubscribed_deleted_and_unconfirmed_subscribers_without_sending(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4, confirmed=True, run=(JobKind.FAN_OUT,), EMAIL_CONFIRMATION_REQUIRED=True)
    readers = fan.readers
    with fan.app.app_context():
        # After the expansion: one subscription deleted behind the service's back (as a
        # racing unsubscribe that committed after the expansion read it), one account
        # deleted, one address no longer confirmed.
        db.session.execute(delete(Subscription).where(Subscription.subscriber_id == readers[0]))
        db.session.delete(db.session.get_one(User, readers[1]))
        db.session.get_one(User, readers[2]).email_confirmed_at = None
        db.session.commit()

    assert fan.run_batch() == "done"

    rows = fan.deliveries()
    assert [(row.status, row.subscriber_id) for row in rows] == [
        (DeliveryStatus.CANCELLED, readers[0]),
        (DeliveryStatus.SKIPPED, None),
        (DeliveryStatus.SKIPPED, readers[2]),
        (DeliveryStatus.SENT, readers[3]),
    ]
    assert "deleted" in (rows[1].last_error or "")
    assert "not confirmed" in (rows[2].last_error or "")
    assert mail.recipients() == {"reader3@example.com": 1}


def test_deleting_a_post_mid_fan_out_stops_its_batch_at_the_next_message(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    app, client, author, post = fan.app, fan.client, fan.author, fan.post

    def delete_the_post(_job: Any) -> None:
        if len(mail.fan_out()) == 1:
            response = client.delete(f"/api/v1/posts/{post['id']}", headers=author.headers)
            assert response.status_code == 200

    job = fan.batch_job()
    task = app.extensions["celery"].tasks["blog_api.deliver_batch"]
    with at_checkpoint("after_smtp_250_before_commit", delete_the_post):
        assert task.apply(args=[job.id], throw=True).get() == "done"

    assert len(mail.fan_out()) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert db.session.scalar(select(func.count()).where(Job.post_id == post["id"])) == 0


def test_retention_deletes_old_finished_deliveries_and_the_post_figures_stay(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(6)
    mail.handler.refuse["reader5@example.com"] = 550
    with fan.app.app_context():
        subscriptions.unsubscribe(fan.readers[4], fan.author.id)
    run_due_jobs(fan.app)
    with fan.app.app_context():
        before = deliveries.progress(fan.post_id)
        assert (before.sent, before.cancelled, before.dead, before.total) == (4, 1, 1, 6)
        assert deliveries.prune_finished_deliveries(older_than=timedelta(days=1)) == 0
        assert deliveries.prune_finished_deliveries(older_than=timedelta(0)) == 5
        after = deliveries.progress(fan.post_id)
        left = db.session.scalars(select(Delivery.status)).all()

    assert left == [DeliveryStatus.DEAD]  # dead ones wait for an admin
    assert after == before
    assert after.finished_at is not None


def test_the_deliveries_endpoint_shows_the_fan_out_in_figures_to_the_author_and_admins(
    fan_app: Callable[..., Flask], mail: MailServer, admin: Account, bob: Account
) -> None:
    app = fan_app()
    client = app.test_client()
    author = author_account(app, client)
    add_subscribers(app, author.id, 3, "reader")
    post = create_post(client, author, "v2")
    url = f"/api/v2/posts/{post['id']}/deliveries"

    waiting = client.get(url, headers=author.headers)
    assert waiting.status_code == 200
    assert waiting.json == {
        "total": 0,
        "sent": 0,
        "pending": 0,
        "failed": 0,
        "dead": 0,
        "skipped": 0,
        "cancelled": 0,
        "started_at": None,
        "finished_at": None,
    }
    mail.handler.refuse["reader2@example.com"] = 550
    run_due_jobs(app)

    for version in ("v1", "v2"):
        for caller in (author, admin):
            response = client.get(
                f"/api/{version}/posts/{post['id']}/deliveries", headers=caller.headers
            )
            assert response.status_code == 200
            body = response.json
            assert {key: body[key] for key in ("total", "sent", "dead", "pending")} == {
                "total": 3,
                "sent": 2,
                "dead": 1,
                "pending": 0,
            }
            assert body["started_at"] <= body["finished_at"]
            assert "example.com" not in response.get_data(as_text=True)
    assert_error(
        client.get(url, headers=bob.headers),
        403,
        "You can only view the deliveries of your own posts unless you are an admin",
    )
    assert_error(client.get(url), 401, "Missing token")
    assert_error(
        client.get("/api/v1/posts/999999/deliveries", headers=admin.headers), 404, "Post not found"
    )


def test_an_admin_re_drives_dead_deliveries_and_nothing_else(
    fanned_out: Callable[..., FanOut], mail: MailServer, admin: Account, row_counts: Any
) -> None:
    fan = fanned_out(2)
    app, client, author, post = fan.app, fan.client, fan.author, fan.post
    url = f"/api/v1/posts/{post['id']}/deliveries/retry"
    mail.handler.refuse["reader1@example.com"] = 550
    run_due_jobs(app)

    before = row_counts()
    assert_error(client.post(url, headers=author.headers), 403, "Admin access required")
    assert_error(
        client.post("/api/v1/posts/999999/deliveries/retry", headers=admin.headers),
        404,
        "Post not found",
    )
    assert row_counts() == before

    del mail.handler.refuse["reader1@example.com"]
    response = client.post(url.replace("/v1/", "/v2/"), headers=admin.headers)  # either version
    assert response.status_code == 200, response.json
    assert (response.json["dead"], response.json["pending"], response.json["sent"]) == (0, 1, 1)
    assert fan.batch_job().status == JobStatus.PENDING
    run_due_jobs(app)
    assert deliveries_by_status(app, post["id"]) == {"sent": 2}
    assert mail.recipients() == {"reader0@example.com": 1, "reader1@example.com": 1}
    assert_error(
        client.post(url, headers=admin.headers),
        409,
        "The post has no dead deliveries (nor dead batch jobs) to retry",
    )


def test_metrics_show_unfinished_and_dead_deliveries_and_the_fan_out_backlog(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(4)
    client = fan.client
    mail.handler.refuse["reader0@example.com"] = 550
    mail.handler.refuse["reader1@example.com"] = 450
    with fan.app.app_context():
        db.session.execute(
            update(Delivery).values(
                created_at=utcnow() - timedelta(minutes=5),
                available_at=utcnow() - timedelta(minutes=5),
            )
        )
        db.session.commit()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'blog_api_deliveries{status="pending"} 4.0' in text
    assert "blog_api_fanout_backlog 4.0" in text
    [age] = re.findall(r"^blog_api_fanout_oldest_pending_age_seconds (\S+)$", text, re.M)
    assert 290 < float(age) < 400

    fan.run_batch()
    text = client.get("/metrics").get_data(as_text=True)
    for status, count in {"pending": 0, "failed": 1, "dead": 1, "sending": 0}.items():
        assert f'blog_api_deliveries{{status="{status}"}} {count}.0' in text
    assert "blog_api_fanout_backlog 1.0" in text


def test_flask_jobs_deliveries_shows_a_post_s_figures_and_follows_until_done(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(3)
    runner = fan.app.test_cli_runner()

    waiting = runner.invoke(args=["jobs", "deliveries", str(fan.post_id)])
    assert waiting.exit_code == 0, waiting.output
    assert "total=3  sent=0  pending=3" in waiting.output
    assert "finished_at=-" in waiting.output

    threading.Timer(0.3, lambda: run_due_jobs(fan.app)).start()
    followed = runner.invoke(args=["jobs", "deliveries", str(fan.post_id), "--follow"])
    assert followed.exit_code == 0, followed.output
    assert "total=3  sent=3  pending=0" in followed.output
    assert "finished_at=-" not in followed.output

    missing = runner.invoke(args=["jobs", "deliveries", "999999"])
    assert missing.exit_code != 0
    assert "no post 999999" in missing.output


@pytest.fixture
def throttle_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key of this test's own in the shared Redis."""
    monkeypatch.setattr(throttle, "IDENTIFIERS", ("blog_api-test", uuid.uuid4().hex))


@pytest.mark.usefixtures("throttle_key")
def test_two_senders_sharing_one_storage_stay_within_the_rate_together(redis_url: str) -> None:
    rate, seconds = 100, 2.5
    takers = [MailThrottle(rate, redis_url, {}) for _ in range(2)]
    taken = [0, 0]
    deadline = time.monotonic() + seconds

    def send(number: int) -> None:
        while takers[number].take(deadline):
            taken[number] += 1

    threads = [threading.Thread(target=send, args=(number,)) for number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # One-second windows from the first token: 3 windows in 2.5 s, whoever takes the tokens
    # (each storage of its own would have let 6 through).
    assert all(taken), taken
    assert 2.5 * rate <= sum(taken) <= 3 * rate + 2 * takers[0].chunk, taken


def test_without_mail_rate_limit_there_is_no_throttle(fan_app: Callable[..., Flask]) -> None:
    with fan_app().app_context():
        assert mail_throttle() is None


@pytest.mark.usefixtures("throttle_key")
def test_a_batch_whose_throttle_storage_is_down_pauses_and_sends_nothing(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    storage = f"redis://127.0.0.1:{free_port()}/0"
    fan = fanned_out(2, MAIL_RATE_LIMIT=10, RATELIMIT_STORAGE_URI=storage)

    assert fan.run_batch() == "deferred"

    assert deliveries_by_status(fan.app, fan.post_id) == {"pending": 2}
    assert mail.fan_out() == []
    assert "paused: rate-limit storage failed" in (fan.batch_job().last_error or "")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("synchronous", "during"), [(False, "off"), (True, "on")])
def test_outcomes_are_recorded_with_synchronous_commit_as_configured_and_reset_after(
    app: Flask, synchronous: bool, during: str
) -> None:
    """DELIVERY_SYNCHRONOUS_COMMIT=false: the recorder's connection skips the WAL flush wait;
    the connection goes back to the pool as it came."""
    with app.app_context():
        recorder = deliveries.OutcomeRecorder(db.engine, utcnow(), synchronous)
        assert recorder.record(999999, DeliveryStatus.SENT) is False  # no such row: no write
        driver = recorder.connection.driver_connection
        assert driver.execute("SHOW synchronous_commit").fetchone()[0] == during
        assert driver.autocommit is True
        recorder.close()
        # The same connection, back in the pool: as it was lent.
        assert driver.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        driver.rollback()
        assert driver.autocommit is False


def test_a_title_with_braces_or_non_ascii_text_is_sent_as_written(
    fanned_out: Callable[..., FanOut], mail: MailServer
) -> None:
    fan = fanned_out(1, title="{username} {link} {0} déjà vu")
    run_due_jobs(fan.app)

    [received] = mail.fan_out()
    assert str(received.message["Subject"]).endswith(": {username} {link} {0} déjà vu")
    text = received.text()
    assert "    {username} {link} {0} déjà vu" in text
    assert "Hello reader0," in text
    assert received.message["Content-Transfer-Encoding"] == "base64"

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
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from blog_api.effects.throttle import MailThrottle, mail_throttle
from blog_api.extensions import db
from blog_api.jobs import deliveries
from blog_api.models import Delivery, DeliveryStatus, Job, JobKind, JobStatus, Post, User
from blog_api.models.base import utcnow
from blog_api.services import subscriptions
from fanout_support import (
    MailServer,
    add_subscribers,
    at_checkpoint,
    deliveries_by_status,
    fast_forward,
    make_user,
    run_due_jobs,
)
from resources import create_post
from support import Account, assert_error, statements_run_by

FANOUT_ID = re.compile(r"<fanout-(\d+)@blog-api\.local>")


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer()
    server.start()
    yield server
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
    response = client.post("/api/v1/login", json={"username": name, "password": "correct horse battery"})
    assert response.status_code == 200
    return Account(user_id, name, "", response.json["access_token"], response.json["refresh_token"])


def deliveries_of(app: Flask, post_id: int) -> list[Delivery]:
    with app.app_context():
        rows = list(
            db.session.scalars(select(Delivery).where(Delivery.post_id == post_id).order_by(Delivery.id))
        )
        db.session.expunge_all()
        return rows


def jobs_of(app: Flask, post_id: int, kind: JobKind) -> list[Job]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                select(Job).where(Job.post_id == post_id, Job.kind == kind).order_by(Job.batch)
            )
        )
        db.session.expunge_all()
        return rows


def test_a_post_reaches_every_subscriber_once_in_batches_over_one_connection_each(
    fan_app: Callable[..., Flask], mail: MailServer
) -> None:
    app = fan_app()
    client = app.test_client()
    author = author_account(app, client)
    subscribers = add_subscribers(app, author.id, 10, "reader")

    post = create_post(client, author, "v1", title="Fan-out day")
    run_due_jobs(app)

    rows = deliveries_of(app, post["id"])
    assert sorted(row.subscriber_id for row in rows) == sorted(subscribers)
    assert {row.status for row in rows} == {DeliveryStatus.SENT}
    assert [row.batch for row in rows] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    batch_jobs = jobs_of(app, post["id"], JobKind.DELIVER_BATCH)
    assert [(job.batch, job.status, job.attempts) for job in batch_jobs] == [
        (0, JobStatus.DONE, 1),
        (1, JobStatus.DONE, 1),
        (2, JobStatus.DONE, 1),
    ]
    received = mail.fan_out()
    assert mail.recipients() == {f"reader{n}@example.com": 1 for n in range(10)}
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
    fan_app: Callable[..., Flask], mail: MailServer
) -> None:
    app = fan_app()
    client = app.test_client()
    author = author_account(app, client)
    [reader] = add_subscribers(app, author.id, 1, "reader")
    post = create_post(client, author, "v1", title="Über 'links'\r\nBcc: x@evil.example")
    run_due_jobs(app)

    [received] = mail.fan_out()
    message = received.message
    link = str(message["List-Unsubscribe"])
    assert re.fullmatch(r"<https://blog-api\.test/api/v1/unsubscribe\?token=[A-Za-z0-9_-]{32}>", link)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("reader0", "reader0@example.com")
    assert message["Bcc"] is None  # the title's line break added no header
    assert "Über 'links' Bcc: x@evil.example" in str(message["Subject"])
    text = received.text()
    assert link.strip("<>") in text
    assert f"https://blog-api.test/api/v1/posts/{post['id']}" in text
    assert "Hello reader0," in text

    # The link works: a one-click POST ends the subscription.
    url = link.strip("<>").removeprefix("https://blog-api.test")
    response = client.post(url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.json
    with app.app_context():
        assert db.session.get_one(User, author.id).subscriber_count == 0
    assert reader

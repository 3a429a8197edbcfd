"""The fan-out's oracle: per post and subscriber, what the SMTP sink received against what was
owed, and the audiences it is measured on.

An e-mail is matched to its post by the post's title in its subject (titles are unique per
scenario, so a deleted post's e-mails are still counted) and to its subscriber by its envelope
recipient. For every (post, address):

- owed exactly one: `delivered` (at least one), `duplicated` (two or more distinct Message-IDs:
  two deliveries of one post to one subscriber), `ambiguous` (one Message-ID received more than
  once: a message in flight when a worker died, sent again after its lease), `lost` (none, and
  the delivery is not `dead`), `dead` (none, delivery `dead`);
- owed none (an unconfirmed or address-less subscriber, an unsubscribe that cancelled the
  delivery): any e-mail is `forbidden_received`;
- owed at most one (an unsubscribe that found the delivery in a worker's hands, a post deleted
  mid-fan-out): more than one distinct Message-ID is `duplicated`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from oracle import Figures
from sqlalchemy import select

from blog_api.auth.passwords import hash_password
from blog_api.extensions import db
from blog_api.models import Delivery, DeliveryStatus, Job, JobStatus, Post, Subscription, User
from blog_api.models.base import utcnow

PASSWORD = "correct horse battery"


@dataclass
class Audience:
    """An author's subscribers by kind: only `confirmed` ones are owed e-mails (the rig runs
    with EMAIL_CONFIRMATION_REQUIRED)."""

    author_id: int
    author: str
    confirmed: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    without_address: list[int] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)


def make_audience(
    app: Flask, name: str, confirmed: int, unconfirmed: int = 0, without_address: int = 0
) -> Audience:
    """A confirmed author and their subscribers, written in one transaction (hundreds of
    accounts: one password hash shared by all, subscriptions older than any post)."""
    with app.app_context():
        password_hash = hash_password(PASSWORD)
        now = utcnow()

        def user(username: str, email: str | None, confirmed_at: object) -> User:
            return User(
                username=username,
                email=email,
                email_confirmed_at=confirmed_at,
                password_hash=password_hash,
            )

        author = user(name, f"{name}@example.com", now)
        kinds = [("c", confirmed, now, True), ("u", unconfirmed, None, True)]
        kinds.append(("n", without_address, None, False))
        readers = [
            user(
                f"{name}_{kind}{number}", f"{name}_{kind}{number}@example.com" if mail else None, at
            )
            for kind, count, at, mail in kinds
            for number in range(count)
        ]
        db.session.add_all([author, *readers])
        db.session.flush()
        db.session.add_all(
            Subscription(subscriber_id=reader.id, author_id=author.id, created_at=now)
            for reader in readers
        )
        db.session.commit()
        audience = Audience(author.id, name)
        for reader in readers:
            if reader.email is None:
                audience.without_address.append(reader.id)
            elif reader.email_confirmed_at is None:
                audience.unconfirmed.append(reader.email)
            else:
                audience.confirmed.append(reader.email)
            if reader.email:
                audience.ids[reader.email] = reader.id
        db.session.remove()
        return audience


def create_fan_out_post(app: Flask, audience: Audience, title: str) -> int:
    """A post of the audience's author, through the API (with the author's login)."""
    client = app.test_client()
    login = client.post("/api/v1/login", json={"username": audience.author, "password": PASSWORD})
    assert login.status_code == 200, login.json
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    response = client.post("/api/v1/posts", json={"title": title, "content": "x"}, headers=headers)
    assert response.status_code == 201, response.json
    return int(response.json["id"])


@dataclass
class Owed:
    """What one post owes whom."""

    title: str
    post_id: int
    exactly_once: set[str]
    never: set[str] = field(default_factory=set)
    at_most_once: set[str] = field(default_factory=set)


def fan_out_records(mail_log: Path) -> list[dict[str, object]]:
    """Every fan-out e-mail the sink accepted (complete lines only)."""
    if not mail_log.exists():
        return []
    lines = mail_log.read_text(encoding="utf-8").splitlines(keepends=True)
    records = [json.loads(line) for line in lines if line.endswith("\n")]
    return [
        record
        for record in records
        if record["event"] == "delivered" and "New post by" in str(record.get("subject"))
    ]


def _dead_addresses(app: Flask, post_id: int) -> set[str]:
    with app.app_context():
        rows = db.session.scalars(
            select(User.email)
            .join(Delivery, Delivery.subscriber_id == User.id)
            .where(Delivery.post_id == post_id, Delivery.status == DeliveryStatus.DEAD)
        ).all()
        db.session.remove()
        return {str(email) for email in rows}


def measure_fan_out(app: Flask, owed: list[Owed], mail_log: Path) -> tuple[Figures, dict[str, int]]:
    """The figures (in the suite's shape: e-mails expected / delivered / duplicated / lost /
    dead / ambiguous) and the fan-out's own (forbidden e-mails, at-most-once addresses hit)."""
    copies: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    titles = {post.title for post in owed}
    for record in fan_out_records(mail_log):
        subject = str(record["subject"])
        [title] = [title for title in titles if subject.endswith(f": {title}")] or [None]
        if title is None:
            continue
        for address in record["rcpt_tos"]:  # type: ignore[attr-defined]
            copies[(title, str(address))][str(record["message_id"])] += 1
    expected = delivered = duplicated = lost = dead = ambiguous = forbidden = at_most = 0
    for post in owed:
        dead_addresses = _dead_addresses(app, post.post_id)
        for address in post.exactly_once | post.at_most_once:
            ids = copies.get((post.title, address), Counter())
            duplicated += len(ids) > 1
            ambiguous += sum(count - 1 for count in ids.values())
            if address in post.at_most_once:
                at_most += bool(ids)
                continue
            expected += 1
            delivered += bool(ids)
            if not ids:
                dead += address in dead_addresses
                lost += address not in dead_addresses
        forbidden += sum(bool(copies.get((post.title, address))) for address in post.never)
    figures = Figures(
        posts_accepted=len(owed),
        emails_expected=expected,
        emails_delivered=delivered,
        emails_duplicated=duplicated,
        emails_lost=lost,
        emails_dead=dead,
        emails_ambiguous=ambiguous,
        audit_expected=0,
        audit_written=0,
        audit_duplicated=0,
        audit_lost=0,
        audit_malformed=0,
    )
    return figures, {"forbidden_received": forbidden, "at_most_once_received": at_most}


def fan_out_busy(app: Flask, post_ids: list[int]) -> int:
    """Jobs of the posts still to run or running, and deliveries not finished."""
    with app.app_context():
        jobs = db.session.scalars(
            select(Job.status).where(
                Job.post_id.in_(post_ids),
                Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]),
            )
        ).all()
        waiting = db.session.scalars(
            select(Delivery.id).where(
                Delivery.post_id.in_(post_ids),
                Delivery.status.in_(
                    [DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.SENDING]
                ),
            )
        ).all()
        db.session.remove()
        return len(jobs) + len(waiting)


def one_delivery_each(app: Flask, post_id: int) -> bool:
    """Every delivery row of the post names a distinct subscriber (the unique guard held)."""
    with app.app_context():
        subscribers = db.session.scalars(
            select(Delivery.subscriber_id).where(Delivery.post_id == post_id)
        ).all()
        exists = db.session.get(Post, post_id) is not None
        db.session.remove()
    return exists and len(subscribers) == len(set(subscribers))

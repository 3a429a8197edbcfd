"""Subscriptions: following an author, unfollowing (logged in, or with the one-click link of a
fan-out e-mail), and the caller's own list. Each public function is one transaction.

Unfollowing also cancels the subscriber's deliveries of the author's posts that still wait for
a worker (one UPDATE, in the same transaction; it returns which, the fault suite's oracle reads
them); a delivery already being sent is in a worker's hands, which checks the subscription
again before sending. Nobody can list another user's subscribers; `users.subscriber_count`
says how many there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from flask import current_app
from sqlalchemy import Select, Table, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from blog_api.auth.unsubscribe import read_unsubscribe_token, unsubscribe_link
from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.jobs import deliveries, outbox
from blog_api.models import Subscription, User
from blog_api.models.base import utcnow

SUBSCRIPTIONS = cast(Table, Subscription.__table__)

NO_ADDRESS = (
    "Your account has no e-mail address, and new posts are delivered by e-mail: "
    "subscribe from an account registered with an address"
)
NOT_CONFIRMED = (
    "Confirm your e-mail address first: new posts are only e-mailed to confirmed addresses "
    "(POST /api/v1/me/confirm-email sends a new confirmation e-mail)"
)


class AuthorGone(Exception):
    """The author was deleted while the subscription was being written: `404`."""


@dataclass(frozen=True)
class Subscribed:
    """A subscription as the API shows it, and whether this call created it."""

    author_id: int
    author_username: str
    created_at: datetime
    created: bool


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did: whether a subscription existed, and the posts whose waiting
    delivery to the subscriber it cancelled."""

    existed: bool
    cancelled_post_ids: list[int] = field(default_factory=list)


def subscribe(subscriber: User, author: User) -> Subscribed:
    """Follow `author`; `ConflictError` (409) when new posts could not be e-mailed to the
    subscriber (no address, or an unconfirmed one with EMAIL_CONFIRMATION_REQUIRED). Following
    again changes nothing and says so (`created` False)."""
    if not subscriber.email:
        raise ConflictError(NO_ADDRESS)
    if current_app.config["EMAIL_CONFIRMATION_REQUIRED"] and not subscriber.email_confirmed:
        raise ConflictError(NOT_CONFIRMED)
    row = {"subscriber_id": subscriber.id, "author_id": author.id}
    try:
        created_at = db.session.scalar(
            outbox.insert_ignoring_duplicates(SUBSCRIPTIONS)
            .values(created_at=utcnow(), **row)
            .returning(Subscription.created_at)
        )
    except IntegrityError:  # the author's account was deleted meanwhile
        db.session.rollback()
        raise AuthorGone() from None
    created = created_at is not None
    if not created:
        created_at = db.session.scalar(select(Subscription.created_at).filter_by(**row))
    db.session.commit()
    assert created_at is not None
    return Subscribed(author.id, author.username, created_at, created)


def unsubscribe(subscriber_id: int, author_id: int) -> Unsubscribed:
    """Stop following `author_id`, cancelling the waiting deliveries of the author's posts to
    the subscriber."""
    gone = db.session.execute(
        delete(Subscription)
        .where(Subscription.subscriber_id == subscriber_id, Subscription.author_id == author_id)
        .returning(Subscription.author_id)
    ).first()
    cancelled = deliveries.cancel_for_unsubscribe(subscriber_id, author_id)
    db.session.commit()
    return Unsubscribed(gone is not None, cancelled)


def unsubscribe_with_token(token: str) -> tuple[User | None, Unsubscribed]:
    """The one-click unsubscribe of a fan-out e-mail's link: the author (None if deleted) and
    what was done; `InvalidUnsubscribeToken` for a token we did not make."""
    pair = read_unsubscribe_token(token)
    author = db.session.get(User, pair.author_id)
    return author, unsubscribe(pair.subscriber_id, pair.author_id)


@dataclass(frozen=True)
class UnsubscribePreview:
    """What the link's `POST` would do, read without changing anything."""

    author_id: int
    author_username: str | None
    subscribed: bool


def preview_unsubscribe(token: str) -> UnsubscribePreview:
    pair = read_unsubscribe_token(token)
    author = db.session.get(User, pair.author_id)
    subscribed = db.session.scalar(
        select(Subscription.author_id).filter_by(
            subscriber_id=pair.subscriber_id, author_id=pair.author_id
        )
    )
    return UnsubscribePreview(
        pair.author_id, author.username if author else None, subscribed is not None
    )


def subscriptions_of(subscriber_id: int) -> Select[Subscription]:
    """The subscriber's subscriptions by author id (keyset pages on the primary key), each
    with its author loaded in the same query."""
    return (
        select(Subscription)
        .where(Subscription.subscriber_id == subscriber_id)
        .options(joinedload(Subscription.author))
        .order_by(Subscription.author_id)
    )


@dataclass(frozen=True)
class SubscriptionDetail:
    """One of the caller's subscriptions, with the one-click link its e-mails carry."""

    author_id: int
    author_username: str
    created_at: datetime
    unsubscribe_url: str


def subscription_of(subscriber_id: int, author_id: int) -> SubscriptionDetail | None:
    subscription = db.session.scalars(
        subscriptions_of(subscriber_id).where(Subscription.author_id == author_id)
    ).first()
    if subscription is None:
        return None
    return SubscriptionDetail(
        subscription.author_id,
        subscription.author_username,
        subscription.created_at,
        unsubscribe_link(subscriber_id, author_id),
    )

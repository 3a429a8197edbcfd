"""Subscriptions: a reader (the subscriber) follows an author and gets an e-mail per new post.

The primary key (subscriber, author) is the pair's uniqueness and serves "my subscriptions"
(one subscriber's rows, by author); the (author, subscriber) index serves the fan-out, which
reads one author's subscribers in subscriber order, chunk after chunk. Deleting either user
deletes the subscription. `users.subscriber_count` follows the rows (triggers of migration
0011), so a profile shows it without counting.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from blog_api.models.base import Model, UTCDateTime, utcnow

if TYPE_CHECKING:
    from blog_api.models.users import User


class Subscription(Model):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("subscriber_id <> author_id", name="not_self"),
        Index("ix_subscriptions_author_id_subscriber_id", "author_id", "subscriber_id"),
    )

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    author_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # Loaded with the listing (joined), never lazily one by one.
    author: Mapped[User] = relationship(foreign_keys=[author_id], lazy="raise")

    @property
    def author_username(self) -> str:
        return self.author.username

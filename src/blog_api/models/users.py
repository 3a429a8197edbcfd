"""Users: accounts with a role; they own to-dos and posts."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from blog_api.models.base import Model, UTCDateTime, utcnow

if TYPE_CHECKING:
    from blog_api.models.posts import Post
    from blog_api.models.todos import Todo

ROLES = ("user", "admin")
SECURITY_STAMP_LENGTH = 32


def new_security_stamp() -> str:
    """A random value (192 bits) that every token of the user carries until it changes."""
    return secrets.token_urlsafe(24)


class User(Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('user', 'admin')", name="role_valid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(50))
    # Stored lower-cased. Unique among confirmed accounts only (`uq_users_email_confirmed`):
    # anyone may type any address at registration, only its owner can confirm it.
    email: Mapped[str | None] = mapped_column(String(254))
    email_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Carried by every token as `pwd`; a password change draws a new one, which revokes every
    # earlier token. Random, so that nobody can compute it (a timestamp could be guessed).
    security_stamp: Mapped[str] = mapped_column(
        String(SECURITY_STAMP_LENGTH), default=new_security_stamp, server_default=""
    )
    # How many users subscribe to this one: kept by the database (triggers on `subscriptions`,
    # migration 0011, deletions by cascade included), so a profile never counts rows.
    subscriber_count: Mapped[int] = mapped_column(default=0, server_default="0")

    todos: Mapped[list[Todo]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    posts: Mapped[list[Post]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Post.id",
    )

    @property
    def email_confirmed(self) -> bool:
        return self.email_confirmed_at is not None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_act_for(self, owner_id: int) -> bool:
        """True for the owner of a resource and for admins."""
        return self.id == owner_id or self.is_admin

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


# Usernames are unique regardless of case: "Alice" and "alice" are one account.
Index("uq_users_username_lower", func.lower(User.username), unique=True)
# An address belongs to at most one confirmed account; unconfirmed accounts may share it.
Index(
    "uq_users_email_confirmed",
    User.email,
    unique=True,
    sqlite_where=User.email_confirmed_at.is_not(None),
    postgresql_where=User.email_confirmed_at.is_not(None),
)

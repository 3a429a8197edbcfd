"""Posts: public articles written by a user."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from blog_api.models.base import Model, UTCDateTime, utcnow

if TYPE_CHECKING:
    from blog_api.models.users import User


class Post(Model):
    __tablename__ = "posts"
    # A filter column, then the listing's sort key: pages are index range scans.
    __table_args__ = (
        Index("ix_posts_user_id_id", "user_id", "id"),
        Index("ix_posts_category_id", "category", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(50), default="general")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))

    user: Mapped[User] = relationship(back_populates="posts")

    @property
    def word_count(self) -> int:
        return len(self.content.split())

"""To-dos: private items that belong to one user."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from blog_api.models.base import Model, UTCDateTime, utcnow

if TYPE_CHECKING:
    from blog_api.models.users import User


class Todo(Model):
    __tablename__ = "todos"
    # The owner, then the default sort key: a user's pages are index range scans.
    __table_args__ = (Index("ix_todos_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(255))
    completed: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))

    user: Mapped[User] = relationship(back_populates="todos")

    @property
    def user_username(self) -> str:
        return self.user.username

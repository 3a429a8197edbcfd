"""To-dos: owner-scoped queries and writes (one transaction each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.orm import joinedload

from blog_api.extensions import db
from blog_api.models import Todo, User
from blog_api.services import idempotency

SORT_COLUMNS = {
    "id": Todo.id,
    "created_at": Todo.created_at,
    "title": Todo.title,
    "priority": Todo.priority,
}


def contains_literally(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with `%`, `_` and `\\` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def visible_todos(user: User) -> Select[Todo]:
    """Every to-do `user` may see: their own, or all of them for an admin."""
    # Every to-do is shown with its owner's username: load the owners in the same query.
    statement = select(Todo).options(joinedload(Todo.user))
    if not user.is_admin:
        statement = statement.where(Todo.user_id == user.id)
    return statement


def todo_query(user: User, filters: Mapping[str, Any]) -> Select[Todo]:
    """The listing query for the filters of `GET /todos` (sort already allow-listed)."""
    statement = visible_todos(user)
    if "user_id" in filters:
        statement = statement.where(Todo.user_id == filters["user_id"])
    if "completed" in filters:
        statement = statement.where(Todo.completed == filters["completed"])
    if "priority" in filters:
        statement = statement.where(Todo.priority == filters["priority"])
    if filters.get("search"):
        pattern = contains_literally(filters["search"])
        statement = statement.where(
            or_(
                Todo.title.ilike(pattern, escape="\\"),
                Todo.description.ilike(pattern, escape="\\"),
            )
        )
    if filters.get("title"):
        statement = statement.where(
            Todo.title.ilike(contains_literally(filters["title"]), escape="\\")
        )
    sort = filters.get("sort", "id")
    column = SORT_COLUMNS[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    # The id tie-break keeps pages stable when many rows share a sort value.
    return statement.order_by(order, Todo.id.desc() if sort.startswith("-") else Todo.id.asc())


def find_todo(user: User, todo_id: int) -> Todo | None:
    """The to-do if `user` may see it; another user's to-do is indistinguishable from none."""
    return db.session.scalar(visible_todos(user).where(Todo.id == todo_id))


def create_todo(user: User, data: Mapping[str, Any], *, key: idempotency.Key | None = None) -> Todo:
    """Store a to-do; with an Idempotency-Key (`key`), the transaction claims it first and
    stores its answer."""
    with idempotency.once(key) as store_answer:
        todo = Todo(user_id=user.id, **data)
        db.session.add(todo)
        store_answer(todo)
        db.session.commit()
    return todo


def delete_todos(user: User, ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Delete the caller's listed to-dos; returns (deleted ids, ids not found or not theirs)."""
    wanted = list(dict.fromkeys(ids))
    owned = set(
        db.session.scalars(select(Todo.id).where(Todo.id.in_(wanted), Todo.user_id == user.id))
    )
    if owned:
        db.session.execute(delete(Todo).where(Todo.id.in_(owned)))
    db.session.commit()
    return [i for i in wanted if i in owned], [i for i in wanted if i not in owned]

"""The transactions: each public function is one unit of work that commits or raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from blog_api.extensions import db

M = TypeVar("M")


def update_fields(instance: M, changes: Mapping[str, Any]) -> M:
    """Apply validated `changes` (only the fields given) and commit."""
    for field, value in changes.items():
        setattr(instance, field, value)
    db.session.commit()
    return instance


def commit_keeping_state() -> None:
    """Commit without expiring the objects in the session.

    Only for transactions whose rows carry no server-side defaults or triggers: what is in
    memory is then exactly what was written, and expiring it would only make the response
    reload each object with one SELECT (post, author and every job after creating a post).
    """
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def delete_instance(instance: object) -> None:
    db.session.delete(instance)
    db.session.commit()

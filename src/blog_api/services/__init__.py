"""Stage 2 of a post's path, the transactions: each public function is one unit of work that
commits (visibly, in that function) or raises. What a transaction causes outside the database
is written into it as jobs (`blog_api.jobs.outbox`), never done in the request.

A creating function takes the request's Idempotency-Key and wraps its transaction in
`idempotency.once(key)`: the key is claimed by the transaction's first statement and its answer
stored right before the function's own commit (services/idempotency.py).
"""

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


def delete_instance(instance: object) -> None:
    db.session.delete(instance)
    db.session.commit()

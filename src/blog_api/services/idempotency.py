"""Idempotency keys: a creating request runs once per key; its answer is stored with its effect.

Two transactions per keyed request:

1. `claim` inserts the key as in flight and commits at once. The primary key (scope, key)
   decides between requests racing with one key, on SQLite and PostgreSQL alike: one INSERT
   wins, every other reads the winner's row. The same statement takes over a row that is free
   again: expired, or in flight for longer than `IDEMPOTENCY_LOCK_TIMEOUT` (its request died).
2. The effect's own transaction (`create_post`, `create_todo`, `create_user`) ends with
   `commit_effect`, which, while a claim is current, leaves the commit to `complete`: that
   stores the response on the key's row, if the row is still ours, and commits both at once.
   A crash before that commit leaves neither the effect nor the answer; after it, both.

A request that fails in any way calls `release`: its effect is rolled back and its key deleted,
so that the key is free for the corrected request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from flask import current_app
from sqlalchemy import ColumnElement, Table, and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from blog_api.database import commit_keeping_state, delete_in_batches
from blog_api.extensions import db
from blog_api.jobs.outbox import PRUNE_BATCH
from blog_api.models import IdempotencyKey
from blog_api.models.base import utcnow

KEYS = cast(Table, IdempotencyKey.__table__)
# The columns a claim writes, a new row's or a taken-over row's alike.
CLAIMED = (
    "fingerprint",
    "owner",
    "locked_at",
    "expires_at",
    "response_status",
    "response_body",
    "location",
)


@dataclass(frozen=True)
class Claim:
    """The key this request holds: `owner` is its own random token on the row."""

    scope: str
    key: str
    owner: str


@dataclass(frozen=True)
class Stored:
    """Another request's row for the key: in flight (`status` is None) or its answer."""

    fingerprint: str
    status: int | None
    body: str | None
    location: str | None


current_claim: ContextVar[Claim | None] = ContextVar("current_claim", default=None)


def fingerprint(method: str, route: str, body: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (keyed with `SECRET_KEY`) of the method, the route and the body as canonical
    JSON (sorted keys, no spaces), so neither whitespace nor key order matter.

    Keyed because a registration body holds a password: a plain hash stored for a day would
    be a fast offline guess of it for whoever reads the database.
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = f"{method}\n{route}\n{canonical}".encode()
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def claim(scope: str, key: str, digest: str) -> Claim | Stored:
    """Take the key for the request whose `fingerprint` is `digest` (a new row, or a free one
    taken over) and commit; or, when another request holds it, that request's row."""
    now = utcnow()
    config = current_app.config
    owner = secrets.token_hex(16)
    values = {
        "scope": scope,
        "key": key,
        "fingerprint": digest,
        "owner": owner,
        "locked_at": now,
        "expires_at": now + config["IDEMPOTENCY_TTL"],
        "response_status": None,
        "response_body": None,
        "location": None,
    }
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(KEYS).values(values)
    free_again = or_(
        KEYS.c.expires_at <= now,
        and_(
            KEYS.c.response_status.is_(None),
            KEYS.c.locked_at <= now - config["IDEMPOTENCY_LOCK_TIMEOUT"],
        ),
    )
    statement = insert.on_conflict_do_update(
        index_elements=[KEYS.c.scope, KEYS.c.key],
        set_={name: insert.excluded[name] for name in CLAIMED},
        where=free_again,
    ).returning(KEYS.c.owner)
    taken = db.session.execute(statement).scalar()
    if taken == owner:
        commit_keeping_state()
        return Claim(scope, key, owner)
    row = db.session.execute(
        select(
            KEYS.c.fingerprint, KEYS.c.response_status, KEYS.c.response_body, KEYS.c.location
        ).where(KEYS.c.scope == scope, KEYS.c.key == key)
    ).one_or_none()
    # PostgreSQL locked the row for the conflict: end the transaction to let it go.
    commit_keeping_state()
    if row is None:
        # Released between the two statements: report it in flight; the retry will take it.
        return Stored(digest, None, None, None)
    return Stored(*row)


def commit_effect(commit: Callable[[], None] | None = None) -> None:
    """End a creating transaction: `commit` (the session's by default), or, while a claim is
    current, only flush (so that constraint errors surface here) and leave the commit to
    `complete`."""
    if current_claim.get() is None:
        (commit or db.session.commit)()
    else:
        db.session.flush()


def _still_held(held: Claim) -> ColumnElement[bool]:
    """The key's row while it is still this request's and in flight (no retry took it over)."""
    return and_(
        KEYS.c.scope == held.scope,
        KEYS.c.key == held.key,
        KEYS.c.owner == held.owner,
        KEYS.c.response_status.is_(None),
    )


def complete(held: Claim, status: int, body: str, location: str | None) -> bool:
    """Store the answer on the key's row and commit it with the effect; False (and nothing
    committed) when the row is no longer this request's: a retry took it over."""
    result = db.session.execute(
        update(KEYS)
        .where(_still_held(held))
        .values(response_status=status, response_body=body, location=location)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return False
    db.session.commit()
    return True


def release(held: Claim) -> None:
    """Undo the request's effect and free its key (only if the row is still its own)."""
    db.session.rollback()
    db.session.execute(delete(KEYS).where(_still_held(held)))
    db.session.commit()


def prune_expired_keys() -> int:
    """Delete expired keys, a batch per transaction (index `ix_idempotency_keys_expires_at`);
    returns how many. The expiry is checked again on each row, so a key a claim has just
    taken over is kept."""
    now = utcnow()
    batch = (
        select(KEYS.c.scope, KEYS.c.key)
        .where(KEYS.c.expires_at < now)
        .order_by(KEYS.c.expires_at)
        .limit(PRUNE_BATCH)
    )
    return delete_in_batches(
        delete(KEYS).where(tuple_(KEYS.c.scope, KEYS.c.key).in_(batch), KEYS.c.expires_at < now),
        PRUNE_BATCH,
    )

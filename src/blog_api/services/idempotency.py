"""Idempotency keys: a creating transaction runs once per key, and its answer commits with it.

A creating service function takes the request's key (or None) and wraps its one transaction in
`once`:

    def create_post(author, data, *, api_version, key=None):
        with idempotency.once(key) as store_answer:  # claims the key: the first statement
            row = db.session.execute(INSERT_POST, ...).one()   # the effect
            post = post_from_row(row)
            store_answer(post)                                 # the answer, on the key's row
            commit_keeping_state()                             # effect, key and answer at once
        return post

The key is claimed inside the effect's own transaction, never committed on its own: nothing
about a key outlives the request that holds it. A request that dies (SIGKILL, a lost database
connection) or fails (an exception: `once` rolls back) before its commit leaves neither effect
nor key, and a retry does the work at once. After the commit both are there, and every retry
gets the stored answer.

Requests racing with one key meet at the primary key (scope, key) of `idempotency_keys`:

- PostgreSQL: the second request's INSERT waits on the first's uncommitted index entry until
  the first commits (the INSERT then conflicts with the stored answer: `Answered`, a replay) or
  ends without committing (the INSERT goes through: this request does the effect). The wait is
  bounded by `IDEMPOTENCY_WAIT` (`lock_timeout`, set for the claim alone): a request still
  running after that is `InFlight` (the API's `409` with Retry-After).
- SQLite has one writer at a time: the keyed transaction begins IMMEDIATE, taking the write
  lock before anything else and waiting for it up to busy_timeout, so the second request runs
  after the first has committed or rolled back, and replays or does the effect. (A deferred
  transaction that had read first would get SQLITE_BUSY at once, without waiting, from a writer
  that committed meanwhile.)

Why the key carries `render`: the stored answer is the view's response (its status, its
schema's body, its headers), yet it must be written before the commit that the service owns.
So the API layer (api/idempotency.py) builds the key with the function that renders the view's
answer for the object created, with the very rendering of the view's response decorator, and
the service calls it on what it created, right before its commit. Rendering there, in the
service's transaction, is what lets the service own its commit; the view then renders its own
response from the same object, the same way (a keyed request renders its answer twice).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from flask import current_app
from sqlalchemy import Connection, Table, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from blog_api.database import BatchDone, delete_in_batches
from blog_api.extensions import db
from blog_api.jobs.outbox import PRUNE_BATCH
from blog_api.models import IdempotencyKey
from blog_api.models.base import utcnow

KEYS = cast(Table, IdempotencyKey.__table__)
# The columns a claim writes, a new row's or a taken-over row's alike.
CLAIMED = ("fingerprint", "expires_at", "response_status", "response_body", "response_headers")
# PostgreSQL's lock_timeout, for the claim only: the effect's own waits (a username another
# registration is writing) keep the server's setting.
WAIT_FOR_THE_KEY = text("SELECT set_config('lock_timeout', :wait, true)")
STOP_WAITING_FOR_THE_KEY = text("SET LOCAL lock_timeout TO DEFAULT")
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout that expired


@dataclass(frozen=True)
class Answer:
    """A request's stored answer: what a replay sends again. `headers` are the view's own
    (Location, Link), in order; not those every response gets (Content-Type, security)."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Key:
    """A request's Idempotency-Key: where it lives (`scope`, `key`), which request it stands for
    (`fingerprint`), and how to render that request's answer for the object it creates."""

    scope: str
    key: str
    fingerprint: str
    render: Callable[[Any], Answer]


class Answered(Exception):
    """The key already holds the answer to this same request: send it again."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


class InFlight(Exception):
    """Another request holding the key was still running after `IDEMPOTENCY_WAIT`."""


class OtherRequest(Exception):
    """The key holds the answer to another request (another body or route)."""


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


def _no_key(_created: object) -> None:
    """Without a key there is no answer to store."""


@contextmanager
def once(key: Key | None) -> Iterator[Callable[[Any], None]]:
    """The creating transaction inside the block, done once per `key`; see the module docstring.

    With a key, the key is claimed first (`Answered`, `InFlight` or `OtherRequest` when it is not
    this request's to take, with nothing done), and the block gets `store_answer`, to call on the
    object it created before it commits. Without one, `store_answer` does nothing. The block
    commits; an exception rolls the transaction back, the key with it, before it propagates.
    """
    if key is not None:
        _claim(key)
    try:
        yield _no_key if key is None else (lambda created: _store_answer(key, created))
    except BaseException:
        db.session.rollback()
        raise


def _claim(key: Key) -> None:
    """Take the key in the session's transaction, or raise why not (the transaction then rolled
    back, which also lets go of the row PostgreSQL locked for the conflict)."""
    connection = db.session.connection()
    on_sqlite = connection.dialect.name == "sqlite"
    if on_sqlite:
        _begin_immediate(connection)
    else:
        wait_ms = round(current_app.config["IDEMPOTENCY_WAIT"] * 1000)
        connection.execute(WAIT_FOR_THE_KEY, {"wait": f"{wait_ms}ms"})
    now = utcnow()
    values = {
        "scope": key.scope,
        "key": key.key,
        "fingerprint": key.fingerprint,
        "expires_at": now + current_app.config["IDEMPOTENCY_TTL"],
        "response_status": None,
        "response_body": None,
        "response_headers": None,
    }
    insert = (sqlite if on_sqlite else postgresql).insert(KEYS).values(values)
    statement = insert.on_conflict_do_update(
        index_elements=[KEYS.c.scope, KEYS.c.key],
        set_={name: insert.excluded[name] for name in CLAIMED},
        # Free again: expired, or committed without an answer, which no claim does any more
        # (a claim made by a release that committed it on its own, before its effect).
        where=or_(KEYS.c.expires_at <= now, KEYS.c.response_status.is_(None)),
    ).returning(KEYS.c.key)
    try:
        taken = connection.execute(statement).first() is not None
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        db.session.rollback()
        raise InFlight from None
    if taken:
        if not on_sqlite:
            connection.execute(STOP_WAITING_FOR_THE_KEY)
        return
    # Committed by another request, and locked by us since the conflict: it cannot change.
    stored = connection.execute(
        select(
            KEYS.c.fingerprint,
            KEYS.c.response_status,
            KEYS.c.response_body,
            KEYS.c.response_headers,
        ).where(KEYS.c.scope == key.scope, KEYS.c.key == key.key)
    ).one()
    db.session.rollback()
    if stored.fingerprint != key.fingerprint:
        raise OtherRequest
    headers = tuple((name, value) for name, value in json.loads(stored.response_headers or "[]"))
    raise Answered(Answer(stored.response_status, stored.response_body, headers))


def _begin_immediate(connection: Connection) -> None:
    """Begin SQLite's transaction with the write lock (waiting busy_timeout for it). The driver
    begins a transaction only before a write, so one already open holds the lock."""
    driver_connection: Any = connection.connection.dbapi_connection
    if not driver_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _store_answer(key: Key, created: object) -> None:
    db.session.flush()  # the answer shows what was created as stored: its id, its defaults
    answer = key.render(created)
    db.session.execute(
        update(KEYS)
        .where(KEYS.c.scope == key.scope, KEYS.c.key == key.key)
        .values(
            response_status=answer.status,
            response_body=answer.body,
            response_headers=json.dumps(answer.headers),
        )
    )


def prune_expired_keys(on_batch: BatchDone | None = None) -> int:
    """Delete expired keys, a batch per transaction (index `ix_idempotency_keys_expires_at`);
    returns how many, and `on_batch` hears of each batch. The expiry is checked again on each
    row, so a key a claim has just taken over is kept."""
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
        on_batch,
    )


def count_expired_keys() -> int:
    """How many keys `prune_expired_keys` would delete now (a progress bar's length)."""
    expired = select(func.count()).select_from(KEYS).where(KEYS.c.expires_at < utcnow())
    return db.session.scalar(expired) or 0

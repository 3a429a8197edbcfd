"""Database engine settings that SQLAlchemy cannot take from the URL alone, and the session
helpers: a commit without reloading what was just written, and deletion in batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import Delete, event

from blog_api.extensions import db

SQLITE_BUSY_TIMEOUT_MS = 5000


def configure_engines(app: Flask) -> None:
    """Apply the connection settings to the app's own engines (not to every engine of the
    process: a tool reading another app's SQLite file must not switch it to WAL)."""
    with app.app_context():
        for engine in db.engines.values():
            event.listen(engine, "connect", _configure_sqlite)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; busy_timeout makes writers wait, not fail
    (set first: switching to WAL needs a lock another connection may hold for a moment)."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def commit_keeping_state() -> None:
    """Commit without expiring the objects in the session.

    Only for transactions whose rows carry no server-side defaults or triggers that change
    them: what is in memory is then exactly what was written, and expiring it would only make
    the response reload each object with one SELECT (post, author and every job after creating
    a post).
    """
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


# Told how many rows each committed batch deleted (a command's progress bar).
BatchDone = Callable[[int], None]


def delete_in_batches(batch: Delete, batch_size: int, on_batch: BatchDone | None = None) -> int:
    """Run `batch` (a DELETE of at most `batch_size` rows) and commit, again and again until one
    deletes fewer: a large backlog never holds a long lock. Returns how many rows in all;
    `on_batch` hears of each batch once committed."""
    deleted = 0
    while True:
        result = db.session.execute(batch)
        db.session.commit()
        count = int(result.rowcount)  # type: ignore[attr-defined]
        deleted += count
        if on_batch is not None:
            on_batch(count)
        if count < batch_size:
            return deleted

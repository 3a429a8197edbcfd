"""Database engine settings that SQLAlchemy cannot take from the URL alone, and the session
helper that commits without reloading what was just written."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from blog_api.extensions import db

SQLITE_BUSY_TIMEOUT_MS = 5000


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; busy_timeout makes writers wait, not fail."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
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

"""The fan-out's queries on PostgreSQL, as the deliveries table grows: their plans and times.

    python bench/fanout_plans.py                 # 100,000 subscribers, 10 posts (markdown out)
    python bench/fanout_plans.py --subscribers 10000 --posts 3

Creates its own PostgreSQL database (PG_ADMIN_URL, default the local server as `postgres`),
migrates it, and gives one author `--subscribers` confirmed subscribers. Each post is expanded
by the product's own code (`jobs.deliveries.expand_chunk`, as the `fan_out` job does it); the
posts before the last are then marked sent, as history. With the first post expanded, and again
with all of them, it prints `EXPLAIN ANALYZE` (second run, warm cache) of what a fan-out runs
per batch: the relay's due-jobs query (the batch jobs are jobs like any other), a batch's claim
(one UPDATE, rolled back) and the read of what it claimed. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from flask_migrate import upgrade
from sqlalchemy import event, text

from blog_api import create_app
from blog_api.extensions import db
from blog_api.jobs import deliveries, outbox
from blog_api.models.base import utcnow
from harness.launcher import create_database, drop_database
from sections.fanout import add_subscribers

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH_SIZE = 500  # DELIVERY_BATCH_SIZE's default
CHUNK = 20_000


def seed(url: str, subscribers: int) -> int:
    """An author and `subscribers` confirmed readers who follow them (as the fan-out section
    seeds them); the author's id."""
    with psycopg.connect(url) as conn:  # commits when the block ends
        [author_id] = conn.execute(
            "INSERT INTO users (username, email, email_confirmed_at, password_hash, role,"
            " created_at, password_changed_at, security_stamp)"
            " VALUES ('author', 'author@example.com', now(), 'x', 'user', now(), now(), 'stamp')"
            " RETURNING id"
        ).fetchone()  # type: ignore[misc]
        add_subscribers(conn, author_id, "x", "reader", subscribers)
    return int(author_id)


def publish_and_expand(author_id: int) -> tuple[int, float]:
    """A new post of the author, expanded to every subscriber; its id and the seconds taken."""
    session = db.session()
    post_id = session.scalar(
        text(
            "INSERT INTO posts (title, content, category, created_at, updated_at, user_id)"
            " VALUES ('Plans', 'A few words.', 'general', now(), now(), :author) RETURNING id"
        ),
        {"author": author_id},
    )
    session.commit()
    fan_out = deliveries.FanOut(int(post_id), author_id, utcnow(), None)
    started = time.monotonic()
    while not deliveries.expand_chunk(fan_out, CHUNK, BATCH_SIZE, confirmed_only=True):
        pass
    return int(post_id), time.monotonic() - started


def mark_sent_except(post_id: int) -> None:
    """Every other post's deliveries sent and batch jobs done: the history a new post meets."""
    session = db.session()
    session.execute(
        text(
            "UPDATE deliveries SET status = 'sent', finished_at = now(), attempts = 1"
            " WHERE post_id <> :post"
        ),
        {"post": post_id},
    )
    session.execute(
        text(
            "UPDATE jobs SET status = 'done', finished_at = now()"
            " WHERE post_id <> :post AND kind = 'deliver_batch'"
        ),
        {"post": post_id},
    )
    session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE deliveries, jobs, users, subscriptions"))


EXPLAIN = "EXPLAIN (ANALYZE, COSTS OFF) "


def explain(
    statement: Any, params: dict[str, Any], before: tuple[Any, dict[str, Any]] | None = None
) -> tuple[str, str]:
    """The SQL as the driver gets it and its plan with actual times (second run; rolled back):
    the statement runs as the product runs it, prefixed with EXPLAIN at the cursor. `before`:
    a statement (and its parameters) run first in the same transaction."""
    found: list[tuple[str, str]] = []

    def prefix(conn, cursor, sql, parameters, context, executemany):  # type: ignore[no-untyped-def]
        return EXPLAIN + sql, parameters

    def fetch(conn, cursor, sql, parameters, context, executemany):  # type: ignore[no-untyped-def]
        found.append((sql.removeprefix(EXPLAIN), "\n".join(row[0] for row in cursor.fetchall())))

    for _ in range(2):
        connection = db.session.connection()
        if before:
            connection.execute(*before)
        event.listen(db.engine, "before_cursor_execute", prefix, retval=True)
        event.listen(db.engine, "after_cursor_execute", fetch)
        try:
            connection.execute(statement, params)
        finally:
            event.remove(db.engine, "before_cursor_execute", prefix)
            event.remove(db.engine, "after_cursor_execute", fetch)
            db.session.rollback()
    return found[-1]


def plans(post_id: int, author_id: int, batch: int) -> dict[str, tuple[str, str]]:
    now = utcnow()
    lease = now.replace(year=now.year + 1)
    claim = {"of_post": post_id, "of_batch": batch, "now": now, "lease": lease}
    read = {"of_post": post_id, "of_batch": batch, "lease": lease, "author": author_id}
    return {
        "relay: due jobs (the batch jobs among them)": explain(outbox.due_statement(now, 500), {}),
        "a batch's claim (one UPDATE)": explain(deliveries.CLAIM, claim),
        # The read needs the claim's rows: the claim first, in the same transaction.
        "the read of what a batch claimed": explain(
            deliveries.CLAIMED, read, before=(deliveries.CLAIM, claim)
        ),
    }


def report(title: str, found: dict[str, tuple[str, str]]) -> None:
    print(f"\n### {title}\n")
    for name, (sql, plan) in found.items():
        print(f"#### {name}\n\n```sql\n{sql.strip()}\n```\n\n```\n{plan}\n```\n")


@contextlib.contextmanager
def migrated_database() -> Iterator[str]:
    """A new PostgreSQL database, migrated, with an app context on it for the block; its libpq
    URL. Dropped afterwards."""
    name = f"blog_api_plans_{os.getpid()}"
    url = create_database(ADMIN_URL, name)
    try:
        with create_app("testing", SQLALCHEMY_DATABASE_URI=url).app_context():
            upgrade()
            yield url.replace("postgresql+psycopg://", "postgresql://")
            db.session.remove()
            db.engine.dispose()
    finally:
        drop_database(ADMIN_URL, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=10)
    arguments = parser.parse_args()

    with migrated_database() as url:
        author_id = seed(url, arguments.subscribers)
        post_id, seconds = publish_and_expand(author_id)
        mark_sent_except(post_id)
        middle = (arguments.subscribers // BATCH_SIZE) // 2
        print(f"expanded post {post_id} in {seconds:.2f} s", flush=True)
        report(
            f"{arguments.subscribers:,} deliveries (one post)", plans(post_id, author_id, middle)
        )
        for _ in range(arguments.posts - 1):
            post_id, seconds = publish_and_expand(author_id)
            print(f"expanded post {post_id} in {seconds:.2f} s", flush=True)
        mark_sent_except(post_id)
        total = arguments.subscribers * arguments.posts
        report(
            f"{total:,} deliveries ({arguments.posts} posts, all but the last sent)",
            plans(post_id, author_id, middle),
        )


if __name__ == "__main__":
    main()

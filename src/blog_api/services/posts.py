"""Posts: the write transactions and the listing query."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, delete, func, insert, select

from blog_api.database import commit_keeping_state
from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.models import Post, User
from blog_api.services import idempotency

LISTING_FILTERS = ("user_id", "category")


@cache
def _listing(filtered_by: tuple[str, ...]) -> Select[Post]:
    statement = select(Post).order_by(Post.id)
    for name in filtered_by:
        statement = statement.where(getattr(Post, name) == bindparam(name))
    return statement


def post_query(filters: Mapping[str, Any]) -> tuple[Select[Post], dict[str, Any]]:
    """The listing's statement for the filters given, and the values to bind to it (one
    statement per combination of filters, built once)."""
    present = tuple(name for name in LISTING_FILTERS if name in filters)
    return _listing(present), {name: filters[name] for name in present}


POSTS = cast(Table, Post.__table__)
# A post by id as a plain row: the public read never changes it, and loading a row into the
# session (identity map, instance state) cost more than the query.
POST_ROW = select(*POSTS.c).where(POSTS.c.id == bindparam("post_id"))


def post_from_row(row: Row[Any]) -> Post:
    """A post read as a row, detached from the session (an answer, never changed)."""
    return Post(**row._mapping)


def read_post(post_id: int) -> Post | None:
    """The post, detached from the session (for reading only), or None."""
    row = db.session.execute(POST_ROW, {"post_id": post_id}).first()
    return None if row is None else post_from_row(row)


def recent_posts(count: int) -> list[Post]:
    statement = select(Post).order_by(Post.created_at.desc(), Post.id.desc()).limit(count)
    return list(db.session.scalars(statement))


# A user's posts through the index `posts(user_id, id)`: the count reads index entries only,
# and the newest are its last entries, so neither reads a post's content.
POST_COUNT_BY = select(func.count()).where(Post.user_id == bindparam("user_id"))
NEWEST_BY = (
    select(Post.id, Post.title, Post.created_at)
    .where(Post.user_id == bindparam("user_id"))
    .order_by(Post.id.desc())
    .limit(bindparam("count"))
)


def count_posts_by(user_id: int) -> int:
    return db.session.scalar(POST_COUNT_BY, {"user_id": user_id}) or 0


def newest_posts_by(user_id: int, count: int) -> list[Row[Any]]:
    """(id, title, created_at) of the user's `count` newest posts, newest first (ids grow in
    the order posts are written)."""
    return list(db.session.execute(NEWEST_BY, {"user_id": user_id, "count": count}))


INSERT_POST = insert(POSTS).returning(*POSTS.c)


def create_post(
    author: User,
    data: Mapping[str, Any],
    *,
    api_version: str,
    key: idempotency.Key | None = None,
) -> Post:
    """Store a post and its background jobs in one transaction; the relay publishes the jobs.
    With an Idempotency-Key (`key`), the transaction claims it first and stores its answer.

    The request never talks to the broker: a broker that is down, slow or hung cannot delay or
    fail it, and a worker cannot receive a job before its post is committed.
    """
    with idempotency.once(key) as store_answer:
        # Core INSERTs in the session's transaction, the post's with RETURNING (the row as
        # stored, defaults included): the unit of work's flush of new objects cost more than
        # the SQL.
        row = db.session.execute(INSERT_POST, {"user_id": author.id, **data}).one()
        # The author's subscriber count is on the row the request loaded already: an author
        # nobody follows gets no fan-out job, and costs the workers nothing more.
        outbox.insert_post_jobs(row.id, api_version, fan_out=author.subscriber_count > 0)
        post = post_from_row(row)
        store_answer(post)
        # The author is used right after (log line): the commit must not expire it.
        commit_keeping_state()
    return post


def delete_all_posts() -> int:
    """Delete every post; returns how many there were."""
    count = db.session.scalar(select(func.count()).select_from(Post)) or 0
    db.session.execute(delete(Post))
    db.session.commit()
    return count

"""Posts: the write transactions and the listing query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app
from sqlalchemy import Select, delete, func, select

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.jobs.faults import crash_point
from blog_api.models import Post, User
from blog_api.services import commit_keeping_state


def post_query(filters: Mapping[str, Any]) -> Select[Post]:
    statement = select(Post).order_by(Post.id)
    if "user_id" in filters:
        statement = statement.where(Post.user_id == filters["user_id"])
    if "category" in filters:
        statement = statement.where(Post.category == filters["category"])
    return statement


def recent_posts(count: int = 5) -> list[Post]:
    statement = select(Post).order_by(Post.created_at.desc(), Post.id.desc()).limit(count)
    return list(db.session.scalars(statement))


def create_post(author: User, data: Mapping[str, Any], *, api_version: str) -> Post:
    """Store a post and its background jobs in one transaction, then publish the jobs.

    The commit comes first: a worker must never receive a job whose row it cannot see, and
    a broker failure after the commit only delays the jobs (the sweeper re-drives them); it
    never loses them and never turns the stored post into an error.
    """
    post = Post(user_id=author.id, **data)
    db.session.add(post)
    db.session.flush()
    jobs = outbox.add_post_jobs(post, api_version)
    crash_point("between_flush_and_commit", post.id)  # test-only (R3: a slow commit)
    # The post, its jobs and the author are used right after (messages, log line, response).
    commit_keeping_state()
    if outbox.naive_dispatch():
        # Test-only negative control: the tutorial's unbounded publish after the commit; a
        # broker error reaches the request (500) and nothing re-drives the jobs.
        for task_name, job_id in outbox.job_messages(jobs):
            current_app.extensions["celery"].send_task(task_name, args=[job_id])
        return post
    if not current_app.extensions["job_dispatcher"].publish(outbox.job_messages(jobs)):
        outbox.make_due_now(jobs)
    return post


def delete_all_posts() -> int:
    """Delete every post; returns how many there were."""
    count = db.session.scalar(select(func.count()).select_from(Post)) or 0
    db.session.execute(delete(Post))
    db.session.commit()
    return count

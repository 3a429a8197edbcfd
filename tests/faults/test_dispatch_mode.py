"""The test-only JOB_DISPATCH_MODE=naive: inert outside testing; inside, the tutorial's publish
(a broker error reaches the request, and the jobs are parked where the sweeper never looks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from integration_stack import free_port, job_views
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.jobs import outbox
from blog_api.models import Job
from blog_api.models.base import utcnow


def test_naive_dispatch_is_ignored_unless_testing_is_on(make_app: Callable[..., Flask]) -> None:
    app = make_app(JOB_DISPATCH_MODE="naive")
    with app.app_context():
        assert outbox.naive_dispatch()
        app.config["TESTING"] = False
        assert not outbox.naive_dispatch()
    assert make_app().config["JOB_DISPATCH_MODE"] == "outbox"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_naive_dispatch_turns_a_broker_error_into_a_500_and_parks_the_jobs(
    make_app: Callable[..., Flask], make_account: Callable[..., Any]
) -> None:
    """SQLite only: the dispatch mode is under test, not the database."""
    app = make_app(
        JOB_DISPATCH_MODE="naive", CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    author = make_account()
    try:
        response = app.test_client().post(
            "/api/v1/posts", json={"title": "Naive", "content": "x"}, headers=author.headers
        )
        assert response.status_code == 500
        assert "Traceback" not in response.get_data(as_text=True)
        with app.app_context():
            [job] = db.session.scalars(select(Job)).all()
            post_id = job.post_id
            assert job.available_at > utcnow() + timedelta(days=365)
            assert outbox.due_jobs(utcnow() + timedelta(days=1)) == []
        [view] = job_views(app, [post_id])
        assert (view.status, view.attempts) == ("pending", 0)
    finally:
        app.extensions["celery"].close()

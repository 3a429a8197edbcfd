"""The negative control's naive publish (FAULT_DISPATCH=naive, a rig hook): the tutorial's
`.delay()` after commit, so a broker error reaches the request, and nothing re-drives the jobs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.jobs.outbox import due_jobs
from blog_api.models import Job, JobStatus
from blog_api.models.base import utcnow
from harness.launcher import free_port
from support.fault_hooks import FaultHooks
from support.integration_stack import job_views

# SQLite only: the dispatch hook is under test, not the database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """An app whose broker is a port nothing listens on: any publish fails."""
    return make_app(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")


def test_naive_dispatch_turns_a_broker_error_into_a_500_after_the_post_is_stored(
    app: Flask, make_account: Callable[..., Any]
) -> None:
    author = make_account()
    hooks = FaultHooks.from_environment(app, {"FAULT_DISPATCH": "naive"})
    try:
        response = app.test_client().post(
            "/api/v1/posts", json={"title": "Naive", "content": "x"}, headers=author.headers
        )
        assert response.status_code == 500
        assert "Traceback" not in response.get_data(as_text=True)
        with app.app_context():
            jobs = db.session.scalars(select(Job)).all()
            assert len(jobs) == 1
            post_id = jobs[0].post_id
        [view] = job_views(app, [post_id])
        assert (view.status, view.attempts) == (JobStatus.PENDING, 0)
        with app.app_context():
            assert due_jobs(utcnow() + timedelta(days=365), 10) == []  # parked: never relayed
            db.session.commit()
    finally:
        hooks.remove()
        app.extensions["celery"].close()


def test_without_the_hook_the_same_request_never_touches_the_broker(
    app: Flask, make_account: Callable[..., Any]
) -> None:
    author = make_account()
    response = app.test_client().post(
        "/api/v1/posts", json={"title": "Outbox", "content": "x"}, headers=author.headers
    )
    assert response.status_code == 201

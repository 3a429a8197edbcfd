"""A post's background jobs through the API (`GET /api/v{1,2}/posts/<id>/jobs`): the author
sees why a job failed as a short code, an admin the full text (SPEC §4.4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.jobs.relay import relay_due_jobs
from blog_api.models import Job, JobKind
from blog_api.models.base import utcnow
from blog_api.worker.tasks import TASKS
from support import Account
from support.resources import VERSIONS, create_post

# Nothing listens on port 1: every SMTP attempt fails to connect. The audit file's directory
# cannot be created under /proc, whoever runs the tests.
FAILING = {"MAIL_PORT": 1, "POST_AUDIT_LOG": "/proc/1/blog/post_audit.log"}
CODES = {"notify_author": "connection_failed", "audit_post_created": "audit_log_unwritable"}


def run_jobs(app: Flask, jobs: list[dict[str, Any]]) -> None:
    """One attempt of each job, through its real Celery task in this process (a failed
    attempt ends its task as a failure, which `apply` keeps in its result)."""
    tasks = app.extensions["celery"].tasks
    for job in jobs:
        tasks[TASKS[JobKind(job["kind"])].name].apply(args=[job["id"]])


@pytest.fixture
def failed_post(
    make_app: Callable[..., Flask], alice: Account, admin: Account
) -> Callable[[str], tuple[Flask, str]]:
    """A post (of `version`) by alice whose jobs each failed one attempt; its jobs URL."""

    def make(version: str) -> tuple[Flask, str]:
        app = make_app(**FAILING)
        client = app.test_client()
        url = f"/api/{version}/posts/{create_post(client, alice, version)['id']}/jobs"
        run_jobs(app, client.get(url, headers=admin.headers).json["jobs"])
        return app, url

    return make


@pytest.mark.scenario("S45")
@pytest.mark.parametrize("version", VERSIONS)
def test_the_author_sees_why_a_job_failed_as_a_code_without_the_text(
    failed_post: Callable[[str], tuple[Flask, str]], alice: Account, version: str
) -> None:
    """S45: the author was shown the raw error text (`/proc/1/blog` paths, `gaierror`
    details); now only its code."""
    app, url = failed_post(version)

    response = app.test_client().get(url, headers=alice.headers)

    jobs = response.json["jobs"]
    assert {job["kind"]: job["last_error"] for job in jobs} == {
        kind: code for kind, code in CODES.items() if version == "v2" or kind == "notify_author"
    }
    assert all(job["error_code"] == job["last_error"] for job in jobs)
    assert all(job["status"] == "pending" and job["attempts"] == 1 for job in jobs)
    text = response.get_data(as_text=True)
    assert "proc" not in text
    assert "Errno" not in text
    assert "Connection" not in text


@pytest.mark.scenario("S45")
@pytest.mark.parametrize("version", VERSIONS)
def test_an_admin_sees_the_full_error_text_and_its_code(
    failed_post: Callable[[str], tuple[Flask, str]], admin: Account, version: str
) -> None:
    """S45: the post's jobs, and the admin's job queue, keep the whole text."""
    app, url = failed_post(version)
    client = app.test_client()

    for jobs in (
        client.get(url, headers=admin.headers).json["jobs"],
        client.get("/api/v1/jobs", headers=admin.headers).json["jobs"],
    ):
        by_kind = {job["kind"]: job for job in jobs}
        notify = by_kind["notify_author"]
        assert notify["last_error"].startswith("SMTP connection failed: ConnectionRefusedError")
        assert notify["error_code"] == "connection_failed"
        if version == "v2":
            audit = by_kind["audit_post_created"]
            assert "/proc/1/blog" in audit["last_error"]
            assert audit["error_code"] == "audit_log_unwritable"


@pytest.mark.scenario("S45")
def test_a_job_that_succeeds_after_a_failure_has_neither_text_nor_code(
    failed_post: Callable[[str], tuple[Flask, str]],
    make_app: Callable[..., Flask],
    alice: Account,
    tmp_path: Path,
) -> None:
    """S45: the code goes with the text: a job done at last shows neither."""
    _app, url = failed_post("v2")
    client = make_app(POST_AUDIT_LOG=str(tmp_path / "audit.log")).test_client()
    jobs = client.get(url, headers=alice.headers).json["jobs"]
    audit = [job for job in jobs if job["kind"] == "audit_post_created"]

    run_jobs(client.application, audit)  # the retry, without waiting for its backoff

    jobs = {job["kind"]: job for job in client.get(url, headers=alice.headers).json["jobs"]}
    done = jobs["audit_post_created"]
    assert (done["status"], done["last_error"], done["error_code"]) == ("done", None, None)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_finished_job_shows_no_due_time_and_an_unfinished_one_its_next(
    make_app: Callable[..., Flask], alice: Account, admin: Account, tmp_path: Path, version: str
) -> None:
    """Once published, a job is due again JOB_REPUBLISH_AFTER later (in case its message was
    lost): a done job kept showing that moment, 90 s ahead, as if something were coming. Now a
    finished job (done, dead) shows `available_at: null` to its author and in the admin's
    queue; an unfinished one shows when it is due. The row keeps its time."""
    app = make_app(POST_AUDIT_LOG=str(tmp_path / "audit.log"), MAIL_PORT=1, MAIL_MAX_RETRIES=0)
    client = app.test_client()
    unfinished = create_post(client, alice, version)["id"]
    finished = create_post(client, alice, version)["id"]
    url = f"/api/{version}/posts/{finished}/jobs"
    with app.app_context():
        assert relay_due_jobs(lambda _jobs: None) == (2 if version == "v1" else 4)

    run_jobs(app, client.get(url, headers=admin.headers).json["jobs"])

    by_status = {job["status"]: job for job in client.get(url, headers=alice.headers).json["jobs"]}
    assert set(by_status) == ({"dead"} if version == "v1" else {"dead", "done"})
    assert {job["available_at"] for job in by_status.values()} == {None}
    queue = client.get("/api/v1/jobs", headers=admin.headers).json["jobs"]
    assert {job["post_id"]: job["available_at"] is None for job in queue} == {
        finished: True,
        unfinished: False,
    }
    with app.app_context():
        rows = db.session.scalars(select(Job).where(Job.post_id == finished)).all()
        assert all(row.available_at > utcnow() for row in rows)  # the relay's time, kept

"""The suite's "nothing written" check can fail: a job row that a request left behind turns into
an e-mail and an audit line at the next snapshot, besides the row itself."""

from __future__ import annotations

from collections.abc import Callable

from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from blog_api.extensions import db
from blog_api.jobs.outbox import insert_post_jobs
from blog_api.models import Post
from support import Account


def test_a_stray_v2_post_job_shows_up_as_a_row_an_email_and_an_audit_line(
    app: Flask, client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()

    with app.app_context():  # what a buggy rejected request might leave behind
        post = Post(user_id=alice.id, title="Stray", content="Left behind")
        db.session.add(post)
        db.session.flush()
        insert_post_jobs(post.id, "v2")
        db.session.commit()
    after = snapshot()

    assert after.rows["posts"] == before.rows["posts"] + 1
    assert after.rows["jobs"] == before.rows["jobs"] + 2
    assert after.mails == before.mails + 1
    assert after.audit_bytes > before.audit_bytes

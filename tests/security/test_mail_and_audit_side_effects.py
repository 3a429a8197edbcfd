"""S24, S28, S31: what a post's title can do to the e-mail and the audit file, and post spam.

The jobs run through their real Celery tasks in this process (see conftest.py), against a real
SMTP server (the project's sink) and a real audit file, on both databases. A title with a NUL
byte is refused with a 400 (S24) in test_request_validation.py (`title-nul`). The same CR/LF case
through a real worker process is tests/integration/test_job_delivery.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from attacks import VALID_POST
from effects import MailSink, Snapshot, audit_lines_since
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Job
from support import Account, assert_too_many_requests

CONTROL_CHARACTERS = {chr(code) for code in range(32)} | {"\x7f", "\u2028", "\u2029"}


def post_on_both_versions(client: FlaskClient, author: Account, title: str) -> list[int]:
    ids = []
    for version in ("v1", "v2"):
        response = client.post(
            f"/api/{version}/posts", json={**VALID_POST, "title": title}, headers=author.headers
        )
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["title"] == title
        ids.append(response.get_json()["id"])
    return ids


def job_statuses(app: Flask, post_ids: list[int]) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Job.status).where(Job.post_id.in_(post_ids))))


@pytest.mark.scenario("S24")
@pytest.mark.parametrize(
    "title",
    [
        pytest.param('Hi\r\n{"event": "post_created", "post_id": 999}', id="crlf-forged-record"),
        pytest.param("line\u2028separator\u2029paragraph", id="u2028"),
        pytest.param("\x1b[31mred\x1b[0m alert", id="ansi"),
    ],
)
def test_title_with_line_breaks_or_escapes_is_one_escaped_audit_line(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    mail_sink: MailSink,
    effect_settings: dict[str, Any],
    title: str,
) -> None:
    before = snapshot()

    post_ids = post_on_both_versions(client, alice, title)
    after = snapshot()

    lines = audit_lines_since(Path(effect_settings["POST_AUDIT_LOG"]), before.audit_bytes)
    assert len(lines) == 1  # one v2 post, one event, one line
    assert lines[0].isascii()
    assert not CONTROL_CHARACTERS & set(lines[0])
    record = json.loads(lines[0])
    assert (record["event"], record["post_id"], record["title"]) == (
        "post_created",
        post_ids[1],
        title,
    )
    assert after.mails == before.mails + 2
    for mail in mail_sink.messages()[-2:]:
        assert not CONTROL_CHARACTERS & set(mail["subject"])
    assert job_statuses(app, post_ids) == ["done"] * 3


@pytest.mark.scenario("S31")
def test_title_cannot_add_a_bcc_header(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    mail_sink: MailSink,
) -> None:
    before = snapshot()

    post_ids = post_on_both_versions(client, alice, "Hi\r\nBcc: attacker@example.com")
    after = snapshot()

    assert after.mails == before.mails + 2  # one per post, nothing else
    for mail in mail_sink.messages()[-2:]:
        assert mail["rcpt_tos"] == ["alice@example.com"]
        assert "bcc" not in mail["headers"]
        assert "\r" not in mail["subject"]
        assert "\n" not in mail["subject"]
    assert job_statuses(app, post_ids) == ["done"] * 3  # not dead


@pytest.mark.scenario("S28")
def test_post_spam_is_429_after_the_limit_with_no_job_or_email_for_rejected_posts(
    make_security_app: Callable[..., Flask],
    alice: Account,
    snapshot: Callable[[], Snapshot],
    effect_settings: dict[str, Any],
) -> None:
    """100 posts in a minute by one user, alternating versions (the limit counts both)."""
    client = make_security_app(POST_RATE_LIMIT="5 per minute").test_client()
    before = snapshot()

    responses = [
        client.post(f"/api/v{1 + number % 2}/posts", json=VALID_POST, headers=alice.headers)
        for number in range(100)
    ]
    after = snapshot()

    accepted = [response for response in responses if response.status_code == 201]
    assert len(accepted) == 5
    for response in responses[5:]:
        assert_too_many_requests(response, "5 per 1 minute")
    v2_accepted = sum(1 for response in accepted if "category" in response.get_json())
    assert after.rows["posts"] == before.rows["posts"] + 5
    assert after.rows["jobs"] == before.rows["jobs"] + 5 + v2_accepted
    assert after.mails == before.mails + 5
    audit = audit_lines_since(Path(effect_settings["POST_AUDIT_LOG"]), before.audit_bytes)
    assert len(audit) == v2_accepted

"""Confirmed addresses (SPEC §4.6, §6 item 9): registering with an address sends a confirmation
e-mail through the outbox; its single-use token confirms the address; an address is unique
among confirmed accounts only; with EMAIL_CONFIRMATION_REQUIRED post notifications go to
confirmed addresses only.

Real database (SQLite file and PostgreSQL), the real mailer against the project's SMTP sink
listening in this process, jobs run through their Celery tasks without a broker.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from blog_api.effects.mailer import close_kept_connections
from blog_api.extensions import db
from blog_api.models import EmailConfirmation, Job, JobKind, JobStatus, User
from blog_api.models.base import utcnow
from blog_api.services.confirmations import (
    ADDRESS_TAKEN,
    ALREADY_CONFIRMED,
    EXPIRED,
    INVALID,
    NO_ADDRESS,
    USED,
)
from blog_api.worker.tasks import TASKS
from harness.launcher import free_port
from smtp_sink import SinkHandler
from support import PASSWORD, assert_error, assert_too_many_requests

CONFIRM = "/api/v1/users/confirm-email"
RESEND = "/api/v1/me/confirm-email"
TOKEN_LINE = re.compile(r"Your confirmation token: (\S+)")


class Sink:
    """The project's SMTP sink in this process, recording every message (with its text)."""

    def __init__(self, record: Path) -> None:
        self.port = free_port()
        self.record = record
        self.controller = Controller(
            SinkHandler(str(record), [], None, quiet=False), hostname="127.0.0.1", port=self.port
        )

    def delivered(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        entries = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [entry for entry in entries if entry["event"] == "delivered"]

    def message(self, message_id: str) -> dict[str, Any]:
        matches = [entry for entry in self.delivered() if entry["message_id"] == message_id]
        assert len(matches) == 1, (message_id, self.delivered())
        return matches[0]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    server = Sink(tmp_path / "mail.jsonl")
    server.controller.start()
    yield server
    close_kept_connections()
    server.controller.stop()


@pytest.fixture
def mail_app(make_app: Callable[..., Flask], sink: Sink) -> Callable[..., Flask]:
    """An app whose worker side e-mails the sink."""

    def build(**overrides: Any) -> Flask:
        return make_app(MAIL_PORT=sink.port, **overrides)

    return build


def register(client: FlaskClient, username: str, email: str | None = None) -> Any:
    body = {"username": username, "password": PASSWORD}
    if email is not None:
        body["email"] = email
    return client.post("/api/v1/users", json=body)


def log_in(client: FlaskClient, username: str) -> dict[str, str]:
    response = client.post("/api/v1/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def confirmation_jobs(app: Flask, user_id: int) -> list[Job]:
    """The user's confirmation e-mail jobs, oldest first."""
    with app.app_context():
        jobs = list(
            db.session.scalars(
                select(Job)
                .join(EmailConfirmation, Job.confirmation_id == EmailConfirmation.id)
                .where(EmailConfirmation.user_id == user_id)
                .order_by(EmailConfirmation.id)
            )
        )
        db.session.expunge_all()
        return jobs


def run_job(app: Flask, job: Job) -> str:
    """Run the job through its Celery task, in this process (this app's task object)."""
    task = app.extensions["celery"].tasks[TASKS[job.kind].name]
    return str(task.apply(args=[job.id], throw=True).get())


def load_job(app: Flask, job_id: str) -> Job:
    with app.app_context():
        job = db.session.get_one(Job, job_id)
        db.session.expunge(job)
        return job


def token_in_email(app: Flask, sink: Sink, job_id: str) -> str:
    message = sink.message(f"<confirm-{job_id}@{app.config['MAIL_MESSAGE_ID_DOMAIN']}>")
    match = TOKEN_LINE.search(message["text"])
    assert match, message["text"]
    return match.group(1)


def send_confirmation(app: Flask, sink: Sink, user_id: int) -> str:
    """Run the user's newest confirmation job; the token its e-mail carries."""
    job = confirmation_jobs(app, user_id)[-1]
    assert run_job(app, job) == "done"
    return token_in_email(app, sink, job.id)


def registered(app: Flask, sink: Sink, username: str, email: str) -> tuple[int, str]:
    """Register over HTTP and send the confirmation e-mail: (user id, token)."""
    response = register(app.test_client(), username, email)
    assert response.status_code == 201, response.json
    user_id = response.json["id"]
    return user_id, send_confirmation(app, sink, user_id)


def confirmed_at(app: Flask, user_id: int) -> Any:
    with app.app_context():
        return db.session.get_one(User, user_id).email_confirmed_at


def confirm(client: FlaskClient, token: Any) -> Any:
    return client.post(CONFIRM, json={"token": token})


# --- registration and the confirmation e-mail ----------------------------------------------------


def test_registering_with_an_address_writes_the_user_its_confirmation_and_job_in_one_commit(
    app: Flask, client: FlaskClient
) -> None:
    commits: list[Session] = []

    def count_commit(session: Session) -> None:
        commits.append(session)

    event.listen(Session, "after_commit", count_commit)
    try:
        response = register(client, "carol", "Carol@Example.com")
    finally:
        event.remove(Session, "after_commit", count_commit)

    assert response.status_code == 201
    assert len(commits) == 1
    user_id = response.json["id"]
    [job] = confirmation_jobs(app, user_id)
    assert (job.kind, job.status, job.post_id) == (JobKind.CONFIRM_EMAIL, JobStatus.PENDING, None)
    with app.app_context():
        confirmation = db.session.get_one(EmailConfirmation, job.confirmation_id)
        assert (confirmation.user_id, confirmation.email) == (user_id, "carol@example.com")
        assert confirmation.used_at is None
        assert confirmation.expires_at - confirmation.created_at == timedelta(hours=24)
        assert confirmation.created_at <= utcnow()


def test_registering_without_an_address_sends_no_confirmation(
    app: Flask, client: FlaskClient, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    assert register(client, "carol").status_code == 201

    assert row_counts() == {**before, "users": before["users"] + 1}


def test_the_confirmation_email_carries_a_token_that_confirms_the_address(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    client = app.test_client()
    user_id = register(client, "carol", "carol@example.com").json["id"]
    headers = log_in(client, "carol")
    me = client.get("/api/v1/me", headers=headers).json
    assert (me["email_confirmed"], me["email_confirmed_at"]) == (False, None)
    [job] = confirmation_jobs(app, user_id)

    assert run_job(app, job) == "done"

    message = sink.message(f"<confirm-{job.id}@blog-api.local>")
    assert message["rcpt_tos"] == ["carol@example.com"]
    assert message["subject"] == "Confirm your e-mail address for Blog API"
    assert "POST /api/v1/users/confirm-email" in message["text"]
    token = token_in_email(app, sink, job.id)
    assert load_job(app, job.id).status == JobStatus.DONE

    response = confirm(client, token)

    assert response.status_code == 200
    assert response.json == {"message": "E-mail address confirmed"}
    me = client.get("/api/v1/me", headers=headers).json
    assert me["email_confirmed"] is True
    assert me["email_confirmed_at"] == confirmed_at(app, user_id).isoformat()


def test_the_confirmation_email_links_to_email_confirm_url_when_set(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app(EMAIL_CONFIRM_URL="https://blog.example.com/confirm")
    user_id, token = registered(app, sink, "carol", "carol@example.com")

    [job] = confirmation_jobs(app, user_id)
    text_ = sink.message(f"<confirm-{job.id}@blog-api.local>")["text"]
    assert f"https://blog.example.com/confirm?token={token}" in text_


def test_the_database_holds_nothing_that_confirms(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    _user_id, token = registered(app, sink, "carol", "carol@example.com")
    mac = token.split(".", 1)[1]

    with app.app_context():
        for table in ("email_confirmations", "jobs", "users"):
            for row in db.session.execute(text(f"SELECT * FROM {table}")):
                assert not any(mac in str(value) for value in row), (table, row)


# --- tokens that confirm nothing -----------------------------------------------------------------


def test_a_used_token_is_400(mail_app: Callable[..., Flask], sink: Sink) -> None:
    app = mail_app()
    client = app.test_client()
    user_id, token = registered(app, sink, "carol", "carol@example.com")
    assert confirm(client, token).status_code == 200
    first = confirmed_at(app, user_id)

    assert_error(confirm(client, token), 400, USED, {"token"})
    assert confirmed_at(app, user_id) == first


def test_an_expired_token_is_400_and_confirms_nothing(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    user_id, token = registered(app, sink, "carol", "carol@example.com")
    with app.app_context():
        db.session.execute(
            update(EmailConfirmation)
            .where(EmailConfirmation.user_id == user_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

    assert_error(confirm(app.test_client(), token), 400, EXPIRED, {"token"})
    assert confirmed_at(app, user_id) is None


def test_email_confirm_ttl_sets_the_validity(mail_app: Callable[..., Flask], sink: Sink) -> None:
    app = mail_app(EMAIL_CONFIRM_TTL=timedelta(minutes=5))
    user_id, _token = registered(app, sink, "carol", "carol@example.com")

    with app.app_context():
        confirmation = db.session.scalars(
            select(EmailConfirmation).where(EmailConfirmation.user_id == user_id)
        ).one()
        assert confirmation.expires_at - confirmation.created_at == timedelta(minutes=5)


def _tampered(token: str, other_token: str) -> list[str]:
    confirmation_id, mac = token.split(".")
    other_id, other_mac = other_token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    return [
        f"{confirmation_id}.{flipped}",  # the MAC changed
        f"{other_id}.{mac}",  # this MAC on another confirmation
        f"{confirmation_id}.{other_mac}",  # another confirmation's MAC on this one
        f"{confirmation_id}.{mac}x",  # too long
        f"{confirmation_id}{mac}",  # no separator
        f"0{confirmation_id}.{mac}",  # another spelling of the id
        f"99999999999.{mac}",  # beyond any id
        f"2147483647.{mac}",  # the largest id, no such row
        "not a token",
        "x",
        "\u00e9" * 50,
    ]


def test_tampered_and_made_up_tokens_are_400_and_confirm_nothing(
    mail_app: Callable[..., Flask], sink: Sink, row_counts: Callable[[], dict[str, int]]
) -> None:
    app = mail_app()
    client = app.test_client()
    carol, token = registered(app, sink, "carol", "carol@example.com")
    dave, other = registered(app, sink, "dave", "dave@example.com")
    before = row_counts()

    for bad in _tampered(token, other):
        assert_error(confirm(client, bad), 400, INVALID, {"token"})

    assert row_counts() == before
    assert (confirmed_at(app, carol), confirmed_at(app, dave)) == (None, None)
    assert confirm(client, token).status_code == 200  # the real one still works


def test_a_token_made_with_another_secret_key_is_400(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    user_id, token = registered(app, sink, "carol", "carol@example.com")
    rotated = mail_app(SECRET_KEY="another-testing-secret-key-0123456789")

    assert_error(confirm(rotated.test_client(), token), 400, INVALID, {"token"})
    assert confirmed_at(app, user_id) is None


# --- bad input -----------------------------------------------------------------------------------


# (request keyword arguments, message, fields with errors): to the confirm endpoint (no login)
CONFIRM_BAD_INPUT = [
    pytest.param({"data": "token=abc"}, "Request must be JSON", None, id="form"),
    pytest.param({"json": ["a.b"]}, "Request must be JSON", None, id="array"),
    pytest.param({"json": {}}, "Missing token", {"token"}, id="missing"),
    pytest.param({"json": {"token": 5}}, "Invalid field(s): token", {"token"}, id="number"),
    pytest.param({"json": {"token": None}}, "Invalid field(s): token", {"token"}, id="null"),
    pytest.param({"json": {"token": ""}}, "Invalid field(s): token", {"token"}, id="empty"),
    pytest.param({"json": {"token": "x" * 5000}}, "Invalid field(s): token", {"token"}, id="huge"),
    pytest.param({"json": {"token": "1.a\x00b"}}, INVALID, {"token"}, id="nul"),
    pytest.param(
        {"json": {"token": "1.abc", "user_id": 1}},
        "Unknown field(s): user_id",
        {"user_id"},
        id="unknown-field",
    ),
]
# ... and to the resend endpoint (logged in)
RESEND_BAD_INPUT = [
    pytest.param({"data": "x"}, "Request must be JSON", None, id="form"),
    pytest.param({"json": []}, "Request must be JSON", None, id="array"),
    pytest.param(
        {"json": {"email": "x@example.com"}},
        "Unknown field(s): email",
        {"email"},
        id="unknown-field",
    ),
]


@pytest.mark.parametrize(
    ("path", "kwargs", "message", "fields"),
    [
        *(
            pytest.param(CONFIRM, *case.values, id=f"confirm-{case.id}")
            for case in CONFIRM_BAD_INPUT
        ),
        *(pytest.param(RESEND, *case.values, id=f"resend-{case.id}") for case in RESEND_BAD_INPUT),
    ],
)
def test_bad_input_to_the_confirmation_endpoints_is_400_and_writes_nothing(
    app: Flask,
    client: FlaskClient,
    row_counts: Callable[[], dict[str, int]],
    path: str,
    kwargs: dict[str, Any],
    message: str,
    fields: set[str] | None,
) -> None:
    register(client, "carol", "carol@example.com")
    headers = log_in(client, "carol") if path == RESEND else {}
    before = row_counts()

    assert_error(client.post(path, headers=headers, **kwargs), 400, message, fields)

    assert row_counts() == before


def test_resend_needs_a_login(client: FlaskClient) -> None:
    assert_error(client.post(RESEND), 401, "Missing token")


# --- one confirmed owner per address -------------------------------------------------------------


def test_two_unconfirmed_accounts_may_share_an_address_and_the_first_to_confirm_owns_it(
    mail_app: Callable[..., Flask], sink: Sink, row_counts: Callable[[], dict[str, int]]
) -> None:
    app = mail_app()
    client = app.test_client()
    carol, carols_token = registered(app, sink, "carol", "shared@example.com")
    dave, daves_token = registered(app, sink, "dave", "SHARED@example.com")
    assert confirm(client, daves_token).status_code == 200
    before = row_counts()

    assert_error(confirm(client, carols_token), 409, ADDRESS_TAKEN)

    assert row_counts() == before
    assert confirmed_at(app, carol) is None
    assert confirmed_at(app, dave) is not None
    with app.app_context():  # carol's token was not spent by the refusal
        assert (
            db.session.scalars(
                select(EmailConfirmation.used_at).where(EmailConfirmation.user_id == carol)
            ).one()
            is None
        )


# --- asking for a new confirmation ---------------------------------------------------------------


def test_a_new_confirmation_supersedes_the_earlier_token(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    client = app.test_client()
    user_id, first = registered(app, sink, "carol", "carol@example.com")
    headers = log_in(client, "carol")

    response = client.post(RESEND, headers=headers)

    assert response.status_code == 202
    assert response.json == {"message": "Confirmation e-mail sent"}
    jobs = confirmation_jobs(app, user_id)
    assert [job.status for job in jobs] == [JobStatus.DONE, JobStatus.PENDING]
    second = send_confirmation(app, sink, user_id)
    assert second != first
    assert_error(confirm(client, first), 400, INVALID, {"token"})
    assert confirm(client, second).status_code == 200


def test_a_superseded_confirmation_not_yet_sent_is_skipped_with_the_reason(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    client = app.test_client()
    user_id = register(client, "carol", "carol@example.com").json["id"]
    assert client.post(RESEND, headers=log_in(client, "carol")).status_code == 202
    first, _second = confirmation_jobs(app, user_id)

    assert run_job(app, first) == "skipped"

    job = load_job(app, first.id)
    assert job.status == JobStatus.SKIPPED
    assert job.last_error is not None
    assert "superseded" in job.last_error
    assert sink.delivered() == []


def test_resend_without_an_address_or_once_confirmed_is_409_and_writes_nothing(
    mail_app: Callable[..., Flask], sink: Sink, row_counts: Callable[[], dict[str, int]]
) -> None:
    app = mail_app()
    client = app.test_client()
    register(client, "erin")
    _user_id, token = registered(app, sink, "carol", "carol@example.com")
    assert confirm(client, token).status_code == 200
    before = row_counts()

    assert_error(client.post(RESEND, headers=log_in(client, "erin")), 409, NO_ADDRESS)
    assert_error(client.post(RESEND, headers=log_in(client, "carol")), 409, ALREADY_CONFIRMED)

    assert row_counts() == {**before, "token_blocklist": before["token_blocklist"]}


def test_resend_is_limited_per_user_with_429_and_retry_after(
    make_app: Callable[..., Flask], row_counts: Callable[[], dict[str, int]]
) -> None:
    client = make_app(CONFIRM_EMAIL_RESEND_RATE_LIMIT="2 per minute").test_client()
    register(client, "carol", "carol@example.com")
    register(client, "dave", "dave@example.com")
    carol, dave = log_in(client, "carol"), log_in(client, "dave")
    for _ in range(2):
        assert client.post(RESEND, headers=carol).status_code == 202
    before = row_counts()

    assert_too_many_requests(client.post(RESEND, headers=carol), "2 per 1 minute")

    assert row_counts() == before
    assert client.post(RESEND, headers=dave).status_code == 202  # per user, not per address


def test_confirm_is_limited_per_client_address(make_app: Callable[..., Flask]) -> None:
    client = make_app(CONFIRM_EMAIL_RATE_LIMIT="2 per minute").test_client()
    for _ in range(2):
        confirm(client, "1.guess")

    assert_too_many_requests(confirm(client, "1.guess"), "2 per 1 minute")
    other = client.post(
        CONFIRM, json={"token": "1.guess"}, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert other.status_code == 400


# --- one address, a bounded number of e-mails (S49) ----------------------------------------------


def all_confirmation_jobs(app: Flask) -> int:
    with app.app_context():
        return len(db.session.scalars(select(Job).where(Job.kind == JobKind.CONFIRM_EMAIL)).all())


@pytest.mark.scenario("S49")
def test_registrations_naming_one_address_send_it_at_most_the_recipient_limit(
    make_app: Callable[..., Flask],
    row_counts: Callable[[], dict[str, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """S49: 12 registrations naming an address delivered 12 e-mails to it. Over the limit a
    registration answers exactly as before and writes the user, with no confirmation."""
    app = make_app(CONFIRM_EMAIL_RECIPIENT_LIMIT="3 per hour")
    client = app.test_client()
    spellings = ["victim@example.com", "Victim@Example.com", "VICTIM@EXAMPLE.COM"]
    before = row_counts()

    within = [register(client, f"user{n}", spellings[n % 3]) for n in range(3)]
    with caplog.at_level(logging.WARNING):
        over = [register(client, f"late{n}", spellings[n % 3]) for n in range(3)]

    for response in within + over:
        assert response.status_code == 201, response.json
        assert set(response.json) == {"id", "username", "role", "created_at"}
        assert set(response.headers.keys()) == set(within[0].headers.keys())
    assert row_counts() == {
        **before,
        "users": before["users"] + 6,
        "email_confirmations": before["email_confirmations"] + 3,
        "jobs": before["jobs"] + 3,
    }
    for response in over:
        assert confirmation_jobs(app, response.json["id"]) == []
    assert caplog.text.count("CONFIRM_EMAIL_RECIPIENT_LIMIT (3 per hour)") == 3
    assert "victim" not in caplog.text.lower()
    # Per address: another one is not affected.
    other = register(client, "carol", "carol@example.com")
    assert len(confirmation_jobs(app, other.json["id"])) == 1


@pytest.mark.scenario("S49")
def test_a_resend_over_the_recipient_limit_answers_202_and_sends_nothing(
    mail_app: Callable[..., Flask], sink: Sink, row_counts: Callable[[], dict[str, int]]
) -> None:
    app = mail_app(CONFIRM_EMAIL_RECIPIENT_LIMIT="3 per hour")
    client = app.test_client()
    user_id = register(client, "carol", "carol@example.com").json["id"]
    headers = log_in(client, "carol")
    answers = [client.post(RESEND, headers=headers) for _ in range(2)]
    assert len(confirmation_jobs(app, user_id)) == 3
    before = row_counts()

    over = client.post(RESEND, headers=headers)

    assert (over.status_code, over.json) == (answers[0].status_code, answers[0].json)
    assert set(over.headers.keys()) == set(answers[0].headers.keys())
    assert row_counts() == before
    # Nothing was superseded: the newest e-mail still confirms.
    assert confirm(client, send_confirmation(app, sink, user_id)).status_code == 200


@pytest.mark.scenario("S49")
def test_strangers_registering_an_address_spend_its_owners_budget_too(
    make_app: Callable[..., Flask],
) -> None:
    """The limit counts e-mails to the address, whoever asks: resends are no way around it."""
    app = make_app(CONFIRM_EMAIL_RECIPIENT_LIMIT="2 per hour")
    client = app.test_client()
    register(client, "stranger", "carol@example.com")
    owner = register(client, "carol", "carol@example.com").json["id"]

    assert client.post(RESEND, headers=log_in(client, "carol")).status_code == 202

    assert len(confirmation_jobs(app, owner)) == 1


@pytest.mark.scenario("S49")
def test_the_recipient_limit_is_counted_in_memory_while_the_storage_is_down(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Counted outside a view's decorator (here `flask users create-admin`), a storage outage
    falls back to per-process memory as the views' limits do, instead of failing."""
    app = make_app(
        RATELIMIT_STORAGE_URI="redis://127.0.0.1:1", CONFIRM_EMAIL_RECIPIENT_LIMIT="1 per hour"
    )
    runner = app.test_cli_runner()

    with caplog.at_level(logging.ERROR):
        results = [
            runner.invoke(
                args=["users", "create-admin", "--username", name, "--email", "ops@example.com"],
                env={"ADMIN_PASSWORD": PASSWORD},
            )
            for name in ("boss", "boss2")
        ]

    assert [result.exit_code for result in results] == [0, 0], [r.output for r in results]
    assert "Rate-limit storage failed" in caplog.text
    assert all_confirmation_jobs(app) == 1


@pytest.mark.scenario("S49")
def test_a_confirmation_to_an_address_another_account_confirmed_is_skipped_with_the_reason(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    """S49: after its owner confirmed an address, each registration naming it still sent it an
    e-mail whose token could only be refused."""
    app = mail_app()
    client = app.test_client()
    stranger = register(client, "stranger", "carol@example.com").json["id"]
    _owner, token = registered(app, sink, "carol", "carol@example.com")
    assert confirm(client, token).status_code == 200
    delivered = len(sink.delivered())
    [job] = confirmation_jobs(app, stranger)

    assert run_job(app, job) == "skipped"

    stored = load_job(app, job.id)
    assert (stored.status, stored.attempts) == (JobStatus.SKIPPED, 1)
    assert stored.last_error == "the address is already confirmed by another account"
    assert len(sink.delivered()) == delivered


# --- post notifications and EMAIL_CONFIRMATION_REQUIRED ------------------------------------------


def _post_and_its_notification(app: Flask, headers: dict[str, str]) -> Job:
    response = app.test_client().post(
        "/api/v1/posts", json={"title": "Hello", "content": "World"}, headers=headers
    )
    assert response.status_code == 201, response.json
    with app.app_context():
        job = db.session.scalars(
            select(Job).where(Job.post_id == response.json["id"], Job.kind == JobKind.NOTIFY_AUTHOR)
        ).one()
        db.session.expunge(job)
        return job


def test_a_notification_to_an_unconfirmed_address_is_skipped_when_confirmation_is_required(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app(EMAIL_CONFIRMATION_REQUIRED=True)
    user_id = register(app.test_client(), "carol", "carol@example.com").json["id"]
    job = _post_and_its_notification(app, log_in(app.test_client(), "carol"))

    assert run_job(app, job) == "skipped"

    stored = load_job(app, job.id)
    assert (stored.status, stored.attempts) == (JobStatus.SKIPPED, 1)
    assert stored.last_error == (
        f"e-mail address of user {user_id} is not confirmed (EMAIL_CONFIRMATION_REQUIRED)"
    )
    assert not [entry for entry in sink.delivered() if "notify-" in entry["message_id"]]


def test_a_notification_to_a_confirmed_address_is_sent_when_confirmation_is_required(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app(EMAIL_CONFIRMATION_REQUIRED=True)
    _user_id, token = registered(app, sink, "carol", "carol@example.com")
    assert confirm(app.test_client(), token).status_code == 200
    job = _post_and_its_notification(app, log_in(app.test_client(), "carol"))

    assert run_job(app, job) == "done"

    assert load_job(app, job.id).last_error is None
    assert sink.message(f"<notify-{job.id}@blog-api.local>")["rcpt_tos"] == ["carol@example.com"]


def test_a_notification_to_an_unconfirmed_address_is_sent_when_confirmation_is_not_required(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app(EMAIL_CONFIRMATION_REQUIRED=False)
    register(app.test_client(), "carol", "carol@example.com")
    job = _post_and_its_notification(app, log_in(app.test_client(), "carol"))

    assert run_job(app, job) == "done"

    assert sink.message(f"<notify-{job.id}@blog-api.local>")["rcpt_tos"] == ["carol@example.com"]


def test_confirmation_is_required_in_production_only_by_default() -> None:
    from blog_api.config import DevelopmentConfig, ProductionConfig, TestingConfig

    assert ProductionConfig.EMAIL_CONFIRMATION_REQUIRED is True
    assert DevelopmentConfig.EMAIL_CONFIRMATION_REQUIRED is False
    assert TestingConfig.EMAIL_CONFIRMATION_REQUIRED is False


# --- the job is an outbox job like the others ----------------------------------------------------


def test_confirmation_jobs_show_in_the_admin_queue_and_the_cli(
    app: Flask, client: FlaskClient, make_account: Callable[..., Any]
) -> None:
    admin = make_account(role="admin")
    user_id = register(client, "carol", "carol@example.com").json["id"]
    [job] = confirmation_jobs(app, user_id)

    listed = client.get("/api/v1/jobs", headers=admin.headers).json["jobs"]

    [shown] = [item for item in listed if item["id"] == job.id]
    assert (shown["kind"], shown["post_id"], shown["confirmation_id"], shown["status"]) == (
        "confirm_email",
        None,
        job.confirmation_id,
        "pending",
    )
    output = app.test_cli_runner().invoke(args=["jobs", "list"]).output
    assert f"{job.id}  confirm_email" in output
    assert f"confirmation={job.confirmation_id}" in output


def test_a_job_has_exactly_one_subject(app: Flask, client: FlaskClient) -> None:
    user_id = register(client, "carol", "carol@example.com").json["id"]
    [job] = confirmation_jobs(app, user_id)
    with app.app_context():
        with pytest.raises(IntegrityError, match=r"(?i)check"):
            db.session.execute(update(Job).where(Job.id == job.id).values(confirmation_id=None))
        db.session.rollback()


def test_deleting_a_user_deletes_their_confirmations_and_confirmation_jobs(
    app: Flask, client: FlaskClient, make_account: Callable[..., Any]
) -> None:
    admin = make_account(role="admin")
    user_id = register(client, "carol", "carol@example.com").json["id"]
    [job] = confirmation_jobs(app, user_id)

    assert client.delete(f"/api/v1/users/{user_id}", headers=admin.headers).status_code == 200

    with app.app_context():
        assert db.session.get(Job, job.id) is None
        assert db.session.get(EmailConfirmation, job.confirmation_id) is None

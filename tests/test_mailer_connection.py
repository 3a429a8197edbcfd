"""The worker's kept SMTP connection (effects/mailer.py), against a real SMTP server: the
project's sink (aiosmtpd) listening on a free local port in this process.

No database: only the mail settings and an app context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask

from blog_api import create_app
from blog_api.effects.mailer import close_kept_connections, header_safe, send_email
from blog_api.effects.notifications import build_post_notification
from blog_api.jobs.errors import PermanentJobError, TransientJobError
from harness.launcher import free_port
from smtp_sink import SinkHandler


class Sink:
    """The SMTP sink on one port; `restart` closes every open connection, as a server restart
    does."""

    def __init__(self, record: Path) -> None:
        self.port = free_port()
        self.record = record
        self.controller: Controller | None = None

    def start(self, quiet: bool = False) -> None:
        self.handler = SinkHandler(str(self.record), [], None, quiet)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def script(self, *actions: str) -> None:
        """Answer the next DATA commands with these actions (a code, stall or drop)."""
        self.handler.fail_codes.extend(actions)

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def entries(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def entries_of(self, number: int) -> list[dict[str, Any]]:
        return [entry for entry in self.entries() if entry["message_id"] == message_id(number)]


def message_id(number: int) -> str:
    return f"<notify-job-{number}@blog-api.local>"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    server = Sink(tmp_path / "mail.jsonl")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mail_app(sink: Sink) -> Iterator[Callable[..., Flask]]:
    def build(**overrides: Any) -> Flask:
        settings = {"MAIL_PORT": sink.port, "SQLALCHEMY_DATABASE_URI": "sqlite://", **overrides}
        return create_app("testing", **settings)

    yield build
    close_kept_connections()


def send(app: Flask, number: int) -> None:
    with app.app_context():
        send_email(
            build_post_notification(f"job-{number}", "ann@example.com", "ann", number, "Title")
        )


def delivered(sink: Sink) -> list[dict[str, Any]]:
    return [entry for entry in sink.entries() if entry["event"] == "delivered"]


def test_consecutive_messages_share_one_connection(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    for number in range(3):
        send(app, number)

    entries = delivered(sink)
    assert [entry["message_id"] for entry in entries] == [message_id(n) for n in range(3)]
    assert len({entry["peer"] for entry in entries}) == 1


def test_max_messages_one_opens_a_connection_per_message(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app(MAIL_CONNECTION_MAX_MESSAGES=1)
    for number in range(3):
        send(app, number)

    assert len({entry["peer"] for entry in delivered(sink)}) == 3


def test_a_connection_past_its_message_budget_or_idle_limit_is_replaced(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    for number in range(4):
        send(mail_app(MAIL_CONNECTION_MAX_MESSAGES=2), number)
    assert len({entry["peer"] for entry in delivered(sink)}) == 2

    idle = mail_app(MAIL_CONNECTION_MAX_IDLE=0)
    send(idle, 10)
    send(idle, 11)
    assert len({entry["peer"] for entry in delivered(sink)}) == 4


def test_a_connection_the_server_closed_is_replaced_and_the_message_sent_once(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    send(app, 1)
    sink.restart()  # the kept connection is now closed on the server's side

    send(app, 2)

    entries = delivered(sink)
    assert [entry["message_id"] for entry in entries] == [message_id(1), message_id(2)]
    assert entries[0]["peer"] != entries[1]["peer"]


@pytest.mark.scenario("S45")
def test_a_failure_after_data_on_a_kept_connection_is_not_resent(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    send(app, 1)
    sink.script("drop")  # takes the next message, then closes without a reply

    with pytest.raises(TransientJobError, match="SMTP connection failed") as dropped:
        send(app, 2)
    assert [entry["event"] for entry in sink.entries_of(2)] == ["dropped"]
    assert dropped.value.code == "connection_failed"

    send(app, 3)  # on a new connection: the dropped one was not kept
    entries = delivered(sink)
    assert [entry["message_id"] for entry in entries] == [message_id(1), message_id(3)]
    assert entries[0]["peer"] != entries[1]["peer"]


@pytest.mark.scenario("S45")
def test_refusals_on_a_kept_connection_are_classified_as_on_a_new_one(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    app = mail_app()
    send(app, 1)
    sink.script("451", "550")

    with pytest.raises(TransientJobError, match="SMTP 451") as transient:
        send(app, 2)
    with pytest.raises(PermanentJobError, match="SMTP 550") as permanent:
        send(app, 3)

    assert (transient.value.code, permanent.value.code) == ("smtp_transient", "smtp_permanent")

    assert [entry["event"] for entry in sink.entries_of(2)] == ["refused"]
    assert [entry["event"] for entry in sink.entries_of(3)] == ["refused"]


def test_non_ascii_titles_and_names_arrive_decoded_in_one_subject_line(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    title = "Ünïcödé ✓ " * 12 + "\r\nBcc: x@example.com"
    with mail_app().app_context():
        send_email(build_post_notification("job-u", "zoe@example.com", "Zoë Ünï", 7, title))

    (entry,) = delivered(sink)
    assert entry["subject"] == f"Your post '{header_safe(title)}' is published"
    assert entry["subject"].startswith("Your post 'Ünïcödé ✓ Ünïcödé")
    assert "bcc" not in entry["headers"]
    assert entry["rcpt_tos"] == ["zoe@example.com"]


@pytest.mark.scenario("S45")
def test_an_internationalised_address_fails_permanently_without_a_connection(
    mail_app: Callable[..., Flask], sink: Sink
) -> None:
    with (
        mail_app().app_context(),
        pytest.raises(PermanentJobError, match="Internationalised address") as refused,
    ):
        build_post_notification("job-i", "zoë@example.com", "Zoë", 8, "Title")
    assert sink.entries() == []
    assert refused.value.code == "address_unsupported"


def test_a_quiet_sink_records_the_same_entries_without_printing(
    mail_app: Callable[..., Flask], sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    app = mail_app(MAIL_CONNECTION_MAX_MESSAGES=1)
    send(app, 1)
    sink.stop()
    sink.start(quiet=True)
    send(app, 2)

    loud, quiet = delivered(sink)
    printed = capsys.readouterr().out
    assert "Message-ID: <notify-job-1@blog-api.local>" in printed
    assert "job-2" not in printed
    # A loud sink also records the message's text (tests read confirmation tokens from it);
    # a quiet one parses only the headers.
    ignored = {"time", "message_id", "peer", "text"}
    assert {k: v for k, v in loud.items() if k not in ignored} == {
        k: v for k, v in quiet.items() if k not in ignored
    }
    assert "has been published" in loud["text"]
    assert "text" not in quiet
    assert quiet["message_id"] == message_id(2)

"""E-mail over SMTP, with errors sorted into transient (retry) and permanent (give up), and the
plain-text message every e-mail of ours is (each effect writes its own text).

Each worker process (each thread, in a thread pool) keeps its SMTP connection open between
messages, as mail clients do: a busy worker then pays the TCP handshake, greeting, EHLO, TLS and
login once per `MAIL_CONNECTION_MAX_MESSAGES` messages instead of once per message. A connection
idle for longer than `MAIL_CONNECTION_MAX_IDLE` seconds is closed and opened again on the next
message. If a kept connection turns out to be closed by the server before the message's DATA
was sent (a restart, an idle timeout, a 421 at MAIL FROM), the message is sent once more on a
fresh connection: the server has not seen it, so this cannot duplicate it. Any failure from
DATA on is handled as for a fresh connection, and the connection is dropped.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import threading
import time
from email.header import Header
from email.message import Message
from email.mime.text import MIMEText
from email.utils import formataddr
from typing import Any

from flask import current_app

from blog_api.jobs.errors import PermanentJobError, TransientJobError
from blog_api.models import ErrorCode

_LINE_BREAKS = re.compile(r"[\r\n\x00-\x1f\x7f\u2028\u2029]+")
MAX_SUBJECT_TITLE = 120


def header_safe(text: str, limit: int = MAX_SUBJECT_TITLE) -> str:
    """One line, no control characters, bounded: a title can never add an e-mail header."""
    flat = _LINE_BREAKS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def message_id(job_id: str, purpose: str = "notify") -> str:
    """Deterministic per job, so a resent copy is recognisably the same message."""
    return f"<{purpose}-{job_id}@{current_app.config['MAIL_MESSAGE_ID_DOMAIN']}>"


def plain_message(
    recipient: str,
    username: str,
    subject: str,
    body: str,
    job_id: str,
    purpose: str,
    id_header: str,
) -> Message:
    """A plain-text e-mail of job `job_id` to `username <recipient>`, built with the `compat32`
    classes: the same message as the modern `EmailMessage` API at a sixth of its CPU cost (its
    header registry parses and refolds every value), which a worker pays once per e-mail."""
    if not recipient.isascii():
        # The address is valid (RFC 6531), but sending to it needs SMTPUTF8 end to end: fail
        # the job at once with the reason instead of retrying what cannot work.
        raise PermanentJobError(
            f"Internationalised address not supported: {recipient!r}", ErrorCode.ADDRESS_UNSUPPORTED
        )
    message = MIMEText(body, "plain", "us-ascii" if body.isascii() else "utf-8")
    # compat32 takes a Header object as a value (typeshed types values as str).
    message["Subject"] = _encoded(subject)  # type: ignore[assignment]
    message["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    message["To"] = formataddr((header_safe(username, 60), recipient))  # RFC 2047 if needed
    message["Message-ID"] = message_id(job_id, purpose)
    message[id_header] = job_id
    return message


def _encoded(text: str) -> str | Header:
    """A header value: as is when ASCII, else an RFC 2047 encoded word."""
    return text if text.isascii() else Header(text, "utf-8")


def send_email(message: Message) -> None:
    """Deliver `message`; raises TransientJobError (retry) or PermanentJobError (5xx)."""
    config = current_app.config
    try:
        _send_on_kept_connection(config, message)
    except smtplib.SMTPRecipientsRefused as error:
        code, reply = next(iter(error.recipients.values()))
        raise smtp_failure(code, reply) from error
    except smtplib.SMTPResponseException as error:
        raise smtp_failure(error.smtp_code, error.smtp_error) from error
    except (smtplib.SMTPException, OSError) as error:
        raise TransientJobError(
            f"SMTP connection failed: {error!r}", ErrorCode.CONNECTION_FAILED
        ) from error


class _DataTracking:
    """Remembers whether DATA was started on this connection (from then on a failure is
    ambiguous: the server may have taken the message)."""

    data_started = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.data_started = True
        return super().data(msg)  # type: ignore[misc]


class _SMTP(_DataTracking, smtplib.SMTP):
    pass


class _SMTPSSL(_DataTracking, smtplib.SMTP_SSL):
    pass


class _KeptConnection(threading.local):
    smtp: _SMTP | _SMTPSSL | None = None
    settings: tuple[Any, ...] = ()
    last_used = 0.0
    sent = 0


_kept = _KeptConnection()
# Every thread's kept connection, so that one call at a worker's shutdown can say QUIT on all of
# them (a thread pool's threads are gone by then).
_all_kept: set[_SMTP | _SMTPSSL] = set()
_all_kept_lock = threading.Lock()


def _send_on_kept_connection(config: Any, message: Message) -> None:
    smtp = _take_kept_connection(config)
    if smtp is not None:
        smtp.data_started = False
        try:
            smtp.send_message(message)
            _keep(smtp, config, fresh=False)
            return
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPSenderRefused, OSError) as error:
            _close(smtp)
            if smtp.data_started or not closed_by_server(error):
                raise
            # Closed by the server before it saw this message: send it on a new connection.
        except BaseException:
            _close(smtp)
            raise
    smtp = open_connection(config)
    try:
        smtp.send_message(message)
    except BaseException:
        _close(smtp)
        raise
    _keep(smtp, config, fresh=True)


def closed_by_server(error: Exception) -> bool:
    """A kept connection the server had closed (not a slow server: a timeout is not retried
    here, or one message could wait twice MAIL_TIMEOUT)."""
    if isinstance(error, smtplib.SMTPSenderRefused):
        return error.smtp_code == 421
    return not isinstance(error, TimeoutError)


def _settings(config: Any) -> tuple[Any, ...]:
    keys = ("MAIL_SERVER", "MAIL_PORT", "MAIL_USE_SSL", "MAIL_USE_TLS", "MAIL_USERNAME")
    return (*(config[key] for key in keys), config["MAIL_PASSWORD"])


def _take_kept_connection(config: Any) -> _SMTP | _SMTPSSL | None:
    """This thread's open connection if it may carry one more message (else close it)."""
    smtp, _kept.smtp = _kept.smtp, None
    if smtp is None:
        return None
    with _all_kept_lock:
        _all_kept.discard(smtp)
    fresh_enough = time.monotonic() - _kept.last_used <= config["MAIL_CONNECTION_MAX_IDLE"]
    if (
        fresh_enough
        and _kept.sent < config["MAIL_CONNECTION_MAX_MESSAGES"]
        and _kept.settings == _settings(config)
    ):
        return smtp
    _close(smtp)  # no QUIT: a server that stopped answering would hold the job MAIL_TIMEOUT
    return None


def _keep(smtp: _SMTP | _SMTPSSL, config: Any, *, fresh: bool) -> None:
    if config["MAIL_CONNECTION_MAX_MESSAGES"] <= 1:
        _quit(smtp)
        return
    _kept.sent = 1 if fresh else _kept.sent + 1
    _kept.smtp, _kept.settings = smtp, _settings(config)
    _kept.last_used = time.monotonic()
    with _all_kept_lock:
        _all_kept.add(smtp)


def close_kept_connections() -> None:
    """Say QUIT on the connections this process's threads keep; a server that does not answer
    within a second does not hold the shutdown up. For when no message is being sent (a
    worker's shutdown, a test's end): a thread that later finds its connection closed opens a
    new one."""
    _kept.smtp = None
    with _all_kept_lock:
        connections = list(_all_kept)
        _all_kept.clear()
    for smtp in connections:
        if smtp.sock is not None:
            smtp.sock.settimeout(1.0)
        _quit(smtp)


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        _close(smtp)


def _close(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()


def open_connection(config: Any) -> _SMTP | _SMTPSSL:
    """A new SMTP connection with the configured TLS and login; it tracks `data_started`."""
    host, port, timeout = config["MAIL_SERVER"], config["MAIL_PORT"], config["MAIL_TIMEOUT"]
    smtp: _SMTP | _SMTPSSL
    if config["MAIL_USE_SSL"]:
        smtp = _SMTPSSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        smtp = _SMTP(host, port, timeout=timeout)
    try:
        if config["MAIL_USE_TLS"] and not config["MAIL_USE_SSL"]:
            smtp.starttls(context=ssl.create_default_context())
        if config["MAIL_USERNAME"]:
            smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"] or "")
    except BaseException:
        _close(smtp)
        raise
    return smtp


def smtp_failure(code: int, reply: bytes | str) -> Exception:
    """The job error for an SMTP reply: PermanentJobError for 5xx, else TransientJobError."""
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    description = f"SMTP {code} {text}"
    if 500 <= code < 600:
        return PermanentJobError(description, ErrorCode.SMTP_PERMANENT)
    return TransientJobError(description, ErrorCode.SMTP_TRANSIENT)

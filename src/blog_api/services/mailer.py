"""E-mail over SMTP, with errors sorted into transient (retry) and permanent (give up)."""

from __future__ import annotations

import random
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

from flask import current_app

from blog_api.jobs.errors import PermanentJobError, TransientJobError

_LINE_BREAKS = re.compile(r"[\r\n\x00-\x1f\x7f\u2028\u2029]+")
MAX_SUBJECT_TITLE = 120
_failure_rng: dict[str, random.Random] = {}


def header_safe(text: str, limit: int = MAX_SUBJECT_TITLE) -> str:
    """One line, no control characters, bounded: a title can never add an e-mail header."""
    flat = _LINE_BREAKS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def message_id(job_id: str) -> str:
    """Deterministic per job, so a resent copy is recognisably the same message."""
    return f"<notify-{job_id}@{current_app.config['MAIL_MESSAGE_ID_DOMAIN']}>"


def build_post_notification(
    job_id: str, recipient: str, username: str, post_id: int, title: str
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"Your post '{header_safe(title)}' is published"
    message["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    message["To"] = formataddr((header_safe(username, 60), recipient))
    message["Message-ID"] = message_id(job_id)
    message["X-Notification-Id"] = job_id
    message.set_content(
        f"Hello {username},\n\n"
        f"your post #{post_id} '{header_safe(title, 500)}' has been published on Blog API.\n"
    )
    return message


def _maybe_inject_failure() -> None:
    """The tutorial's "random failure" exercise, made deterministic with MAIL_FAILURE_SEED."""
    rate = current_app.config["MAIL_FAILURE_RATE"]
    if rate <= 0:
        return
    seed = current_app.config["MAIL_FAILURE_SEED"]
    rng = _failure_rng.setdefault(str(seed), random.Random(seed))
    if rng.random() < rate:
        raise TransientJobError("injected failure (MAIL_FAILURE_RATE)")


def send_email(message: EmailMessage) -> None:
    """Deliver `message`; raises TransientJobError (retry) or PermanentJobError (5xx)."""
    _maybe_inject_failure()
    config = current_app.config
    try:
        with _connect(config) as smtp:
            if config["MAIL_USE_TLS"] and not config["MAIL_USE_SSL"]:
                smtp.starttls(context=ssl.create_default_context())
            if config["MAIL_USERNAME"]:
                smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"] or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        code, reply = next(iter(error.recipients.values()))
        raise _classify(code, reply) from error
    except smtplib.SMTPResponseException as error:
        raise _classify(error.smtp_code, error.smtp_error) from error
    except (smtplib.SMTPException, OSError) as error:
        raise TransientJobError(f"SMTP connection failed: {error!r}") from error


def _connect(config: Any) -> smtplib.SMTP:
    host, port, timeout = config["MAIL_SERVER"], config["MAIL_PORT"], config["MAIL_TIMEOUT"]
    if config["MAIL_USE_SSL"]:
        return smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    return smtplib.SMTP(host, port, timeout=timeout)


def _classify(code: int, reply: bytes | str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    description = f"SMTP {code} {text}"
    if 500 <= code < 600:
        return PermanentJobError(description)
    return TransientJobError(description)

"""A post's fan-out to its author's subscribers: what the `fan_out` and `deliver_batch` jobs do.

`expand(job)`: the post's deliveries, written chunk by chunk (blog_api.jobs.deliveries), each
chunk with the jobs of its batches; after half the task's soft time limit it stops and the job
runs again at once, without spending an attempt, so an expansion of any size fits the limits.

`deliver_batch(job)`: claims the batch's due deliveries with one statement, settles the ones
that cannot be sent (subscriber deleted, without a confirmed address: skipped; unsubscribed:
cancelled), then sends the others over one SMTP connection kept for the batch, recording each
message's outcome before sending the next. A worker killed mid-batch therefore leaves at most
the message in flight undecided; its delivery is claimed again when the lease ends and sent
again with the same `Message-ID` (`<fanout-{delivery id}@MAIL_MESSAGE_ID_DOMAIN>`).

Failures are per delivery, with the backoff in the row: a refused recipient (4xx) waits for its
retry while the batch goes on; a permanent refusal (5xx) ends that delivery only (`dead`); a
connection dropped during a message fails that message and the next one goes out on a new
connection; a failure of the server itself (no connection, a 4xx to MAIL FROM or DATA, a
timeout) pauses the whole batch until that delivery's retry is due, so an outage costs one
attempt per probe instead of one per subscriber. A connection the server closed before DATA is
reopened and the message sent on it (the server never saw it). The batch's job goes back to
pending, due when its earliest delivery is, as long as any delivery waits; it never spends its
own attempts on per-delivery retries.

Each message is built from bytes made once per batch, with only the recipient's parts put in
(To, Message-ID, the unsubscribe link): building a MIME message per e-mail cost more than
sending it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import random
import re
import smtplib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

from flask import current_app
from sqlalchemy import select

from blog_api.auth.unsubscribe import TokenSigner
from blog_api.effects.mailer import (
    closed_by_server,
    header_safe,
    open_connection,
    smtp_failure,
)
from blog_api.effects.throttle import MailThrottle, ThrottleUnavailable, mail_throttle
from blog_api.extensions import db
from blog_api.jobs import deliveries, outbox
from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.jobs.deliveries import FanOut, OutcomeRecorder, Recipient
from blog_api.jobs.errors import JobDeferred, PermanentJobError, TransientJobError
from blog_api.models import DeliveryStatus, ErrorCode, Job, JobStatus, Post, User
from blog_api.models.base import utcnow

log = logging.getLogger(__name__)

# Sends one named point of this run as its job's `job_checkpoint`: the tutorial's
# MAIL_FAILURE_RATE and the fault suite listen there.
Signal = Callable[[Checkpoint], None]

# A run stops taking new work after this share of the task's soft time limit, so that the
# message in flight and the bookkeeping after it end well before the limit.
BUDGET_SHARE = 0.5
# SMTP's dot-stuffing (RFC 5321 4.5.2): a line that starts with "." gets another.
LEADING_DOT = re.compile(rb"(?m)^\.")
NOT_CONFIRMED = "the subscriber's address is not confirmed (EMAIL_CONFIRMATION_REQUIRED)"


def time_budget() -> float:
    return float(current_app.config["TASK_SOFT_TIME_LIMIT"]) * BUDGET_SHARE


# -- expansion ------------------------------------------------------------------------------------


def _signal(job: Job) -> Signal:
    def signal(point: Checkpoint) -> None:
        job_checkpoint.send(job, point=point)

    return signal


def expand(job: Job) -> JobStatus:
    """Write the post's deliveries and their batches' jobs; JobDeferred when the time budget
    ran out first (the next run resumes after the last subscriber written)."""
    post = db.session.get(Post, job.post_id)
    if post is None:
        return JobStatus.SKIPPED
    config = current_app.config
    fan_out = FanOut(post.id, post.user_id, post.created_at, job.request_id)
    deadline = time.monotonic() + time_budget()
    while True:
        finished = deliveries.expand_chunk(
            fan_out,
            config["DELIVERY_EXPANSION_CHUNK"],
            config["DELIVERY_BATCH_SIZE"],
            config["EMAIL_CONFIRMATION_REQUIRED"],
        )
        job_checkpoint.send(job, point=Checkpoint.AFTER_EXPANSION_CHUNK)
        if finished:
            log.info("Post %s: fan-out expanded", fan_out.post_id)
            return JobStatus.DONE
        if time.monotonic() >= deadline:
            raise JobDeferred(utcnow(), "expansion continues after its time budget")


# -- one batch ------------------------------------------------------------------------------------


def deliver_batch(job: Job) -> JobStatus:
    """Send the batch's due deliveries; DONE once every delivery of the batch is finished, else
    JobDeferred until the earliest one is due again."""
    config = current_app.config
    assert job.post_id is not None
    deadline = time.monotonic() + time_budget()
    lease_until = utcnow() + timedelta(seconds=config["JOB_LEASE_SECONDS"])
    max_attempts = config["MAIL_MAX_RETRIES"] + 1
    post = db.session.execute(
        select(Post.id, Post.title, Post.user_id, User.username)
        .join(User, User.id == Post.user_id)
        .where(Post.id == job.post_id)
    ).first()
    db.session.commit()
    if post is None:  # deleted meanwhile: its deliveries went with it
        return JobStatus.SKIPPED
    recipients = deliveries.claim_batch(post.id, post.user_id, job.batch, lease_until)
    pause: Pause | None = None
    if recipients:
        sendable = _settle_unsendable(recipients, lease_until)
        message = FanoutMessage(post.id, post.title, post.user_id, post.username)
        run = BatchRun(message, lease_until, max_attempts, deadline, _signal(job))
        pause = run.send(sendable)
    due = deliveries.next_due(job.post_id, job.batch)
    if due is None:
        return JobStatus.DONE
    if pause is not None:
        raise JobDeferred(max(due, pause.until), f"paused: {pause.reason}")
    raise JobDeferred(due, "deliveries of the batch wait for their turn")


@dataclass(frozen=True)
class Addressee:
    """A claimed delivery that may be sent: its subscriber exists, follows the author and has
    an address (a confirmed one when that is required)."""

    delivery_id: int
    attempts: int
    subscriber_id: int
    username: str
    email: str


def _settle_unsendable(recipients: Sequence[Recipient], lease_until: datetime) -> list[Addressee]:
    """Record the deliveries that must not be sent (in bulk) and return the others."""
    confirmed_only = current_app.config["EMAIL_CONFIRMATION_REQUIRED"]
    skipped: dict[str, list[int]] = {}
    cancelled: list[int] = []
    sendable: list[Addressee] = []
    for recipient in recipients:
        subscriber, username, email = recipient.subscriber_id, recipient.username, recipient.email
        skip = skipped.setdefault
        if subscriber is None or username is None:
            skip("the subscriber's account was deleted", []).append(recipient.delivery_id)
        elif not email:
            skip("the subscriber has no e-mail address", []).append(recipient.delivery_id)
        elif confirmed_only and not recipient.confirmed:
            skip(NOT_CONFIRMED, []).append(recipient.delivery_id)
        elif not recipient.subscribed:
            cancelled.append(recipient.delivery_id)
        else:
            sendable.append(
                Addressee(recipient.delivery_id, recipient.attempts, subscriber, username, email)
            )
    for reason, ids in skipped.items():
        deliveries.finish_many(ids, DeliveryStatus.SKIPPED, reason, lease_until)
    deliveries.finish_many(cancelled, DeliveryStatus.CANCELLED, "unsubscribed", lease_until)
    return sendable


class FanoutMessage:
    """The post's e-mail as bytes made once per batch; `render` puts one recipient's parts in.

    Plain text, 7bit when the text is ASCII, else UTF-8 in base64 (encoded per recipient: the
    unsubscribe link is in the text). Titles pass `header_safe` (one line, no control
    characters), so no title can add a header or a line to the body.
    """

    def __init__(self, post_id: int, title: str, author_id: int, author: str) -> None:
        config = current_app.config
        base_url = config["PUBLIC_BASE_URL"]
        self.author_id = author_id
        self.domain = config["MAIL_MESSAGE_ID_DOMAIN"]
        self.signer = TokenSigner()
        subject = f"New post by {author}: {header_safe(title)}"
        # The text around the recipient's name and link, CRLF already (a title is the author's
        # text: it is never used as a format string).
        self.greeting = "Hello "
        self.middle = (
            ",\n\n"
            f"{author} published a new post on Blog API:\n\n"
            f"    {header_safe(title, 500)}\n\n"
            f"Read it: {base_url}/api/v1/posts/{post_id}\n\n"
            f"You get this e-mail because you subscribed to {author}'s posts. Unsubscribe with "
            "one click:\n"
        ).replace("\n", "\r\n")
        self.ascii = self.middle.isascii()
        name, address = parseaddr(config["MAIL_DEFAULT_SENDER"])
        headers = [
            ("From", formataddr((name, address))),
            ("Subject", subject if subject.isascii() else Header(subject, "utf-8").encode()),
            ("Date", formatdate(usegmt=True)),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'text/plain; charset="{"us-ascii" if self.ascii else "utf-8"}"'),
            ("Content-Transfer-Encoding", "7bit" if self.ascii else "base64"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
        self.head = "".join(f"{key}: {value}\r\n" for key, value in headers)
        self.sender = address

    def render(self, delivery_id: int, subscriber_id: int, username: str, address: str) -> bytes:
        """The whole message for one recipient; PermanentJobError for an address SMTP cannot
        carry without SMTPUTF8 (or one that could break a header)."""
        if not (address.isascii() and address.isprintable()):
            raise PermanentJobError(
                f"Internationalised address not supported: {address!r}",
                ErrorCode.ADDRESS_UNSUPPORTED,
            )
        link = self.signer.link(subscriber_id, self.author_id)
        text = f"{self.greeting}{username}{self.middle}{link}\r\n"
        body = text if self.ascii else _base64_lines(text.encode())
        return (
            f'{self.head}To: "{username}" <{address}>\r\n'
            f"Message-ID: <fanout-{delivery_id}@{self.domain}>\r\n"
            f"List-Unsubscribe: <{link}>\r\n\r\n{body}"
        ).encode("ascii")


def _base64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")


@dataclass(frozen=True)
class Pause:
    """Why a batch stopped before its end, and until when."""

    until: datetime
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What became of one message: the delivery's new status, its retry time, the error, and
    whether the batch must pause (the server or connection failed, not the recipient)."""

    status: DeliveryStatus
    due: datetime | None = None
    error: str | None = None
    pause: bool = False


class BatchRun:
    """One run's sending: the kept connection, the throttle and the outcome recorder."""

    def __init__(
        self,
        message: FanoutMessage,
        lease_until: datetime,
        max_attempts: int,
        deadline: float,
        checkpoint: Signal,
    ) -> None:
        config = current_app.config
        self.message = message
        self.lease_until = lease_until
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.checkpoint = checkpoint
        self.connection = BatchConnection(config, message.sender)
        self.throttle: MailThrottle | None = mail_throttle()
        self.backoff = (config["MAIL_RETRY_BACKOFF"], config["MAIL_RETRY_BACKOFF_MAX"])
        self.record_retry_for = config["JOB_LEASE_SECONDS"] / 2
        self.recorder = OutcomeRecorder(
            db.engine, lease_until, config["DELIVERY_SYNCHRONOUS_COMMIT"]
        )
        self.rng = random.Random()

    def send(self, recipients: Sequence[Addressee]) -> Pause | None:
        """Send to `recipients` in order until done, out of time, paused or no longer ours;
        those not tried are given back. Returns the pause, if one stopped it."""
        tried = 0
        pause = None
        try:
            for recipient in recipients:
                if time.monotonic() >= self.deadline or not self._token():
                    break
                tried += 1
                outcome = self._send_one(recipient)
                recorded = self.recorder.record(
                    recipient.delivery_id,
                    outcome.status,
                    due=outcome.due,
                    error=outcome.error,
                    retry_for=self.record_retry_for,
                )
                if not recorded:
                    log.warning(
                        "Delivery %s is no longer this run's; stopping", recipient.delivery_id
                    )
                    break
                if outcome.pause:
                    pause = Pause(
                        outcome.due or utcnow(), f"the mail server failed: {outcome.error}"
                    )
                    break
        except ThrottleUnavailable as error:
            log.warning("Fan-out paused: %s", error)
            pause = Pause(utcnow() + timedelta(seconds=self.backoff[0]), str(error))
        finally:
            self.connection.close()
            self.recorder.close()
            untried = [recipient.delivery_id for recipient in recipients[tried:]]
            deliveries.release(untried, self.lease_until)
        return pause

    def _token(self) -> bool:
        return self.throttle is None or self.throttle.take(self.deadline)

    def _send_one(self, recipient: Addressee) -> Outcome:
        try:
            self.checkpoint(Checkpoint.BEFORE_SMTP_DATA)
            data = self.message.render(
                recipient.delivery_id, recipient.subscriber_id, recipient.username, recipient.email
            )
            self.connection.send(recipient.email, data)
        except PermanentJobError as error:
            return Outcome(DeliveryStatus.DEAD, error=str(error))
        except TransientJobError as error:
            return self._failed(recipient, str(error), pause=False)
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            return self._refused(recipient, code, reply, pause=False)
        except smtplib.SMTPResponseException as error:  # MAIL FROM or DATA refused
            return self._refused(recipient, error.smtp_code, error.smtp_error, pause=True)
        except (ConnectFailed, TimeoutError) as error:  # the server is away or stalls
            return self._failed(recipient, f"SMTP server unavailable: {error!r}", pause=True)
        except (smtplib.SMTPException, OSError) as error:  # this connection broke
            return self._failed(recipient, f"SMTP connection lost: {error!r}", pause=False)
        self.checkpoint(Checkpoint.AFTER_SMTP_250_BEFORE_COMMIT)
        return Outcome(DeliveryStatus.SENT)

    def _refused(self, recipient: Addressee, code: int, reply: Any, *, pause: bool) -> Outcome:
        failure = smtp_failure(code, reply)
        if isinstance(failure, PermanentJobError):
            return Outcome(DeliveryStatus.DEAD, error=str(failure))
        return self._failed(recipient, str(failure), pause=pause)

    def _failed(self, recipient: Addressee, error: str, *, pause: bool) -> Outcome:
        """A transient failure: waiting for a retry after the backoff, or dead when that was
        the last attempt."""
        attempt = recipient.attempts + 1
        if attempt >= self.max_attempts:
            return Outcome(
                DeliveryStatus.DEAD, error=f"gave up after {attempt} attempts: {error}", pause=pause
            )
        delay = outbox.backoff_seconds(attempt, *self.backoff, self.rng)
        due = utcnow() + timedelta(seconds=delay)
        return Outcome(DeliveryStatus.FAILED, due=due, error=error, pause=pause)


class _ClosedBeforeData(Exception):
    """A kept connection the server had closed before this message's DATA."""


class ConnectFailed(Exception):
    """No connection to the SMTP server could be opened (or it refused the greeting, TLS or
    login)."""


class BatchConnection:
    """The batch's SMTP connection: opened for the first message, replaced after
    MAIL_CONNECTION_MAX_MESSAGES messages, and reopened when the server had closed it before a
    message's DATA (the message is then sent on the new connection: the server never saw it).
    Any failure from DATA on is the caller's to record."""

    def __init__(self, config: Any, sender: str) -> None:
        self.config = config
        self.sender = sender
        self.smtp: Any = None
        self.sent = 0

    def send(self, address: str, data: bytes) -> None:
        """Raises what smtplib raises (the caller sorts it)."""
        kept = self.smtp is not None and self.sent < self.config["MAIL_CONNECTION_MAX_MESSAGES"]
        if not kept:
            self._open()
        try:
            self._send_on(self.smtp, address, data, may_reopen=kept)
        except _ClosedBeforeData:
            self._open()
            self._send_on(self.smtp, address, data, may_reopen=False)

    def _send_on(self, smtp: Any, address: str, data: bytes, *, may_reopen: bool) -> None:
        smtp.data_started = False
        self.sent += 1
        try:
            if smtp.has_extn("pipelining"):
                self._pipelined(smtp, address, data)
            else:
                smtp.sendmail(self.sender, [address], data)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
            raise  # the server answered and smtplib reset the transaction: the link is fine
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPSenderRefused, OSError) as error:
            self._drop()
            if may_reopen and not smtp.data_started and closed_by_server(error):
                raise _ClosedBeforeData() from error
            raise
        except BaseException:
            self._drop()
            raise

    def _pipelined(self, smtp: Any, address: str, data: bytes) -> None:
        """One message as smtplib's `sendmail` sends it, with MAIL, RCPT and DATA written at
        once (RFC 2920 PIPELINING) and their replies read after: two round trips instead of
        four. Raises what `sendmail` raises, with the transaction reset the same way."""
        smtp.send(f"MAIL FROM:<{self.sender}>\r\nRCPT TO:<{address}>\r\nDATA\r\n".encode())
        (mail, mail_reply), (rcpt, rcpt_reply), (data_code, data_reply) = (
            smtp.getreply() for _ in range(3)
        )
        if data_code == 354 and (mail != 250 or rcpt not in (250, 251)):
            # A server that takes DATA after refusing its sender or recipient: no way back
            # to a clean state on this connection but to leave it.
            self._drop()
            raise smtplib.SMTPServerDisconnected("DATA accepted after a refusal")
        if mail != 250:
            self._reset(smtp, mail)
            raise smtplib.SMTPSenderRefused(mail, mail_reply, self.sender)
        if rcpt not in (250, 251):
            self._reset(smtp, rcpt)
            raise smtplib.SMTPRecipientsRefused({address: (rcpt, rcpt_reply)})
        if data_code != 354:
            self._reset(smtp, data_code)
            raise smtplib.SMTPDataError(data_code, data_reply)
        smtp.data_started = True
        ending = b"" if data.endswith(b"\r\n") else b"\r\n"
        smtp.send(LEADING_DOT.sub(b"..", data) + ending + b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    @staticmethod
    def _reset(smtp: Any, code: int) -> None:
        """RSET after a refusal, as `sendmail` does (not after 421: the server is closing)."""
        if code != 421:
            with contextlib.suppress(smtplib.SMTPServerDisconnected):
                smtp.rset()

    def _open(self) -> None:
        self.close()
        try:
            self.smtp = open_connection(self.config)
            self.smtp.ehlo_or_helo_if_needed()  # learns whether the server pipelines
        except (smtplib.SMTPException, OSError) as error:
            raise ConnectFailed(repr(error)) from error
        self.sent = 0

    def _drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    def close(self) -> None:
        """QUIT, within a second; a server that does not answer only loses the courtesy."""
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.sock.settimeout(1.0)
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            with contextlib.suppress(OSError):
                smtp.close()

"""The e-mail that carries an address's confirmation token (job kind `confirm_email`)."""

from __future__ import annotations

import logging
from datetime import datetime
from email.message import Message

from flask import current_app
from sqlalchemy import bindparam, select

from blog_api.effects.mailer import plain_message, send_email
from blog_api.extensions import db
from blog_api.jobs.errors import JobSkipped
from blog_api.models import EmailConfirmation, ErrorCode, Job, JobStatus, User
from blog_api.models.base import utcnow
from blog_api.services.confirmations import confirmation_token, confirmed_owner

log = logging.getLogger(__name__)

# Built once: building the statement cost about as much as running it.
CONFIRMATION_AND_USER = (
    select(EmailConfirmation, User)
    .join(User, EmailConfirmation.user_id == User.id)
    .where(EmailConfirmation.id == bindparam("confirmation_id"))
)


def email_confirmation(job: Job) -> JobStatus:
    """Send the confirmation e-mail with its token, unless it cannot be used any more."""
    row = db.session.execute(
        CONFIRMATION_AND_USER, {"confirmation_id": job.confirmation_id}
    ).first()
    if row is None:
        return JobStatus.SKIPPED
    confirmation, user = row
    if confirmation.used_at is not None or user.email_confirmed:
        raise JobSkipped("the address is already confirmed", ErrorCode.ALREADY_CONFIRMED)
    if user.email != confirmation.email:
        raise JobSkipped(
            "the user's address changed since the confirmation was asked for",
            ErrorCode.ADDRESS_CHANGED,
        )
    if confirmation.expires_at <= utcnow():
        raise JobSkipped(
            "the confirmation expired or was superseded before it could be sent",
            ErrorCode.CONFIRMATION_EXPIRED,
        )
    # Its token could only be refused (409): the e-mail would reach the owner of the address
    # for nothing, as often as strangers register with it.
    if confirmed_owner(confirmation.email, other_than=user.id) is not None:
        raise JobSkipped(
            "the address is already confirmed by another account",
            ErrorCode.ADDRESS_CONFIRMED_ELSEWHERE,
        )
    message = build_email_confirmation(
        job.id,
        confirmation.email,
        user.username,
        confirmation_token(confirmation),
        confirmation.expires_at,
    )
    send_email(message)
    log.info("Confirmation e-mail sent to user %s", user.id)
    return JobStatus.DONE


def build_email_confirmation(
    job_id: str, recipient: str, username: str, token: str, expires_at: datetime
) -> Message:
    """The e-mail that asks the owner of `recipient` to confirm it: the token, and the link
    (EMAIL_CONFIRM_URL) or else the API call that takes it."""
    confirm_url = current_app.config["EMAIL_CONFIRM_URL"]
    if confirm_url:
        separator = "&" if "?" in confirm_url else "?"
        how = f"open this link:\n\n    {confirm_url}{separator}token={token}\n"
    else:
        how = (
            "send this request to Blog API:\n\n"
            "    POST /api/v1/users/confirm-email\n"
            "    Content-Type: application/json\n\n"
            f'    {{"token": "{token}"}}\n'
        )
    body = (
        f"Hello {username},\n\n"
        f"to confirm that this address belongs to your Blog API account, {how}\n"
        f"Your confirmation token: {token}\n"
        f"It works once, until {expires_at:%Y-%m-%d %H:%M} UTC.\n\n"
        "If you did not register with Blog API, ignore this e-mail: without confirmation the "
        "account gets no e-mail from us.\n"
    )
    subject = "Confirm your e-mail address for Blog API"
    return plain_message(
        recipient, username, subject, body, job_id, "confirm", "X-Confirmation-Job-Id"
    )

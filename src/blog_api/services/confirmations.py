"""E-mail confirmation: asking for one (a row and its e-mail job, in the caller's transaction or
its own), the token the e-mail carries, and confirming with it.

A token is `<confirmation id>.<HMAC-SHA256 of id, nonce and address>`, base64url, under a key
derived from SECRET_KEY. The database holds only the nonce, so reading it is not enough to
confirm; the worker computes the token when it sends the e-mail. A token confirms once, within
EMAIL_CONFIRM_TTL, and only while it is its user's newest: asking for a new confirmation ends
the earlier ones. Rotating SECRET_KEY ends every outstanding token (ask for a new e-mail).

Addresses are unique among confirmed accounts only (`uq_users_email_confirmed`): any number of
unconfirmed accounts may carry an address, and the first to confirm it owns it.

Anyone may name any address, so one address gets at most CONFIRM_EMAIL_RECIPIENT_LIMIT
confirmation e-mails, whoever asks: counted in the rate-limit storage under a keyed hash of the
address (the storage never holds the address). Beyond it nothing is written or sent, and the
caller answers as if it had been: the answer must not tell a stranger about the limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from blog_api.errors import ConflictError
from blog_api.extensions import db, limiter
from blog_api.jobs import outbox
from blog_api.models import EmailConfirmation, User
from blog_api.models.base import MAX_ID, utcnow

KEY_PURPOSE = b"blog_api email confirmation token v1"
RECIPIENT_KEY_PURPOSE = b"blog_api email confirmation recipient v1"
RECIPIENT_SCOPE = "confirm-email-recipient"
# `<id>.<43 base64url characters>`: anything else is not a token of ours.
TOKEN_PATTERN = re.compile(r"(?P<id>[1-9][0-9]{0,9})\.(?P<mac>[A-Za-z0-9_-]{43})")
TOKEN_MAX_LENGTH = 64

INVALID = "Invalid confirmation token"
EXPIRED = "Confirmation token has expired; ask for a new one"
USED = "Confirmation token has already been used"
ADDRESS_TAKEN = "This e-mail address has already been confirmed by another account"
NO_ADDRESS = "Your account has no e-mail address to confirm"
ALREADY_CONFIRMED = "Your e-mail address is already confirmed"


class InvalidConfirmationToken(ValueError):
    """The token confirms nothing (wrong, malformed, expired, used or superseded): `400`."""


def _key(purpose: bytes = KEY_PURPOSE) -> bytes:
    """A key of its own for `purpose`, derived from SECRET_KEY: a MAC made for one purpose is
    never valid as another signature made with SECRET_KEY, and vice versa."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def _mac(confirmation_id: int, nonce: str, email: str) -> str:
    message = f"{confirmation_id}|{nonce}|{email}".encode()
    digest = hmac.new(_key(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _recipient_key(email: str) -> str:
    """The address's key in the rate-limit storage: the same for every spelling of it (case,
    surrounding blanks), and nothing that gives the address back."""
    normalised = email.strip().lower().encode()
    return hmac.new(_key(RECIPIENT_KEY_PURPOSE), normalised, hashlib.sha256).hexdigest()[:32]


def _within_recipient_limit(email: str) -> bool:
    """Count one confirmation e-mail to `email`; whether it may be sent."""
    limit = current_app.config["CONFIRM_EMAIL_RECIPIENT_LIMIT"]
    return limiter.hit(limit, RECIPIENT_SCOPE, _recipient_key(email))


def confirmed_owner(email: str, other_than: int) -> int | None:
    """The id of the account, other than `other_than`, that has confirmed `email`, if any."""
    return db.session.scalar(
        select(User.id).where(
            User.email == email,
            User.email_confirmed_at.is_not(None),
            User.id != other_than,
        )
    )


def confirmation_token(confirmation: EmailConfirmation) -> str:
    """The token the confirmation e-mail carries (the worker computes it at send time)."""
    return f"{confirmation.id}.{_mac(confirmation.id, confirmation.nonce, confirmation.email)}"


def add_confirmation(user: User) -> EmailConfirmation | None:
    """A new confirmation of the user's address and its e-mail job, in the session's
    transaction (the caller commits); the user's earlier confirmations stop working.

    None, with nothing written, when the address has had CONFIRM_EMAIL_RECIPIENT_LIMIT
    confirmation e-mails already: the caller answers as it would have (the user may ask for
    a new e-mail later), and the earlier confirmations still work.
    """
    if not user.email:
        raise ValueError(f"user {user.id} has no e-mail address to confirm")
    if not _within_recipient_limit(user.email):
        # Never the address: the log would hold what the limit keeps out of the storage.
        current_app.logger.warning(
            "Confirmation e-mail for user %s not sent: its address had "
            "CONFIRM_EMAIL_RECIPIENT_LIMIT (%s) already",
            user.id,
            current_app.config["CONFIRM_EMAIL_RECIPIENT_LIMIT"],
        )
        return None
    now = utcnow()
    db.session.execute(
        update(EmailConfirmation)
        .where(
            EmailConfirmation.user_id == user.id,
            EmailConfirmation.used_at.is_(None),
            EmailConfirmation.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    confirmation = EmailConfirmation(
        user_id=user.id,
        email=user.email,
        created_at=now,
        expires_at=now + current_app.config["EMAIL_CONFIRM_TTL"],
    )
    db.session.add(confirmation)
    db.session.flush()
    outbox.insert_confirmation_job(confirmation.id)
    return confirmation


def send_new_confirmation(user: User) -> EmailConfirmation | None:
    """`POST /me/confirm-email`: a new confirmation e-mail (None when the address is over
    CONFIRM_EMAIL_RECIPIENT_LIMIT); `ConflictError` when the account has no address or has
    already confirmed it."""
    if not user.email:
        raise ConflictError(NO_ADDRESS)
    if user.email_confirmed:
        raise ConflictError(ALREADY_CONFIRMED)
    confirmation = add_confirmation(user)
    db.session.commit()
    return confirmation


def _parse(token: str) -> tuple[int, str] | None:
    if len(token) > TOKEN_MAX_LENGTH:
        return None
    match = TOKEN_PATTERN.fullmatch(token)
    if match is None or int(match["id"]) > MAX_ID:
        return None
    return int(match["id"]), match["mac"]


def _latest_confirmation_id(user_id: int) -> int | None:
    return db.session.scalar(
        select(EmailConfirmation.id)
        .where(EmailConfirmation.user_id == user_id)
        .order_by(EmailConfirmation.id.desc())
        .limit(1)
    )


def _check_usable(confirmation: EmailConfirmation, user: User, now: datetime) -> None:
    if confirmation.used_at is not None:
        raise InvalidConfirmationToken(USED)
    # A newer confirmation, or an address changed since, makes the token stale.
    if user.email != confirmation.email or _latest_confirmation_id(user.id) != confirmation.id:
        raise InvalidConfirmationToken(INVALID)
    if confirmation.expires_at <= now:
        raise InvalidConfirmationToken(EXPIRED)


def confirm_email(token: str) -> User:
    """Mark the address of the token's confirmation as confirmed, once; the user.

    `InvalidConfirmationToken` for a token that confirms nothing, `ConflictError` when another
    account has confirmed the address meanwhile. Nothing is written unless it succeeds.
    """
    parsed = _parse(token)
    if parsed is None:
        raise InvalidConfirmationToken(INVALID)
    confirmation_id, mac = parsed
    confirmation = db.session.get(EmailConfirmation, confirmation_id)
    if confirmation is None or not hmac.compare_digest(
        mac, _mac(confirmation.id, confirmation.nonce, confirmation.email)
    ):
        raise InvalidConfirmationToken(INVALID)
    user = db.session.get_one(User, confirmation.user_id)
    now = utcnow()
    _check_usable(confirmation, user, now)
    if confirmed_owner(confirmation.email, other_than=user.id) is not None:
        raise ConflictError(ADDRESS_TAKEN)
    # Conditional: of two requests racing with one token, one uses it.
    spent = db.session.execute(
        update(EmailConfirmation)
        .where(EmailConfirmation.id == confirmation.id, EmailConfirmation.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        raise InvalidConfirmationToken(USED)
    user.email_confirmed_at = now
    try:
        db.session.commit()
    except IntegrityError:
        # Another account confirmed the same address at the same moment (the partial unique
        # index decided).
        db.session.rollback()
        raise ConflictError(ADDRESS_TAKEN) from None
    return user

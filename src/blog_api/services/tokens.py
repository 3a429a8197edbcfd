"""Issuing, rotating and revoking JWTs.

A login starts a token family (`fam`): every pair issued by rotating its refresh tokens belongs
to it. A refresh token presented a second time means that two parties hold it, one of them
not the user; the server cannot tell which, so the whole family is revoked (OAuth 2.0 Security
Best Current Practice, section 4.14). The user's other logins are other families and go on.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from blog_api.auth import tokens as token_checks
from blog_api.extensions import db
from blog_api.models import TokenBlocklist, User
from blog_api.models.base import utcnow


class TokenAlreadyRevoked(Exception):
    """A concurrent request revoked the same token first (a refresh token reused in a race)."""


def issue_tokens(user: User, *, fresh: bool = True, family: str | None = None) -> dict[str, Any]:
    """A new pair: in `family` when rotating, else (a login) in a new family."""
    expires: timedelta = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    claims = {"fam": family or str(uuid.uuid4())}
    return {
        "access_token": create_access_token(identity=user, fresh=fresh, additional_claims=claims),
        "refresh_token": create_refresh_token(identity=user, additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": int(expires.total_seconds()),
    }


def _blocklist_entry(payload: dict[str, Any]) -> TokenBlocklist:
    return TokenBlocklist(
        jti=payload["jti"],
        token_type=payload["type"],
        user_id=int(payload["sub"]),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        family=payload.get("fam"),
    )


def revoke_tokens(*payloads: dict[str, Any]) -> None:
    """Put the tokens on the blocklist in one transaction."""
    db.session.add_all(_blocklist_entry(payload) for payload in payloads)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise TokenAlreadyRevoked from None


def revoke_family(payload: dict[str, Any]) -> None:
    """Revoke every token of `payload`'s family, through the blocklist row of `payload` (a
    spent refresh token has one): kept until the family's last token would have expired.

    No row (the token was revoked otherwise, by a password change or with its family already)
    leaves nothing to revoke.
    """
    config = current_app.config
    lifetime = max(config["JWT_ACCESS_TOKEN_EXPIRES"], config["JWT_REFRESH_TOKEN_EXPIRES"])
    db.session.execute(
        update(TokenBlocklist)
        .where(TokenBlocklist.jti == payload["jti"])
        .values(family_revoked=True, expires_at=utcnow() + lifetime)
    )
    db.session.commit()


def rotate_refresh_token(payload: dict[str, Any], user: User) -> dict[str, Any]:
    """Spend a refresh token (single use) and issue a new pair in its family.

    `TokenAlreadyRevoked` when it was spent or revoked before, also by a concurrent request:
    the whole family is revoked first.
    """
    try:
        if token_checks.is_token_revoked(payload):
            raise TokenAlreadyRevoked
        revoke_tokens(payload)
    except TokenAlreadyRevoked:
        revoke_family(payload)
        raise
    return issue_tokens(user, fresh=False, family=payload["fam"])


def purge_expired_tokens() -> int:
    """Drop blocklist rows of tokens that have expired anyway; returns how many."""
    result = db.session.execute(delete(TokenBlocklist).where(TokenBlocklist.expires_at < utcnow()))
    db.session.commit()
    return int(getattr(result, "rowcount", 0) or 0)

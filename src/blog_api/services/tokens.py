"""Issuing, rotating and revoking JWTs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from blog_api.extensions import db
from blog_api.models import TokenBlocklist, User
from blog_api.models.base import utcnow


class TokenAlreadyRevoked(Exception):
    """A concurrent request revoked the same token first (a refresh token reused in a race)."""


def issue_tokens(user: User, *, fresh: bool = True) -> dict[str, Any]:
    expires: timedelta = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return {
        "access_token": create_access_token(identity=user, fresh=fresh),
        "refresh_token": create_refresh_token(identity=user),
        "token_type": "Bearer",
        "expires_in": int(expires.total_seconds()),
    }


def _blocklist_entry(payload: dict[str, Any]) -> TokenBlocklist:
    return TokenBlocklist(
        jti=payload["jti"],
        token_type=payload["type"],
        user_id=int(payload["sub"]),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
    )


def revoke_tokens(*payloads: dict[str, Any]) -> None:
    """Put the tokens on the blocklist in one transaction."""
    db.session.add_all(_blocklist_entry(payload) for payload in payloads)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise TokenAlreadyRevoked from None


def rotate_refresh_token(payload: dict[str, Any], user: User) -> dict[str, Any]:
    """Spend a refresh token (single use) and issue a new pair."""
    revoke_tokens(payload)
    return issue_tokens(user, fresh=False)


def purge_expired_tokens() -> int:
    """Drop blocklist rows of tokens that have expired anyway; returns how many."""
    result = db.session.execute(delete(TokenBlocklist).where(TokenBlocklist.expires_at < utcnow()))
    db.session.commit()
    return int(getattr(result, "rowcount", 0) or 0)

"""flask-jwt-extended wiring: identity, claims, revocation checks and error bodies.

Every token carries `sub` (the user id as a string), `jti`, `iat`, `exp`, `type` and `role`, plus
`pwd`: the owner's `password_changed_at` when it was issued. A password change moves that
timestamp, which revokes every earlier token in one write instead of one blocklist row each.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, Response, g
from sqlalchemy import select

from blog_api.errors import error_response
from blog_api.extensions import db, jwt
from blog_api.models import TokenBlocklist, User

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
WRONG_TYPE_REASONS = ("Only non-refresh tokens are allowed", "Only refresh tokens are allowed")


def _unauthorized(message: str) -> Response:
    return error_response(401, message, headers=BEARER_CHALLENGE)


def _subject_id(payload: dict[str, Any]) -> int | None:
    """The user id in the token's `sub`, or None when it is missing or not a number."""
    try:
        return int(payload["sub"])
    except (KeyError, TypeError, ValueError):
        return None


def _user_for(payload: dict[str, Any]) -> User | None:
    user_id = _subject_id(payload)
    return None if user_id is None else db.session.get(User, user_id)


def is_token_revoked(payload: dict[str, Any]) -> bool:
    """Revoked: no `jti`, issued before the owner's last password change, or on the blocklist."""
    jti = payload.get("jti")
    if not jti:
        return True
    on_blocklist = select(TokenBlocklist.id).where(TokenBlocklist.jti == jti).exists()
    user_id = _subject_id(payload)
    # One query for the owner and the blocklist; it also puts the user in the session's
    # identity map, so the user lookup that follows costs no second query.
    row = None
    if user_id is not None:
        row = db.session.execute(
            select(User, on_blocklist.label("revoked")).where(User.id == user_id)
        ).first()
    if row is None:  # no such user: only the blocklist decides (the lookup then fails)
        return bool(db.session.scalar(select(on_blocklist)))
    user, revoked = row
    # The session only holds loaded objects weakly: keep the user for the lookup that follows.
    g.token_user = user
    return payload.get("pwd") != user.password_changed_at.timestamp() or bool(revoked)


def register_jwt_callbacks(app: Flask) -> None:
    """Bind the JWT manager and make every token failure a JSON 401 in our shape."""
    jwt.init_app(app)

    @jwt.user_identity_loader
    def identity(user: User) -> str:
        return str(user.id)

    @jwt.additional_claims_loader
    def claims(user: User) -> dict[str, Any]:
        return {"role": user.role, "pwd": user.password_changed_at.timestamp()}

    @jwt.user_lookup_loader
    def load_user(_header: dict[str, Any], payload: dict[str, Any]) -> User | None:
        user = g.pop("token_user", None)
        if user is not None and str(user.id) == str(payload.get("sub")):
            return cast(User, user)
        return _user_for(payload)

    @jwt.token_in_blocklist_loader
    def check_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        return is_token_revoked(payload)

    @jwt.unauthorized_loader
    def missing_token(reason: str) -> Response:
        return _unauthorized("Missing token" if reason.startswith("Missing") else reason)

    @jwt.invalid_token_loader
    def invalid_token(reason: str) -> Response:
        if reason in WRONG_TYPE_REASONS:
            return _unauthorized("Invalid token type")
        return _unauthorized(f"Invalid token: {reason}")

    @jwt.expired_token_loader
    def expired_token(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return _unauthorized("Token has expired")

    @jwt.revoked_token_loader
    def revoked_token(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return _unauthorized("Token has been revoked")

    @jwt.needs_fresh_token_loader
    def needs_fresh(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return _unauthorized("Fresh token required")

    @jwt.token_verification_failed_loader
    def verification_failed(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return _unauthorized("Invalid token")

    @jwt.user_lookup_error_loader
    def user_gone(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return _unauthorized("Invalid token: user not found")

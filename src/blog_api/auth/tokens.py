"""flask-jwt-extended wiring: identity, claims, revocation checks and error bodies.

Every token carries `sub` (the user id as a string), `jti`, `iat`, `exp`, `type` and `role`, plus
`pwd`: the owner's random security stamp when it was issued (a password change draws a new one,
which revokes every earlier token in one write instead of one blocklist row each), and `fam`:
the family of tokens descending from one login through refresh rotation (reusing a spent
refresh token revokes the family, services/tokens.py). A token without any of these claims was
not issued here and is refused, even when signed with the key.

Every 401 carries the bearer challenge of RFC 6750 §3: `Bearer realm="blog-api"` alone when
the request sent no bearer token (no `Authorization` header, or another scheme: §3.1 says to
send no error code then), with `error="invalid_request"` when the header says Bearer but is not
`Bearer <token>`, and with `error="invalid_token"` when a token was sent and refused (malformed,
expired, revoked, wrongly signed, of the wrong type, or its user gone). The status stays 401 in
every case (SPEC §4.2), where RFC 6750 would allow a 400 for `invalid_request`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from flask import Flask, Response, current_app, g
from flask_jwt_extended.exceptions import InvalidHeaderError
from jwt import MissingRequiredClaimError
from sqlalchemy import Exists, and_, bindparam, or_, select

from blog_api.errors import error_response
from blog_api.extensions import db, jwt
from blog_api.models import TokenBlocklist, User
from blog_api.models.base import MAX_ID

REALM = "blog-api"
# RFC 6750 §3.1 error codes.
INVALID_REQUEST = "invalid_request"
INVALID_TOKEN = "invalid_token"  # noqa: S105 (an error code, not a secret)
WRONG_TYPE_REASONS = ("Only non-refresh tokens are allowed", "Only refresh tokens are allowed")
REQUIRED_CLAIMS = ("sub", "jti", "iat", "exp", "type", "role", "pwd", "fam")


def bearer_challenge(error: str | None = None) -> str:
    """The `WWW-Authenticate` value of a 401: the realm, and `error` when a token or a bearer
    header was sent and refused."""
    challenge = f'Bearer realm="{REALM}"'
    return f'{challenge}, error="{error}"' if error else challenge


def unauthorized(message: str, error: str | None = INVALID_TOKEN) -> Response:
    """A JSON 401 with the bearer challenge; `error=None` when the request sent no token."""
    return error_response(401, message, headers={"WWW-Authenticate": bearer_challenge(error)})


def _subject_id(payload: dict[str, Any]) -> int | None:
    """The user id in the token's `sub`, or None when it is missing or names no possible row."""
    try:
        user_id = int(payload["sub"])
    except (KeyError, TypeError, ValueError):
        return None
    return user_id if 0 < user_id <= MAX_ID else None


def _user_for(payload: dict[str, Any]) -> User | None:
    user_id = _subject_id(payload)
    return None if user_id is None else db.session.get(User, user_id)


def _on_blocklist(by_family: bool) -> Exists:
    revoked = TokenBlocklist.jti == bindparam("jti")
    if by_family:
        family = TokenBlocklist.family == bindparam("family")
        revoked = or_(revoked, and_(family, TokenBlocklist.family_revoked))
    return select(TokenBlocklist.id).where(revoked).exists()


# The revocation queries, built once (building them cost as much as running them); keyed by
# whether the token names a family.
OWNER_AND_BLOCKLIST = {
    by_family: select(User, _on_blocklist(by_family).label("revoked")).where(
        User.id == bindparam("user_id")
    )
    for by_family in (False, True)
}
BLOCKLIST_ONLY = {by_family: select(_on_blocklist(by_family)) for by_family in (False, True)}


def is_token_revoked(payload: dict[str, Any]) -> bool:
    """Revoked: no `jti`, issued before the owner's last password change, or the token or its
    family on the blocklist."""
    jti = payload.get("jti")
    if not jti:
        return True
    family = payload.get("fam")
    by_family = bool(family)
    params = {"jti": jti, "family": family} if by_family else {"jti": jti}
    user_id = _subject_id(payload)
    # One query for the owner and the blocklist; it also puts the user in the session's
    # identity map, so the user lookup that follows costs no second query.
    row = None
    if user_id is not None:
        row = db.session.execute(
            OWNER_AND_BLOCKLIST[by_family], {**params, "user_id": user_id}
        ).first()
    if row is None:  # no such user: only the blocklist decides (the lookup then fails)
        return bool(db.session.scalar(BLOCKLIST_ONLY[by_family], params))
    user, revoked = row
    # The session only holds loaded objects weakly: keep the user for the lookup that follows.
    g.token_user = user
    # An empty stamp (a row written without the application) matches no token.
    return not user.security_stamp or payload.get("pwd") != user.security_stamp or bool(revoked)


def require_claims(_header: dict[str, Any], claims: dict[str, Any]) -> str:
    """The decoding key, once the token is seen to carry every claim this app issues.

    flask-jwt-extended fills in a missing `type` (as an access token) before any other callback
    sees the claims, so the check runs here, on the claims as sent; the signature is verified
    right after, with the key returned.
    """
    for claim in REQUIRED_CLAIMS:
        if claim not in claims:
            raise MissingRequiredClaimError(claim)
    return str(current_app.config["JWT_SECRET_KEY"])


def register_jwt_callbacks(app: Flask) -> None:
    """Bind the JWT manager and make every token failure a JSON 401 in our shape."""
    jwt.init_app(app)

    @jwt.user_identity_loader
    def identity(user: User) -> str:
        return str(user.id)

    jwt.decode_key_loader(require_claims)

    @jwt.additional_claims_loader
    def claims(user: User) -> dict[str, Any]:
        return {"role": user.role, "pwd": user.security_stamp}

    @jwt.user_lookup_loader
    def load_user(_header: dict[str, Any], payload: dict[str, Any]) -> User | None:
        user = g.pop("token_user", None)
        if user is not None and str(user.id) == str(payload.get("sub")):
            return cast(User, user)
        return _user_for(payload)

    @jwt.token_in_blocklist_loader
    def check_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        return is_token_revoked(payload)

    # No bearer token in the request: no header, or another scheme in it.
    @jwt.unauthorized_loader
    def missing_token(reason: str) -> Response:
        return unauthorized("Missing token" if reason.startswith("Missing") else reason, None)

    @jwt.invalid_token_loader
    def invalid_token(reason: str) -> Response:
        if reason in WRONG_TYPE_REASONS:
            return unauthorized("Invalid token type")
        return unauthorized(f"Invalid token: {reason}")

    # `Authorization: Bearer` without a token, or with more than one part after it: the header
    # is malformed, no token was read (flask-jwt-extended sends it to `invalid_token_loader`).
    @app.errorhandler(InvalidHeaderError)
    def malformed_header(error: InvalidHeaderError) -> Response:
        return unauthorized(f"Invalid token: {error}", INVALID_REQUEST)

    # A token that was read but cannot be used: one fixed message each.
    for loader, message in (
        (jwt.expired_token_loader, "Token has expired"),
        (jwt.revoked_token_loader, "Token has been revoked"),
        (jwt.needs_fresh_token_loader, "Fresh token required"),
        (jwt.token_verification_failed_loader, "Invalid token"),
        (jwt.user_lookup_error_loader, "Invalid token: user not found"),
    ):
        loader(partial(_refused_token, message))


def _refused_token(message: str, _header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return unauthorized(message)

"""Login, token refresh (rotating) and logout."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_jwt_extended import decode_token, get_jwt, jwt_required
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import PyJWTError

from blog_api.api import limits
from blog_api.api.base import Blueprint
from blog_api.auth import caller
from blog_api.auth.tokens import is_token_revoked, unauthorized
from blog_api.extensions import limiter
from blog_api.schemas.common import MessageSchema
from blog_api.schemas.users import LoginSchema, LogoutSchema, RefreshSchema, TokenSchema
from blog_api.services import tokens, users

blp = Blueprint(
    "auth", __name__, url_prefix="/api/v1", description="Tokens: log in, refresh, log out"
)

INVALID_CREDENTIALS = "Invalid credentials"


@blp.route("/login")
class Login(MethodView):
    # Checked before the body is validated or a password hashed (see api/limits.py).
    decorators = [
        limits.per_address(limits.login_limit, "login-per-address"),
        limiter.limit(
            limits.login_username_ceiling,
            key_func=limits.login_username,
            scope="login-per-username",
        ),
    ]

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @blp.errors(401, 429)
    def post(self, credentials: dict[str, str]) -> Any:
        """Log in with username and password"""
        user = users.authenticate(credentials["username"], credentials["password"])
        if user is None:
            current_app.logger.warning("Failed login attempt for %s", credentials["username"])
            # No bearer token was sent: the challenge names no error (RFC 6750 §3.1).
            return unauthorized(INVALID_CREDENTIALS, None)
        current_app.logger.info("User logged in: %s", user.username)
        return tokens.issue_tokens(user)


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenSchema)
    @blp.errors(401, 429)
    # Revocation is checked by the rotation itself: a spent token revokes its whole family.
    @jwt_required(refresh=True, locations=["json"], skip_revocation_check=True)
    # Per user, once the token is verified: a made-up token cannot spend someone's budget.
    @limits.per_user(limits.refresh_limit, "token-refresh")
    def post(self, _body: dict[str, str]) -> Any:
        """Exchange a refresh token (single use) for a new token pair; reusing a spent one
        revokes every token descending from the same login"""
        try:
            return tokens.rotate_refresh_token(get_jwt(), caller())
        except tokens.TokenAlreadyRevoked:
            return unauthorized("Token has been revoked")


@blp.route("/logout")
class Logout(MethodView):
    @blp.login_required
    @blp.arguments(LogoutSchema)
    @blp.response(200, MessageSchema)
    @blp.errors(401)
    def post(self, body: dict[str, str]) -> Any:
        """Revoke the access token, and the refresh token if given"""
        access = get_jwt()
        to_revoke = [access]
        if "refresh_token" in body:
            try:
                refresh = decode_token(body["refresh_token"])
            except (JWTExtendedException, PyJWTError) as error:
                return unauthorized(f"Invalid refresh token: {error}")
            if refresh.get("type") != "refresh" or refresh.get("sub") != access["sub"]:
                return unauthorized("Invalid refresh token")
            if not is_token_revoked(refresh):
                to_revoke.append(refresh)
        try:
            tokens.revoke_tokens(*to_revoke)
        except tokens.TokenAlreadyRevoked:
            return unauthorized("Token has been revoked")
        current_app.logger.info("User logged out: %s", caller().username)
        return {"message": "Successfully logged out"}

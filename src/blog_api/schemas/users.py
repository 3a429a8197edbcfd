"""Users and authentication: request bodies and responses."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate

from blog_api.models import ROLES
from blog_api.schemas.common import PaginationSchema
from blog_api.schemas.fields import FullMatch, MailAddress, opaque_token
from blog_api.schemas.posts import PostSummarySchema

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,50}$"
USERNAME_RULE = "3-50 characters: letters, digits, '_', '.', '-'"
# The whole name must match: no trailing newline, no control character (`flask users
# check-names` finds names stored before this was so).
VALID_USERNAME = FullMatch(USERNAME_PATTERN, error=f"Username must be {USERNAME_RULE}.")
# A public profile shows this many of the user's newest posts; the rest are one link away.
PROFILE_POSTS = 5
# Login accepts anything a user might type, within a bound; a wrong value is just a 401.
LOGIN_FIELD_MAX = 1024


def _check_password_length(value: str) -> None:
    minimum = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(value) < minimum:
        raise ValidationError(f"Shorter than minimum length {minimum}.")


class PasswordField(fields.String):
    """A new password: `PASSWORD_MIN_LENGTH` (configurable) to 128 characters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            required=True,
            load_only=True,
            validate=[validate.Length(max=128), _check_password_length],
            # The documents state the default minimum; PASSWORD_MIN_LENGTH may raise it.
            metadata={
                "description": "At least PASSWORD_MIN_LENGTH (default 8) characters",
                "minLength": 8,
            },
            **kwargs,
        )


class UserCreateSchema(Schema):
    MISSING_MESSAGE = "Missing username or password"

    username = fields.String(required=True, validate=VALID_USERNAME)
    password = PasswordField()
    email = MailAddress(load_default=None, allow_none=True)
    role = fields.String(
        validate=validate.OneOf(ROLES),
        load_default="user",
        metadata={"description": "`admin` only with an admin's token"},
    )


class UserSchema(Schema):
    """A public profile: never an e-mail address, never a hash."""

    id = fields.Integer(dump_only=True)
    username = fields.String(dump_only=True)
    role = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class UserDetailSchema(UserSchema):
    """A public profile with a bounded glimpse of the user's posts: the same size whether the
    user wrote none or a million (the full list pages through `posts_url`)."""

    post_count = fields.Integer(dump_only=True, metadata={"description": "Posts written"})
    posts = fields.List(
        fields.Nested(PostSummarySchema),
        dump_only=True,
        validate=validate.Length(max=PROFILE_POSTS),
        metadata={"description": f"The {PROFILE_POSTS} newest posts, newest first"},
    )
    posts_url = fields.String(
        dump_only=True,
        metadata={
            "description": "Root-relative URL of all the user's posts (`GET /api/v1/posts"
            '?user_id=<id>`, paginated), also sent as `Link: <url>; rel="related"`'
        },
    )
    subscriber_count = fields.Integer(
        dump_only=True, metadata={"description": "How many users subscribe to this user's posts"}
    )


class MeSchema(UserSchema):
    email = fields.String(dump_only=True, allow_none=True)
    email_confirmed = fields.Boolean(
        dump_only=True,
        metadata={"description": "Whether you proved owning `email` (POST /users/confirm-email)"},
    )
    email_confirmed_at = fields.AwareDateTime(dump_only=True, allow_none=True)
    password_changed_at = fields.AwareDateTime(dump_only=True)


class UserListSchema(Schema):
    users = fields.List(fields.Nested(UserSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class RoleSchema(Schema):
    MISSING_MESSAGE = "Missing role"

    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class UserRoleSchema(RoleSchema):
    id = fields.Integer(dump_only=True)
    username = fields.String(dump_only=True)


class PasswordChangeSchema(Schema):
    MISSING_MESSAGE = "Missing current or new password"

    current_password = fields.String(
        required=True, load_only=True, validate=validate.Length(max=LOGIN_FIELD_MAX)
    )
    new_password = PasswordField()


class LoginSchema(Schema):
    MISSING_MESSAGE = "Missing username or password"

    username = fields.String(required=True, validate=validate.Length(max=LOGIN_FIELD_MAX))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(max=LOGIN_FIELD_MAX)
    )


class RefreshSchema(Schema):
    MISSING_MESSAGE = "Missing refresh token"

    refresh_token = fields.String(required=True, validate=validate.Length(max=4096))


class LogoutSchema(Schema):
    refresh_token = fields.String(
        validate=validate.Length(max=4096),
        metadata={"description": "Also revoke this refresh token"},
    )


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds"})


class ConfirmEmailSchema(Schema):
    MISSING_MESSAGE = "Missing token"

    token = opaque_token(4096, "The token from the confirmation e-mail")


class ResendConfirmationSchema(Schema):
    """No fields: the body may be empty or `{}`."""

"""Users: registration, public profiles, `/me`, password and role changes, deletion."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from flask_jwt_extended import current_user, verify_jwt_in_request
from flask_smorest import abort
from sqlalchemy import select

from blog_api.api import limits
from blog_api.api.base import Blueprint, get_or_404
from blog_api.api.idempotency import anonymous_scope
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.auth.passwords import verify_password
from blog_api.auth.tokens import bearer_challenge
from blog_api.models import User
from blog_api.schemas.common import MessageSchema, PaginationQuerySchema
from blog_api.schemas.users import (
    PROFILE_POSTS,
    ConfirmEmailSchema,
    MeSchema,
    PasswordChangeSchema,
    ResendConfirmationSchema,
    RoleSchema,
    UserCreateSchema,
    UserDetailSchema,
    UserListSchema,
    UserRoleSchema,
    UserSchema,
)
from blog_api.services import confirmations, idempotency, posts, users

blp = Blueprint("users", __name__, url_prefix="/api/v1", description="User accounts")


def created_user(user: User) -> tuple[User, int, dict[str, str]]:
    """The answer to a registration (and what its Idempotency-Key stores): the account, at its
    URL."""
    return user, 201, {"Location": url_for("users.UserItem", user_id=user.id)}


@blp.route("/users")
class UserList(MethodView):
    @blp.public
    @blp.page(PaginationQuerySchema, UserListSchema)
    def get(self, page: dict[str, Any]) -> Any:
        """List users (public profiles)"""
        listing = paginate(select(User).order_by(User.id), page)
        current_app.logger.info("Fetched all users")
        return listing.response("users")

    @limits.per_address(limits.register_limit, "registration")
    @blp.arguments(UserCreateSchema)
    @blp.idempotent(created_user, scope=anonymous_scope)
    @blp.response(201, UserSchema)
    @blp.errors(403, 409, 429)
    def post(self, data: dict[str, Any], key: idempotency.Key | None) -> Any:
        """Register a user (anyone); creating an admin needs an admin's token"""
        verify_jwt_in_request(optional=True)
        if data["role"] == "admin" and not (current_user and current_user.is_admin):
            abort(403, message="Admin access required")
        # With its confirmation e-mail job, when it has an address.
        user = users.create_user(**data, key=key)
        current_app.logger.info("User created: %s", user.username)
        return created_user(user)


@blp.route("/users/confirm-email")
class ConfirmEmail(MethodView):
    @limits.per_address(limits.confirm_email_limit, "email-confirmation")
    @blp.arguments(ConfirmEmailSchema)
    @blp.response(200, MessageSchema)
    @blp.errors(409, 429)
    def post(self, data: dict[str, str]) -> Any:
        """Confirm your e-mail address with the token from its confirmation e-mail

        No login: the token is the proof. A wrong, malformed, expired, used or superseded token
        is 400; an address that another account has confirmed first is 409.
        """
        try:
            user = confirmations.confirm_email(data["token"])
        except confirmations.InvalidConfirmationToken as error:
            abort(400, message=str(error), errors={"token": [str(error)]})
        current_app.logger.info("E-mail address confirmed: user %s", user.id)
        return {"message": "E-mail address confirmed"}


PROFILE_HEADERS = {
    "Link": {
        "description": '`<url>; rel="related"`: all the user\'s posts, as in `posts_url`',
        "schema": {"type": "string"},
    }
}


@blp.route("/users/<id:user_id>")
class UserItem(MethodView):
    @blp.public
    @blp.response(200, UserDetailSchema, headers=PROFILE_HEADERS)
    @blp.errors(404)
    def get(self, user_id: int) -> Any:
        """Get a user's public profile with their post count, newest posts and subscriber count"""
        user = get_or_404(User, user_id)
        posts_url = url_for("posts.PostList", user_id=user.id)
        profile = {
            "id": user.id,
            "username": user.username,
            "role": user.role,
            "created_at": user.created_at,
            "post_count": posts.count_posts_by(user.id),
            "posts": posts.newest_posts_by(user.id, PROFILE_POSTS),
            "posts_url": posts_url,
            "subscriber_count": user.subscriber_count,
        }
        return profile, {"Link": f'<{posts_url}>; rel="related"'}

    @blp.admin_required
    @blp.response(200, MessageSchema)
    @blp.errors(403, 404)
    def delete(self, user_id: int) -> Any:
        """Delete a user with their posts and to-dos (admin)"""
        user = get_or_404(User, user_id)
        users.delete_user(user)
        current_app.logger.info("User deleted: %s by admin %s", user.username, caller().username)
        return {"message": "User deleted"}


@blp.route("/me")
class Me(MethodView):
    @blp.login_required
    @blp.response(200, MeSchema)
    def get(self) -> Any:
        """Get your own profile, including your e-mail address"""
        return caller()


@blp.route("/me/confirm-email")
class ResendConfirmEmail(MethodView):
    @blp.login_required
    @limits.per_user(limits.confirm_email_resend_limit, "confirmation-resend")
    @blp.arguments(ResendConfirmationSchema)
    @blp.response(202, MessageSchema)
    @blp.errors(409, 429)
    def post(self, _body: dict[str, Any]) -> Any:
        """Send a new confirmation e-mail to your address

        Earlier tokens stop working. 409 when your account has no address or has confirmed it.
        """
        user = caller()
        confirmations.send_new_confirmation(user)
        current_app.logger.info("Confirmation e-mail requested: user %s", user.id)
        return {"message": "Confirmation e-mail sent"}


@blp.route("/users/<id:user_id>/password")
class UserPassword(MethodView):
    # Each attempt verifies a password (argon2): limited per user and per client address,
    # after the token was verified and before the body is validated.
    @blp.login_required
    @limits.per_user(limits.password_change_limit, "password-change-per-user")
    @limits.per_address(limits.password_change_limit, "password-change-per-address")
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, MessageSchema)
    @blp.errors(401, 403, 429)
    def put(self, data: dict[str, str], user_id: int) -> Any:
        """Change your password; every token issued before stops working"""
        user = caller()
        if user.id != user_id:
            abort(403, message="You can only change your own password")
        if not verify_password(user.password_hash, data["current_password"]):
            # The token was good: the challenge names no error (RFC 6750 §3.1).
            abort(
                401,
                message="Current password is incorrect",
                headers={"WWW-Authenticate": bearer_challenge()},
            )
        users.change_password(user, data["new_password"])
        current_app.logger.info("Password changed: %s", user.username)
        return {"message": "Password has been changed successfully"}


@blp.route("/users/<id:user_id>/role")
class UserRole(MethodView):
    @blp.admin_required
    @blp.response(200, UserRoleSchema)
    @blp.errors(403, 404)
    def get(self, user_id: int) -> Any:
        """View a user's role (admin)"""
        return get_or_404(User, user_id)

    @blp.admin_required
    @blp.arguments(RoleSchema)
    @blp.response(200, UserRoleSchema)
    @blp.errors(403, 404)
    def put(self, data: dict[str, str], user_id: int) -> Any:
        """Change a user's role (admin)"""
        user = get_or_404(User, user_id)
        users.set_role(user, data["role"])
        current_app.logger.info(
            "Role changed: %s is now %s (by admin %s)", user.username, user.role, caller().username
        )
        return user

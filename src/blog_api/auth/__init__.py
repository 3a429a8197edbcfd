"""Authentication (JWT) and authorisation (roles) for the views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask_jwt_extended import current_user, verify_jwt_in_request
from flask_smorest import abort

from blog_api.models import User

F = TypeVar("F", bound=Callable[..., Any])


def login_required(view: F) -> F:
    """Require a valid, unrevoked access token of an existing user."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verify_jwt_in_request()
        return view(*args, **kwargs)

    return cast(F, wrapper)


def admin_required(view: F) -> F:
    """Require an access token of a user whose role is `admin` *now* (read from the database)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verify_jwt_in_request()
        if not current_user.is_admin:
            abort(403, message="Admin access required")
        return view(*args, **kwargs)

    return cast(F, wrapper)


def caller() -> User:
    """The authenticated user of this request."""
    return cast(User, current_user._get_current_object())

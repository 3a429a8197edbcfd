"""Rate-limit keys and limits of the views (Flask-Limiter, storage from `RATELIMIT_STORAGE_URI`).

Login is limited three ways, all checked before any password is hashed:

- `LOGIN_RATE_LIMIT` per client address, whatever the username;
- per username *from one client address*: guesses from other addresses never spend the budget
  of the owner's address, so nobody can lock a user out from a few addresses. Counting it on
  its own would change nothing, since the per-address limit (the same figure) is always spent
  first, so it is that limit;
- `LOGIN_USERNAME_CEILING` per username over all addresses, higher than the per-address limit:
  the ceiling for a guesser with many addresses.

A password change (`PASSWORD_CHANGE_RATE_LIMIT`) is limited per user and per client address.
Confirming an e-mail address (`CONFIRM_EMAIL_RATE_LIMIT`) is limited per client address, and
asking for a new confirmation e-mail (`CONFIRM_EMAIL_RESEND_RATE_LIMIT`) per user: each sends
an e-mail to an address the caller typed. Subscribing (`SUBSCRIBE_RATE_LIMIT`) is limited per
user.

The client address is the connection's peer, or with `TRUSTED_PROXIES` set the address the
nearest trusted proxy saw (werkzeug's `ProxyFix`, applied in `create_app`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps

from flask import current_app, request
from flask_jwt_extended import get_jwt_identity
from flask_limiter.util import get_remote_address


def never_raises(key_func: Callable[[], str]) -> Callable[[], str]:
    """`key_func`, answering a fixed key instead of raising.

    Flask-Limiter takes an exception from a key function for a storage outage and counts every
    limit in per-process memory from then on; one unreadable request must not do that.
    """

    @wraps(key_func)
    def key() -> str:
        try:
            return key_func()
        except Exception:
            current_app.logger.exception("Rate-limit key %s failed", key_func.__name__)
            return f"{key_func.__name__}:unreadable"

    return key


def _digest(text: str) -> str:
    """A fixed-size ASCII stand-in for `text` in a storage key, whatever `text` holds."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _login_username() -> str:
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    return username.lower() if isinstance(username, str) else ""


@never_raises
def client_address() -> str:
    return get_remote_address()


@never_raises
def login_username() -> str:
    return f"login-user:{_digest(_login_username())}"


@never_raises
def authenticated_user() -> str:
    """The caller's user id; for limits checked after the token was verified."""
    return f"user:{get_jwt_identity()}"


def login_limit() -> str:
    return str(current_app.config["LOGIN_RATE_LIMIT"])


def login_username_ceiling() -> str:
    return str(current_app.config["LOGIN_USERNAME_CEILING"])


def password_change_limit() -> str:
    return str(current_app.config["PASSWORD_CHANGE_RATE_LIMIT"])


def register_limit() -> str:
    return str(current_app.config["REGISTER_RATE_LIMIT"])


def confirm_email_limit() -> str:
    return str(current_app.config["CONFIRM_EMAIL_RATE_LIMIT"])


def confirm_email_resend_limit() -> str:
    return str(current_app.config["CONFIRM_EMAIL_RESEND_RATE_LIMIT"])


def subscribe_limit() -> str:
    return str(current_app.config["SUBSCRIBE_RATE_LIMIT"])

"""Rate-limit keys and limits of the views (Flask-Limiter, storage from `RATELIMIT_STORAGE_URI`).

Login is limited three ways, all checked before any password is hashed:

- `LOGIN_RATE_LIMIT` per client address, whatever the username;
- per username *from one client address*: guesses from other addresses never spend the budget
  of the owner's address, so nobody can lock a user out from a few addresses. Counting it on
  its own would change nothing, since the per-address limit (the same figure) is always spent
  first, so it is that limit;
- `LOGIN_USERNAME_CEILING` per username over all addresses, higher than the per-address limit:
  the ceiling for a guesser with many addresses.

Anonymous reads (`ANONYMOUS_RATE_LIMIT`): every public `GET` of the API (users, posts, recent
posts) shares one budget per client address, unless the request carries a valid access token:
a logged-in client is known and can be cut off by revoking its tokens, while a made-up or
expired token buys nothing (`anonymous_reads`).

Creating a to-do (`TODO_RATE_LIMIT`) and a post (`POST_RATE_LIMIT`) are limited per user, each
for both API versions together, and so is refreshing a token (`REFRESH_RATE_LIMIT`), keyed by
the refresh token's user once the token is verified: each leaves a row behind (a to-do and its
idempotency key, a spent token on the blocklist).

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
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter.util import get_remote_address

from blog_api.extensions import limiter


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


def carries_valid_access_token() -> bool:
    """Whether the request is a logged-in client's: a valid, unrevoked access token of an
    existing user. Only requests with an `Authorization` header pay for the check; it never
    raises, since Flask-Limiter would take an exception for a storage outage."""
    if "Authorization" not in request.headers:
        return False
    try:
        verify_jwt_in_request()
    except Exception:
        return False
    return True


def configured(setting: str) -> Callable[[], str]:
    """The limit named by configuration key `setting`, read when a request is counted (each app
    has its own settings; the views are declared once)."""

    def limit() -> str:
        return str(current_app.config[setting])

    limit.__name__ = setting.lower()
    return limit


anonymous_limit = configured("ANONYMOUS_RATE_LIMIT")


# The public reads' one budget per client address (`Blueprint.public` applies it).
anonymous_reads = limiter.shared_limit(
    anonymous_limit,
    scope="anonymous-reads",
    key_func=client_address,
    exempt_when=carries_valid_access_token,
)


login_limit = configured("LOGIN_RATE_LIMIT")
login_username_ceiling = configured("LOGIN_USERNAME_CEILING")
password_change_limit = configured("PASSWORD_CHANGE_RATE_LIMIT")
register_limit = configured("REGISTER_RATE_LIMIT")
confirm_email_limit = configured("CONFIRM_EMAIL_RATE_LIMIT")
confirm_email_resend_limit = configured("CONFIRM_EMAIL_RESEND_RATE_LIMIT")
post_limit = configured("POST_RATE_LIMIT")
todo_limit = configured("TODO_RATE_LIMIT")
refresh_limit = configured("REFRESH_RATE_LIMIT")
subscribe_limit = configured("SUBSCRIBE_RATE_LIMIT")

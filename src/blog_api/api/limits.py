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

A `429` describes the limits its request was counted against in the IETF draft's fields
(draft-ietf-httpapi-ratelimit-headers), one item per limit, named by its scope, never by its
key (an address, a user id): `RateLimit-Policy: "login-per-address";q=10;w=60`, the quota per
window, and `RateLimit: "login-per-address";r=0;t=6`, what is left and the seconds until the
window starts again; and `Retry-After`: the seconds until every limit it broke frees a request,
not the whole window. Reading a window back costs two storage round trips per limit, so other
responses carry the fields only with `RATE_LIMIT_HEADERS_ALWAYS`. Flask-Limiter 4 only sends
the older `X-RateLimit-*` fields, so `rate_limit_fields` writes these from the same window
figures.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from functools import wraps

from flask import Response, current_app, request
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter import RequestLimit, RouteLimit
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


def per_address(limit: Callable[[], str], scope: str) -> RouteLimit:
    """A view's `limit`, counted per client address, under `scope` (the name a 429 gives it)."""
    return limiter.limit(limit, key_func=client_address, scope=scope)


def per_user(limit: Callable[[], str], scope: str | None = None) -> RouteLimit:
    """A view's `limit`, counted per logged-in user once the token is verified, under `scope`."""
    return limiter.limit(limit, key_func=authenticated_user, scope=scope)


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

# Creating a post or a to-do: one budget per user for both API versions' views.
post_creation = limiter.shared_limit(post_limit, scope="post-creation", key_func=authenticated_user)
todo_creation = limiter.shared_limit(todo_limit, scope="todo-creation", key_func=authenticated_user)


# --- the limits a response was counted against, in its headers ---------------------------------


def policy_name(limit: RequestLimit) -> str:
    """The limit's name in the RateLimit fields: the `scope` it was declared with (a shared
    limit's bucket, e.g. `post-creation`; for one view's own limit Flask-Limiter stores it as
    `<endpoint>:<scope>`), never its key."""
    scope = limit.request_args[-1]
    return scope if limit.shared else scope.rsplit(":", 1)[-1]


def seconds_until(moment: float, now: float) -> int:
    """Whole seconds from `now` to `moment`, rounded up, so that a client that waits that long
    is not early (Redis itself reports a window's end to the nearest second)."""
    return max(0, math.ceil(moment - now))


def rate_limit_fields(response: Response) -> Response:
    """`after_request`: on a `429` (on every response with `RATE_LIMIT_HEADERS_ALWAYS`), the
    RateLimit-Policy and RateLimit fields of the limits this request was counted against, and
    on the `429` its Retry-After (see the module docstring).

    One read of the limit storage per limit. A storage that fails here changes no status: the
    fields are left out, and a `429` says to retry after the broken limit's whole window.
    """
    counted = limiter.current_limits
    refused = response.status_code == 429
    if not counted or not (refused or current_app.config["RATE_LIMIT_HEADERS_ALWAYS"]):
        return response
    broken = [limit for limit in counted if limit.breached]
    try:
        windows = [(limit, *limit.window) for limit in counted]
    except Exception:
        current_app.logger.warning("Rate-limit storage unreadable: no RateLimit fields sent")
        if refused and broken:
            response.headers["Retry-After"] = str(max(lim.limit.get_expiry() for lim in broken))
        return response
    # After the reads: Redis answers a time to live, which the storage adds to its own clock.
    now = time.time()
    headers = response.headers
    headers["RateLimit-Policy"] = ", ".join(
        f'"{policy_name(limit)}";q={limit.limit.amount};w={limit.limit.get_expiry()}'
        for limit in counted
    )
    headers["RateLimit"] = ", ".join(
        f'"{policy_name(limit)}";r={remaining};t={seconds_until(reset, now)}'
        for limit, reset, remaining in windows
    )
    if refused and broken:
        frees_at = max(reset for limit, reset, _ in windows if limit.breached)
        headers["Retry-After"] = str(max(1, seconds_until(frees_at, now)))
    return response

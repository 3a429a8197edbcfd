"""The `Idempotency-Key` header of creating `POST`s: a retried request is answered, not redone.

The decorator goes between the body's validation and the response's serialisation:

    @blp.arguments(...)          # a body that fails validation never reaches the key
    @blp.idempotent()            # user scope (below login_required), or scope=anonymous_scope
    @blp.response(201, ...)

Without the header it costs one header lookup. With it, the key is claimed before the view
runs, the view's response is stored in the transaction of its effect (services/idempotency.py),
and a repeat gets that stored status, body and `Location` with `Idempotent-Replayed: true`.
Any error (an abort, a conflict, an exception, a status outside 2xx) frees the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, make_response, request
from flask_jwt_extended import get_jwt_identity
from flask_smorest import abort

from blog_api.models.idempotency import ANONYMOUS_SCOPE
from blog_api.services import idempotency
from blog_api.services.idempotency import Claim, Stored

F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# A request holding the key finishes in milliseconds; one second is a polite first wait.
RETRY_IN_FLIGHT_AFTER = "1"
# HTTP already trims spaces around a header value (and joins repeated headers with ", ");
# inner spaces are part of the key.
VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
INVALID_KEY = f"{HEADER} must be 1-255 printable ASCII characters"
IN_FLIGHT = f"A request with this {HEADER} is still in progress; retry later"
OTHER_REQUEST = f"This {HEADER} was used with another request"

HEADER_DOC = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": (
        "Makes retrying safe: the first successful response is stored for 24 h "
        "(IDEMPOTENCY_TTL) and a repeat with the same key and body gets it again, with "
        f"`{REPLAYED_HEADER}: true`, creating nothing. Another body with the same key is 422; "
        "a repeat while the first is still running is 409 with Retry-After. A request that "
        "fails (validation included) leaves the key free. Scoped to the caller (registration: "
        "to the key alone)."
    ),
}


REPLAYED_DOC = {
    REPLAYED_HEADER: {
        "description": "`true` when this is the stored answer to an earlier request with the "
        f"same {HEADER} (absent otherwise)",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def user_scope() -> str:
    """The logged-in caller's keys (the decorator runs after the token was verified)."""
    return f"user:{get_jwt_identity()}"


def anonymous_scope() -> str:
    return ANONYMOUS_SCOPE


def idempotent(scope: Callable[[], str] = user_scope) -> Callable[[F], F]:
    """Run the view at most once per key within `scope`; see the module docstring."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = request.headers.get(HEADER)
            if key is None:
                return view(*args, **kwargs)
            return _run_once(scope(), key, lambda: view(*args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return decorator


def _run_once(scope: str, key: str, run: Callable[[], Any]) -> Response:
    if not VALID_KEY.fullmatch(key):
        abort(400, message=INVALID_KEY)
    assert request.url_rule is not None  # a routed view
    digest = idempotency.fingerprint(request.method, request.url_rule.rule, request.get_json())
    held = idempotency.claim(scope, key, digest)
    if isinstance(held, Stored):
        return _answer_stored(held, digest)
    response = _run_holding(held, run)
    if not 200 <= response.status_code < 300:
        idempotency.release(held)
        return response
    try:
        stored = idempotency.complete(
            held, response.status_code, response.get_data(as_text=True), response.location
        )
    except BaseException:
        idempotency.release(held)
        raise
    if not stored:
        # Held past IDEMPOTENCY_LOCK_TIMEOUT and taken over by a retry: the effect was rolled
        # back, the retry's is the one that counts.
        abort(409, message=IN_FLIGHT, headers={"Retry-After": RETRY_IN_FLIGHT_AFTER})
    return response


def _run_holding(held: Claim, run: Callable[[], Any]) -> Response:
    token = idempotency.current_claim.set(held)
    try:
        return make_response(run())
    except BaseException:
        idempotency.release(held)
        raise
    finally:
        idempotency.current_claim.reset(token)


def _answer_stored(stored: Stored, digest: str) -> Response:
    if stored.fingerprint != digest:
        abort(422, message=OTHER_REQUEST)
    if stored.status is None:
        abort(409, message=IN_FLIGHT, headers={"Retry-After": RETRY_IN_FLIGHT_AFTER})
    response = Response(stored.body, status=stored.status, mimetype="application/json")
    if stored.location:
        response.headers["Location"] = stored.location
    response.headers[REPLAYED_HEADER] = "true"
    return response

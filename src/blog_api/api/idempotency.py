"""The `Idempotency-Key` header of creating `POST`s: a retried request is answered, not redone.

The decorator goes between the body's validation and the response's serialisation, and names
the view's answer for the object it creates:

    @blp.arguments(...)                       # a body that fails validation never reaches the key
    @blp.idempotent(created_post)             # user scope (below login_required), or
    @blp.response(201, ...)                   #   scope=anonymous_scope
    def post(self, data, key):
        post = posts.create_post(..., key=key)   # claims, creates, stores the answer, commits
        return created_post(post)

The view gets `key`: None without the header (which then costs one header lookup), else the
`services.idempotency.Key` it hands to its service, whose one transaction claims the key, does
the effect and stores the answer before its commit (services/idempotency.py says why the key
carries the rendering). The decorator answers what the claim found instead: a replay of the
stored status, body and headers (`Location`, a post's `Link`) with `Idempotent-Replayed: true`;
`409` with Retry-After while another request holding the key is still running after
`IDEMPOTENCY_WAIT`; `422` for another request. Any failure (an abort, a conflict, an
exception) rolls the transaction back, the key with it: the key stays free.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, request
from flask_jwt_extended import get_jwt_identity
from flask_smorest import abort

from blog_api.models.idempotency import ANONYMOUS_SCOPE
from blog_api.services import idempotency
from blog_api.services.idempotency import Key

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
# Headers of the rendered answer that describe its body: a replay's own body sets them.
ENTITY_HEADERS = {"Content-Type", "Content-Length"}

HEADER_DOC = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": (
        "Makes retrying safe: the first successful response is stored for 24 h "
        "(IDEMPOTENCY_TTL) and a repeat with the same key and body gets it again, with "
        f"`{REPLAYED_HEADER}: true`, creating nothing. Another body with the same key is 422; "
        "a repeat while the first is still running waits for its answer, or is 409 with "
        "Retry-After if the first runs on for more than IDEMPOTENCY_WAIT (2 s). A request that "
        "fails (validation included), or dies, leaves the key free. Scoped to the caller "
        "(registration: to the key alone)."
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


def idempotent(
    answer: Callable[[Any], Any],
    render_result: Callable[[Any], Response],
    scope: Callable[[], str] = user_scope,
) -> Callable[[F], F]:
    """Pass the view its `key` (None without the header) and answer the key's outcomes; see the
    module docstring. `answer` gives the view's return value for the object it created,
    `render_result` renders such a value as the view's response does."""

    def render(created: Any) -> idempotency.Answer:
        response = render_result(answer(created))
        headers = tuple(
            (name, value) for name, value in response.headers.items() if name not in ENTITY_HEADERS
        )
        return idempotency.Answer(response.status_code, response.get_data(as_text=True), headers)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get(HEADER)
            if header is None:
                return view(*args, key=None, **kwargs)
            key = _key(scope(), header, render)
            try:
                return view(*args, key=key, **kwargs)
            except idempotency.Answered as answered:
                return _replay(answered.answer)
            except idempotency.InFlight:
                abort(409, message=IN_FLIGHT, headers={"Retry-After": RETRY_IN_FLIGHT_AFTER})
            except idempotency.OtherRequest:
                abort(422, message=OTHER_REQUEST)

        return wrapper  # type: ignore[return-value]

    return decorator


def _key(scope: str, header: str, render: Callable[[Any], idempotency.Answer]) -> Key:
    if not VALID_KEY.fullmatch(header):
        abort(400, message=INVALID_KEY)
    assert request.url_rule is not None  # a routed view
    digest = idempotency.fingerprint(request.method, request.url_rule.rule, request.get_json())
    return Key(scope, header, digest, render)


def _replay(answer: idempotency.Answer) -> Response:
    response = Response(answer.body, status=answer.status, mimetype="application/json")
    for name, value in answer.headers:
        response.headers.add(name, value)
    response.headers[REPLAYED_HEADER] = "true"
    return response

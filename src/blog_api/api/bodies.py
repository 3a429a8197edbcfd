"""Request bodies: a JSON body is read once, before any rate limit or view sees it.

A body that cannot be read is refused here with the JSON error shape: over `MAX_CONTENT_LENGTH`
`413`; sent as JSON but not parseable `400 Malformed JSON body: <what> at line L, column C
(char N)`, in the parser's own words and with its position, so that the client finds the typo
(a body that is not UTF-8: the byte where decoding failed); nested deeper than
`MAX_JSON_DEPTH`, or holding a string that is not valid Unicode (a lone surrogate such as
`"\\ud800"`) `400`. Everything after this point (rate-limit key functions, flask-jwt-extended,
the schemas) gets the parsed body from the request's cache and never meets such input: a key
function that raised would switch every rate limit to per-process memory, and a lone surrogate
or a deep nesting would reach the database, argon2 or the JSON encoder as a `500`.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from flask import Flask, Request, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from blog_api.errors import MALFORMED_JSON, REQUEST_MUST_BE_JSON

# No body of this API nests deeper than 2; 32 leaves room and keeps every walk over it shallow.
MAX_JSON_DEPTH = 32
JSON_TOO_DEEP = f"Request JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
INVALID_UNICODE = "Request JSON holds a string that is not valid Unicode (a lone surrogate)"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class UnreadableJSON(ValueError):
    """JSON that parses but that the API will not read; the message says why."""


def check_json_value(value: Any) -> None:
    """Raise `UnreadableJSON` when `value` nests deeper than `MAX_JSON_DEPTH` or holds a lone
    surrogate in any string, key or value. Iterative, so no input can exhaust the stack."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                raise UnreadableJSON(INVALID_UNICODE)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise UnreadableJSON(JSON_TOO_DEEP)
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


class BodyJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider; what it loads has passed `check_json_value`."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:  # the decoder's own recursion, far deeper than MAX_JSON_DEPTH
            raise UnreadableJSON(JSON_TOO_DEEP) from None
        check_json_value(value)
        return value


def why_unreadable(error: ValueError | None) -> str:
    """The message of a `400` for a JSON body that did not load."""
    if isinstance(error, UnreadableJSON):
        return str(error)
    if isinstance(error, json.JSONDecodeError):
        return (
            f"{MALFORMED_JSON}: {error.msg} at line {error.lineno}, column {error.colno} "
            f"(char {error.pos})"
        )
    if isinstance(error, UnicodeDecodeError):  # JSON text is UTF-8 (RFC 8259 §8.1)
        return f"{MALFORMED_JSON}: invalid {error.encoding} at byte {error.start}"
    return REQUEST_MUST_BE_JSON


class BodyRequest(Request):
    """Flask's request; a body that fails to load is a `400` that says why."""

    def on_json_loading_failed(self, e: ValueError | None) -> NoReturn:
        raise BadRequest(why_unreadable(e))


def read_json_body() -> None:
    """Refuse a body that cannot be read, before the rate limiter computes any key."""
    if request.routing_exception is not None:
        return  # 404 and 405 never read the body
    limit = request.max_content_length
    if request.content_length is not None and limit is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    if request.is_json and request.get_data(cache=True):
        request.get_json()  # parsed and cached for everything that follows, or a 400


def register_body_checks(app: Flask) -> None:
    """Install the body rules; called before the rate limiter registers its own hook, since
    Flask runs `before_request` functions in the order they were registered."""
    app.request_class = BodyRequest
    app.json = BodyJSONProvider(app)
    app.before_request(read_json_body)

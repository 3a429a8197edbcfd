"""One JSON error shape for every failure: `{"error", "message"[, "errors"]}`.

HTTP exceptions (ours via `abort`, Werkzeug's, flask-smorest's and Flask-Limiter's), validation
errors, flask-jwt-extended's loaders and unexpected exceptions all end up in `error_response`.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

INTERNAL_ERROR_MESSAGE = "Something went wrong on our end"
REQUEST_MUST_BE_JSON = "Request must be JSON"
MALFORMED_JSON = "Malformed JSON body"
UNKNOWN_FIELD = "Unknown field."
MISSING_FIELD = "Missing data for required field."


# Python 3.13 renamed four statuses after RFC 9110 (422 "Unprocessable Content", 413 "Content Too
# Large"). The API keeps the names and phrases it has always sent, as werkzeug does, whatever
# Python runs it: clients compare the `error` phrase, and the OpenAPI documents name responses
# after the status.
_NAMES_BEFORE_PYTHON_3_13 = {
    413: ("REQUEST_ENTITY_TOO_LARGE", "Request Entity Too Large"),
    414: ("REQUEST_URI_TOO_LONG", "Request-URI Too Long"),
    416: ("REQUESTED_RANGE_NOT_SATISFIABLE", "Requested Range Not Satisfiable"),
    422: ("UNPROCESSABLE_ENTITY", "Unprocessable Entity"),
}


def status_name(status: int) -> str:
    """The status's constant name, e.g. `UNPROCESSABLE_ENTITY` (its OpenAPI response's name)."""
    renamed = _NAMES_BEFORE_PYTHON_3_13.get(status)
    return renamed[0] if renamed else HTTPStatus(status).name


def reason_phrase(status: int) -> str:
    """The status's reason phrase, e.g. `Unprocessable Entity` (an error body's `error`)."""
    renamed = _NAMES_BEFORE_PYTHON_3_13.get(status)
    return renamed[1] if renamed else HTTPStatus(status).phrase


def renamed_statuses() -> list[int]:
    """The statuses whose name this Python spells otherwise than `status_name` (3.13+)."""
    return [
        code
        for code, (name, _) in _NAMES_BEFORE_PYTHON_3_13.items()
        if HTTPStatus(code).name != name
    ]


class ConflictError(Exception):
    """A uniqueness rule would be broken (`409`); the message names the rule."""


def error_response(
    status: int,
    message: str,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    **details: Any,
) -> Response:
    """The error body; `details` adds endpoint-specific fields (e.g. `/ready`'s checks)."""
    body: dict[str, Any] = {"error": reason_phrase(status), "message": message, **details}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def describe_validation_error(
    messages: Mapping[str, Any], missing_message: str | None
) -> tuple[str, dict[str, Any]]:
    """Flatten webargs' `{location: {field: [...]}}` and say in one line what is wrong."""
    errors: dict[str, Any] = {}
    locations = set()
    for location, field_errors in messages.items():
        locations.add(location)
        if isinstance(field_errors, Mapping):
            errors.update(field_errors)
        else:
            errors["_schema"] = field_errors
    unknown = sorted(name for name, errs in errors.items() if errs == [UNKNOWN_FIELD])
    if unknown:
        return f"Unknown field(s): {', '.join(unknown)}", errors
    missing = any(errs == [MISSING_FIELD] for errs in errors.values())
    if missing and missing_message:
        return missing_message, errors
    noun = "query parameter" if locations == {"query"} else "field"
    return f"Invalid {noun}(s): {', '.join(sorted(errors))}", errors


def http_exception_response(error: HTTPException) -> Response:
    """Render any HTTPException, including webargs' validation aborts, in our shape."""
    status = error.code or 500
    data: Mapping[str, Any] = getattr(error, "data", None) or {}
    headers: dict[str, str] = dict(data.get("headers") or {})
    errors = data.get("errors")
    message = data.get("message")

    if "messages" in data:
        schema = data.get("schema")
        missing_message = getattr(schema, "MISSING_MESSAGE", None)
        message, errors = describe_validation_error(data["messages"], missing_message)
        status = 400
    valid_methods = getattr(error, "valid_methods", None)
    if status == 405 and valid_methods:
        headers["Allow"] = ", ".join(sorted(valid_methods))
    if status == 429:
        # Retry-After and the RateLimit fields come from the limit's window (api/limits.py).
        message = f"Too many requests: the limit is {error.description}"
    if status >= 500:
        _log_server_error(error)
        message = INTERNAL_ERROR_MESSAGE if status == 500 else (message or error.description)
    elif status != 404 or message:
        current_app.logger.warning("%s error: %s", status, message or error.description)
    return error_response(status, message or error.description or "", errors, headers)


def _log_server_error(error: HTTPException) -> None:
    original = getattr(error, "original_exception", None)
    if original is not None:
        current_app.logger.critical("500 error: %s", type(original).__name__, exc_info=original)
    else:
        current_app.logger.error("%s error: %s", error.code, error.description)


def register_error_handlers(app: Flask) -> None:
    """Route every error class to the single JSON shape."""

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        return http_exception_response(error)

    @app.errorhandler(ConflictError)
    def handle_conflict(error: ConflictError) -> Response:
        current_app.logger.info("409 error: %s", error)
        return error_response(409, str(error))

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        server_error = InternalServerError(original_exception=error)
        return http_exception_response(server_error)

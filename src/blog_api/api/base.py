"""What every view module builds on: our Blueprint (parser, auth and error decorators), the Api
class, the id converter, and `get_or_404`.

A resource both versions serve (posts, to-dos) has one `register(blp, schemas, ...)` function
that declares its views, with their `@blp` decorators in plain sight, on a version's blueprint
and with that version's schemas (a `schemas.common.Schemas`); each version module calls it once:

    posts.register(blp, schemas.posts.V1, api_version="v1")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import flask_smorest
import marshmallow as ma
from flask import Request, Response
from flask_smorest import abort
from flask_smorest.utils import prepare_response
from sqlalchemy import Select, bindparam, select
from webargs.flaskparser import FlaskParser
from werkzeug.routing import IntegerConverter

from blog_api import auth
from blog_api.api import limits
from blog_api.api.idempotency import HEADER_DOC, REPLAYED_DOC, idempotent, user_scope
from blog_api.errors import (
    REQUEST_MUST_BE_JSON,
    http_exception_response,
    reason_phrase,
    renamed_statuses,
    status_name,
)
from blog_api.extensions import db
from blog_api.models.base import MAX_ID
from blog_api.schemas.common import LIST_HEADERS, ErrorSchema

BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
# The headers every response of these statuses carries (auth/tokens.py, api/limits.py).
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": '`Bearer realm="blog-api"` when the request sent no token; with '
            '`, error="invalid_token"` when it sent one that was refused, `, '
            'error="invalid_request"` when its Authorization header is not `Bearer <token>` '
            "(RFC 6750 §3)",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until the limit that was exceeded frees a request",
            "schema": {"type": "integer", "minimum": 1},
        },
        "RateLimit-Policy": {
            "description": "The limits the request was counted against (IETF draft): "
            '`"<name>";q=<requests>;w=<window in seconds>`, comma-separated',
            "schema": {"type": "string"},
        },
        "RateLimit": {
            "description": "What is left of each: "
            '`"<name>";r=<remaining>;t=<seconds until the window starts again>`',
            "schema": {"type": "string"},
        },
    },
}
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M")


# `SELECT <model> WHERE id = :ident`, built once per model.
_BY_ID: dict[type[Any], Select[Any]] = {}


def get_or_404(model: type[M], ident: object) -> M:
    """The row with primary key `ident`, or `404 <Model> not found`.

    A statement built once per model: `Session.get` builds its query on every call (a third of
    a `GET /posts/<id>`); the identity map still answers with the object already loaded.
    """
    statement = _BY_ID.get(model)
    if statement is None:
        statement = _BY_ID[model] = select(model).where(model.id == bindparam("ident"))  # type: ignore[attr-defined]
    instance = db.session.scalars(statement, {"ident": ident}).one_or_none()
    if instance is None:
        abort(404, message=f"{model.__name__} not found")
    return cast(M, instance)


class IdConverter(IntegerConverter):
    """`<id:...>`: a positive id; anything larger than a 32-bit id is simply not found."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


class JsonBodyParser(FlaskParser):
    """webargs parser with our rules: 400 for invalid input, and JSON objects only."""

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req: Request, schema: ma.Schema) -> Any:
        if not req.get_data(cache=True) and not any(f.required for f in schema.fields.values()):
            return {}
        if not req.is_json:
            abort(400, message=REQUEST_MUST_BE_JSON)
        data = req.get_json(silent=True)
        if not isinstance(data, dict):
            abort(400, message=REQUEST_MUST_BE_JSON)
        return data


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with our parser and documented auth and error decorators."""

    ARGUMENTS_PARSER = JsonBodyParser()

    def arguments(
        self, schema: type[ma.Schema] | ma.Schema, *, required: bool | None = None, **kwargs: Any
    ) -> Callable[[F], F]:
        """flask-smorest's `arguments`; a JSON body is documented as optional exactly when the
        parser accepts it empty, that is when none of its fields is required."""
        if required is None:
            instance = schema() if isinstance(schema, type) else schema
            required = kwargs.get("location", "json") != "json" or any(
                field.required for field in instance.fields.values()
            )
        decorator: Callable[[F], F] = super().arguments(schema, required=required, **kwargs)
        return decorator

    def errors(self, *codes: int) -> Callable[[F], F]:
        """Document the error responses a view can give, in the shared error schema."""

        def decorator(view: F) -> F:
            for code in codes:
                view = self.alt_response(code, response=status_name(code))(view)
            return view

        return decorator

    def page(self, query: type[ma.Schema], page: type[ma.Schema]) -> Callable[[F], F]:
        """A paginated list: its filters and page arguments from the query string (`query`), and
        its answer (`page`), with the `Link` header of the next page documented."""

        def decorator(view: F) -> F:
            listed = self.response(200, page, headers=LIST_HEADERS)(view)
            return self.arguments(query, location="query")(listed)

        return decorator

    def public(self, view: F) -> F:
        """Open to anyone: anonymous callers share `ANONYMOUS_RATE_LIMIT` per client address
        (`limits.anonymous_reads`), checked before anything else; documented with its 429."""
        return cast(F, limits.anonymous_reads(self.errors(429)(view)))

    def login_required(self, view: F) -> F:
        """`auth.login_required`, documented as needing a bearer token."""
        view = self.doc(security=[{"bearerAuth": []}])(self.errors(401)(view))
        return auth.login_required(view)

    def admin_required(self, view: F) -> F:
        """`auth.admin_required`, documented as needing an admin's bearer token."""
        view = self.doc(security=[{"bearerAuth": []}])(self.errors(401, 403)(view))
        return auth.admin_required(view)

    def response(self, status_code: int, schema: Any = None, **kwargs: Any) -> Callable[[F], F]:
        """flask-smorest's `response`. The view it returns also carries, as `render_result`,
        the same rendering for a result given rather than returned: an `Idempotency-Key` needs
        the view's answer rendered before the view returns (see `idempotent`)."""
        decorator = super().response(status_code, schema, **kwargs)

        def apply(view: F) -> F:
            rendered: F = decorator(view)
            setattr(rendered, RENDER_RESULT, decorator(_the_result))
            return rendered

        return apply

    def idempotent(
        self, answer: Callable[[Any], Any], scope: Callable[[], str] = user_scope
    ) -> Callable[[F], F]:
        """`idempotency.idempotent`, with the `Idempotency-Key` header and its 409 and 422
        documented; goes between `arguments` and `response`. `answer` is the view's return
        value for the object it created, which the key stores as the response renders it."""

        def decorator(view: F) -> F:
            render_result = getattr(view, RENDER_RESULT)
            documented = self.doc(
                parameters=[HEADER_DOC], responses={201: {"headers": REPLAYED_DOC}}
            )
            view = documented(self.errors(409, 422)(view))
            return idempotent(answer, render_result, scope)(view)

        return decorator


RENDER_RESULT = "render_result"


def _the_result(result: Any) -> Any:
    """A view that returns what it is given: `response` renders it like its view's result."""
    return result


class Api(flask_smorest.Api):
    """flask-smorest's Api, rendering errors in our shape (with `Allow` on 405)."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: Any) -> Response:
        return http_exception_response(error)

    def _register_responses(self) -> None:
        """flask-smorest registers a response per status under Python's name for it; the ones
        Python 3.13 renamed are registered under the names our documents use as well, so that
        the documents are the same whatever Python serves them (`errors.status_name`), and the
        ones that always carry headers (401, 429) are registered again with them."""
        super()._register_responses()
        for status in [*renamed_statuses(), *ERROR_HEADERS]:
            response = {"description": reason_phrase(status), "schema": self.ERROR_SCHEMA}
            if status in ERROR_HEADERS:
                response["headers"] = ERROR_HEADERS[status]
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status_name(status), response, lazy=True)

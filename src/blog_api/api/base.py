"""What every view module builds on: our Blueprint (parser, auth and error decorators, views
whose schemas come from their API version), the Api class, the id converter and `get_or_404`.

A view shared by both versions is a module-level `MethodView` whose methods name their schemas
(`@versioned.response(200, "item")`); each version routes it with its schemas, and the
blueprint routes a subclass of the view that carries them, with the decorators applied:

    blp.route("/posts", schemas=POSTS_V1, api_version="v1")(posts.PostList)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import flask_smorest
import marshmallow as ma
from flask import Request, Response
from flask.views import MethodView
from flask_smorest import abort
from flask_smorest.utils import prepare_response
from sqlalchemy import Select, bindparam, select
from webargs.flaskparser import FlaskParser
from werkzeug.routing import IntegerConverter

from blog_api import auth
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
from blog_api.schemas.common import ErrorSchema

BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
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

    def login_required(self, view: F) -> F:
        """`auth.login_required`, documented as needing a bearer token."""
        view = self.doc(security=[{"bearerAuth": []}])(self.errors(401)(view))
        return auth.login_required(view)

    def admin_required(self, view: F) -> F:
        """`auth.admin_required`, documented as needing an admin's bearer token."""
        view = self.doc(security=[{"bearerAuth": []}])(self.errors(401, 403)(view))
        return auth.admin_required(view)

    def idempotent(self, scope: Callable[[], str] = user_scope) -> Callable[[F], F]:
        """`idempotency.idempotent`, with the `Idempotency-Key` header and its 409 and 422
        documented; goes between `arguments` and `response`."""

        def decorator(view: F) -> F:
            documented = self.doc(
                parameters=[HEADER_DOC], responses={201: {"headers": REPLAYED_DOC}}
            )
            view = documented(self.errors(409, 422)(view))
            return idempotent(scope)(view)

        return decorator

    def route(
        self,
        rule: str,
        *,
        schemas: object | None = None,
        api_version: str | None = None,
        **options: Any,
    ) -> Callable[[Any], Any]:
        """flask-smorest's `route`; a view whose methods carry `versioned` decorators is routed
        as a subclass of its own with them applied, with this version's `schemas` (and
        `api_version`, for a view that needs to know it), so one module-level view serves
        every version:

            blp.route("/posts", schemas=POSTS_V1, api_version="v1")(posts.PostList)
        """
        register = super().route(rule, **options)
        attributes = {
            name: value
            for name, value in (("schemas", schemas), ("api_version", api_version))
            if value is not None
        }

        def decorator(view: Any) -> Any:
            if isinstance(view, type) and issubclass(view, MethodView):
                view = self._bind(view, attributes)
            return register(view)

        return decorator

    def _bind(self, view: type[MethodView], attributes: dict[str, Any]) -> type[MethodView]:
        schemas = attributes.get("schemas", getattr(view, "schemas", None))
        methods: dict[str, Any] = {}
        for method in view.methods or ():
            handler = getattr(view, method.lower())
            steps: list[_Step] = getattr(handler, STEPS, [])
            for step in reversed(steps):
                handler = step.apply(self, schemas, handler)
            if steps:
                methods[method.lower()] = handler
        if not methods and not attributes:
            return view
        namespace = {"__module__": view.__module__, "__doc__": view.__doc__}
        return type(view.__name__, (view,), {**namespace, **attributes, **methods})


class Api(flask_smorest.Api):
    """flask-smorest's Api, rendering errors in our shape (with `Allow` on 405)."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: Any) -> Response:
        return http_exception_response(error)

    def _register_responses(self) -> None:
        """flask-smorest registers a response per status under Python's name for it; the ones
        Python 3.13 renamed are registered under the names our documents use as well, so that
        the documents are the same whatever Python serves them (`errors.status_name`)."""
        super()._register_responses()
        for status in renamed_statuses():
            response = {"description": reason_phrase(status), "schema": self.ERROR_SCHEMA}
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status_name(status), response, lazy=True)


SchemaRef = type[ma.Schema] | str


@dataclass(frozen=True)
class _Step:
    """One blueprint decorator of a versioned view's method, applied when it is routed."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def apply(self, blp: Blueprint, schemas: object, view: Callable[..., Any]) -> Any:
        if self.name == "decorate":
            return self.args[0](view)
        args = [getattr(schemas, arg) if isinstance(arg, str) else arg for arg in self.args]
        decorator = getattr(blp, self.name)
        if self.name in ("login_required", "admin_required"):
            return decorator(view)
        return decorator(*args, **dict(self.kwargs))(view)


class _Versioned:
    """Blueprint decorators recorded on a shared view's method; a schema given by name is
    taken from the routed subclass's `schemas`. Outermost first, as with `@blp...`."""

    @staticmethod
    def _record(step: _Step) -> Callable[[F], F]:
        def record(view: F) -> F:
            steps: list[_Step] = view.__dict__.setdefault(STEPS, [])
            steps.insert(0, step)
            return view

        return record

    def arguments(self, schema: SchemaRef, **kwargs: Any) -> Callable[[F], F]:
        return self._record(_Step("arguments", (schema,), tuple(kwargs.items())))

    def response(self, status: int, schema: SchemaRef, **kwargs: Any) -> Callable[[F], F]:
        return self._record(_Step("response", (status, schema), tuple(kwargs.items())))

    def errors(self, *codes: int) -> Callable[[F], F]:
        return self._record(_Step("errors", codes))

    def decorate(self, decorator: Callable[[Any], Any]) -> Callable[[F], F]:
        """Any other decorator (a rate limit), kept in its place among the others."""
        return self._record(_Step("decorate", (decorator,)))

    def idempotent(self, view: F) -> F:
        """The caller-scoped `Idempotency-Key` (see `Blueprint.idempotent`)."""
        return self._record(_Step("idempotent"))(view)

    def login_required(self, view: F) -> F:
        return self._record(_Step("login_required"))(view)

    def admin_required(self, view: F) -> F:
        return self._record(_Step("admin_required"))(view)


STEPS = "_versioned_steps"
versioned = _Versioned()

"""The HTTP API: one flask-smorest `Api` (and OpenAPI document) per version.

`/api/v1/openapi.json` and `/api/v2/openapi.json` describe each version; Swagger UI for each is at
`/api/v1/docs` and `/api/v2/docs`, served from the flask-swagger-ui wheel, so it works offline.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar, cast

import flask_smorest
import marshmallow as ma
from flask import Flask, Request, Response
from flask_smorest import abort
from flask_swagger_ui import get_swaggerui_blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.routing import IntegerConverter

from blog_api import auth
from blog_api.errors import REQUEST_MUST_BE_JSON, http_exception_response
from blog_api.extensions import db
from blog_api.models.base import MAX_ID
from blog_api.schemas.common import ErrorSchema

BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M")


def get_or_404(model: type[M], ident: object) -> M:
    """The row with primary key `ident`, or `404 <Model> not found`."""
    instance = db.session.get(model, ident)
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
                view = self.alt_response(code, response=HTTPStatus(code).name)(view)
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


class Api(flask_smorest.Api):
    """flask-smorest's Api, rendering errors in our shape (with `Allow` on 405)."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: Any) -> Response:
        return http_exception_response(error)


def _create_api(app: Flask, version: str) -> Api:
    api = Api(app, config_prefix=f"{version.upper()}_")
    api.spec.components.security_scheme("bearerAuth", BEARER_SCHEME)
    api.register_converter(
        IdConverter, lambda _converter: {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    )
    app.register_blueprint(
        get_swaggerui_blueprint(
            f"/api/{version}/docs",
            f"/api/{version}/openapi.json",
            config={
                "app_name": f"Blog API {version}",
                "validatorUrl": None,
                "persistAuthorization": True,
            },
            blueprint_name=f"swagger_ui_{version}",
        )
    )
    return api


def register_apis(app: Flask) -> None:
    """Create both versioned APIs and register every resource blueprint on them."""
    from blog_api.api import root, v1, v2

    app.url_map.converters["id"] = IdConverter
    api_v1 = _create_api(app, "v1")
    api_v2 = _create_api(app, "v2")
    for blueprint in v1.BLUEPRINTS:
        api_v1.register_blueprint(blueprint)
    for blueprint in v2.BLUEPRINTS:
        api_v2.register_blueprint(blueprint)
    app.register_blueprint(root.blp)

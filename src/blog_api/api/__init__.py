"""Stage 1 of a post's path, the HTTP API: parse, authorise, call one service, shape the answer.
One flask-smorest `Api` (and OpenAPI document) per version.

`/api/v1/openapi.json` and `/api/v2/openapi.json` describe each version; Swagger UI for each is at
`/api/v1/docs` and `/api/v2/docs`, served from the flask-swagger-ui wheel, so it works offline.
The building blocks of every view module are in `api/base.py`.
"""

from __future__ import annotations

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

from blog_api.api import limits, root, v1, v2
from blog_api.api.base import BEARER_SCHEME, MAX_ID, Api, IdConverter


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
                "persistAuthorization": False,
            },
            blueprint_name=f"swagger_ui_{version}",
        )
    )
    return api


def register_apis(app: Flask) -> None:
    """Create both versioned APIs and register every resource blueprint on them."""
    app.url_map.converters["id"] = IdConverter
    api_v1 = _create_api(app, "v1")
    api_v2 = _create_api(app, "v2")
    for blueprint in v1.BLUEPRINTS:
        api_v1.register_blueprint(blueprint)
    for blueprint in v2.BLUEPRINTS:
        api_v2.register_blueprint(blueprint)
    app.register_blueprint(root.blp)
    app.after_request(limits.rate_limit_fields)

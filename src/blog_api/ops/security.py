"""Security headers on every response, and CORS for the configured origins only."""

from __future__ import annotations

from flask import Flask, Response, request

from blog_api.extensions import cors

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI needs its own scripts and styles (and an inline bootstrap script), all same-origin.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def _is_docs_page(path: str) -> bool:
    return path.startswith(("/api/v1/docs", "/api/v2/docs"))


def register_security(app: Flask) -> None:
    # Bearer tokens travel in headers, so credentialed CORS is never needed; only listed
    # origins are echoed back, never a reflected one.
    cors.init_app(
        app,
        resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}},
        supports_credentials=False,
        expose_headers=[
            "Link",
            "Location",
            "RateLimit",
            "RateLimit-Policy",
            "Retry-After",
            "X-Request-ID",
        ],
        # flask-cors adds `Vary: Origin` only when several origins are listed; we add it below.
        vary_header=False,
    )

    @app.after_request
    def set_security_headers(response: Response) -> Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Content-Security-Policy"] = DOCS_CSP if _is_docs_page(request.path) else API_CSP
        if not _is_docs_page(request.path):
            headers["Cache-Control"] = "no-store"
        if app.config["CORS_ORIGINS"]:
            # Whether Access-Control-Allow-Origin is present depends on the Origin header, so a
            # shared cache must not serve one origin's answer to another (even with one origin).
            response.vary.add("Origin")
        if app.config["ENV_NAME"] == "production":
            headers["Strict-Transport-Security"] = HSTS
        return response

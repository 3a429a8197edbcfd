"""S25-S27: CORS only for configured origins, security headers on every status, JSON 404/405 for
unknown routes and methods, on both API versions.

SPEC §5: `Cache-Control: no-store`, `X-Content-Type-Options`, `X-Frame-Options`, a strict CSP;
HSTS only in production (tests run the testing configuration, so none is sent here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from attacks import VALID_POST, on_both_versions
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from blog_api.extensions import limiter
from support import Account
from support.resources import huge_body

ALLOWED_ORIGIN = "https://app.example"
VERSIONS = ("v1", "v2")


@pytest.fixture
def cors_client(make_security_app: Callable[..., Flask]) -> FlaskClient:
    return make_security_app(CORS_ORIGINS=[ALLOWED_ORIGIN]).test_client()


@pytest.mark.scenario("S25")
@pytest.mark.parametrize("version", VERSIONS)
def test_cors_echoes_a_configured_origin(cors_client: FlaskClient, version: str) -> None:
    response = cors_client.get(f"/api/{version}/posts", headers={"Origin": ALLOWED_ORIGIN})

    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in response.vary
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.scenario("S25")
@pytest.mark.parametrize("version", VERSIONS)
def test_cors_preflight_for_a_configured_origin(cors_client: FlaskClient, version: str) -> None:
    response = cors_client.options(
        f"/api/{version}/posts",
        headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"},
    )

    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.scenario("S25")
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://app.example.evil"])
@pytest.mark.parametrize("method", ["get", "options"])
def test_cors_ignores_other_origins(
    cors_client: FlaskClient, version: str, origin: str, method: str
) -> None:
    response = getattr(cors_client, method)(
        f"/api/{version}/posts",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )

    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.vary


@pytest.mark.scenario("S25")
def test_cors_is_off_without_configured_origins(client: FlaskClient) -> None:
    for version in VERSIONS:
        response = client.get(f"/api/{version}/posts", headers={"Origin": ALLOWED_ORIGIN})

        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.fixture
def limited_app(make_security_app: Callable[..., Flask]) -> Flask:
    """Posting twice in a minute is one too many; `/api/test/crash` fails like a buggy view."""
    app = make_security_app(PROPAGATE_EXCEPTIONS=False, POST_RATE_LIMIT="1 per minute")

    def crash() -> str:
        raise RuntimeError("db password is hunter2")

    app.add_url_rule("/api/test/crash", "crash", crash)
    return app


def response_with_status(client: FlaskClient, version: str, status: int, alice: Account) -> Any:
    url = f"/api/{version}/posts"
    requests: dict[int, Callable[[], Any]] = {
        200: lambda: client.get(url),
        201: lambda: client.post(url, json=VALID_POST, headers=alice.headers),
        400: lambda: client.post(url, data="x", headers=alice.headers),
        401: lambda: client.post(url, json=VALID_POST),
        404: lambda: client.get(f"{url}/999999"),
        405: lambda: client.patch(url),
        413: lambda: client.post(url, headers=alice.headers, **huge_body()),
        429: lambda: client.post(url, json=VALID_POST, headers=alice.headers),
        500: lambda: client.get("/api/test/crash"),
    }
    return requests[status]()


SECURITY_HEADERS = (
    "Cache-Control",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Content-Type",
)


@pytest.mark.scenario("S26", "S29")
@pytest.mark.parametrize("status", [200, 201, 400, 401, 404, 405, 413, 429, 500])
def test_security_headers_are_on_every_status(
    limited_app: Flask, alice: Account, status: int
) -> None:
    headers_by_version = []
    for version in VERSIONS:
        client = limited_app.test_client()
        if status == 429:
            response_with_status(client, version, 201, alice)
        response = response_with_status(client, version, status, alice)

        assert response.status_code == status
        assert response.mimetype == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp
        assert "Strict-Transport-Security" not in response.headers
        assert "Server" not in response.headers
        text = response.get_data(as_text=True)
        assert "Traceback" not in text
        assert "hunter2" not in text
        headers_by_version.append({name: response.headers[name] for name in SECURITY_HEADERS})
        limiter.reset()  # the next version starts with a fresh post budget

    assert headers_by_version[0] == headers_by_version[1]  # S29


@pytest.mark.scenario("S27")
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nothing-here"), ("POST", "/posts/1/nothing"), ("DELETE", "/todos/abc")],
)
def test_unknown_route_is_a_json_404(
    client: FlaskClient, snapshot: Callable[[], Snapshot], method: str, path: str
) -> None:
    before = snapshot()

    response = on_both_versions(lambda version: client.open(f"/api/{version}{path}", method=method))

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert set(response.get_json()) == {"error", "message"}
    assert response.get_json()["error"] == "Not Found"
    assert snapshot() == before


@pytest.mark.scenario("S27")
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/posts", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("PUT", "/todos", {"DELETE", "GET", "HEAD", "OPTIONS", "POST"}),
        ("POST", "/posts/1", {"DELETE", "GET", "HEAD", "OPTIONS", "PUT"}),
    ],
)
def test_wrong_method_is_a_json_405_with_allow(
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    method: str,
    path: str,
    allowed: set[str],
) -> None:
    before = snapshot()

    response = on_both_versions(
        lambda version: client.open(
            f"/api/{version}{path}", method=method, json=VALID_POST, headers=alice.headers
        )
    )

    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert set(response.get_json()) == {"error", "message"}
    assert response.get_json()["error"] == "Method Not Allowed"
    assert set(response.headers["Allow"].split(", ")) == allowed
    assert client.delete("/api/v1/me", headers=alice.headers).status_code == 405
    assert snapshot() == before

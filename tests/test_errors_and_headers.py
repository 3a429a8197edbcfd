"""The HTTP conventions of SPEC §4.1 and §5: one JSON error shape for every status, bad bodies on
every write endpoint, security headers, CORS, request ids and safe logging."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import UnsupportedMediaType

from support import PASSWORD, Account, assert_error, table_rows
from support.resources import NOT_A_JSON_OBJECT, REQUEST_MUST_BE_JSON, TOO_LARGE_MESSAGE, huge_body

INTERNAL_ERROR = "Something went wrong on our end"
SECRET_DETAIL = "db password is hunter2"

# Every write endpoint of SPEC §4.2, with a valid body, as (method, url, headers, body).
WriteRequest = tuple[str, str, dict[str, str], dict[str, Any]]
WRITE_ENDPOINTS = ["register", "login", "refresh", "logout", "change-password", "change-role"]


@pytest.fixture
def write_request(alice: Account, admin: Account) -> Callable[[str], WriteRequest]:
    def build(endpoint: str) -> WriteRequest:
        return {
            "register": ("POST", "/api/v1/users", {}, {"username": "carol", "password": PASSWORD}),
            "login": ("POST", "/api/v1/login", {}, {"username": "alice", "password": PASSWORD}),
            "refresh": ("POST", "/api/v1/refresh", {}, {"refresh_token": alice.refresh_token}),
            "logout": (
                "POST",
                "/api/v1/logout",
                alice.headers,
                {"refresh_token": alice.refresh_token},
            ),
            "change-password": (
                "PUT",
                f"/api/v1/users/{alice.id}/password",
                alice.headers,
                {"current_password": PASSWORD, "new_password": "a new passphrase"},
            ),
            "change-role": (
                "PUT",
                f"/api/v1/users/{alice.id}/role",
                admin.headers,
                {"role": "admin"},
            ),
        }[endpoint]

    return build


@pytest.fixture
def unchanged(app: Flask, row_counts: Callable[[], dict[str, int]]) -> Callable[[], None]:
    """Call the returned function to assert that no table and no user row changed since setup."""
    before = (row_counts(), table_rows(app, "users"), table_rows(app, "token_blocklist"))

    def check() -> None:
        after = (row_counts(), table_rows(app, "users"), table_rows(app, "token_blocklist"))
        assert after == before

    return check


def console_handler(app: Flask) -> logging.StreamHandler[Any]:
    """The app's own console handler (pytest adds capture handlers of its own beside it)."""
    (console,) = [h for h in app.logger.handlers if getattr(h, "blog_api", False)]
    assert isinstance(console, logging.StreamHandler)
    return console


@pytest.fixture
def log_output(app: Flask) -> Iterator[io.StringIO]:
    """The formatted lines the app's console handler writes, as an operator would read them."""
    console = console_handler(app)
    stream = io.StringIO()
    previous = console.setStream(stream)
    yield stream
    console.setStream(previous)


@pytest.fixture
def faulty_app(make_app: Callable[..., Flask]) -> Flask:
    """An app with throwaway routes that fail the ways a real view might."""
    app = make_app(PROPAGATE_EXCEPTIONS=False, REGISTER_RATE_LIMIT="1 per minute")

    def crash() -> str:
        raise RuntimeError(SECRET_DETAIL)

    def unsupported() -> str:
        raise UnsupportedMediaType("Send JSON, please")

    app.add_url_rule("/api/test/crash", "crash", crash)
    app.add_url_rule("/api/test/unsupported", "unsupported", unsupported)
    return app


# --- bad bodies on every write endpoint ----------------------------------------------------------


NOT_JSON_BODIES = [
    *NOT_A_JSON_OBJECT,
    pytest.param(
        {"data": b'{"a": "\xff"}', "content_type": "application/json"},
        "Malformed JSON body: invalid utf-8 at byte 7",
        id="not-utf8",
    ),
    pytest.param({"json": 42}, REQUEST_MUST_BE_JSON, id="json-number"),
]


@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
@pytest.mark.parametrize(("body", "message"), NOT_JSON_BODIES)
def test_write_endpoints_reject_bodies_that_are_not_json_objects(
    client: FlaskClient,
    write_request: Callable[[str], WriteRequest],
    unchanged: Callable[[], None],
    endpoint: str,
    body: dict[str, Any],
    message: str,
) -> None:
    method, url, headers, _ = write_request(endpoint)

    response = client.open(url, method=method, headers=headers, **body)

    assert_error(response, 400, message)
    unchanged()


def test_malformed_json_is_400_with_where_the_parser_stopped(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    """It was `400 Request must be JSON`, which sent the client looking at its headers; now the
    parser's own words and its position, line and column as an editor counts them."""
    before = row_counts()

    response = client.post(
        "/api/v1/posts",
        data='{"title": "x",\n "content": "y" "z"}',
        content_type="application/json",
        headers=alice.headers,
    )

    assert_error(
        response, 400, "Malformed JSON body: Expecting ',' delimiter at line 2, column 17 (char 31)"
    )
    assert row_counts() == before


@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
def test_write_endpoints_reject_unknown_fields(
    client: FlaskClient,
    write_request: Callable[[str], WriteRequest],
    unchanged: Callable[[], None],
    endpoint: str,
) -> None:
    method, url, headers, body = write_request(endpoint)

    response = client.open(url, method=method, headers=headers, json={**body, "extra": True})

    assert_error(response, 400, "Unknown field(s): extra", {"extra"})
    unchanged()


@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
def test_write_endpoints_reject_oversize_bodies_with_413(
    client: FlaskClient,
    write_request: Callable[[str], WriteRequest],
    unchanged: Callable[[], None],
    endpoint: str,
) -> None:
    method, url, headers, _ = write_request(endpoint)

    response = client.open(url, method=method, headers=headers, **huge_body())

    assert_error(response, 413, TOO_LARGE_MESSAGE)
    unchanged()


def test_body_size_limit_is_configurable(make_app: Callable[..., Flask]) -> None:
    client = make_app(MAX_CONTENT_LENGTH=100).test_client()

    response = client.post("/api/v1/login", json={"username": "a" * 100, "password": PASSWORD})

    assert_error(response, 413, TOO_LARGE_MESSAGE)


# --- error statuses ------------------------------------------------------------------------------


def test_wrong_method_on_a_collection_lists_its_methods(client: FlaskClient) -> None:
    response = client.patch("/api/v1/users", json={})

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}


def test_trailing_slash_answers_like_the_plain_path(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    plain = client.get("/api/v1/users")
    slashed = client.get("/api/v1/users/")

    assert slashed.status_code == 200
    assert slashed.json == plain.json
    assert "Location" not in slashed.headers
    assert client.get("/api/v1/me/", headers=alice.headers).json["username"] == "alice"
    created = client.post("/api/v1/users/", json={"username": "carol", "password": PASSWORD})
    assert created.status_code == 201
    login = client.post("/api/v1/login/", json={"username": "carol", "password": PASSWORD})
    assert login.status_code == 200


def test_415_raised_by_a_view_is_json(faulty_app: Flask) -> None:
    response = faulty_app.test_client().get("/api/test/unsupported")

    assert_error(response, 415, "Send JSON, please")


def test_unexpected_exception_is_a_json_500_without_details(
    faulty_app: Flask, log_output: io.StringIO
) -> None:
    response = faulty_app.test_client().get("/api/test/crash", headers={"X-Request-ID": "crash-1"})

    assert_error(response, 500, INTERNAL_ERROR)
    text = response.get_data(as_text=True)
    assert SECRET_DETAIL not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    # The details go to the log instead, under the request id.
    logged = log_output.getvalue()
    assert "[request_id=crash-1] 500 error: RuntimeError" in logged
    assert SECRET_DETAIL in logged


def test_api_root_returns_the_welcome_message_and_configured_version(
    make_app: Callable[..., Flask],
) -> None:
    response = make_app(API_VERSION="9.9").test_client().get("/api")

    assert response.status_code == 200
    assert response.json == {"message": "Welcome to Flask API!", "version": "9.9"}


# --- security headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_docs_pages_are_served_with_framing_forbidden(client: FlaskClient, version: str) -> None:
    response = client.get(f"/api/{version}/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert f"/api/{version}/openapi.json" in response.get_data(as_text=True)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.scenario("S47")
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_swagger_ui_does_not_keep_bearer_tokens_in_local_storage(
    client: FlaskClient, version: str
) -> None:
    """S47: Swagger UI was served with `persistAuthorization: true`, which writes the token
    typed into "Authorize" to the browser's localStorage, where any script of the origin and
    anyone at the machine later can read it; now it lives only as long as the page."""
    page = client.get(f"/api/{version}/docs").get_data(as_text=True)

    (user_config,) = re.findall(r"var user_config = (\{.*?\});", page)

    assert json.loads(user_config)["persistAuthorization"] is False
    assert "localStorage" not in page


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_openapi_documents_are_served(client: FlaskClient, version: str) -> None:
    response = client.get(f"/api/{version}/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json["openapi"].startswith("3.")
    assert response.json["info"]["version"] == version
    assert "bearerAuth" in response.json["components"]["securitySchemes"]


def test_openapi_v1_documents_the_user_routes(client: FlaskClient) -> None:
    paths = client.get("/api/v1/openapi.json").json["paths"]

    for path in ("/api/v1/users", "/api/v1/login", "/api/v1/refresh", "/api/v1/logout"):
        assert path in paths


# --- request ids and logging ---------------------------------------------------------------------


def test_valid_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.get("/api", headers={"X-Request-ID": "abc-123.DEF_4"})

    assert response.headers["X-Request-ID"] == "abc-123.DEF_4"


@pytest.mark.parametrize("incoming", [None, "has spaces", "x" * 65, "quote\"'", "<script>"])
def test_request_id_is_generated_when_absent_or_invalid(
    client: FlaskClient, incoming: str | None
) -> None:
    headers = {"X-Request-ID": incoming} if incoming is not None else {}

    first = client.get("/api", headers=headers).headers["X-Request-ID"]
    second = client.get("/api", headers=headers).headers["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


@pytest.mark.scenario("S48")
@pytest.mark.parametrize("incoming", ["abc-123\n", "abc-123\r\n"])
def test_a_request_id_with_a_line_break_is_replaced(client: FlaskClient, incoming: str) -> None:
    """S48: the id was checked with `re.match` and `$`, which admits a final newline; echoing
    it in the response header then raised (a 500). The environ carries it as a server could."""
    response = client.get("/api", environ_base={"HTTP_X_REQUEST_ID": incoming})

    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_request_id_is_on_error_responses(client: FlaskClient) -> None:
    response = client.get("/api/v1/me", headers={"X-Request-ID": "req-401"})

    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "req-401"


def test_log_lines_carry_request_id_and_url(
    client: FlaskClient, alice: Account, log_output: io.StringIO
) -> None:
    client.post(
        "/api/v1/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Request-ID": "login-42"},
    )

    (line,) = [line for line in log_output.getvalue().splitlines() if "logged in" in line]
    assert "[request_id=login-42] User logged in: alice" in line
    assert line.endswith("[http://localhost/api/v1/login]")


def test_line_breaks_in_logged_usernames_are_escaped(
    client: FlaskClient, log_output: io.StringIO
) -> None:
    forged = "mallory\r\n2024-01-01 00:00:00,000 INFO [request_id=-] User logged in: admin [x]"

    client.post("/api/v1/login", json={"username": forged, "password": "whatever1"})

    lines = log_output.getvalue().splitlines()
    (line,) = [line for line in lines if "Failed login attempt" in line]
    assert "mallory\\r\\n2024-01-01" in line
    assert not any("User logged in: admin" in line and "mallory" not in line for line in lines)


def test_creating_the_app_twice_does_not_duplicate_log_handlers(
    make_app: Callable[..., Flask],
) -> None:
    first = make_app()
    second = make_app()
    stream = io.StringIO()
    console = console_handler(second)
    previous = console.setStream(stream)

    with second.test_request_context("/api"):
        second.logger.warning("one line only")
    console.setStream(previous)

    assert first.logger is second.logger
    assert stream.getvalue().count("one line only") == 1

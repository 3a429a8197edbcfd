"""S32-S33: input that cannot be read is a JSON 400 (or 413, or 401 for a token) decided before
any rate-limit key is computed; it writes nothing and leaves the limiter on its storage.

S32: a deeply nested or oversized body used to raise inside the login key function, which
Flask-Limiter took for a storage outage: every limit moved to per-process memory. Across two
gunicorn workers: tests/security/test_limiter_bypass_gunicorn.py (integration tier).
S33: deep nesting, lone surrogates and a 25-digit `sub` were unhandled 500s.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import redis
from attacks import VALID_POST, bearer, claims_of, on_both_versions
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from blog_api.api import limits
from blog_api.api.bodies import INVALID_UNICODE, JSON_TOO_DEEP, MAX_JSON_DEPTH
from support import PASSWORD, Account, assert_error, assert_too_many_requests
from support.resources import TOO_LARGE_MESSAGE, huge_body

JSON = "application/json"
DEEPEST_ARRAY = "[" * 2000 + "]" * 2000  # beyond the JSON decoder's own recursion limit
JUST_TOO_DEEP = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH  # in an object: one level too many
LONE_SURROGATE = '"\\ud800"'  # JSON text: parses to a string no encoder can write

# Bodies no key function, schema or view may ever see: (raw JSON text, status, message).
UNREADABLE_BODIES = [
    pytest.param(DEEPEST_ARRAY, 400, JSON_TOO_DEEP, id="2000-deep-array"),
    pytest.param(f'{{"username": {DEEPEST_ARRAY}}}', 400, JSON_TOO_DEEP, id="2000-deep-field"),
    pytest.param(f'{{"username": {JUST_TOO_DEEP}}}', 400, JSON_TOO_DEEP, id="33-deep-field"),
    pytest.param(
        f'{{"username": {LONE_SURROGATE}, "password": "x"}}', 400, INVALID_UNICODE, id="surrogate"
    ),
    pytest.param(f'{{{LONE_SURROGATE}: "x"}}', 400, INVALID_UNICODE, id="surrogate-key"),
    pytest.param(
        b'{"username": "\xff\xfe"}',
        400,
        "Malformed JSON body: invalid utf-8 at byte 14",
        id="invalid-utf-8",
    ),
]


def post_raw(client: FlaskClient, url: str, body: str | bytes, **kwargs: Any) -> Any:
    return client.post(url, data=body, content_type=JSON, **kwargs)


@pytest.fixture
def redis_app(
    make_security_app: Callable[..., Flask], redis_url: str, alice: Account
) -> tuple[Flask, redis.Redis, str]:
    """An app counting a login limit of 3 per minute in the machine's Redis, under a prefix
    of its own; with the Redis client to look at what it stored. Built after `alice`, whose
    app binds the process-wide limiter to its own storage."""
    prefix = f"s32-{uuid.uuid4().hex}"
    app = make_security_app(
        LOGIN_RATE_LIMIT="3 per minute",
        REGISTER_RATE_LIMIT="3 per minute",
        RATELIMIT_STORAGE_URI=redis_url,
        RATELIMIT_KEY_PREFIX=prefix,
    )
    return app, redis.Redis.from_url(redis_url), prefix


def fallbacks_in_metrics(client: FlaskClient) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    (line,) = [
        line
        for line in text.splitlines()
        if line.startswith("blog_api_rate_limit_storage_fallbacks_total ")
    ]
    return float(line.split()[1])


@pytest.mark.scenario("S33")
@pytest.mark.parametrize(("body", "status", "message"), UNREADABLE_BODIES)
@pytest.mark.parametrize("url", ["/api/v1/login", "/api/v1/users", "/api/v1/refresh"])
def test_unreadable_body_on_an_open_route_is_400_and_writes_nothing(
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    url: str,
    body: str | bytes,
    status: int,
    message: str,
) -> None:
    before = snapshot()

    response = post_raw(client, url, body)

    assert_error(response, status, message)
    assert snapshot() == before


@pytest.mark.scenario("S33")
@pytest.mark.parametrize(("body", "status", "message"), UNREADABLE_BODIES)
def test_unreadable_body_on_post_creation_is_400_and_writes_nothing(
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    body: str | bytes,
    status: int,
    message: str,
) -> None:
    before = snapshot()

    response = on_both_versions(
        lambda version: post_raw(client, f"/api/{version}/posts", body, headers=alice.headers)
    )

    assert_error(response, status, message)
    assert snapshot() == before


@pytest.mark.scenario("S33")
@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/login", '{"username": "ab\\ud800cd", "password": "a password"}'),
        ("/api/v1/login", '{"username": "alice", "password": "ab\\ud800cd"}'),
        ("/api/v1/users", '{"username": "ab\\ud800cd", "password": "a long password"}'),
        ("/api/v1/users", '{"username": "carol", "password": "a long \\ud800 password"}'),
        ("/api/v1/refresh", '{"refresh_token": "ab\\ud800cd"}'),
    ],
    ids=["login-username", "login-password", "users-username", "users-password", "refresh"],
)
def test_lone_surrogate_in_a_field_is_400_and_writes_nothing(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot], url: str, body: str
) -> None:
    before = snapshot()

    response = post_raw(client, url, body)

    assert_error(response, 400, INVALID_UNICODE)
    assert snapshot() == before


@pytest.mark.scenario("S33")
def test_lone_surrogate_in_a_post_title_is_400_and_writes_nothing(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()
    body = '{"title": "Hello \\udfff", "content": "Some content"}'

    response = on_both_versions(
        lambda version: post_raw(client, f"/api/{version}/posts", body, headers=alice.headers)
    )

    assert_error(response, 400, INVALID_UNICODE)
    assert snapshot() == before


@pytest.mark.scenario("S33")
def test_nesting_up_to_the_limit_is_read_as_usual(client: FlaskClient, alice: Account) -> None:
    """The control: a body nested exactly MAX_JSON_DEPTH levels is read, and the schema
    rejects the field as usual."""
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)

    response = post_raw(client, "/api/v1/login", f'{{"username": {nested}, "password": "x"}}')

    assert_error(response, 400, "Invalid field(s): username", {"username"})


@pytest.mark.scenario("S33")
def test_token_whose_sub_has_25_digits_is_401_and_writes_nothing(
    app: Flask, client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    claims = {**claims_of(app, alice.access_token), "sub": "1" * 25}
    token = jwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(f"/api/{version}/posts", json=VALID_POST, headers=bearer(token))
    )
    me = client.get("/api/v1/me", headers=bearer(token))

    assert_error(response, 401, "Invalid token: user not found")
    assert_error(me, 401, "Invalid token: user not found")
    assert snapshot() == before


@pytest.mark.scenario("S33")
def test_body_over_the_size_limit_on_login_is_413(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()

    response = client.post("/api/v1/login", **huge_body())

    assert_error(response, 413, TOO_LARGE_MESSAGE)
    assert snapshot() == before


@pytest.mark.scenario("S32")
def test_unreadable_bodies_leave_every_limit_in_redis(
    redis_app: tuple[Flask, redis.Redis, str], alice: Account
) -> None:
    """The old bypass: two such requests moved every limit to memory; 25 guesses then gave
    18 x 401 instead of 10. Here every attempt is still counted in Redis."""
    app, storage, prefix = redis_app
    client = app.test_client()
    for body in (DEEPEST_ARRAY, f'{{"username": {LONE_SURROGATE}}}', b'{"\xff": 1}'):
        assert post_raw(client, "/api/v1/login", body).status_code == 400
        assert post_raw(client, "/api/v1/users", body).status_code == 400
    assert client.post("/api/v1/login", **huge_body()).status_code == 413

    guesses = [
        client.post("/api/v1/login", json={"username": "alice", "password": "wrong password"})
        for _ in range(3)
    ]
    right_password = client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})

    assert [response.status_code for response in guesses] == [401] * 3
    assert_too_many_requests(right_password, "3 per 1 minute")
    assert storage.keys(f"*{prefix}*"), "the attempts were not counted in Redis"
    assert fallbacks_in_metrics(client) == 0


@pytest.mark.scenario("S32")
def test_key_functions_answer_for_any_request(app: Flask) -> None:
    """Even a body that got past the checks gives a key, never an exception."""
    bodies: list[dict[str, Any]] = [
        {"data": DEEPEST_ARRAY, "content_type": JSON},
        {"data": f'{{"username": {LONE_SURROGATE}}}', "content_type": JSON},
        {"data": b'{"username": "\xff"}', "content_type": JSON},
        {"data": "x" * (app.config["MAX_CONTENT_LENGTH"] + 1), "content_type": JSON},
        {"json": {"username": "\ud800" * 3}},
        {"json": {"username": "u" * 100_000}},
        {"json": ["username"]},
        {},
    ]
    for body in bodies:
        with app.test_request_context("/api/v1/login", method="POST", **body):
            keys = [limits.login_username(), limits.client_address()]
            keys.append(limits.authenticated_user())  # no token in this request at all
        assert all(isinstance(key, str) and key.isascii() and len(key) < 100 for key in keys)


@pytest.mark.scenario("S32")
def test_a_failing_key_function_gives_a_fixed_key_and_logs(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    @limits.never_raises
    def broken_key() -> str:
        raise RecursionError("too deep")

    with app.test_request_context("/"), caplog.at_level(logging.ERROR):
        assert broken_key() == "broken_key:unreadable"
    assert "Rate-limit key broken_key failed" in caplog.text


@pytest.mark.scenario("S32")
def test_a_real_storage_outage_is_logged_and_counted_in_metrics(
    make_security_app: Callable[..., Flask], alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_security_app(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1").test_client()

    with caplog.at_level(logging.ERROR):
        login = client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})

    assert login.status_code == 200
    assert "Rate-limit storage failed" in caplog.text
    assert fallbacks_in_metrics(client) == 1

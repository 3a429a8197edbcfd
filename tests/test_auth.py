"""Login, token refresh and logout (SPEC §4.2). Refused tokens: tests/security (S6-S15)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from support import PASSWORD, Account, assert_error
from support.resources import invalid

ACCESS_LIFETIME_LIMIT = 15 * 60


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(app: Flask, token: str) -> dict[str, Any]:
    return jwt.decode(token, app.config["JWT_SECRET_KEY"], algorithms=["HS256"])


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/login", json={"username": username, "password": password})


# --- login ---------------------------------------------------------------------------------------


def test_login_returns_a_bearer_token_pair(app: Flask, client: FlaskClient, alice: Account) -> None:
    response = login(client, "alice")

    assert response.status_code == 200
    body = response.json
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == int(app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    assert client.get("/api/v1/me", headers=bearer(body["access_token"])).json["id"] == alice.id


def test_admin_tokens_carry_the_admin_role(app: Flask, admin: Account) -> None:
    assert claims_of(app, admin.access_token)["role"] == "admin"


def test_login_with_a_nul_byte_in_the_username_is_invalid_credentials(
    client: FlaskClient, alice: Account
) -> None:
    assert_error(login(client, "ali\x00ce"), 401, "Invalid credentials")


@pytest.mark.parametrize(
    ("body", "message", "fields"),
    [
        pytest.param({}, "Missing username or password", {"username", "password"}, id="empty"),
        pytest.param({"username": "alice"}, "Missing username or password", {"password"}),
        pytest.param({"password": PASSWORD}, "Missing username or password", {"username"}),
        invalid({"username": 42, "password": PASSWORD}, "username"),
        invalid({"username": "alice", "password": ["x"]}, "password"),
        invalid({"username": None, "password": PASSWORD}, "username"),
        invalid({"username": "a" * 1025, "password": PASSWORD}, "username", id="username-too-long"),
        invalid({"username": "alice", "password": "p" * 1025}, "password", id="password-too-long"),
    ],
)
def test_login_rejects_invalid_bodies(
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    body: dict[str, Any],
    message: str,
    fields: set[str],
) -> None:
    before = row_counts()

    assert_error(client.post("/api/v1/login", json=body), 400, message, fields)
    assert row_counts() == before


# --- token checks on protected routes ------------------------------------------------------------


def test_protected_route_without_token_is_401(client: FlaskClient) -> None:
    response = client.get("/api/v1/me")

    assert_error(response, 401, "Missing token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_refresh_token_is_401(
    make_app: Callable[..., Flask], client: FlaskClient, alice: Account
) -> None:
    short_lived = make_app(JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=-1))
    expired = login(short_lived.test_client(), "alice").json["refresh_token"]

    response = client.post("/api/v1/refresh", json={"refresh_token": expired})

    assert_error(response, 401, "Token has expired")


# --- refresh -------------------------------------------------------------------------------------


def test_refresh_returns_a_new_working_token_pair(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    response = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})

    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"] != alice.refresh_token
    assert claims_of(app, body["access_token"])["sub"] == str(alice.id)
    assert client.get("/api/v1/me", headers=bearer(body["access_token"])).status_code == 200
    again = client.post("/api/v1/refresh", json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 200


def test_refresh_token_cannot_be_used_twice(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    assert (
        client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token}).status_code
        == 200
    )
    before = row_counts()

    second = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})

    assert_error(second, 401, "Token has been revoked")
    assert row_counts() == before


def test_refresh_token_in_the_authorization_header_is_not_enough(
    client: FlaskClient, alice: Account
) -> None:
    response = client.post("/api/v1/refresh", json={}, headers=bearer(alice.refresh_token))

    assert_error(response, 400, "Missing refresh token", {"refresh_token"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "Missing refresh token", id="empty"),
        pytest.param({"refresh_token": 12}, "Invalid field(s): refresh_token", id="number"),
        pytest.param({"refresh_token": None}, "Invalid field(s): refresh_token", id="null"),
        pytest.param(
            {"refresh_token": "x" * 4097}, "Invalid field(s): refresh_token", id="too-long"
        ),
    ],
)
def test_refresh_rejects_invalid_bodies(
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    body: dict[str, Any],
    message: str,
) -> None:
    before = row_counts()

    assert_error(client.post("/api/v1/refresh", json=body), 400, message, {"refresh_token"})
    assert row_counts() == before


def test_refresh_token_spent_concurrently_is_401_not_500(
    client: FlaskClient,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
    row_counts: Callable[[], dict[str, int]],
) -> None:
    """Two requests with one refresh token can both pass the blocklist check; the unique `jti`
    lets only one of them spend it."""
    first = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
    assert first.status_code == 200
    monkeypatch.setattr("blog_api.auth.tokens.is_token_revoked", lambda _payload: False)
    before = row_counts()

    response = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})

    assert_error(response, 401, "Token has been revoked")
    assert row_counts() == before


def test_refresh_with_a_garbage_token_is_401(
    client: FlaskClient, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    response = client.post("/api/v1/refresh", json={"refresh_token": "garbage"})

    assert response.status_code == 401
    assert response.json["message"].startswith("Invalid token")
    assert row_counts() == before


# --- logout --------------------------------------------------------------------------------------


def test_logout_revokes_the_access_token(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    response = client.post("/api/v1/logout", headers=alice.headers)

    assert response.status_code == 200
    assert response.json == {"message": "Successfully logged out"}
    assert row_counts()["token_blocklist"] == before["token_blocklist"] + 1
    assert_error(client.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked")
    # Without the refresh token in the body, the refresh token stays valid.
    refresh = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
    assert refresh.status_code == 200


def test_logout_revokes_the_refresh_token_given_in_the_body(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    response = client.post(
        "/api/v1/logout", headers=alice.headers, json={"refresh_token": alice.refresh_token}
    )

    assert response.status_code == 200
    assert row_counts()["token_blocklist"] == before["token_blocklist"] + 2
    refresh = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
    assert_error(refresh, 401, "Token has been revoked")
    assert_error(client.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked")


def test_logout_does_not_revoke_other_sessions(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    second_session = login(client, "alice").json["access_token"]

    client.post("/api/v1/logout", headers=alice.headers)

    assert client.get("/api/v1/me", headers=bearer(second_session)).status_code == 200
    assert client.get("/api/v1/me", headers=bob.headers).status_code == 200


def test_token_still_valid_after_a_restart_without_logout(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    restarted = make_app().test_client()

    assert restarted.get("/api/v1/me", headers=alice.headers).status_code == 200


def test_logout_twice_with_the_same_token_is_401(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    client.post("/api/v1/logout", headers=alice.headers)
    before = row_counts()

    response = client.post("/api/v1/logout", headers=alice.headers)

    assert_error(response, 401, "Token has been revoked")
    assert row_counts() == before


def test_logout_without_token_is_401(client: FlaskClient) -> None:
    assert_error(client.post("/api/v1/logout"), 401, "Missing token")


def test_logout_with_a_refresh_token_as_access_token_is_401(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    response = client.post("/api/v1/logout", headers=bearer(alice.refresh_token))

    assert_error(response, 401, "Invalid token type")
    assert row_counts() == before


@pytest.mark.parametrize("which", ["garbage", "access-token", "another-users"])
def test_logout_with_an_invalid_refresh_token_revokes_nothing(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    row_counts: Callable[[], dict[str, int]],
    which: str,
) -> None:
    refresh_token = {
        "garbage": "garbage",
        "access-token": alice.access_token,
        "another-users": bob.refresh_token,
    }[which]
    before = row_counts()

    response = client.post(
        "/api/v1/logout", headers=alice.headers, json={"refresh_token": refresh_token}
    )

    assert response.status_code == 401
    assert response.json["error"] == "Unauthorized"
    assert response.json["message"].startswith("Invalid refresh token")
    assert row_counts() == before
    assert client.get("/api/v1/me", headers=alice.headers).status_code == 200
    assert (
        client.post("/api/v1/refresh", json={"refresh_token": bob.refresh_token}).status_code == 200
    )


def test_logout_with_an_already_spent_refresh_token_still_logs_out(
    client: FlaskClient, alice: Account
) -> None:
    client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})

    response = client.post(
        "/api/v1/logout", headers=alice.headers, json={"refresh_token": alice.refresh_token}
    )

    assert response.status_code == 200
    assert_error(client.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"refresh_token": 12}, id="number"),
        pytest.param({"refresh_token": None}, id="null"),
        pytest.param({"refresh_token": "x" * 4097}, id="too-long"),
    ],
)
def test_logout_rejects_invalid_bodies(
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    body: dict[str, Any],
) -> None:
    before = row_counts()

    response = client.post("/api/v1/logout", headers=alice.headers, json=body)

    assert_error(response, 400, "Invalid field(s): refresh_token", {"refresh_token"})
    assert row_counts() == before
    assert client.get("/api/v1/me", headers=alice.headers).status_code == 200

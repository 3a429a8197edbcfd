"""Login, token refresh and logout (SPEC §4.2), and every way a token can be refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import argon2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from blog_api.auth.passwords import hash_password
from blog_api.extensions import db
from blog_api.models import User
from support import PASSWORD, Account, assert_error

ACCESS_LIFETIME_LIMIT = 15 * 60


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(app: Flask, token: str) -> dict[str, Any]:
    return jwt.decode(token, app.config["JWT_SECRET_KEY"], algorithms=["HS256"])


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/login", json={"username": username, "password": password})


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- login ---------------------------------------------------------------------------------------


def test_login_returns_a_bearer_token_pair(app: Flask, client: FlaskClient, alice: Account) -> None:
    response = login(client, "alice")

    assert response.status_code == 200
    body = response.json
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == int(app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    assert client.get("/api/v1/me", headers=bearer(body["access_token"])).json["id"] == alice.id


def test_issued_tokens_carry_the_documented_claims(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    access = claims_of(app, alice.access_token)
    refresh = claims_of(app, alice.refresh_token)

    for token, kind in ((access, "access"), (refresh, "refresh")):
        assert {"sub", "jti", "iat", "exp", "type", "role"} <= set(token)
        assert token["sub"] == str(alice.id)
        assert token["type"] == kind
        assert token["role"] == "user"
    assert access["jti"] != refresh["jti"]
    assert 0 < access["exp"] - access["iat"] <= ACCESS_LIFETIME_LIMIT
    assert refresh["exp"] > access["exp"]


def test_admin_tokens_carry_the_admin_role(app: Flask, admin: Account) -> None:
    assert claims_of(app, admin.access_token)["role"] == "admin"


def test_unknown_user_and_wrong_password_get_identical_answers(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    unknown = login(client, "nobody_here", "some password")
    wrong = login(client, "alice", "some password")

    assert_error(unknown, 401, "Invalid credentials")
    assert (unknown.status_code, unknown.json) == (wrong.status_code, wrong.json)
    assert unknown.get_data() == wrong.get_data()
    assert row_counts() == before


def test_login_for_an_unknown_user_still_verifies_a_password_hash(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dummy verification keeps the response time from revealing which usernames exist."""
    verified: list[str] = []
    real_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        verified.append(password)
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)

    assert_error(login(client, "nobody_here", "guess 12345"), 401, "Invalid credentials")
    assert verified == ["guess 12345"]


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
        pytest.param(
            {"username": 42, "password": PASSWORD}, "Invalid field(s): username", {"username"}
        ),
        pytest.param(
            {"username": "alice", "password": ["x"]}, "Invalid field(s): password", {"password"}
        ),
        pytest.param(
            {"username": None, "password": PASSWORD}, "Invalid field(s): username", {"username"}
        ),
        pytest.param(
            {"username": "a" * 1025, "password": PASSWORD},
            "Invalid field(s): username",
            {"username"},
            id="username-too-long",
        ),
        pytest.param(
            {"username": "alice", "password": "p" * 1025},
            "Invalid field(s): password",
            {"password"},
            id="password-too-long",
        ),
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


def test_token_in_the_query_string_is_not_accepted(client: FlaskClient, alice: Account) -> None:
    assert_error(client.get(f"/api/v1/me?jwt={alice.access_token}"), 401, "Missing token")


def test_malformed_token_is_401(client: FlaskClient) -> None:
    response = client.get("/api/v1/me", headers=bearer("not-a-jwt"))

    assert response.status_code == 401
    assert response.json["message"].startswith("Invalid token")


def test_expired_access_token_is_401(
    make_app: Callable[..., Flask], client: FlaskClient, alice: Account
) -> None:
    short_lived = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=-1))
    expired = login(short_lived.test_client(), "alice").json["access_token"]

    assert_error(client.get("/api/v1/me", headers=bearer(expired)), 401, "Token has expired")


def test_expired_refresh_token_is_401(
    make_app: Callable[..., Flask], client: FlaskClient, alice: Account
) -> None:
    short_lived = make_app(JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=-1))
    expired = login(short_lived.test_client(), "alice").json["refresh_token"]

    response = client.post("/api/v1/refresh", json={"refresh_token": expired})

    assert_error(response, 401, "Token has expired")


def test_alg_none_token_is_401(app: Flask, client: FlaskClient, alice: Account) -> None:
    unsigned = f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{alice.access_token.split('.')[1]}."

    response = client.get("/api/v1/me", headers=bearer(unsigned))

    assert response.status_code == 401
    assert response.json["message"].startswith("Invalid token")
    assert response.json["error"] == "Unauthorized"


def test_token_signed_with_another_key_is_401(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    forged = jwt.encode(
        {**claims_of(app, alice.access_token), "role": "admin"},
        "an-attacker-chosen-key-that-is-long-enough-0123456789",
        algorithm="HS256",
    )

    response = client.get("/api/v1/me", headers=bearer(forged))

    assert_error(response, 401, "Invalid token: Signature verification failed")


def test_refresh_token_cannot_be_used_as_an_access_token(
    client: FlaskClient, alice: Account
) -> None:
    response = client.get("/api/v1/me", headers=bearer(alice.refresh_token))

    assert_error(response, 401, "Invalid token type")


def test_access_token_cannot_be_used_to_refresh(
    client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    response = client.post("/api/v1/refresh", json={"refresh_token": alice.access_token})

    assert_error(response, 401, "Invalid token type")
    assert row_counts() == before


def test_token_of_a_deleted_user_is_401(
    client: FlaskClient, alice: Account, admin: Account
) -> None:
    assert client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers).status_code == 200

    assert client.get("/api/v1/me", headers=alice.headers).status_code == 401
    refresh = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
    assert refresh.status_code == 401


def test_token_of_a_deleted_user_does_not_work_for_a_new_user_with_the_same_id(
    app: Flask, client: FlaskClient, alice: Account, admin: Account
) -> None:
    client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers)
    with app.app_context():
        db.session.add(User(id=alice.id, username="mallory", password_hash=hash_password("x" * 8)))
        db.session.commit()

    response = client.get("/api/v1/me", headers=alice.headers)

    assert_error(response, 401, "Token has been revoked")


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


def test_revoked_token_stays_revoked_after_a_restart(
    make_app: Callable[..., Flask], client: FlaskClient, alice: Account
) -> None:
    client.post(
        "/api/v1/logout", headers=alice.headers, json={"refresh_token": alice.refresh_token}
    )

    restarted = make_app().test_client()

    assert_error(restarted.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked")
    refresh = restarted.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
    assert_error(refresh, 401, "Token has been revoked")


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


def bad_access_token(
    kind: str, app: Flask, make_app: Callable[..., Flask], client: FlaskClient, alice: Account
) -> str:
    """One of the ways an access token can be unacceptable, for `alice`."""
    if kind == "expired":
        short_lived = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=-1)).test_client()
        return str(login(short_lived, "alice").json["access_token"])
    if kind == "unsigned":
        return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{alice.access_token.split('.')[1]}."
    if kind == "forged":
        claims = claims_of(app, alice.access_token)
        return jwt.encode(claims, "another-key-" + "k" * 32, algorithm="HS256")
    if kind == "revoked":
        client.post("/api/v1/logout", headers=alice.headers)
        return alice.access_token
    assert kind == "refresh"
    return alice.refresh_token


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("expired", "Token has expired"),
        ("unsigned", "Invalid token: The specified alg value is not allowed"),
        ("forged", "Invalid token: Signature verification failed"),
        ("revoked", "Token has been revoked"),
        ("refresh", "Invalid token type"),
    ],
)
def test_logout_with_a_bad_access_token_writes_nothing(
    app: Flask,
    make_app: Callable[..., Flask],
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    kind: str,
    message: str,
) -> None:
    token = bad_access_token(kind, app, make_app, client, alice)
    before = row_counts()

    response = client.post(
        "/api/v1/logout", headers=bearer(token), json={"refresh_token": alice.refresh_token}
    )

    assert_error(response, 401, message)
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

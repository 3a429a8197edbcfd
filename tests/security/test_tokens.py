"""S6-S15, S30: every token an attacker can bring is refused with a JSON 401, on both API
versions, and a refused request writes nothing (rows, audit file, e-mail).

SPEC §4.2 decides the status of every refusal: 401 (flask-jwt-extended's 422 default for a bad
signature is overridden). S14's "fresh token" requirement is replaced by SPEC's
`current_password` in the body (docs/security.md, decisions); S15's "disabled user" does not
exist in SPEC's data model, so only deleted users are tested.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from attacks import VALID_POST, bad_access_token, bearer, claims_of, login, on_both_versions
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, inspect, select, text

from blog_api.auth.passwords import hash_password
from blog_api.extensions import db
from blog_api.models import TokenBlocklist, User
from blog_api.services.tokens import purge_expired_tokens, revoke_tokens
from support import PASSWORD, Account, assert_error

ACCESS_LIFETIME_LIMIT = 15 * 60
NEW_PASSWORD = "a brand new passphrase"

NOT_ALLOWED = "Invalid token: The specified alg value is not allowed"
# (the kind of `bad_access_token`, the 401's message), each marked with the row it proves.
BAD_TOKENS = [
    pytest.param("unsigned", NOT_ALLOWED, id="unsigned", marks=pytest.mark.scenario("S6")),
    pytest.param(
        "forged",
        "Invalid token: Signature verification failed",
        id="forged",
        marks=pytest.mark.scenario("S7"),
    ),
    pytest.param("hs512", NOT_ALLOWED, id="hs512", marks=pytest.mark.scenario("S8")),
    pytest.param("rs256-header", NOT_ALLOWED, id="rs256", marks=pytest.mark.scenario("S8")),
    pytest.param("expired", "Token has expired", id="expired", marks=pytest.mark.scenario("S9")),
    pytest.param("refresh", "Invalid token type", id="refresh", marks=pytest.mark.scenario("S11")),
    pytest.param(
        "revoked", "Token has been revoked", id="revoked", marks=pytest.mark.scenario("S12")
    ),
    pytest.param("malformed", "Invalid token: Not enough segments", id="malformed"),
]


def create_post_as(client: FlaskClient, headers: dict[str, str]) -> Any:
    return on_both_versions(
        lambda version: client.post(f"/api/{version}/posts", json=VALID_POST, headers=headers)
    )


# The requests a bad access token is tried on: send(client, headers, the token's owner).
TOKEN_REQUESTS = [
    pytest.param(lambda client, headers, owner: create_post_as(client, headers), id="create-post"),
    pytest.param(lambda client, headers, owner: client.get("/api/v1/me", headers=headers), id="me"),
    pytest.param(
        lambda client, headers, owner: client.post(
            "/api/v1/logout", headers=headers, json={"refresh_token": owner.refresh_token}
        ),
        id="logout",
    ),
]


@pytest.mark.scenario("S54")
@pytest.mark.parametrize("send", TOKEN_REQUESTS)
@pytest.mark.parametrize(("kind", "message"), BAD_TOKENS)
def test_a_bad_access_token_is_401_and_writes_nothing(
    app: Flask,
    make_app: Callable[..., Flask],
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    kind: str,
    message: str,
    send: Callable[[FlaskClient, dict[str, str], Account], Any],
) -> None:
    token = bad_access_token(kind, app, make_app, client, alice)
    before = snapshot()

    response = send(client, bearer(token), alice)

    assert_error(response, 401, message)
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert snapshot() == before


# RFC 6750 §3: the challenge of a request that sent no bearer token names no error.
CHALLENGE = 'Bearer realm="blog-api"'
INVALID_TOKEN_CHALLENGE = f'{CHALLENGE}, error="invalid_token"'
BAD_HEADER = "Invalid token: Bad Authorization header. Expected 'Authorization: Bearer <JWT>'"
# (the Authorization header, None for none; the 401's message; its WWW-Authenticate)
AUTHORIZATION_HEADERS = [
    pytest.param(None, "Missing token", CHALLENGE, id="no-header"),
    pytest.param("Basic YWxpY2U6c2VjcmV0", "Missing token", CHALLENGE, id="another-scheme"),
    pytest.param(
        "Bearer", BAD_HEADER, f'{CHALLENGE}, error="invalid_request"', id="bearer-without-token"
    ),
    pytest.param(
        "Bearer a.b.c extra",
        BAD_HEADER,
        f'{CHALLENGE}, error="invalid_request"',
        id="bearer-with-two-tokens",
    ),
]


@pytest.mark.scenario("S54")
@pytest.mark.parametrize(("authorization", "message", "challenge"), AUTHORIZATION_HEADERS)
def test_a_request_that_sent_no_token_gets_a_challenge_without_invalid_token(
    client: FlaskClient, authorization: str | None, message: str, challenge: str
) -> None:
    """S54: every 401 said `error="invalid_token"`, also to a request without any token."""
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = client.get("/api/v1/me", headers=headers)

    assert_error(response, 401, message)
    assert response.headers["WWW-Authenticate"] == challenge


@pytest.mark.scenario("S54")
def test_wrong_passwords_get_a_challenge_without_an_error_code(
    client: FlaskClient, alice: Account
) -> None:
    """S54: a wrong password at login (no token involved) and a wrong current password with a
    good token: 401 with the realm only."""
    wrong_login = login(client, "alice", "wrong password")
    wrong_current = client.put(
        f"/api/v1/users/{alice.id}/password",
        json={"current_password": "wrong password", "new_password": NEW_PASSWORD},
        headers=alice.headers,
    )

    assert_error(wrong_login, 401, "Invalid credentials")
    assert_error(wrong_current, 401, "Current password is incorrect")
    assert wrong_login.headers["WWW-Authenticate"] == CHALLENGE
    assert wrong_current.headers["WWW-Authenticate"] == CHALLENGE


@pytest.mark.scenario("S10")
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


@pytest.mark.scenario("S11")
def test_access_token_cannot_be_used_to_refresh(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()

    response = client.post("/api/v1/refresh", json={"refresh_token": alice.access_token})

    assert_error(response, 401, "Invalid token type")
    assert snapshot() == before


@pytest.mark.scenario("S12")
def test_revoked_tokens_stay_revoked_after_a_restart(
    make_app: Callable[..., Flask],
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
) -> None:
    """The blocklist lives in the database, so a new app instance (a restarted process) on the
    same database refuses the same tokens."""
    client.post(
        "/api/v1/logout", headers=alice.headers, json={"refresh_token": alice.refresh_token}
    )
    before = snapshot()

    for current in (client, make_app().test_client()):
        assert_error(create_post_as(current, alice.headers), 401, "Token has been revoked")
        assert_error(
            current.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked"
        )
        refresh = current.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
        assert_error(refresh, 401, "Token has been revoked")
    assert snapshot() == before


def expired_token_payloads(user_id: int, count: int) -> list[dict[str, Any]]:
    """What `count` logouts of short-lived tokens, long expired, leave on the blocklist."""
    expired = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
    return [
        {"jti": str(uuid.uuid4()), "type": "access", "sub": str(user_id), "exp": expired}
        for _ in range(count)
    ]


@pytest.mark.scenario("S13")
def test_purge_leaves_no_expired_entry_after_ten_thousand_logouts(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    """The logout endpoint itself is tested above (S12); here the blocklist is filled with the
    rows 10,000 logouts write, through the same service function the endpoint uses."""
    assert client.post("/api/v1/logout", headers=alice.headers).status_code == 200
    with app.app_context():
        revoke_tokens(*expired_token_payloads(alice.id, 10_000))
        assert db.session.scalar(select(func.count()).select_from(TokenBlocklist)) == 10_001

        assert purge_expired_tokens() == 10_000

        now = datetime.now(UTC)
        expired = select(func.count()).where(TokenBlocklist.expires_at < now)
        assert db.session.scalar(expired) == 0
        assert db.session.scalar(select(func.count()).select_from(TokenBlocklist)) == 1
    assert_error(client.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked")


@pytest.mark.scenario("S13")
def test_blocklist_lookup_and_purge_use_indexes(app: Flask) -> None:
    with app.app_context():
        inspector = inspect(db.engine)
        indexed = {
            tuple(index["column_names"]) for index in inspector.get_indexes("token_blocklist")
        }
        unique = {
            tuple(constraint["column_names"])
            for constraint in inspector.get_unique_constraints("token_blocklist")
        }
        assert ("jti",) in indexed | unique
        assert ("expires_at",) in indexed
        if db.engine.dialect.name == "sqlite":
            plan = db.session.execute(
                text("EXPLAIN QUERY PLAN SELECT id FROM token_blocklist WHERE jti = 'x'")
            ).all()
            assert any("USING" in str(row[-1]) and "INDEX" in str(row[-1]) for row in plan), plan


@pytest.mark.scenario("S14")
def test_password_change_revokes_every_earlier_token(
    client: FlaskClient, alice: Account, bob: Account, snapshot: Callable[[], Snapshot]
) -> None:
    other_session = login(client, "alice").json
    response = client.put(
        f"/api/v1/users/{alice.id}/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=alice.headers,
    )
    assert response.status_code == 200
    before = snapshot()

    for access in (alice.access_token, other_session["access_token"]):
        assert_error(create_post_as(client, bearer(access)), 401, "Token has been revoked")
    for refresh in (alice.refresh_token, other_session["refresh_token"]):
        response = client.post("/api/v1/refresh", json={"refresh_token": refresh})
        assert_error(response, 401, "Token has been revoked")
    assert snapshot() == before
    assert client.get("/api/v1/me", headers=bob.headers).status_code == 200


@pytest.mark.scenario("S14")
def test_password_change_needs_the_current_password(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    """SPEC's replacement for a fresh token: a stolen token alone cannot change the password."""
    before = snapshot()

    response = client.put(
        f"/api/v1/users/{alice.id}/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=alice.headers,
    )

    assert_error(response, 401, "Current password is incorrect")
    assert snapshot() == before
    assert login(client, "alice").status_code == 200


@pytest.mark.scenario("S15")
def test_token_of_a_deleted_user_is_401(
    client: FlaskClient, alice: Account, admin: Account, snapshot: Callable[[], Snapshot]
) -> None:
    assert client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers).status_code == 200
    before = snapshot()

    assert_error(create_post_as(client, alice.headers), 401, "Invalid token: user not found")
    assert client.get("/api/v1/me", headers=alice.headers).status_code == 401
    refresh = client.post("/api/v1/refresh", json={"refresh_token": alice.refresh_token})
    assert refresh.status_code == 401
    assert snapshot() == before


@pytest.mark.scenario("S15")
def test_token_of_a_deleted_user_does_not_work_for_a_new_user_with_the_same_id(
    app: Flask, client: FlaskClient, alice: Account, admin: Account
) -> None:
    client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers)
    with app.app_context():
        db.session.add(User(id=alice.id, username="mallory", password_hash=hash_password("x" * 8)))
        db.session.commit()

    assert_error(create_post_as(client, alice.headers), 401, "Token has been revoked")


@pytest.mark.scenario("S30")
def test_token_in_the_query_string_is_not_accepted(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(
            f"/api/{version}/posts?jwt={alice.access_token}", json=VALID_POST
        )
    )

    assert_error(response, 401, "Missing token")
    assert_error(client.get(f"/api/v1/me?jwt={alice.access_token}"), 401, "Missing token")
    assert snapshot() == before

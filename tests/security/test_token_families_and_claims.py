"""S34 (the token side), S37, S39: what a token must carry and what revokes it.

S34: the claim that ties a token to the current password (`pwd`) was the owner's
`password_changed_at`, a few microseconds after the public `created_at`: with a guessed key an
admin token was forged on the 10th guess. It is now a random per-user stamp, drawn again at
every password change.
S37: reusing a spent refresh token revokes its whole family (OAuth 2.0 Security BCP §4.14); the
user's other logins go on.
S39: a token without `exp` or `type`, even signed with the key, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest
from attacks import VALID_POST, bearer, claims_of, login, on_both_versions
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from blog_api.extensions import db
from blog_api.models import User
from blog_api.services.tokens import purge_expired_tokens
from support import PASSWORD, Account, assert_error

NEW_PASSWORD = "a brand new passphrase"


def signed(app: Flask, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")


def refresh(client: FlaskClient, refresh_token: str) -> Any:
    return client.post("/api/v1/refresh", json={"refresh_token": refresh_token})


def me(client: FlaskClient, access_token: str) -> Any:
    return client.get("/api/v1/me", headers=bearer(access_token))


# --- S34: the password-binding claim --------------------------------------------------------------


@pytest.mark.scenario("S34")
def test_password_claim_is_a_random_stamp_of_the_user(
    app: Flask, make_account: Callable[..., Account]
) -> None:
    first, second = make_account("carol"), make_account("dave")

    stamps = [claims_of(app, account.access_token)["pwd"] for account in (first, second)]

    with app.app_context():
        users = [db.session.get(User, account.id) for account in (first, second)]
        assert stamps == [user.security_stamp for user in users if user]
        timestamps = {user.password_changed_at.timestamp() for user in users if user}
    assert all(isinstance(stamp, str) and len(stamp) >= 32 for stamp in stamps)
    assert stamps[0] != stamps[1]
    assert not timestamps & set(stamps)


@pytest.mark.scenario("S34")
def test_token_forged_with_the_password_timestamp_is_refused(
    app: Flask, client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    """The old forgery: every claim right, `pwd` the owner's `password_changed_at`."""
    with app.app_context():
        user = db.session.get(User, alice.id)
        assert user is not None
        changed_at = user.password_changed_at.timestamp()
    forged = signed(app, {**claims_of(app, alice.access_token), "pwd": changed_at})
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(
            f"/api/{version}/posts", json=VALID_POST, headers=bearer(forged)
        )
    )

    assert_error(response, 401, "Token has been revoked")
    assert_error(me(client, forged), 401, "Token has been revoked")
    assert snapshot() == before


@pytest.mark.scenario("S34")
def test_password_change_draws_a_new_stamp(app: Flask, client: FlaskClient, alice: Account) -> None:
    old_stamp = claims_of(app, alice.access_token)["pwd"]

    changed = client.put(
        f"/api/v1/users/{alice.id}/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=alice.headers,
    )
    new_token = login(client, "alice", NEW_PASSWORD).json["access_token"]

    assert changed.status_code == 200
    assert claims_of(app, new_token)["pwd"] != old_stamp
    assert_error(me(client, alice.access_token), 401, "Token has been revoked")
    assert me(client, new_token).status_code == 200


# --- S37: refresh token families ------------------------------------------------------------------


@pytest.mark.scenario("S37")
def test_reusing_a_spent_refresh_token_revokes_its_family_only(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    row_counts: Callable[[], dict[str, int]],
) -> None:
    other_login = login(client, "alice").json
    rotated = refresh(client, alice.refresh_token).json
    before = row_counts()

    reuse = refresh(client, alice.refresh_token)

    assert_error(reuse, 401, "Token has been revoked")
    assert row_counts() == before  # the spent token's row now marks its family revoked
    # Everything descending from alice's first login is dead ...
    assert_error(refresh(client, rotated["refresh_token"]), 401, "Token has been revoked")
    assert_error(me(client, rotated["access_token"]), 401, "Token has been revoked")
    assert_error(me(client, alice.access_token), 401, "Token has been revoked")
    # ... while her other login and other users go on.
    assert me(client, other_login["access_token"]).status_code == 200
    assert refresh(client, other_login["refresh_token"]).status_code == 200
    assert me(client, bob.access_token).status_code == 200


@pytest.mark.scenario("S37")
def test_refresh_token_spent_concurrently_revokes_the_family(
    client: FlaskClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with one refresh token both pass the blocklist check; the one that loses
    the race on the unique `jti` revokes the family, including the winner's new tokens."""
    winner = refresh(client, alice.refresh_token).json
    monkeypatch.setattr("blog_api.auth.tokens.is_token_revoked", lambda _payload: False)

    loser = refresh(client, alice.refresh_token)
    monkeypatch.undo()

    assert_error(loser, 401, "Token has been revoked")
    assert_error(me(client, winner["access_token"]), 401, "Token has been revoked")
    assert_error(refresh(client, winner["refresh_token"]), 401, "Token has been revoked")


@pytest.mark.scenario("S37")
def test_a_revoked_family_stays_revoked_after_the_purge(
    client: FlaskClient, alice: Account
) -> None:
    """The row that revokes a family outlives the spent token: the family's newest refresh
    token would otherwise come back to life once that row is purged."""
    rotated = refresh(client, alice.refresh_token).json
    refresh(client, alice.refresh_token)  # the reuse

    with client.application.app_context():
        purge_expired_tokens()

    assert_error(refresh(client, rotated["refresh_token"]), 401, "Token has been revoked")


# --- S39: required claims -------------------------------------------------------------------------


@pytest.mark.scenario("S39")
@pytest.mark.parametrize("claim", ["exp", "type", "jti", "pwd", "fam"])
def test_access_token_without_a_claim_is_401_even_when_signed_with_the_key(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    claim: str,
) -> None:
    claims = claims_of(app, alice.access_token)
    del claims[claim]
    token = signed(app, claims)
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(f"/api/{version}/posts", json=VALID_POST, headers=bearer(token))
    )

    assert_error(response, 401, f'Invalid token: Token is missing the "{claim}" claim')
    assert_error(me(client, token), 401, f'Invalid token: Token is missing the "{claim}" claim')
    assert snapshot() == before


@pytest.mark.scenario("S39")
@pytest.mark.parametrize("claim", ["exp", "type"])
def test_refresh_token_without_exp_or_type_is_401(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    claim: str,
) -> None:
    claims = claims_of(app, alice.refresh_token)
    del claims[claim]
    before = row_counts()

    response = refresh(client, signed(app, claims))

    assert_error(response, 401, f'Invalid token: Token is missing the "{claim}" claim')
    assert row_counts() == before

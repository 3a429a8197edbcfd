"""S1-S3: registration refuses mass assignment, invalid fields and duplicates, and a refused
registration writes nothing.

Registration exists only in v1 (SPEC §4.2: users and tokens live in `/api/v1`); S1's mass
assignment on the versioned routes (posts and to-dos, on both versions) is in
test_request_validation.py. SPEC conflicts:
`role: "admin"` from a caller who is not an admin is `403 Admin access required` (SPEC §4.2),
not a 400 for an unknown field; a 73-byte password is accepted (argon2id has no 72-byte limit,
SPEC allows up to 128 characters), so S2's case is "never 500, no truncation".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from attacks import login
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import EmailConfirmation, User
from blog_api.services import confirmations
from support import PASSWORD, Account, assert_error
from support.resources import invalid


def register(client: FlaskClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    body.setdefault("password", PASSWORD)
    return client.post("/api/v1/users", json=body, headers=headers or {})


@pytest.mark.scenario("S1")
@pytest.mark.parametrize("field", ["id", "is_admin", "created_at"])
def test_signup_with_a_mass_assigned_field_is_400_and_writes_nothing(
    client: FlaskClient, snapshot: Callable[[], Snapshot], field: str
) -> None:
    before = snapshot()

    response = register(client, username="carol", **{field: 1})

    body = assert_error(response, 400, f"Unknown field(s): {field}", {field})
    assert body["errors"][field] == ["Unknown field."]
    assert snapshot() == before


@pytest.mark.scenario("S1")
@pytest.mark.parametrize("as_user", [False, True], ids=["anonymous", "user-token"])
def test_signup_as_admin_without_an_admin_token_is_403_and_writes_nothing(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot], as_user: bool
) -> None:
    before = snapshot()

    response = register(
        client, headers=alice.headers if as_user else None, username="carol", role="admin"
    )

    assert_error(response, 403, "Admin access required")
    assert snapshot() == before


@pytest.mark.scenario("S2")
@pytest.mark.parametrize(
    ("body", "message", "fields"),
    [
        pytest.param({}, "Missing username or password", {"username", "password"}, id="empty"),
        pytest.param({"username": "carol"}, "Missing username or password", {"password"}),
        pytest.param({"password": PASSWORD}, "Missing username or password", {"username"}),
        invalid({"username": 7, "password": PASSWORD}, "username"),
        invalid({"username": "carol", "password": 12345678}, "password"),
        invalid({"username": "carol", "password": PASSWORD, "email": 5}, "email"),
        invalid({"username": "carol", "password": PASSWORD, "email": "not-an-address"}, "email"),
        invalid(
            {"username": "carol", "password": PASSWORD, "email": "a" * 250 + "@example.com"},
            "email",
            id="email-too-long",
        ),
        invalid({"username": "ab", "password": PASSWORD}, "username", id="username-too-short"),
        invalid({"username": "u" * 51, "password": PASSWORD}, "username", id="username-too-long"),
        invalid(
            {"username": "carol\nadmin", "password": PASSWORD},
            "username",
            id="username-control-chars",
        ),
        invalid({"username": "carol", "password": "seven77"}, "password", id="password-7-chars"),
        invalid(
            {"username": "carol", "password": "ü" * 7}, "password", id="password-7-multibyte-chars"
        ),
        invalid({"username": "carol", "password": "p" * 129}, "password", id="password-129-chars"),
        invalid({"username": "carol", "password": PASSWORD, "role": "superuser"}, "role"),
        invalid({"username": "carol", "password": PASSWORD, "role": None}, "role"),
    ],
)
def test_signup_with_invalid_fields_is_400_per_field_and_writes_nothing(
    client: FlaskClient,
    snapshot: Callable[[], Snapshot],
    body: dict[str, Any],
    message: str,
    fields: set[str],
) -> None:
    before = snapshot()

    response = client.post("/api/v1/users", json=body)

    assert_error(response, 400, message, fields)
    assert snapshot() == before


@pytest.mark.scenario("S2")
@pytest.mark.parametrize(
    "password", [pytest.param("€" * 25, id="75-bytes"), pytest.param("a" * 72 + "X", id="73-bytes")]
)
def test_password_over_72_bytes_is_neither_500_nor_truncated(
    client: FlaskClient, password: str
) -> None:
    assert register(client, username="carol", password=password).status_code == 201

    assert login(client, "carol", password).status_code == 200
    assert_error(login(client, "carol", password[:-1] + "Y"), 401, "Invalid credentials")


@pytest.mark.scenario("S3")
@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"username": "Alice"}, "Username already exists", id="username-case"),
        pytest.param({"username": "ALICE"}, "Username already exists", id="username-upper"),
        pytest.param({"username": "alice"}, "Username already exists", id="username"),
    ],
)
def test_duplicate_username_is_409_and_one_user_row(
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    body: dict[str, str],
    message: str,
) -> None:
    before = snapshot()

    assert_error(register(client, **body), 409, message)
    assert snapshot() == before
    assert before.rows["users"] == 1


@pytest.mark.scenario("S3")
@pytest.mark.parametrize("confirmed", [False, True], ids=["unconfirmed", "confirmed"])
def test_an_address_in_use_registers_exactly_like_a_fresh_one(
    app: Flask, client: FlaskClient, alice: Account, confirmed: bool
) -> None:
    """Registration never tells whether an address has an account (SPEC §4.1, §4.6): it used to
    be `409 Email already exists` for `ALICE@Example.COM`; now the answer is the one a fresh
    address gets, and the address is only owned once confirmed."""
    if confirmed:
        with app.app_context():
            user = db.session.get_one(User, alice.id)
            confirmation = confirmations.add_confirmation(user)
            db.session.commit()
            confirmations.confirm_email(confirmations.confirmation_token(confirmation))

    in_use = register(client, username="carol", email="ALICE@Example.COM")
    fresh = register(client, username="dave", email="dave@example.com")

    assert (in_use.status_code, fresh.status_code) == (201, 201)
    assert set(in_use.json) == set(fresh.json) == {"id", "username", "role", "created_at"}
    assert set(in_use.headers.keys()) == set(fresh.headers.keys())
    assert in_use.headers["Location"] == f"/api/v1/users/{in_use.json['id']}"
    with app.app_context():
        carol = db.session.get_one(User, in_use.json["id"])
        assert (carol.email, carol.email_confirmed) == ("alice@example.com", False)
        # Each got a confirmation (and its e-mail job): the work done does not differ either.
        asked = db.session.scalars(
            select(EmailConfirmation.user_id).where(
                EmailConfirmation.user_id.in_([in_use.json["id"], fresh.json["id"]])
            )
        ).all()
        assert sorted(asked) == sorted([in_use.json["id"], fresh.json["id"]])

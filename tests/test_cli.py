"""CLI commands (SPEC §3, §4.2): `flask users create-admin`, `flask users check-names` and
`flask tokens purge`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import TokenBlocklist
from blog_api.models.base import utcnow
from blog_api.services.users import create_user
from support import PASSWORD, Account, assert_error

ADMIN_PASSWORD = "a strong admin passphrase"


def create_admin(app: Flask, *args: str, **kwargs: object) -> Result:
    return app.test_cli_runner().invoke(args=["users", "create-admin", *args], **kwargs)


def login(client: FlaskClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def test_create_admin_makes_an_admin_who_can_use_admin_routes(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    result = create_admin(
        app, "--username", "boss", "--email", "Boss@Example.com", "--password", ADMIN_PASSWORD
    )

    assert result.exit_code == 0, result.output
    assert "Admin created: boss" in result.output
    headers = login(client, "boss", ADMIN_PASSWORD)
    assert client.get("/api/v1/me", headers=headers).json["email"] == "boss@example.com"
    response = client.put(f"/api/v1/users/{alice.id}/role", json={"role": "admin"}, headers=headers)
    assert response.status_code == 200
    assert response.json["role"] == "admin"


def test_create_admin_prompts_for_the_password_twice(app: Flask, client: FlaskClient) -> None:
    result = create_admin(app, "--username", "boss", input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n")

    assert result.exit_code == 0, result.output
    login(client, "boss", ADMIN_PASSWORD)


def test_create_admin_reads_the_password_from_the_environment(
    app: Flask, client: FlaskClient
) -> None:
    result = create_admin(app, "--username", "boss", env={"ADMIN_PASSWORD": ADMIN_PASSWORD})

    assert result.exit_code == 0, result.output
    login(client, "boss", ADMIN_PASSWORD)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        pytest.param(
            ["--username", "ALICE", "--password", ADMIN_PASSWORD],
            ["Username already exists"],
            id="taken-username",
        ),
        pytest.param(
            ["--username", "boss", "--password", "short"],
            ["invalid input", "password"],
            id="short-password",
        ),
        pytest.param(
            ["--username", "no spaces allowed", "--password", ADMIN_PASSWORD],
            ["username"],
            id="invalid-username",
        ),
        pytest.param(
            ["--username", "boss", "--email", "root@[127.0.0.1]", "--password", ADMIN_PASSWORD],
            ["invalid input", "bracketed IP address"],
            id="address-on-an-ip-literal",
            marks=pytest.mark.scenario("S50"),
        ),
    ],
)
def test_create_admin_with_bad_input_fails_and_writes_nothing(
    app: Flask,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    arguments: list[str],
    said: list[str],
) -> None:
    """`alice` holds the taken username."""
    before = row_counts()

    result = create_admin(app, *arguments)

    assert result.exit_code != 0
    assert [text for text in said if text not in result.output] == []
    assert row_counts() == before


@pytest.mark.scenario("S48")
def test_check_names_lists_names_registration_refuses_and_exits_non_zero(
    app: Flask, alice: Account
) -> None:
    """S48: accounts registered before the whole name had to match the rule; the service
    writes what the API used to let through."""
    with app.app_context():
        stale = {
            create_user(name, PASSWORD).id: name for name in ("alice\n", "admin\r", "eve\u2028")
        }

    result = app.test_cli_runner().invoke(args=["users", "check-names"])

    assert result.exit_code == 1, result.output
    listed = [line for line in result.output.splitlines() if line.startswith("user ")]
    assert listed == [f"user {user_id}: {name!r}" for user_id, name in stale.items()]
    assert listed[0].endswith(r": 'alice\n'")  # escaped: one line per user, nothing hidden
    assert f"user {alice.id}:" not in result.output
    assert "3 username(s) break the rule" in result.output


def test_check_names_with_every_name_valid_exits_zero(app: Flask, alice: Account) -> None:
    result = app.test_cli_runner().invoke(args=["users", "check-names"])

    assert result.exit_code == 0, result.output
    assert "Every username follows the rule" in result.output


def test_purge_removes_only_expired_blocklist_rows(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    client.post("/api/v1/logout", headers=alice.headers)  # a live, revoked token
    with app.app_context():
        (live_jti,) = db.session.scalars(select(TokenBlocklist.jti)).all()
        db.session.add_all(
            TokenBlocklist(
                jti=f"expired-{number}",
                token_type="access",
                user_id=alice.id,
                expires_at=utcnow() - timedelta(minutes=number + 1),
            )
            for number in range(2)
        )
        db.session.commit()

    result = app.test_cli_runner().invoke(args=["tokens", "purge"])

    assert result.exit_code == 0, result.output
    assert "Purged 2 expired token(s)" in result.output
    with app.app_context():
        assert db.session.scalars(select(TokenBlocklist.jti)).all() == [live_jti]
    # The revoked token whose row was kept is still refused.
    assert_error(client.get("/api/v1/me", headers=alice.headers), 401, "Token has been revoked")


def test_purge_with_nothing_expired_removes_nothing(
    app: Flask, client: FlaskClient, alice: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    client.post("/api/v1/logout", headers=alice.headers)
    before = row_counts()

    result = app.test_cli_runner().invoke(args=["tokens", "purge"])

    assert result.exit_code == 0
    assert "Purged 0 expired token(s)" in result.output
    assert row_counts() == before

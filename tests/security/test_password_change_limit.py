"""S35: `PUT /api/v1/users/<id>/password` verifies a password (argon2) at every attempt; it is
limited per user and per client address, and the limit answers before any hashing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from attacks import login
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from support import PASSWORD, Account, assert_too_many_requests

pytestmark = pytest.mark.scenario("S35")

LIMIT = "3 per minute"
NEW_PASSWORD = "a brand new passphrase"


def change_password(
    client: FlaskClient, account: Account, current: str, ip: str = "127.0.0.1"
) -> Any:
    return client.put(
        f"/api/v1/users/{account.id}/password",
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers=account.headers,
        environ_base={"REMOTE_ADDR": ip},
    )


@pytest.fixture
def limited(make_security_app: Callable[..., Flask], alice: Account) -> FlaskClient:
    return make_security_app(PASSWORD_CHANGE_RATE_LIMIT=LIMIT).test_client()


def test_password_guesses_per_user_are_limited_across_addresses(
    limited: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guesses = [
        change_password(limited, alice, "wrong password", ip=f"10.0.3.{number}").status_code
        for number in range(3)
    ]
    before = snapshot()
    verified: list[str] = []
    monkeypatch.setattr(
        "blog_api.api.v1.users.verify_password", lambda *args: verified.append("x") or True
    )

    right_password = change_password(limited, alice, PASSWORD, ip="10.0.3.99")

    assert guesses == [401] * 3
    assert_too_many_requests(right_password, "3 per 1 minute")
    assert verified == []  # the limit answered before any password was verified
    assert snapshot() == before
    monkeypatch.undo()
    assert login(limited, "alice", PASSWORD).status_code == 200  # the password is unchanged


def test_password_guesses_per_address_are_limited_across_users(
    limited: FlaskClient, alice: Account, bob: Account
) -> None:
    for _ in range(3):
        change_password(limited, alice, "wrong password", ip="10.0.4.1")

    from_same_address = change_password(limited, bob, PASSWORD, ip="10.0.4.1")
    from_elsewhere = change_password(limited, bob, PASSWORD, ip="10.0.4.2")

    assert_too_many_requests(from_same_address, "3 per 1 minute")
    assert from_elsewhere.status_code == 200

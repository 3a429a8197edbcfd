"""S4-S5: login reveals nothing about which usernames exist, and brute force hits a 429 that is
decided before any password hashing. (Login exists only in v1, SPEC §4.2.)

S4's timing: the unknown-user path verifies the password against a dummy hash made with the
same argon2 parameters as real hashes, so both paths cost one verification. The spy test proves
that the path runs; the timing test compares medians of interleaved samples with a generous 50%
tolerance, with argon2 parameters heavy enough (~10 ms) that the hash dominates the noise.
S5 across two gunicorn workers is in test_login_limit_gunicorn.py (integration tier).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import argon2
import pytest
from attacks import login
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from support import PASSWORD, Account, assert_error, assert_too_many_requests

TIMING_SAMPLES = 15


@pytest.mark.scenario("S4")
def test_unknown_user_and_wrong_password_get_identical_answers(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()

    unknown = login(client, "nobody_here", "some password")
    wrong = login(client, "alice", "some password")

    assert_error(unknown, 401, "Invalid credentials")
    assert unknown.get_data() == wrong.get_data()
    assert unknown.headers.get("WWW-Authenticate") == wrong.headers.get("WWW-Authenticate")
    assert snapshot() == before


@pytest.mark.scenario("S4")
def test_login_for_an_unknown_user_still_verifies_a_password_hash(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    real_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        verified.append(password)
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)

    assert_error(login(client, "nobody_here", "guess 12345"), 401, "Invalid credentials")
    assert verified == ["guess 12345"]


@pytest.mark.scenario("S4")
def test_unknown_user_and_wrong_password_take_similar_time(
    make_security_app: Callable[..., Flask],
) -> None:
    app = make_security_app(ARGON2_TIME_COST=1, ARGON2_MEMORY_COST=8192)
    client = app.test_client()
    assert (
        client.post("/api/v1/users", json={"username": "carol", "password": PASSWORD}).status_code
        == 201
    )
    login(client, "carol", "warm up the hasher")
    unknown: list[float] = []
    wrong: list[float] = []

    for _ in range(TIMING_SAMPLES):  # interleaved, so a slow moment hits both sides
        for username, samples in (("nobody_here", unknown), ("carol", wrong)):
            started = time.perf_counter()
            assert login(client, username, "wrong password").status_code == 401
            samples.append(time.perf_counter() - started)

    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 1.5, (statistics.median(unknown), statistics.median(wrong))


@pytest.mark.scenario("S5")
def test_twenty_wrong_logins_then_the_right_password_are_429_and_write_nothing(
    make_security_app: Callable[..., Flask],
    redis_url: str,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_security_app(
        LOGIN_RATE_LIMIT="5 per minute",
        RATELIMIT_STORAGE_URI=redis_url,
        RATELIMIT_KEY_PREFIX=f"security-{uuid.uuid4().hex}",
    ).test_client()
    before = snapshot()

    statuses = [login(client, "alice", "wrong password").status_code for _ in range(5)]
    verified: list[str] = []
    monkeypatch.setattr(
        "blog_api.services.users.verify_password", lambda *args: verified.append("x") or False
    )
    limited = [login(client, "alice", "wrong password") for _ in range(15)]
    correct_password = login(client, "alice", PASSWORD)

    assert statuses == [401] * 5
    for response in [*limited, correct_password]:
        assert_too_many_requests(response, "5 per 1 minute")
    assert "access_token" not in correct_password.get_data(as_text=True)
    assert verified == []  # the limiter answered before any password hashing
    assert snapshot() == before

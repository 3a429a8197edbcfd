"""Idempotency-Key on creating POSTs: a retried request is answered again, never done twice.

Posts (v1, v2), to-dos (v1, v2) and registration take the header; the stored answer is written
in the transaction of the effect, so a replay creates no row, no job and no e-mail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from blog_api.extensions import db
from blog_api.models import IdempotencyKey, Job, Post, Todo, User
from blog_api.models.base import utcnow
from blog_api.services import idempotency
from blog_api.worker.bootsteps import RelayStep
from resources import RowCounts, both_versions
from support import PASSWORD, Account, assert_error, statements_run_by

KEY = "order-7f3a-retry-safe"
IN_FLIGHT = "A request with this Idempotency-Key is still in progress; retry later"
OTHER_REQUEST = "This Idempotency-Key was used with another request"
INVALID_KEY = "Idempotency-Key must be 1-255 printable ASCII characters"

# (path, body, the model the request creates): every endpoint that takes the header.
CREATING = {
    "v1-posts": ("/api/v1/posts", {"title": "Hello", "content": "Once only"}, Post),
    "v2-posts": ("/api/v2/posts", {"title": "Hello", "content": "Once only"}, Post),
    "v1-todos": ("/api/v1/todos", {"title": "Buy milk"}, Todo),
    "v2-todos": ("/api/v2/todos", {"title": "Buy milk", "priority": 2}, Todo),
}
every_creating_endpoint = pytest.mark.parametrize("endpoint", CREATING)


def count(app: Flask, model: type[Any]) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model)) or 0


def keyed(account: Account | None, key: str = KEY) -> dict[str, str]:
    headers = dict(account.headers) if account else {}
    headers["Idempotency-Key"] = key
    return headers


def set_key(app: Flask, **values: Any) -> None:
    with app.app_context():
        db.session.execute(update(IdempotencyKey).values(**values))
        db.session.commit()


def hold_key(app: Flask, account: Account | None, path: str, body: dict[str, Any]) -> None:
    """Claim `KEY` as a request to `path` with `body` would, and keep it in flight."""
    scope = f"user:{account.id}" if account else "anonymous"
    with app.test_request_context():
        digest = idempotency.fingerprint("POST", path, body)
        held = idempotency.claim(scope, KEY, digest)
        assert isinstance(held, idempotency.Claim)


# --- replay ----------------------------------------------------------------------------------


@every_creating_endpoint
def test_repeat_with_the_same_key_replays_the_answer_and_creates_nothing(
    app: Flask, client: FlaskClient, alice: Account, endpoint: str
) -> None:
    path, body, model = CREATING[endpoint]
    first = client.post(path, json=body, headers=keyed(alice))
    assert first.status_code == 201, first.get_json()
    rows = {name: count(app, table) for name, table in (("rows", model), ("jobs", Job))}

    again = client.post(path, json=body, headers=keyed(alice))

    assert again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert {name: count(app, table) for name, table in (("rows", model), ("jobs", Job))} == rows
    assert rows["rows"] == 1


@both_versions
def test_replayed_post_has_one_post_and_one_set_of_jobs(
    app: Flask, client: FlaskClient, alice: Account, version: str
) -> None:
    body = {"title": "Once", "content": "Only once"}
    answers = [
        client.post(f"/api/{version}/posts", json=body, headers=keyed(alice)) for _ in range(3)
    ]

    assert [answer.status_code for answer in answers] == [201, 201, 201]
    assert len({answer.get_data() for answer in answers}) == 1
    post_id = answers[0].get_json()["id"]
    with app.app_context():
        assert db.session.scalars(select(Post.id)).all() == [post_id]
        kinds = db.session.scalars(select(Job.kind).where(Job.post_id == post_id)).all()
    assert len(kinds) == (1 if version == "v1" else 2)
    assert count(app, Job) == len(kinds)


def test_key_order_and_whitespace_of_the_body_do_not_change_the_request(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    first = client.post(
        "/api/v2/posts",
        data='{"title": "T", "content": "C"}',
        content_type="application/json",
        headers=keyed(alice),
    )
    again = client.post(
        "/api/v2/posts",
        data='{\n  "content":"C",   "title":"T"}',
        content_type="application/json",
        headers=keyed(alice),
    )

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert count(app, Post) == 1


def test_registration_with_a_key_is_replayed_without_a_second_account(
    app: Flask, client: FlaskClient
) -> None:
    body = {"username": "carol", "password": PASSWORD, "email": "carol@example.com"}
    first = client.post("/api/v1/users", json=body, headers=keyed(None))
    again = client.post("/api/v1/users", json=body, headers=keyed(None))

    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert count(app, User) == 1


def test_registration_replay_stores_no_password(app: Flask, client: FlaskClient) -> None:
    body = {"username": "carol", "password": PASSWORD}
    assert client.post("/api/v1/users", json=body, headers=keyed(None)).status_code == 201

    with app.app_context():
        row = db.session.scalars(select(IdempotencyKey)).one()
    assert row.scope == "anonymous"
    assert PASSWORD not in (row.response_body or "")
    assert "password" not in json.loads(row.response_body or "{}")


# --- another body, in flight -----------------------------------------------------------------


@every_creating_endpoint
def test_same_key_with_another_body_is_422_and_creates_nothing(
    app: Flask, client: FlaskClient, alice: Account, endpoint: str
) -> None:
    path, body, model = CREATING[endpoint]
    assert client.post(path, json=body, headers=keyed(alice)).status_code == 201

    other = client.post(path, json={**body, "title": "Other"}, headers=keyed(alice))

    assert_error(other, 422, OTHER_REQUEST)
    assert count(app, model) == 1


def test_same_key_on_another_endpoint_is_422(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    body = {"title": "Hello", "content": "Once only"}
    assert client.post("/api/v1/posts", json=body, headers=keyed(alice)).status_code == 201

    assert_error(client.post("/api/v2/posts", json=body, headers=keyed(alice)), 422, OTHER_REQUEST)
    assert count(app, Post) == 1


@every_creating_endpoint
def test_same_key_while_the_first_request_is_in_flight_is_409_with_retry_after(
    app: Flask, client: FlaskClient, alice: Account, endpoint: str
) -> None:
    path, body, model = CREATING[endpoint]
    hold_key(app, alice, path, body)

    response = client.post(path, json=body, headers=keyed(alice))

    assert_error(response, 409, IN_FLIGHT)
    assert int(response.headers["Retry-After"]) >= 1
    assert count(app, model) == 0


def test_registration_in_flight_is_409(app: Flask, client: FlaskClient) -> None:
    body = {"username": "carol", "password": PASSWORD}
    hold_key(app, None, "/api/v1/users", body)

    assert_error(client.post("/api/v1/users", json=body, headers=keyed(None)), 409, IN_FLIGHT)
    assert count(app, User) == 0


def test_abandoned_in_flight_key_is_taken_over_after_the_lock_timeout(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    body = {"title": "Hello", "content": "Once only"}
    hold_key(app, alice, "/api/v2/posts", body)
    assert client.post("/api/v2/posts", json=body, headers=keyed(alice)).status_code == 409
    # The request holding it died: its key is older than IDEMPOTENCY_LOCK_TIMEOUT.
    set_key(app, locked_at=utcnow() - app.config["IDEMPOTENCY_LOCK_TIMEOUT"])

    response = client.post("/api/v2/posts", json=body, headers=keyed(alice))
    again = client.post("/api/v2/posts", json=body, headers=keyed(alice))

    assert response.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == response.get_data()
    assert count(app, Post) == 1


def test_request_whose_key_was_taken_over_rolls_its_effect_back(app: Flask, alice: Account) -> None:
    """A request slower than the lock timeout loses its key to a retry: the retry's post is the
    only one, whatever order the two commit in."""
    body = {"title": "Hello", "content": "Once only"}
    with app.test_request_context():
        digest = idempotency.fingerprint("POST", "/api/v2/posts", body)
        slow = idempotency.claim(f"user:{alice.id}", KEY, digest)
        assert isinstance(slow, idempotency.Claim)
        set_key(app, locked_at=utcnow() - app.config["IDEMPOTENCY_LOCK_TIMEOUT"])
        retry = idempotency.claim(f"user:{alice.id}", KEY, digest)
        assert isinstance(retry, idempotency.Claim)
        db.session.add(Todo(user_id=alice.id, title="slow effect"))
        db.session.flush()

        assert idempotency.complete(slow, 201, "{}", None) is False
    assert count(app, Todo) == 0


# --- the key is free after a failure ---------------------------------------------------------


@every_creating_endpoint
def test_request_rejected_by_validation_leaves_the_key_free(
    app: Flask, client: FlaskClient, alice: Account, endpoint: str
) -> None:
    path, body, model = CREATING[endpoint]
    rejected = client.post(path, json={**body, "title": ""}, headers=keyed(alice))
    assert rejected.status_code == 400

    accepted = client.post(path, json=body, headers=keyed(alice))
    again = client.post(path, json=body, headers=keyed(alice))

    assert accepted.status_code == 201
    assert "Idempotent-Replayed" not in accepted.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app, model) == 1


def test_failed_registration_leaves_the_key_free(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    taken = client.post(
        "/api/v1/users", json={"username": "alice", "password": PASSWORD}, headers=keyed(None)
    )
    assert_error(taken, 409, "Username already exists")
    with app.app_context():
        assert db.session.scalars(select(IdempotencyKey)).all() == []

    body = {"username": "carol", "password": PASSWORD}
    created = client.post("/api/v1/users", json=body, headers=keyed(None))
    again = client.post("/api/v1/users", json=body, headers=keyed(None))
    assert created.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"


def test_forbidden_admin_registration_leaves_the_key_free(app: Flask, client: FlaskClient) -> None:
    body = {"username": "carol", "password": PASSWORD, "role": "admin"}
    assert client.post("/api/v1/users", json=body, headers=keyed(None)).status_code == 403

    with app.app_context():
        assert db.session.scalars(select(IdempotencyKey)).all() == []
    assert count(app, User) == 0
    user = {**body, "role": "user"}
    created = client.post("/api/v1/users", json=user, headers=keyed(None))
    again = client.post("/api/v1/users", json=user, headers=keyed(None))
    assert created.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"


# --- the header ------------------------------------------------------------------------------


INVALID_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("k" * 256, id="256-chars"),
    pytest.param("tab\there", id="control-char"),
    pytest.param("del\x7f", id="delete-char"),
    pytest.param("caf\u00e9", id="non-ascii"),
]


@pytest.mark.parametrize("key", INVALID_KEYS)
@every_creating_endpoint
def test_invalid_key_is_400_and_writes_nothing(
    client: FlaskClient, alice: Account, row_counts: RowCounts, endpoint: str, key: str
) -> None:
    path, body, _ = CREATING[endpoint]
    before = row_counts()

    response = client.post(path, json=body, headers=keyed(alice, key))

    assert_error(response, 400, INVALID_KEY)
    assert row_counts() == before


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_key_on_registration_is_400_and_writes_nothing(
    client: FlaskClient, row_counts: RowCounts, key: str
) -> None:
    before = row_counts()

    response = client.post(
        "/api/v1/users", json={"username": "carol", "password": PASSWORD}, headers=keyed(None, key)
    )

    assert_error(response, 400, INVALID_KEY)
    assert row_counts() == before


@pytest.mark.parametrize("key", ["k", "k" * 255, " ~!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"])
def test_key_of_1_to_255_printable_ascii_characters_is_accepted(
    app: Flask, client: FlaskClient, alice: Account, key: str
) -> None:
    body = CREATING["v2-posts"][1]
    first = client.post("/api/v2/posts", json=body, headers=keyed(alice, key))
    again = client.post("/api/v2/posts", json=body, headers=keyed(alice, key))

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app, Post) == 1


def test_post_without_the_header_is_created_every_time(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    body = CREATING["v2-posts"][1]
    for _ in range(2):
        assert client.post("/api/v2/posts", json=body, headers=alice.headers).status_code == 201

    assert count(app, Post) == 2
    assert count(app, IdempotencyKey) == 0


# --- scope and expiry ------------------------------------------------------------------------


def test_keys_are_scoped_to_the_caller(
    app: Flask, client: FlaskClient, alice: Account, bob: Account
) -> None:
    body = CREATING["v2-posts"][1]
    by_alice = client.post("/api/v2/posts", json=body, headers=keyed(alice))
    by_bob = client.post("/api/v2/posts", json=body, headers=keyed(bob))
    alice_again = client.post("/api/v2/posts", json=body, headers=keyed(alice))
    bob_again = client.post("/api/v2/posts", json=body, headers=keyed(bob))

    assert by_alice.status_code == by_bob.status_code == 201
    assert "Idempotent-Replayed" not in by_bob.headers
    assert by_bob.get_json()["user_id"] == bob.id
    assert by_alice.get_json()["id"] != by_bob.get_json()["id"]
    assert alice_again.get_data() == by_alice.get_data()
    assert bob_again.get_data() == by_bob.get_data()
    assert count(app, Post) == 2


def test_expired_key_is_free_again(app: Flask, client: FlaskClient, alice: Account) -> None:
    body = CREATING["v2-posts"][1]
    first = client.post("/api/v2/posts", json=body, headers=keyed(alice))
    replayed = client.post("/api/v2/posts", json=body, headers=keyed(alice))
    assert replayed.headers["Idempotent-Replayed"] == "true"
    set_key(app, expires_at=utcnow() - timedelta(seconds=1))

    again = client.post("/api/v2/posts", json=body, headers=keyed(alice))

    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert again.get_json()["id"] != first.get_json()["id"]
    assert count(app, Post) == 2


def test_prune_deletes_expired_keys_and_keeps_live_ones(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    body = CREATING["v2-posts"][1]
    for key in ("old-1", "old-2"):
        assert client.post("/api/v2/posts", json=body, headers=keyed(alice, key)).status_code == 201
    set_key(app, expires_at=utcnow() - timedelta(seconds=1))
    assert client.post("/api/v2/posts", json=body, headers=keyed(alice, "live")).status_code == 201

    result = app.test_cli_runner().invoke(args=["jobs", "prune"])

    assert "Deleted 2 expired idempotency key(s)" in result.output
    with app.app_context():
        assert db.session.scalars(select(IdempotencyKey.key)).all() == ["live"]


def test_prune_chore_runs_in_batches(
    app: Flask, client: FlaskClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = CREATING["v1-todos"][1]
    for number in range(5):
        headers = keyed(alice, f"key-{number}")
        assert client.post("/api/v1/todos", json=body, headers=headers).status_code == 201
    set_key(app, expires_at=utcnow() - timedelta(seconds=1))
    monkeypatch.setattr(idempotency, "PRUNE_BATCH", 2)

    with app.app_context():
        assert idempotency.prune_expired_keys() == 5
    assert count(app, IdempotencyKey) == 0


def test_relay_chores_prune_expired_keys(app: Flask, client: FlaskClient, alice: Account) -> None:
    body = CREATING["v1-todos"][1]
    assert client.post("/api/v1/todos", json=body, headers=keyed(alice)).status_code == 201
    set_key(app, expires_at=utcnow() - timedelta(seconds=1))
    worker = SimpleNamespace(app=SimpleNamespace(flask_app=app), hostname="w1@test")
    relay = RelayStep.create(cast(Any, None), worker)

    with app.app_context():
        relay.run_chores()

    assert count(app, IdempotencyKey) == 0


@pytest.fixture
def few_posts_allowed(make_app: Callable[..., Flask]) -> Flask:
    return make_app(POST_RATE_LIMIT="2 per minute")


def test_replays_count_against_the_post_rate_limit(
    few_posts_allowed: Flask, alice: Account
) -> None:
    client = few_posts_allowed.test_client()
    body = CREATING["v1-posts"][1]
    answers = [client.post("/api/v1/posts", json=body, headers=keyed(alice)) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [201, 201, 429]
    assert count(few_posts_allowed, Post) == 1


# --- cost ------------------------------------------------------------------------------------


def test_without_the_header_no_statement_is_added_and_with_it_two(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    body = CREATING["v2-posts"][1]
    with statements_run_by(app) as unkeyed:
        assert client.post("/api/v2/posts", json=body, headers=alice.headers).status_code == 201
    with statements_run_by(app) as keyed_run:
        assert client.post("/api/v2/posts", json=body, headers=keyed(alice)).status_code == 201
    with statements_run_by(app) as replay:
        assert client.post("/api/v2/posts", json=body, headers=keyed(alice)).status_code == 201

    assert not any("idempotency_keys" in statement for statement in unkeyed)
    # The claim, then the stored answer in the post's own transaction.
    extra = [statement for statement in keyed_run if "idempotency_keys" in statement]
    assert [statement.split()[0] for statement in extra] == ["INSERT", "UPDATE"]
    assert len(keyed_run) == len(unkeyed) + 2
    # A replay: the claim that finds the key taken, and the read of its answer; nothing else
    # but the caller's token checks.
    assert [s.split()[0] for s in replay if "idempotency_keys" in s] == ["INSERT", "SELECT"]
    assert not any("INTO posts" in statement or "INTO jobs" in statement for statement in replay)

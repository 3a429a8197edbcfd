"""Idempotency-Key on creating POSTs: a retried request is answered again, never done twice.

Posts (v1, v2), to-dos (v1, v2) and registration take the header; the stored answer is written
in the transaction of the effect, so a replay creates no row, no job and no e-mail.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
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
from blog_api.services import idempotency, posts, todos, users
from blog_api.worker.bootsteps import RelayStep
from support import PASSWORD, Account, assert_error, statements_run_by
from support.resources import RowCounts, both_versions

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


@both_versions
def test_a_replayed_post_links_to_the_same_jobs_as_its_first_answer(
    client: FlaskClient, alice: Account, version: str
) -> None:
    """The stored answer keeps every header of the view's answer, a post's Link included."""
    body = {"title": "Once", "content": "Only once"}
    first, again = (
        client.post(f"/api/{version}/posts", json=body, headers=keyed(alice)) for _ in range(2)
    )

    assert again.headers["Idempotent-Replayed"] == "true"
    post_id = first.json["id"]
    assert again.headers.getlist("Link") == [f'</api/{version}/posts/{post_id}/jobs>; rel="jobs"']
    assert again.headers.getlist("Location") == first.headers.getlist("Location")


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


# --- another request holding the key --------------------------------------------------------

# Every endpoint that takes the header, registration included (its key is the caller-less one).
HOLDABLE = {
    **CREATING,
    "v1-users": ("/api/v1/users", {"username": "carol", "password": PASSWORD}, User),
}
every_holdable_endpoint = pytest.mark.parametrize("endpoint", HOLDABLE)
POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
WAIT = 0.3  # IDEMPOTENCY_WAIT of the impatient app


class Died(Exception):
    """The holder's process died: its transaction ends without a commit."""


class Holder(threading.Thread):
    """Another request holding KEY: the service call such a request makes, in a thread of its own
    (its own app context, session and connection), stopped right before its commit (inside its
    answer's rendering) until the test calls `commit` or `die`."""

    def __init__(self, app: Flask, account: Account | None, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.app, self.account, self.endpoint = app, account, endpoint
        self.before_commit = threading.Event()
        self.verdict: queue.Queue[str] = queue.Queue()
        self.answer = idempotency.Answer(
            201, json.dumps({"holder": endpoint}), (("Location", "/held"), ("Link", "<x>"))
        )

    def commit(self) -> None:
        self.verdict.put("commit")

    def die(self) -> None:
        self.verdict.put("die")

    def render(self, _created: object) -> idempotency.Answer:
        self.before_commit.set()
        if self.verdict.get(timeout=30) == "die":
            # Gone without a rollback, as a killed process's connection goes.
            db.session.connection().invalidate()
            raise Died
        return self.answer

    def run(self) -> None:
        path, body, _ = HOLDABLE[self.endpoint]
        with self.app.app_context():
            scope = f"user:{self.account.id}" if self.account else "anonymous"
            digest = idempotency.fingerprint("POST", path, body)
            key = idempotency.Key(scope, KEY, digest, self.render)
            author = db.session.get(User, self.account.id) if self.account else None
            with contextlib.suppress(Died):
                if self.endpoint == "v1-users":
                    users.create_user(**body, key=key)
                elif author and self.endpoint.endswith("posts"):
                    posts.create_post(author, body, api_version=path.split("/")[2], key=key)
                elif author:
                    todos.create_todo(author, body, key=key)


@contextlib.contextmanager
def key_held(app: Flask, account: Account | None, endpoint: str) -> Iterator[Holder]:
    """KEY held by another request (see `Holder`) for the block; it dies after, if still there."""
    holder = Holder(app, account, endpoint)
    holder.start()
    try:
        assert holder.before_commit.wait(10), "the holder never reached its commit"
        yield holder
    finally:
        holder.die()
        holder.join(10)


def account_for(endpoint: str, alice: Account) -> Account | None:
    return None if endpoint == "v1-users" else alice


@pytest.fixture
def impatient_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(IDEMPOTENCY_WAIT=WAIT)


@POSTGRESQL_ONLY
@every_holdable_endpoint
def test_same_key_while_the_first_request_runs_on_is_409_with_retry_after_the_wait(
    impatient_app: Flask, alice: Account, endpoint: str
) -> None:
    path, body, model = HOLDABLE[endpoint]
    account = account_for(endpoint, alice)
    before = count(impatient_app, model)

    with key_held(impatient_app, account, endpoint):
        started = time.monotonic()
        response = impatient_app.test_client().post(path, json=body, headers=keyed(account))
        waited = time.monotonic() - started

    assert_error(response, 409, IN_FLIGHT)
    assert int(response.headers["Retry-After"]) >= 1
    assert WAIT <= waited < WAIT + 2
    assert count(impatient_app, model) == before


@every_holdable_endpoint
def test_a_repeat_waits_for_the_request_holding_the_key_and_replays_its_answer(
    app: Flask, client: FlaskClient, alice: Account, endpoint: str
) -> None:
    """PostgreSQL: the repeat's claim waits on the holder's uncommitted key. SQLite: the
    repeat's transaction begins IMMEDIATE and waits (busy_timeout) for the holder's write lock;
    begun deferred after a read, it would fail at once with "database is locked"."""
    path, body, model = HOLDABLE[endpoint]
    account = account_for(endpoint, alice)
    before = count(app, model)

    with key_held(app, account, endpoint) as holder:
        threading.Timer(0.2, holder.commit).start()
        response = client.post(path, json=body, headers=keyed(account))

    assert response.status_code == 201
    assert response.headers["Idempotent-Replayed"] == "true"
    assert response.get_data(as_text=True) == holder.answer.body
    assert (response.headers["Location"], response.headers["Link"]) == ("/held", "<x>")
    assert count(app, model) == before + 1


@every_holdable_endpoint
def test_a_repeat_does_the_work_itself_as_soon_as_the_request_holding_the_key_dies(
    app: Flask, client: FlaskClient, alice: Account, endpoint: str
) -> None:
    path, body, model = HOLDABLE[endpoint]
    account = account_for(endpoint, alice)
    before = count(app, model)

    with key_held(app, account, endpoint) as holder:
        threading.Timer(0.2, holder.die).start()
        started = time.monotonic()
        response = client.post(path, json=body, headers=keyed(account))
        waited = time.monotonic() - started
    again = client.post(path, json=body, headers=keyed(account))

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert waited < 2
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == response.get_data()
    assert count(app, model) == before + 1


def never_rendered(created: object) -> idempotency.Answer:
    raise AssertionError(f"{created} was never meant to be answered")


def claim_and_die(key: idempotency.Key, todo: Todo) -> None:
    """A to-do's keyed transaction whose process dies after its claim and its INSERT."""
    with idempotency.once(key):
        db.session.add(todo)
        db.session.flush()
        assert db.session.scalars(select(IdempotencyKey.key)).all() == [key.key]
        raise Died


def test_a_claim_rolled_back_with_its_transaction_leaves_the_key_free_at_once(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    """The process that claimed the key died before its commit: nothing of the claim is left,
    so there is nothing to wait for or to take over."""
    path, body, _ = CREATING["v1-todos"]
    with app.app_context():
        digest = idempotency.fingerprint("POST", path, body)
        key = idempotency.Key(f"user:{alice.id}", KEY, digest, never_rendered)
        with pytest.raises(Died):
            claim_and_die(key, Todo(user_id=alice.id, **body))
        # Gone from the transaction the request goes on with, not only from the database.
        assert db.session.scalars(select(IdempotencyKey.key)).all() == []
    assert count(app, IdempotencyKey) == count(app, Todo) == 0

    started = time.monotonic()
    response = client.post(path, json=body, headers=keyed(alice))

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert time.monotonic() - started < 1
    assert count(app, Todo) == 1


def test_a_key_committed_without_an_answer_is_free(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    """Such a row is what the releases that claimed a key in a transaction of its own left
    when their request died; no claim commits without its answer now."""
    path, body, _ = CREATING["v2-posts"]
    with app.test_request_context():
        digest = idempotency.fingerprint("POST", path, body)
        db.session.add(
            IdempotencyKey(
                scope=f"user:{alice.id}",
                key=KEY,
                fingerprint=digest,
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        db.session.commit()

    response = client.post(path, json=body, headers=keyed(alice))

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert count(app, Post) == 1


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


# What a key adds to a request, per database: the start of the keyed transaction (SQLite: its
# write lock; PostgreSQL: the claim's lock_timeout, and its end), the claim, the answer.
KEY_STATEMENTS = {
    "sqlite": ["BEGIN IMMEDIATE", "INSERT INTO idempotency_keys", "UPDATE idempotency_keys"],
    "postgresql": [
        "SELECT set_config('lock_timeout'",
        "INSERT INTO idempotency_keys",
        "SET LOCAL lock_timeout TO DEFAULT",
        "UPDATE idempotency_keys",
    ],
}
KEY_WORDS = ("idempotency_keys", "lock_timeout", "BEGIN IMMEDIATE")


def of_the_key(statements: list[str]) -> list[str]:
    return [s for s in statements if any(word in s for word in KEY_WORDS)]


def test_without_the_header_no_statement_is_added_and_with_it_those_of_the_key(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    body = CREATING["v2-posts"][1]
    with statements_run_by(app) as unkeyed:
        assert client.post("/api/v2/posts", json=body, headers=alice.headers).status_code == 201
    with statements_run_by(app) as keyed_run:
        assert client.post("/api/v2/posts", json=body, headers=keyed(alice)).status_code == 201
    with statements_run_by(app) as replay:
        assert client.post("/api/v2/posts", json=body, headers=keyed(alice)).status_code == 201
    with app.app_context():
        expected = KEY_STATEMENTS[db.engine.dialect.name]

    assert of_the_key(unkeyed) == []
    # The claim first, the answer last, in the post's own transaction; otherwise the same.
    key_statements = of_the_key(keyed_run)
    assert all(s.startswith(start) for s, start in zip(key_statements, expected, strict=True))
    assert keyed_run.index(key_statements[-1]) == len(keyed_run) - 1
    assert [s for s in keyed_run if s not in key_statements] == unkeyed
    # A replay: the caller's token check, the claim that finds the key taken and the read of
    # its answer; nothing else.
    replayed = of_the_key(replay)
    replay_starts = [*expected[:2], "SELECT"]
    assert all(s.startswith(start) for s, start in zip(replayed, replay_starts, strict=True))
    assert replay == [*keyed_run[: keyed_run.index(key_statements[0])], *replayed]

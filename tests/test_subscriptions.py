"""Subscriptions and the one-click unsubscribe (SPEC §4.7): following an author, the caller's
list, unfollowing, the subscriber count of a profile, and the link every fan-out e-mail carries.

Real database (SQLite file and PostgreSQL); bad input on every endpoint is a clear error that
writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import case, delete, insert, literal, select

from blog_api.auth.unsubscribe import INVALID_UNSUBSCRIBE_TOKEN, unsubscribe_token
from blog_api.extensions import db
from blog_api.models import Delivery, DeliveryStatus, JobKind, Subscription, User
from blog_api.models.base import utcnow
from blog_api.services.subscriptions import NO_ADDRESS, NOT_CONFIRMED
from support import Account, assert_error, assert_too_many_requests, statements_run_by
from support.fanout import add_subscribers, run_due_jobs
from support.resources import NOT_A_JSON_OBJECT, RowCounts, create_post

FORM = "application/x-www-form-urlencoded"
ONE_CLICK = "List-Unsubscribe=One-Click"
MALFORMED_AT_THE_SECOND_CHARACTER = (
    "Malformed JSON body: Expecting property name enclosed in double quotes at line 1, "
    "column 2 (char 1)"
)
ONE_CLICK_BODY = (
    "The body must be the form `List-Unsubscribe=One-Click` (RFC 8058) or the JSON object {}"
)


def subscribe(client: FlaskClient, reader: Account, author_id: int, **kwargs: Any) -> Any:
    return client.post(f"/api/v1/users/{author_id}/subscription", headers=reader.headers, **kwargs)


def subscriber_count(client: FlaskClient, user_id: int) -> int:
    response = client.get(f"/api/v1/users/{user_id}")
    assert response.status_code == 200
    return int(response.json["subscriber_count"])


def link_path(app: Flask, subscriber_id: int, author_id: int) -> str:
    with app.app_context():
        return f"/api/v1/unsubscribe?token={unsubscribe_token(subscriber_id, author_id)}"


def test_subscribing_answers_201_with_where_the_subscription_lives_and_again_200(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    created = subscribe(client, bob, alice.id)

    assert created.status_code == 201, created.json
    assert created.headers["Location"] == f"/api/v1/me/subscriptions/{alice.id}"
    assert set(created.json) == {"author_id", "author_username", "created_at"}
    assert (created.json["author_id"], created.json["author_username"]) == (alice.id, "alice")
    assert created.json["created_at"].endswith("+00:00")
    shown = client.get(created.headers["Location"], headers=bob.headers)
    assert shown.status_code == 200
    detail = dict(shown.json)
    link = detail.pop("unsubscribe_url")
    assert detail == created.json
    assert link.startswith("https://blog-api.test/api/v1/unsubscribe?token=")

    again = subscribe(client, bob, alice.id, json={})
    assert (again.status_code, again.json) == (200, created.json)
    assert "Location" not in again.headers
    assert subscriber_count(client, alice.id) == 1
    assert subscriber_count(client, bob.id) == 0


@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        ("self", 400, "You cannot subscribe to yourself"),
        ("999999", 404, "User not found"),
        ("99999999999999999999", 404, None),
    ],
)
def test_subscribing_to_yourself_or_nobody_is_refused_and_writes_nothing(
    client: FlaskClient,
    bob: Account,
    row_counts: RowCounts,
    target: str,
    status: int,
    message: str | None,
) -> None:
    before = row_counts()
    author = str(bob.id) if target == "self" else target

    response = client.post(f"/api/v1/users/{author}/subscription", headers=bob.headers)

    assert response.status_code == status
    if message:
        assert_error(response, status, message)
    assert row_counts() == before


def test_a_subscriber_without_an_address_is_told_why_and_nothing_is_written(
    client: FlaskClient, alice: Account, make_account: Callable[..., Account], row_counts: RowCounts
) -> None:
    nomail = make_account("nomail")
    before = row_counts()

    assert_error(subscribe(client, nomail, alice.id), 409, NO_ADDRESS)
    assert row_counts() == before


def test_with_confirmation_required_an_unconfirmed_subscriber_is_told_to_confirm_first(
    make_app: Callable[..., Flask], alice: Account, bob: Account, row_counts: RowCounts
) -> None:
    app = make_app(EMAIL_CONFIRMATION_REQUIRED=True)
    client = app.test_client()
    before = row_counts()

    assert_error(subscribe(client, bob, alice.id), 409, NOT_CONFIRMED)
    assert row_counts() == before
    with app.app_context():
        db.session.get_one(User, bob.id).email_confirmed_at = utcnow()
        db.session.commit()
    assert subscribe(client, bob, alice.id).status_code == 201


@pytest.mark.parametrize(
    ("body", "message"),
    [
        *NOT_A_JSON_OBJECT,
        pytest.param({"json": {"x": 1}}, "Unknown field(s): x", id="unknown-field"),
    ],
)
def test_a_subscribe_body_other_than_empty_or_an_empty_object_is_400(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    row_counts: RowCounts,
    body: dict[str, Any],
    message: str,
) -> None:
    before = row_counts()

    response = subscribe(client, bob, alice.id, **body)

    assert response.status_code == 400, response.json
    assert response.json["error"] == "Bad Request"
    assert response.json["message"] == message
    assert row_counts() == before


def test_subscribing_and_unsubscribing_need_a_login(client: FlaskClient, alice: Account) -> None:
    url = f"/api/v1/users/{alice.id}/subscription"
    assert_error(client.post(url), 401, "Missing token")
    assert_error(client.delete(url), 401, "Missing token")
    assert_error(client.get("/api/v1/me/subscriptions"), 401, "Missing token")


def test_subscribing_is_rate_limited_per_user(
    make_app: Callable[..., Flask], make_account: Callable[..., Account], bob: Account
) -> None:
    app = make_app(SUBSCRIBE_RATE_LIMIT="2 per minute")
    client = app.test_client()
    authors = [make_account(f"writer{n}", email=f"w{n}@example.com") for n in range(3)]

    assert [subscribe(client, bob, author.id).status_code for author in authors[:2]] == [201, 201]
    assert_too_many_requests(subscribe(client, bob, authors[2].id), "2 per 1 minute")


def test_unsubscribing_answers_200_then_404_and_the_count_follows(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    url = f"/api/v1/users/{alice.id}/subscription"

    response = client.delete(url, headers=bob.headers)

    assert (response.status_code, response.json) == (200, {"message": "Subscription deleted"})
    assert subscriber_count(client, alice.id) == 0
    assert_error(client.delete(url, headers=bob.headers), 404, "Subscription not found")
    assert_error(
        client.get(f"/api/v1/me/subscriptions/{alice.id}", headers=bob.headers),
        404,
        "Subscription not found",
    )


def test_my_subscriptions_are_listed_by_author_in_keyset_pages_and_only_mine(
    client: FlaskClient, make_account: Callable[..., Account], bob: Account, alice: Account
) -> None:
    authors = [make_account(f"writer{n}", email=f"w{n}@example.com") for n in range(5)]
    for author in authors:
        assert subscribe(client, bob, author.id).status_code == 201
    assert subscribe(client, alice, authors[0].id).status_code == 201

    first = client.get("/api/v1/me/subscriptions?limit=2&count=true", headers=bob.headers)
    assert first.status_code == 200
    assert first.json["pagination"]["total"] == 5
    seen = [item["author_username"] for item in first.json["subscriptions"]]
    next_url = first.json["pagination"]["next"]
    assert first.headers["Link"] == f'<{next_url}>; rel="next"'
    while next_url:
        page = client.get(next_url, headers=bob.headers)
        assert page.status_code == 200
        seen += [item["author_username"] for item in page.json["subscriptions"]]
        next_url = page.json["pagination"]["next"]

    assert seen == [f"writer{n}" for n in range(5)]
    mine = client.get("/api/v1/me/subscriptions", headers=alice.headers).json["subscriptions"]
    assert [item["author_id"] for item in mine] == [authors[0].id]
    bad = client.get("/api/v1/me/subscriptions?limit=0", headers=bob.headers)
    assert_error(bad, 400, "Invalid query parameter(s): limit", {"limit"})


def test_nobody_can_list_another_user_s_subscribers(client: FlaskClient, alice: Account) -> None:
    assert client.get(f"/api/v1/users/{alice.id}/subscribers").status_code == 404
    assert client.get(f"/api/v1/users/{alice.id}/subscription").status_code == 405


def test_the_subscriber_count_comes_with_the_profile_without_counting_rows(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    add_subscribers(app, alice.id, 3, "reader")

    with statements_run_by(app) as statements:
        assert subscriber_count(client, alice.id) == 3

    assert not any("subscriptions" in statement for statement in statements), statements


def test_deleting_a_subscriber_or_an_author_keeps_the_counts_right(
    app: Flask, client: FlaskClient, alice: Account, bob: Account, admin: Account
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    assert subscribe(client, alice, bob.id).status_code == 201
    readers = add_subscribers(app, alice.id, 2, "reader")

    assert client.delete(f"/api/v1/users/{readers[0]}", headers=admin.headers).status_code == 200
    assert subscriber_count(client, alice.id) == 2
    assert client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers).status_code == 200
    assert subscriber_count(client, bob.id) == 0
    assert client.get("/api/v1/me/subscriptions", headers=bob.headers).json["subscriptions"] == []


# -- the one-click link -----------------------------------------------------------------------


def test_the_link_s_get_changes_nothing_and_says_what_a_post_would_do(
    app: Flask, client: FlaskClient, alice: Account, bob: Account, row_counts: RowCounts
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    url = link_path(app, bob.id, alice.id)
    before = row_counts()

    response = client.get(url)

    assert response.status_code == 200
    assert response.json == {
        "message": "A POST to this URL ends your subscription to new posts by alice",
        "author_id": alice.id,
        "author_username": "alice",
        "subscribed": True,
    }
    assert row_counts() == before
    assert subscriber_count(client, alice.id) == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"data": ONE_CLICK, "content_type": FORM}, id="form"),
        pytest.param({"data": {"List-Unsubscribe": "One-Click"}}, id="multipart"),
        pytest.param({"json": {}}, id="empty-object"),
        pytest.param({}, id="no-body"),
    ],
)
def test_a_one_click_post_unsubscribes_without_login_and_cancels_waiting_deliveries(
    app: Flask, client: FlaskClient, alice: Account, bob: Account, body: dict[str, Any]
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    post = create_post(client, alice, "v1")
    run_due_jobs(app, kinds=(JobKind.FAN_OUT,))
    url = link_path(app, bob.id, alice.id)
    if body.get("data") == {"List-Unsubscribe": "One-Click"}:
        body = {**body, "content_type": "multipart/form-data"}

    response = client.post(url, **body)

    assert (response.status_code, response.json) == (
        200,
        {"message": "You will get no more e-mails about new posts by alice"},
    )
    assert subscriber_count(client, alice.id) == 0
    with app.app_context():
        statuses = db.session.scalars(
            select(Delivery.status).where(Delivery.post_id == post["id"])
        ).all()
    assert statuses == [DeliveryStatus.CANCELLED]
    again = client.post(url, data=ONE_CLICK, content_type=FORM)
    assert (again.status_code, again.json) == (200, response.json)
    preview = client.get(url).json
    assert (preview["subscribed"], preview["message"]) == (
        False,
        "You are not subscribed to new posts by alice: a POST to this URL changes nothing",
    )


def test_a_link_outlives_its_author_and_says_so(
    app: Flask, client: FlaskClient, alice: Account, bob: Account, admin: Account
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    url = link_path(app, bob.id, alice.id)
    assert client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers).status_code == 200

    preview = client.get(url)
    assert preview.json["author_username"] is None
    assert preview.json["subscribed"] is False
    done = client.post(url, json={})
    assert (done.status_code, done.json["message"]) == (
        200,
        "You will get no more e-mails about new posts by this author",
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("forged", id="garbage"),
        pytest.param("A" * 32, id="right-shape"),
        pytest.param("tampered", id="another-pair"),
        pytest.param("other-key", id="another-secret-key"),
        pytest.param("x" * 1025, id="too-long"),
        pytest.param("", id="empty"),
    ],
)
def test_a_bad_or_forged_token_is_400_and_unsubscribes_nobody(
    app: Flask,
    make_app: Callable[..., Flask],
    client: FlaskClient,
    alice: Account,
    bob: Account,
    row_counts: RowCounts,
    token: str,
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    with app.app_context():
        genuine = unsubscribe_token(bob.id, alice.id)
    if token == "tampered":
        token = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    elif token == "other-key":
        with make_app(SECRET_KEY="another-secret-key-0123456789").app_context():
            token = unsubscribe_token(bob.id, alice.id)
    before = row_counts()

    for method in ("GET", "POST"):
        response = client.open(
            f"/api/v1/unsubscribe?token={token}", method=method, data=ONE_CLICK, content_type=FORM
        )
        assert response.status_code == 400, response.json
        if len(token) <= 1024 and token:
            assert_error(response, 400, INVALID_UNSUBSCRIBE_TOKEN, {"token"})
    assert row_counts() == before
    assert subscriber_count(client, alice.id) == 1


def test_a_link_without_a_token_is_400(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/unsubscribe"), 400, "Missing token", {"token"})
    assert_error(client.post("/api/v1/unsubscribe", json={}), 400, "Missing token", {"token"})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"data": "List-Unsubscribe=Yes", "content_type": FORM}, id="other-value"),
        pytest.param({"data": f"{ONE_CLICK}&x=1", "content_type": FORM}, id="extra-field"),
        pytest.param({"data": ONE_CLICK, "content_type": "text/plain"}, id="text"),
        pytest.param({"json": {"List-Unsubscribe": "One-Click"}}, id="json-fields"),
        pytest.param({"json": ["x"]}, id="json-list"),
        pytest.param({"data": "{not json", "content_type": "application/json"}, id="bad-json"),
    ],
)
def test_a_one_click_post_with_another_body_is_400_and_changes_nothing(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    bob: Account,
    row_counts: RowCounts,
    body: dict[str, Any],
) -> None:
    assert subscribe(client, bob, alice.id).status_code == 201
    before = row_counts()

    response = client.post(link_path(app, bob.id, alice.id), **body)

    malformed = body.get("data") == "{not json"
    message = MALFORMED_AT_THE_SECOND_CHARACTER if malformed else ONE_CLICK_BODY
    assert_error(response, 400, message)
    assert row_counts() == before
    assert subscriber_count(client, alice.id) == 1


def test_subscriptions_written_and_deleted_in_bulk_keep_every_author_s_count(
    app: Flask, client: FlaskClient, alice: Account, bob: Account
) -> None:
    """One statement adding subscribers to two authors, then one removing some of each (the
    count follows per statement on PostgreSQL, per row on SQLite)."""
    with app.app_context():
        db.session.execute(
            insert(User),
            [
                {"username": f"bulk{n}", "email": f"bulk{n}@example.com", "password_hash": "x"}
                for n in range(30)
            ],
        )
        readers = list(db.session.scalars(select(User.id).where(User.username.like("bulk%"))))
        db.session.execute(
            insert(Subscription).from_select(
                ["subscriber_id", "author_id", "created_at"],
                select(
                    User.id, case((User.id % 3 == 0, bob.id), else_=alice.id), literal(utcnow())
                ).where(User.id.in_(readers)),
            )
        )
        db.session.commit()
        to_bob = sum(reader % 3 == 0 for reader in readers)
        assert (subscriber_count(client, alice.id), subscriber_count(client, bob.id)) == (
            30 - to_bob,
            to_bob,
        )
        db.session.execute(delete(Subscription).where(Subscription.subscriber_id.in_(readers[:12])))
        db.session.commit()
        gone_from_bob = sum(reader % 3 == 0 for reader in readers[:12])

    assert (subscriber_count(client, alice.id), subscriber_count(client, bob.id)) == (
        30 - to_bob - (12 - gone_from_bob),
        to_bob - gone_from_bob,
    )

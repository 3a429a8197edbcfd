"""S17 (and the admin side of S18): users A and B and an admin against every to-do and post
route, in both versions.

To-dos are private: another user's to-do does not exist for B (`404 Todo not found`) and A's row
stays byte-identical. Posts are public to read (SPEC §4.4); only the author or an admin may
change them, and B's attempt is `403` with the tutorial's message (SPEC §4.4 wins over S17's
"404 for everything": a public post's existence is no secret).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from attacks import on_both_versions
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient

from support import Account, assert_error, table_rows
from support.resources import RowCounts, both_versions, create_post, create_todo, ids_of

pytestmark = pytest.mark.scenario("S17")

OTHERS_POSTS = "your own posts unless you are an admin"
# A to-do or a post as the API answered its creation.
Item = dict[str, Any]


@pytest.fixture
def alices_todo(client: FlaskClient, alice: Account) -> Item:
    return create_todo(client, alice, "v2", title="Alice's secret plan", priority=9)


@pytest.fixture
def bobs_todo(client: FlaskClient, bob: Account) -> Item:
    return create_todo(client, bob, "v2", title="Bob's plan", priority=1)


@pytest.fixture
def alices_post(client: FlaskClient, alice: Account) -> Item:
    return create_post(client, alice, "v2", title="Alice writes", content="Public words")


# --- to-dos: another user -----------------------------------------------------------------------


# What user B tries on user A's to-do and post: (resource, method, body, status, message).
FOREIGN_ATTEMPTS = [
    pytest.param("todos", "GET", None, 404, "Todo not found", id="todo-read"),
    pytest.param(
        "todos",
        "PUT",
        {"title": "Hijacked", "completed": True},
        404,
        "Todo not found",
        id="todo-update",
    ),
    pytest.param("todos", "PUT", {}, 404, "Todo not found", id="todo-empty-update"),
    pytest.param("todos", "DELETE", None, 404, "Todo not found", id="todo-delete"),
    pytest.param(
        "posts",
        "PUT",
        {"title": "Hijacked"},
        403,
        f"You can only edit {OTHERS_POSTS}",
        id="post-update",
    ),
    pytest.param(
        "posts", "DELETE", None, 403, f"You can only delete {OTHERS_POSTS}", id="post-delete"
    ),
]


@pytest.mark.parametrize(("resource", "method", "body", "status", "message"), FOREIGN_ATTEMPTS)
def test_another_users_todo_is_out_of_reach_and_their_post_is_read_only(
    app: Flask,
    client: FlaskClient,
    snapshot: Callable[[], Snapshot],
    bob: Account,
    alices_todo: Item,
    alices_post: Item,
    resource: str,
    method: str,
    body: dict[str, Any] | None,
    status: int,
    message: str,
) -> None:
    """B's request on A's to-do finds nothing (404); on A's post it is refused (403); either
    way A's row stays as it was and nothing else is written."""
    item = {"todos": alices_todo, "posts": alices_post}[resource]
    before = (snapshot(), table_rows(app, resource))

    response = on_both_versions(
        lambda version: client.open(
            f"/api/{version}/{resource}/{item['id']}", method=method, json=body, headers=bob.headers
        )
    )

    assert_error(response, status, message)
    assert (snapshot(), table_rows(app, resource)) == before


@both_versions
def test_another_users_todo_looks_exactly_like_a_missing_one(
    client: FlaskClient, bob: Account, alices_todo: Item, version: str
) -> None:
    foreign = client.get(f"/api/{version}/todos/{alices_todo['id']}", headers=bob.headers)
    missing = client.get(f"/api/{version}/todos/999999", headers=bob.headers)

    assert (foreign.status_code, foreign.get_json()) == (missing.status_code, missing.get_json())


@both_versions
@pytest.mark.parametrize(
    "query",
    ["", "?search=secret", "?title=Alice", "?user_id={alice_id}", "?completed=false"],
)
@pytest.mark.usefixtures("bobs_todo")
def test_user_list_never_contains_another_users_todos(
    client: FlaskClient, alice: Account, bob: Account, alices_todo: Item, version: str, query: str
) -> None:
    counted = f"{query}&count=true" if query else "?count=true"
    response = client.get(
        f"/api/{version}/todos{counted.format(alice_id=alice.id)}", headers=bob.headers
    )

    assert alices_todo["id"] not in ids_of(response, "todos")
    assert all(todo["user_id"] == bob.id for todo in response.get_json()["todos"])
    assert response.get_json()["pagination"]["total"] == len(response.get_json()["todos"])


def test_user_priority_listing_never_contains_another_users_todos(
    client: FlaskClient, bob: Account, alices_todo: Item, bobs_todo: Item
) -> None:
    response = client.get("/api/v2/todos/priority?count=true", headers=bob.headers)

    assert ids_of(response, "todos") == [bobs_todo["id"]]
    assert response.get_json()["pagination"]["total"] == 1


@both_versions
def test_batch_delete_of_another_users_ids_reports_them_not_found(
    app: Flask, client: FlaskClient, bob: Account, alices_todo: Item, bobs_todo: Item, version: str
) -> None:
    alices_row = [row for row in table_rows(app, "todos") if row[0] == alices_todo["id"]]

    response = client.delete(
        f"/api/{version}/todos",
        json={"ids": [alices_todo["id"], bobs_todo["id"]]},
        headers=bob.headers,
    )

    assert response.status_code == 200
    assert response.get_json() == {
        "message": "1 todo(s) deleted",
        "deleted": [bobs_todo["id"]],
        "not_found": [alices_todo["id"]],
    }
    assert table_rows(app, "todos") == alices_row


@both_versions
def test_batch_delete_of_only_another_users_ids_deletes_nothing(
    app: Flask,
    client: FlaskClient,
    row_counts: RowCounts,
    bob: Account,
    alices_todo: Item,
    version: str,
) -> None:
    before = (row_counts(), table_rows(app, "todos"))

    response = client.delete(
        f"/api/{version}/todos", json={"ids": [alices_todo["id"]]}, headers=bob.headers
    )

    assert response.get_json()["not_found"] == [alices_todo["id"]]
    assert response.get_json()["deleted"] == []
    assert (row_counts(), table_rows(app, "todos")) == before


def test_user_cannot_list_another_users_todos_through_user_route(
    client: FlaskClient, alice: Account, bob: Account, alices_todo: Item
) -> None:
    response = client.get(f"/api/v1/users/{alice.id}/todos", headers=bob.headers)

    assert_error(response, 403, "You can only view your own todos unless you are an admin")


@pytest.mark.parametrize("reader", ["alice", "admin"])
@pytest.mark.usefixtures("bobs_todo")
def test_user_todos_route_lists_only_that_users_todos_to_them_and_the_admin(
    client: FlaskClient, alice: Account, admin: Account, alices_todo: Item, reader: str
) -> None:
    headers = {"alice": alice, "admin": admin}[reader].headers

    response = client.get(f"/api/v1/users/{alice.id}/todos", headers=headers)

    assert ids_of(response, "todos") == [alices_todo["id"]]


# --- to-dos: the admin ------------------------------------------------------------------------


@both_versions
def test_admin_list_contains_every_users_todos(
    client: FlaskClient, admin: Account, alices_todo: Item, bobs_todo: Item, version: str
) -> None:
    own = create_todo(client, admin, version)

    response = client.get(f"/api/{version}/todos", headers=admin.headers)

    assert ids_of(response, "todos") == [alices_todo["id"], bobs_todo["id"], own["id"]]
    assert [todo["user_username"] for todo in response.get_json()["todos"]] == [
        "alice",
        "bob",
        admin.username,
    ]


@both_versions
def test_admin_filters_todos_by_user(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    admin: Account,
    alices_todo: Item,
    bobs_todo: Item,
    version: str,
) -> None:
    url = f"/api/{version}/todos"

    assert ids_of(client.get(f"{url}?user_id={alice.id}", headers=admin.headers), "todos") == [
        alices_todo["id"]
    ]
    assert ids_of(client.get(f"{url}?user_id={bob.id}", headers=admin.headers), "todos") == [
        bobs_todo["id"]
    ]
    assert ids_of(client.get(f"{url}?user_id=999999", headers=admin.headers), "todos") == []


def test_admin_priority_listing_contains_every_users_todos(
    client: FlaskClient, admin: Account, alices_todo: Item, bobs_todo: Item
) -> None:
    response = client.get("/api/v2/todos/priority", headers=admin.headers)

    assert ids_of(response, "todos") == [alices_todo["id"], bobs_todo["id"]]


@both_versions
def test_admin_reads_updates_and_deletes_another_users_todo(
    client: FlaskClient, alice: Account, admin: Account, alices_todo: Item, version: str
) -> None:
    url = f"/api/{version}/todos/{alices_todo['id']}"

    read = client.get(url, headers=admin.headers)
    updated = client.put(url, json={"completed": True}, headers=admin.headers)
    seen_by_alice = client.get(url, headers=alice.headers)
    deleted = client.delete(url, headers=admin.headers)

    assert read.status_code == 200
    assert read.get_json()["user_username"] == "alice"
    assert updated.status_code == 200
    assert updated.get_json()["completed"] is True
    assert updated.get_json()["user_id"] == alice.id
    assert seen_by_alice.get_json()["completed"] is True
    assert deleted.get_json() == {"message": "Todo deleted"}
    assert_error(client.get(url, headers=alice.headers), 404, "Todo not found")


@both_versions
def test_admin_batch_delete_deletes_only_the_admins_own_todos(
    app: Flask, client: FlaskClient, admin: Account, alices_todo: Item, version: str
) -> None:
    own = create_todo(client, admin, version)
    alices_row = [row for row in table_rows(app, "todos") if row[0] == alices_todo["id"]]

    response = client.delete(
        f"/api/{version}/todos", json={"ids": [alices_todo["id"], own["id"]]}, headers=admin.headers
    )

    assert response.get_json()["deleted"] == [own["id"]]
    assert response.get_json()["not_found"] == [alices_todo["id"]]
    assert table_rows(app, "todos") == alices_row


# --- posts ------------------------------------------------------------------------------------


@both_versions
@pytest.mark.parametrize("reader", ["anonymous", "bob", "admin"])
def test_anyone_reads_another_users_post(
    client: FlaskClient, bob: Account, admin: Account, alices_post: Item, version: str, reader: str
) -> None:
    headers = {"anonymous": {}, "bob": bob.headers, "admin": admin.headers}[reader]

    single = client.get(f"/api/{version}/posts/{alices_post['id']}", headers=headers)
    listed = client.get(f"/api/{version}/posts", headers=headers)

    assert single.status_code == 200
    assert single.get_json()["title"] == "Alice writes"
    assert ids_of(listed, "posts") == [alices_post["id"]]


@both_versions
def test_admin_updates_another_users_post(
    client: FlaskClient, alice: Account, admin: Account, alices_post: Item, version: str
) -> None:
    url = f"/api/{version}/posts/{alices_post['id']}"

    response = client.put(url, json={"title": "Moderated"}, headers=admin.headers)

    assert response.status_code == 200
    assert response.get_json()["title"] == "Moderated"
    assert response.get_json()["user_id"] == alice.id
    assert client.get(url).get_json()["title"] == "Moderated"


@both_versions
def test_admin_deletes_another_users_post(
    client: FlaskClient, admin: Account, alices_post: Item, version: str
) -> None:
    url = f"/api/{version}/posts/{alices_post['id']}"

    response = client.delete(url, headers=admin.headers)

    assert response.get_json() == {"message": "Post deleted"}
    assert_error(client.get(url), 404, "Post not found")

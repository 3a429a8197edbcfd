"""To-dos (SPEC §3, §4.1, §4.3): what only to-dos do, in v1 and v2: defaults and the fields a
body may not carry, filters, search, sorting, the v2 priority listing, the v1 user route, batch
delete, and the token even reading needs.

What to-dos share with posts (creating, reading, listing, updating and deleting one, the bodies
refused) is in test_resources_contract.py; ownership between users is in
security/test_ownership.py. Here every request is the owner's.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from support import Account, assert_error, table_rows
from support.resources import (
    NOT_A_JSON_OBJECT,
    REQUEST_MUST_BE_JSON,
    SERVER_SET_FIELDS,
    TODOS,
    TOO_LARGE_MESSAGE,
    RowCounts,
    assert_paginates,
    both_versions,
    create_todo,
    huge_body,
    ids_of,
    invalid,
    invalid_titles,
    unknown,
)

# Fields a create or update body may not carry: (fields, message, fields named in `errors`).
INVALID_FIELDS = [
    *invalid_titles(longest=100),
    invalid({"description": "d" * 256}, id="desc-256"),
    invalid({"description": "a\x00"}, id="desc-nul"),
    invalid({"completed": "yes"}, id="completed-yes"),
    invalid({"completed": 1}, id="completed-1"),
    *SERVER_SET_FIELDS,
    unknown({"id": 7, "user_id": 2}, id="id-and-user_id"),
]


def get_todo(client: FlaskClient, owner: Account, version: str, todo_id: int) -> Any:
    return client.get(TODOS.url(version, todo_id), headers=owner.headers)


def listed_titles(client: FlaskClient, owner: Account, url: str, **query: Any) -> list[str]:
    response = client.get(url, query_string=query, headers=owner.headers)
    assert response.status_code == 200, response.get_json()
    return [todo["title"] for todo in response.get_json()["todos"]]


# --- create ----------------------------------------------------------------------------------


@both_versions
def test_create_todo_fills_in_defaults(client: FlaskClient, alice: Account, version: str) -> None:
    todo = create_todo(client, alice, version, title="Only a title")

    assert todo["description"] is None
    assert todo["completed"] is False
    if version == "v2":
        assert todo["priority"] == 0


def test_v2_create_todo_stores_priority(client: FlaskClient, alice: Account) -> None:
    todo = create_todo(client, alice, "v2", priority=7)

    assert todo["priority"] == 7
    assert get_todo(client, alice, "v2", todo["id"]).get_json()["priority"] == 7
    assert "priority" not in get_todo(client, alice, "v1", todo["id"]).get_json()


def test_v1_shows_no_priority_of_a_v2_todo_but_keeps_it(
    client: FlaskClient, alice: Account
) -> None:
    todo = create_todo(client, alice, "v2", priority=4)

    response = client.put(
        TODOS.url("v1", todo["id"]), json={"title": "Renamed"}, headers=alice.headers
    )

    assert response.status_code == 200
    assert set(response.get_json()) == TODOS.fields["v1"]
    assert get_todo(client, alice, "v2", todo["id"]).get_json()["priority"] == 4


@both_versions
@pytest.mark.parametrize("write", ["create", "update"])
@pytest.mark.parametrize(("fields", "message", "error_fields"), INVALID_FIELDS)
def test_a_body_with_an_invalid_field_creates_or_changes_nothing(
    app: Flask,
    client: FlaskClient,
    row_counts: RowCounts,
    alice: Account,
    version: str,
    write: str,
    fields: dict[str, Any],
    message: str,
    error_fields: set[str],
) -> None:
    todo = create_todo(client, alice, version)
    before = (row_counts(), table_rows(app, "todos"))

    if write == "create":
        body = {"title": "Valid", **fields}
        response = client.post(TODOS.url(version), json=body, headers=alice.headers)
    else:
        response = client.put(TODOS.url(version, todo["id"]), json=fields, headers=alice.headers)

    assert_error(response, 400, message, error_fields)
    assert (row_counts(), table_rows(app, "todos")) == before


# --- read ------------------------------------------------------------------------------------


@both_versions
@pytest.mark.parametrize(("method", "on_item"), [("GET", False), ("DELETE", False), ("GET", True)])
def test_reading_and_batch_deleting_todos_require_a_token(
    app: Flask,
    client: FlaskClient,
    row_counts: RowCounts,
    alice: Account,
    version: str,
    method: str,
    on_item: bool,
) -> None:
    """To-dos are private; the writes both resources share are in the contract suite."""
    todo = create_todo(client, alice, version)
    before = (row_counts(), table_rows(app, "todos"))
    url = TODOS.url(version, todo["id"] if on_item else None)
    body = {"title": "x"} if on_item else {"ids": [todo["id"]]}

    response = client.open(url, method=method, json=body)

    assert_error(response, 401, "Missing token")
    assert (row_counts(), table_rows(app, "todos")) == before


# --- list, filter, sort, paginate ------------------------------------------------------------


def test_v2_priority_listing_paginates(client: FlaskClient, alice: Account) -> None:
    todos = [create_todo(client, alice, "v2", priority=n % 4) for n in range(7)]
    by_priority = sorted(todos, key=lambda todo: (-todo["priority"], -todo["id"]))

    assert_paginates(
        client, "/api/v2/todos/priority", "todos", [t["id"] for t in by_priority], alice.headers
    )


def test_user_todos_listing_paginates(client: FlaskClient, alice: Account) -> None:
    ids = [create_todo(client, alice, "v1")["id"] for _ in range(5)]

    assert_paginates(client, f"/api/v1/users/{alice.id}/todos", "todos", ids, alice.headers)


@both_versions
@pytest.mark.parametrize(("value", "expected"), [("true", ["Done"]), ("false", ["Open"])])
def test_list_todos_filters_by_completed(
    client: FlaskClient, alice: Account, version: str, value: str, expected: list[str]
) -> None:
    create_todo(client, alice, version, title="Done", completed=True)
    create_todo(client, alice, version, title="Open", completed=False)

    assert listed_titles(client, alice, TODOS.url(version), completed=value) == expected


@both_versions
def test_search_matches_title_or_description_case_insensitively(
    client: FlaskClient, alice: Account, version: str
) -> None:
    in_title = create_todo(client, alice, version, title="Call the PLUMBER")
    in_description = create_todo(client, alice, version, title="Kitchen", description="plumber")
    create_todo(client, alice, version, title="Unrelated", description="Nothing here")

    response = client.get(f"{TODOS.url(version)}?search=Plumber", headers=alice.headers)

    assert ids_of(response, "todos") == [in_title["id"], in_description["id"]]


@both_versions
def test_title_filter_matches_only_titles(
    client: FlaskClient, alice: Account, version: str
) -> None:
    in_title = create_todo(client, alice, version, title="Water the PLANTS")
    create_todo(client, alice, version, title="Kitchen", description="plants")

    response = client.get(f"{TODOS.url(version)}?title=plants", headers=alice.headers)

    assert ids_of(response, "todos") == [in_title["id"]]


# Titles with characters that mean something to LIKE or to SQL, and near misses without them.
LITERAL_TITLES = [
    "100% done",
    "100 done",
    "snake_case",
    "snakeXcase",
    "it's ' OR 1=1-- here",
    "it is OR 1=1 here",
    'say "hi"',
    "say hi",
    "back\\slash",
    "backslash",
]
# Search term -> the only titles it may find.
LITERAL_MATCHES = {
    "%": ["100% done"],
    "0%": ["100% done"],
    "_": ["snake_case"],
    "e_c": ["snake_case"],
    "' OR 1=1--": ["it's ' OR 1=1-- here"],
    "'": ["it's ' OR 1=1-- here"],
    '"': ['say "hi"'],
    "\\": ["back\\slash"],
    "k\\s": ["back\\slash"],
    "%_%": [],
    "%%": [],
}


@pytest.mark.scenario("S23")
@both_versions
@pytest.mark.parametrize("parameter", ["search", "title"])
def test_search_and_title_filters_match_special_characters_literally(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    row_counts: RowCounts,
    version: str,
    parameter: str,
) -> None:
    for title in LITERAL_TITLES:
        create_todo(client, alice, version, title=title)
    before = (row_counts(), table_rows(app, "todos"))

    found = {
        term: listed_titles(client, alice, TODOS.url(version), **{parameter: term})
        for term in LITERAL_MATCHES
    }

    assert found == LITERAL_MATCHES
    assert (row_counts(), table_rows(app, "todos")) == before


@both_versions
def test_list_todos_sorts_by_each_allowed_column(
    client: FlaskClient, alice: Account, version: str
) -> None:
    for title in ["b", "c", "a"]:
        create_todo(client, alice, version, title=title)
    expected = {
        "id": ["b", "c", "a"],
        "-id": ["a", "c", "b"],
        "created_at": ["b", "c", "a"],
        "-created_at": ["a", "c", "b"],
        "title": ["a", "b", "c"],
        "-title": ["c", "b", "a"],
    }

    found = {sort: listed_titles(client, alice, TODOS.url(version), sort=sort) for sort in expected}

    assert found == expected


@pytest.mark.parametrize(("sort", "expected"), [("priority", [1, 2, 3]), ("-priority", [3, 2, 1])])
def test_v2_list_todos_sorts_by_priority(
    client: FlaskClient, alice: Account, sort: str, expected: list[int]
) -> None:
    for priority in [2, 3, 1]:
        create_todo(client, alice, "v2", priority=priority)

    response = client.get(f"/api/v2/todos?sort={sort}", headers=alice.headers)

    assert [todo["priority"] for todo in response.get_json()["todos"]] == expected


@pytest.mark.parametrize(("version", "sort"), [("v1", "priority"), ("v1", "-priority")])
def test_v1_cannot_sort_by_priority(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    row_counts: RowCounts,
    version: str,
    sort: str,
) -> None:
    create_todo(client, alice, version)
    before = (row_counts(), table_rows(app, "todos"))

    response = client.get(TODOS.url(version), query_string={"sort": sort}, headers=alice.headers)

    assert_error(response, 400, "Invalid query parameter(s): sort", {"sort"})
    assert (row_counts(), table_rows(app, "todos")) == before


def test_v2_list_todos_filters_by_priority(client: FlaskClient, alice: Account) -> None:
    high = create_todo(client, alice, "v2", title="High", priority=5)
    create_todo(client, alice, "v2", title="Low", priority=1)

    response = client.get("/api/v2/todos?priority=5", headers=alice.headers)

    assert ids_of(response, "todos") == [high["id"]]


def test_v2_list_todos_rejects_invalid_priority_filter(client: FlaskClient, alice: Account) -> None:
    response = client.get("/api/v2/todos?priority=high", headers=alice.headers)

    assert_error(response, 400, "Invalid query parameter(s): priority", {"priority"})


def test_filters_combine(client: FlaskClient, alice: Account) -> None:
    wanted = create_todo(client, alice, "v2", title="Paint fence", completed=True, priority=2)
    create_todo(client, alice, "v2", title="Paint door", completed=False, priority=2)
    create_todo(client, alice, "v2", title="Paint wall", completed=True, priority=1)
    create_todo(client, alice, "v2", title="Mow lawn", completed=True, priority=2)

    response = client.get(
        "/api/v2/todos?search=paint&completed=true&priority=2", headers=alice.headers
    )

    assert ids_of(response, "todos") == [wanted["id"]]


# --- v2 priority listing ---------------------------------------------------------------------


def test_v2_priority_listing_puts_highest_priority_first(
    client: FlaskClient, alice: Account
) -> None:
    low = create_todo(client, alice, "v2", title="Low", priority=1)
    high = create_todo(client, alice, "v2", title="High", priority=9)
    negative = create_todo(client, alice, "v2", title="Negative", priority=-3)
    middle = create_todo(client, alice, "v2", title="Middle", priority=5)

    response = client.get("/api/v2/todos/priority", headers=alice.headers)

    assert ids_of(response, "todos") == [high["id"], middle["id"], low["id"], negative["id"]]
    assert set(response.get_json()["todos"][0]) == TODOS.fields["v2"]


def test_priority_listing_exists_only_in_v2(client: FlaskClient, alice: Account) -> None:
    response = client.get("/api/v1/todos/priority", headers=alice.headers)

    assert response.status_code == 404


def test_priority_listing_requires_a_token(client: FlaskClient) -> None:
    assert_error(client.get("/api/v2/todos/priority"), 401, "Missing token")


# --- /api/v1/users/<id>/todos ----------------------------------------------------------------


def test_user_lists_own_todos_through_user_route(client: FlaskClient, alice: Account) -> None:
    done = create_todo(client, alice, "v1", title="Done", completed=True)
    create_todo(client, alice, "v1", title="Open")

    response = client.get(
        f"/api/v1/users/{alice.id}/todos?completed=true&count=true", headers=alice.headers
    )

    assert ids_of(response, "todos") == [done["id"]]
    assert response.get_json()["pagination"] == {
        "total": 1,
        "limit": 20,
        "offset": 0,
        "next": None,
    }
    assert set(response.get_json()["todos"][0]) == TODOS.fields["v1"]


def test_user_todos_route_exists_only_in_v1(client: FlaskClient, alice: Account) -> None:
    response = client.get(f"/api/v2/users/{alice.id}/todos", headers=alice.headers)

    assert response.status_code == 404


def test_admin_gets_404_for_todos_of_unknown_user(client: FlaskClient, admin: Account) -> None:
    response = client.get("/api/v1/users/999999/todos", headers=admin.headers)

    assert_error(response, 404, "User not found")


def test_user_todos_route_requires_a_token(client: FlaskClient, alice: Account) -> None:
    assert_error(client.get(f"/api/v1/users/{alice.id}/todos"), 401, "Missing token")


# --- update ----------------------------------------------------------------------------------


@both_versions
def test_update_todo_can_change_every_field(
    client: FlaskClient, alice: Account, version: str
) -> None:
    todo = create_todo(client, alice, version, title="Old", description="Old description")
    changes: dict[str, Any] = {"title": "New", "description": None, "completed": True}
    if version == "v2":
        changes["priority"] = -2

    response = client.put(TODOS.url(version, todo["id"]), json=changes, headers=alice.headers)

    assert response.status_code == 200
    assert response.get_json() == {**todo, **changes}
    assert get_todo(client, alice, version, todo["id"]).get_json() == {**todo, **changes}


@both_versions
def test_update_todo_with_empty_object_changes_nothing(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account, version: str
) -> None:
    todo = create_todo(client, alice, version)
    before = (row_counts(), table_rows(app, "todos"))

    response = client.put(TODOS.url(version, todo["id"]), json={}, headers=alice.headers)

    assert response.status_code == 200
    assert response.get_json() == todo
    assert (row_counts(), table_rows(app, "todos")) == before


# --- delete ----------------------------------------------------------------------------------


@both_versions
def test_batch_delete_reports_deleted_and_not_found_ids(
    client: FlaskClient, alice: Account, row_counts: RowCounts, version: str
) -> None:
    first, second, kept = (create_todo(client, alice, version)["id"] for _ in range(3))
    before = row_counts()

    response = client.delete(
        TODOS.url(version),
        json={"ids": [second, 999_999, first, second]},
        headers=alice.headers,
    )

    assert response.status_code == 200
    assert response.get_json() == {
        "message": "2 todo(s) deleted",
        "deleted": [second, first],
        "not_found": [999_999],
    }
    assert row_counts() == {**before, "todos": before["todos"] - 2}
    assert ids_of(client.get(TODOS.url(version), headers=alice.headers), "todos") == [kept]


@both_versions
def test_batch_delete_of_only_unknown_ids_deletes_nothing(
    client: FlaskClient, alice: Account, row_counts: RowCounts, version: str
) -> None:
    create_todo(client, alice, version)
    before = row_counts()

    response = client.delete(TODOS.url(version), json={"ids": [404, 405]}, headers=alice.headers)

    assert response.status_code == 200
    assert response.get_json() == {
        "message": "0 todo(s) deleted",
        "deleted": [],
        "not_found": [404, 405],
    }
    assert row_counts() == before


@both_versions
@pytest.mark.parametrize(
    ("body", "message", "error_fields"),
    [
        pytest.param({}, "Missing ids", {"ids"}, id="missing"),
        pytest.param({"ids": []}, "Invalid field(s): ids", {"ids"}, id="empty"),
        pytest.param({"ids": "1"}, "Invalid field(s): ids", {"ids"}, id="string"),
        pytest.param({"ids": 1}, "Invalid field(s): ids", {"ids"}, id="number"),
        pytest.param({"ids": ["1"]}, "Invalid field(s): ids", {"ids"}, id="string-id"),
        pytest.param({"ids": [1.5]}, "Invalid field(s): ids", {"ids"}, id="float-id"),
        pytest.param({"ids": [True]}, "Invalid field(s): ids", {"ids"}, id="boolean-id"),
        pytest.param({"ids": list(range(1, 102))}, "Invalid field(s): ids", {"ids"}, id="101-ids"),
        pytest.param({"ids": [1], "all": True}, "Unknown field(s): all", {"all"}, id="unknown"),
    ],
)
def test_batch_delete_with_invalid_ids_deletes_nothing(
    client: FlaskClient,
    alice: Account,
    row_counts: RowCounts,
    version: str,
    body: dict[str, Any],
    message: str,
    error_fields: set[str],
) -> None:
    todo = create_todo(client, alice, version)
    before = row_counts()

    response = client.delete(TODOS.url(version), json=body, headers=alice.headers)

    assert_error(response, 400, message, error_fields)
    assert row_counts() == before
    assert get_todo(client, alice, version, todo["id"]).status_code == 200


@both_versions
@pytest.mark.parametrize(
    ("body", "message"),
    [*NOT_A_JSON_OBJECT, pytest.param(None, REQUEST_MUST_BE_JSON, id="no-body")],
)
def test_batch_delete_with_body_that_is_not_a_json_object_deletes_nothing(
    client: FlaskClient,
    alice: Account,
    row_counts: RowCounts,
    version: str,
    body: dict[str, Any] | None,
    message: str,
) -> None:
    create_todo(client, alice, version)
    before = row_counts()

    response = client.delete(TODOS.url(version), headers=alice.headers, **(body or {}))

    assert_error(response, 400, message)
    assert row_counts() == before


@both_versions
def test_batch_delete_with_body_over_one_mebibyte_is_413(
    client: FlaskClient, alice: Account, row_counts: RowCounts, version: str
) -> None:
    create_todo(client, alice, version)
    before = row_counts()

    response = client.delete(TODOS.url(version), headers=alice.headers, **huge_body())

    assert_error(response, 413, TOO_LARGE_MESSAGE)
    assert row_counts() == before

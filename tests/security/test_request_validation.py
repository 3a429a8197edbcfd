"""S19, S21-S24 (the request side): bodies and query strings an attacker controls are refused
with a JSON 400/413 on both versions, and a refused request writes nothing.

SPEC differences: lists take `limit`/`offset` (S21's `per_page`/`page`), the to-do filters are
`search` and `completed` (S23's `q`/`done`), and a body that is not JSON is `400 Request must be
JSON` whatever its Content-Type (SPEC §4.1; S22 expects 415). Literal matching of `search` (S23's
`q=' OR 1=1--`, `q=%`) is tested in
tests/test_todos.py::test_search_and_title_filters_match_special_characters_literally.
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
from support.resources import (
    INVALID_PAGES,
    MAX_OFFSET,
    NOT_A_JSON_OBJECT,
    SERVER_SET_FIELDS,
    TOO_LARGE_MESSAGE,
    Resource,
    assert_rejects_page,
    cases_of_each_resource,
    create_post,
    create_todo,
    huge_body,
    ids_of,
    invalid,
    invalid_titles,
    unknown,
)

# Fields a post's create or update body may not carry: (fields, message, fields in `errors`).
INVALID_POST_FIELDS = [
    *invalid_titles(longest=200),
    invalid({"content": ""}, id="content-empty"),
    invalid({"content": ["a"]}, id="content-list"),
    invalid({"content": "w" * 100_001}, id="content-100k+1"),
    invalid({"content": "a\x00b"}, id="content-nul"),
    *SERVER_SET_FIELDS,
    unknown({"word_count": 3}, id="words"),
]
# What a create body may not carry, per resource (the to-dos' invalid values: tests/test_todos.py).
INVALID_CREATE_FIELDS = {"posts": INVALID_POST_FIELDS, "todos": SERVER_SET_FIELDS}


@pytest.mark.scenario("S1", "S22", "S24")
@pytest.mark.parametrize(
    ("resource", "fields", "message", "error_fields"),
    cases_of_each_resource(lambda resource: INVALID_CREATE_FIELDS[resource.name]),
)
def test_create_with_an_invalid_field_writes_nothing(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    snapshot: Callable[[], Snapshot],
    resource: Resource,
    fields: dict[str, Any],
    message: str,
    error_fields: set[str],
) -> None:
    """Mass assignment of the fields the server sets (S1, `bob` is there to be named), and for
    posts a 201-character title (S22) and a NUL byte (S24: 400, not 500)."""
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(
            resource.url(version), json={**resource.valid, **fields}, headers=alice.headers
        )
    )

    assert_error(response, 400, message, error_fields)
    assert snapshot() == before


@pytest.mark.scenario("S19")
@pytest.mark.parametrize(("fields", "message", "error_fields"), INVALID_POST_FIELDS)
def test_update_post_with_an_invalid_or_protected_field_changes_nothing(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    fields: dict[str, Any],
    message: str,
    error_fields: set[str],
) -> None:
    post = create_post(client, alice, "v1")
    before = (snapshot(), table_rows(app, "posts"))

    response = on_both_versions(
        lambda version: client.put(
            f"/api/{version}/posts/{post['id']}", json=fields, headers=alice.headers
        )
    )

    assert_error(response, 400, message, error_fields)
    assert (snapshot(), table_rows(app, "posts")) == before


@pytest.mark.scenario("S22")
@pytest.mark.parametrize(("body", "message"), NOT_A_JSON_OBJECT)
def test_create_post_with_a_body_that_is_not_a_json_object_writes_nothing(
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    body: dict[str, Any],
    message: str,
) -> None:
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(f"/api/{version}/posts", headers=alice.headers, **body)
    )

    assert_error(response, 400, message)
    assert snapshot() == before


@pytest.mark.scenario("S22")
def test_create_post_with_a_body_over_one_mebibyte_is_413(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()

    response = on_both_versions(
        lambda version: client.post(f"/api/{version}/posts", headers=alice.headers, **huge_body())
    )

    assert_error(response, 413, TOO_LARGE_MESSAGE)
    assert snapshot() == before


@pytest.mark.scenario("S21")
@pytest.mark.parametrize("resource", ["posts", "todos"])
@pytest.mark.parametrize(("query", "fields"), INVALID_PAGES)
def test_invalid_pagination_is_400(
    client: FlaskClient, alice: Account, resource: str, query: str, fields: set[str]
) -> None:
    response = on_both_versions(
        lambda version: client.get(f"/api/{version}/{resource}?{query}", headers=alice.headers)
    )

    names = ", ".join(sorted(fields))
    assert_error(response, 400, f"Invalid query parameter(s): {names}", fields)


@pytest.mark.scenario("S21")
@pytest.mark.parametrize("url", ["/api/v2/todos/priority", "/api/v1/users/{user_id}/todos"])
@pytest.mark.parametrize(("query", "fields"), INVALID_PAGES)
def test_invalid_pagination_is_400_on_single_version_lists(
    client: FlaskClient, alice: Account, url: str, query: str, fields: set[str]
) -> None:
    assert_rejects_page(client, url.format(user_id=alice.id), query, fields, alice.headers)


@pytest.mark.scenario("S21")
@pytest.mark.parametrize("resource", ["posts", "todos"])
def test_pages_hold_at_most_100_items_and_offsets_stop_at_the_bound(
    client: FlaskClient, alice: Account, resource: str
) -> None:
    create = create_post if resource == "posts" else create_todo
    for _ in range(3):
        create(client, alice, "v1")

    largest = on_both_versions(
        lambda version: client.get(f"/api/{version}/{resource}?limit=100", headers=alice.headers)
    )
    deepest = on_both_versions(
        lambda version: client.get(
            f"/api/{version}/{resource}?offset={MAX_OFFSET}&count=true", headers=alice.headers
        )
    )
    beyond = on_both_versions(
        lambda version: client.get(
            f"/api/{version}/{resource}?offset={10**9}", headers=alice.headers
        )
    )

    assert len(ids_of(largest, resource)) == 3
    assert largest.get_json()["pagination"]["limit"] == 100
    assert ids_of(deepest, resource) == []
    assert deepest.get_json()["pagination"] == {
        "total": 3,
        "limit": 20,
        "offset": MAX_OFFSET,
        "next": None,
    }
    body = assert_error(beyond, 400, "Invalid query parameter(s): offset", {"offset"})
    assert "pagination.next" in body["errors"]["offset"][0]


@pytest.mark.scenario("S23")
@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("sort", "title;DROP TABLE posts"),
        ("sort", "(CASE WHEN 1=1 THEN id END)"),
        ("sort", "user_id"),
        ("sort", "description"),
        ("sort", "--id"),
        ("sort", "ID"),
        ("completed", "true'"),
        ("completed", "maybe"),
    ],
)
def test_unknown_sort_or_filter_value_is_400_and_tables_stay_intact(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    snapshot: Callable[[], Snapshot],
    parameter: str,
    value: str,
) -> None:
    create_todo(client, alice, "v1")
    create_post(client, alice, "v1")
    before = (snapshot(), table_rows(app, "todos"), table_rows(app, "posts"))

    response = on_both_versions(
        lambda version: client.get(
            f"/api/{version}/todos", query_string={parameter: value}, headers=alice.headers
        )
    )

    assert_error(response, 400, f"Invalid query parameter(s): {parameter}", {parameter})
    assert (snapshot(), table_rows(app, "todos"), table_rows(app, "posts")) == before

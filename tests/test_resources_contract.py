"""What posts and to-dos share (SPEC §4.1, §4.3, §4.4), checked once for each, in v1 and v2:
creating, reading, listing, updating and deleting one as its author, the bodies and ids that
are refused, and the token the writes need. `Resource` (resources.py) says where they differ:
fields, messages, the field only v2 knows, and whether reading needs a token.

What only one of them does is in test_posts.py (word counts, categories, recent posts, deleting
all posts) and test_todos.py (filters, sorting, priorities, batch delete, the user route); who
may touch whose item is in security/test_ownership.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from support import Account, assert_error, table_rows
from support.resources import (
    NOT_A_JSON_OBJECT,
    TOO_LARGE_MESSAGE,
    VERSIONS,
    Resource,
    RowCounts,
    assert_paginates,
    both_versions,
    cases_of_each_resource,
    each_resource,
    huge_body,
    ids_of,
)

# --- create ----------------------------------------------------------------------------------


@each_resource
@both_versions
def test_create_returns_201_with_location_of_the_new_item(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    sample = resource.sample

    response = client.post(resource.url(version), json=sample.body, headers=alice.headers)

    assert response.status_code == 201
    item = response.get_json()
    assert set(item) == resource.fields[version]
    shown = {**sample.body, **sample.shown, "user_id": alice.id}
    assert {name: item[name] for name in shown} == shown
    for name in resource.timestamps:
        assert datetime.fromisoformat(item[name]).utcoffset() is not None
    assert response.headers["Location"] == resource.url(version, item["id"])
    location = client.get(response.headers["Location"], headers=resource.read_headers(alice))
    assert location.get_json() == item


@each_resource
@both_versions
def test_create_accepts_the_longest_values_of_its_fields(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    item = resource.create(client, alice, version, **resource.longest.body)

    assert {name: item[name] for name in resource.longest.shown} == resource.longest.shown


@each_resource
@both_versions
def test_trailing_slash_answers_like_the_bare_path(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    url = f"{resource.url(version)}/"

    response = client.post(url, json=resource.valid, headers=alice.headers)

    assert response.status_code == 201
    listed = client.get(url, headers=resource.read_headers(alice))
    assert ids_of(listed, resource.name) == [response.get_json()["id"]]


# --- read ------------------------------------------------------------------------------------


@each_resource
@both_versions
def test_listing_and_reading_show_the_items_as_created(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    """With a token where the items are private; posts without one (SPEC §4.4)."""
    headers = resource.read_headers(alice)
    created = [
        resource.create(client, alice, version, **{**resource.sample.body, "title": f"Item {n}"})
        for n in range(3)
    ]

    listed = client.get(f"{resource.url(version)}?count=true", headers=headers)
    singles = [client.get(resource.url(version, item["id"]), headers=headers) for item in created]

    assert listed.status_code == 200
    assert listed.get_json() == {
        resource.name: created,
        "pagination": {"total": 3, "limit": 20, "offset": 0, "next": None},
    }
    assert [single.status_code for single in singles] == [200, 200, 200]
    assert [single.get_json() for single in singles] == created


@each_resource
@both_versions
def test_get_unknown_item_is_404(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    resource.create(client, alice, version)

    response = client.get(resource.url(version, 999_999), headers=resource.read_headers(alice))

    assert_error(response, 404, f"{resource.noun} not found")


@each_resource
@both_versions
@pytest.mark.parametrize("item_id", ["0", "-1", "abc", "99999999999"])
def test_an_id_that_cannot_exist_is_a_json_404(
    client: FlaskClient, alice: Account, resource: Resource, version: str, item_id: str
) -> None:
    response = client.get(resource.url(version, item_id), headers=alice.headers)

    assert response.status_code == 404
    assert response.get_json()["error"] == "Not Found"


@each_resource
@both_versions
def test_listing_paginates(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    ids = [resource.create(client, alice, version, title=f"Item {n}")["id"] for n in range(23)]

    assert_paginates(
        client, resource.url(version), resource.name, ids, resource.read_headers(alice)
    )


# --- update ----------------------------------------------------------------------------------


@each_resource
@both_versions
def test_update_changes_only_the_given_fields(
    client: FlaskClient, alice: Account, resource: Resource, version: str
) -> None:
    item = resource.create(client, alice, version, **resource.sample.body)
    change = resource.change

    response = client.put(resource.url(version, item["id"]), json=change, headers=alice.headers)

    assert response.status_code == 200
    updated = response.get_json()
    assert set(updated) == set(item)
    assert {name: updated[name] for name in change} == change
    kept = set(item) - set(change) - set(resource.refreshed)
    assert {name: updated[name] for name in kept} == {name: item[name] for name in kept}
    for name in resource.refreshed:
        assert datetime.fromisoformat(updated[name]) >= datetime.fromisoformat(item[name])
    reread = client.get(resource.url(version, item["id"]), headers=resource.read_headers(alice))
    assert reread.get_json() == updated


# --- delete ----------------------------------------------------------------------------------


@each_resource
@both_versions
def test_delete_removes_only_that_item(
    client: FlaskClient, alice: Account, row_counts: RowCounts, resource: Resource, version: str
) -> None:
    headers = resource.read_headers(alice)
    item = resource.create(client, alice, version)
    kept = resource.create(client, alice, version, title="Kept")
    before = row_counts()

    response = client.delete(resource.url(version, item["id"]), headers=alice.headers)

    assert response.status_code == 200
    assert response.get_json() == {"message": f"{resource.noun} deleted"}
    after = row_counts()
    for table in resource.deleted_with:
        del before[table], after[table]
    assert after == {**before, resource.name: before[resource.name] - 1}
    gone = client.get(resource.url(version, item["id"]), headers=headers)
    assert_error(gone, 404, f"{resource.noun} not found")
    assert client.get(resource.url(version, kept["id"]), headers=headers).status_code == 200
    assert ids_of(client.get(resource.url(version), headers=headers), resource.name) == [kept["id"]]


# --- refused writes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A write the API refuses with a JSON error, changing nothing."""

    version: str
    method: str  # POST to the collection; PUT or DELETE to an item
    target: str  # "collection", "item" (the author's own) or "unknown" (an id of no item)
    request: dict[str, Any]  # the test client's body: json=..., or data= and content_type=
    status: int
    message: str
    fields: set[str] | None = None  # the fields a 400 names in `errors`
    token: bool = True  # sent with the author's token


# The writes: (name in test ids, method, target).
CREATE, UPDATE, DELETE = (
    ("create", "POST", "collection"),
    ("update", "PUT", "item"),
    ("delete", "DELETE", "item"),
)
UPDATE_UNKNOWN, DELETE_UNKNOWN = ("update", "PUT", "unknown"), ("delete", "DELETE", "unknown")


def refusals(resource: Resource) -> list[Any]:
    """Every write of `resource` the API must refuse, named `<version>-<write>-<what>`: a missing
    required field, a field or value the version does not take, a body that is no JSON object or
    is too large, an unknown item, no token."""
    cases = []

    def refuse(what: str, version: str, write: tuple[str, str, str], *args: Any, **kw: Any) -> None:
        name, method, target = write
        refusal = Refusal(version, method, target, *args, **kw)
        cases.append(pytest.param(refusal, id=f"{version}-{name}-{what}"))

    def v2_field_set_to(value: Any) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
        return [(CREATE, {**resource.valid, field: value}), (UPDATE, {field: value})]

    field, not_found = resource.v2_field, f"{resource.noun} not found"
    for version in VERSIONS:
        for case in resource.missing:
            body, message, fields = case.values
            refuse(case.id, version, CREATE, {"json": body}, 400, message, fields)
        for write in (CREATE, UPDATE):
            for case in NOT_A_JSON_OBJECT:
                body, message = case.values
                refuse(case.id, version, write, body, 400, message)
            refuse("over-1-mib", version, write, huge_body(), 413, TOO_LARGE_MESSAGE)
        refuse("unknown", version, UPDATE_UNKNOWN, {"json": {"title": "x"}}, 404, not_found)
        refuse("unknown", version, DELETE_UNKNOWN, {}, 404, not_found)
        for write, body in [(CREATE, resource.valid), (UPDATE, {"title": "x"}), (DELETE, {})]:
            refuse("no-token", version, write, {"json": body}, 401, "Missing token", token=False)
    for case in resource.invalid_v2_values:
        for write, body in v2_field_set_to(*case.values):
            invalid = f"Invalid field(s): {field}"
            refuse(f"{field}-{case.id}", "v2", write, {"json": body}, 400, invalid, {field})
    for write, body in v2_field_set_to(resource.v2_value):
        refuse(field, "v1", write, {"json": body}, 400, f"Unknown field(s): {field}", {field})
    return cases


@pytest.mark.parametrize(("resource", "refusal"), cases_of_each_resource(refusals))
def test_a_refused_write_answers_its_error_and_changes_nothing(
    app: Flask,
    client: FlaskClient,
    row_counts: RowCounts,
    alice: Account,
    resource: Resource,
    refusal: Refusal,
) -> None:
    item = resource.create(client, alice, refusal.version)
    before = (row_counts(), table_rows(app, resource.name))
    item_id = {"collection": None, "item": item["id"], "unknown": 999_999}[refusal.target]

    response = client.open(
        resource.url(refusal.version, item_id),
        method=refusal.method,
        headers=alice.headers if refusal.token else {},
        **refusal.request,
    )

    assert_error(response, refusal.status, refusal.message, refusal.fields)
    assert (row_counts(), table_rows(app, resource.name)) == before

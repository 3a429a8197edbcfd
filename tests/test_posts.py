"""Posts (SPEC §3, §4.1, §4.4): public reading, writing by the author, v2 category and recent posts.

Who may change whose post is in test_ownership.py; here the author (or an admin) writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from resources import (
    NOT_A_JSON_OBJECT,
    REQUEST_MUST_BE_JSON,
    TOO_LARGE_MESSAGE,
    VERSIONS,
    RowCounts,
    assert_paginates,
    both_versions,
    create_post,
    huge_body,
    ids_of,
)
from support import Account, assert_error, table_rows

V1_FIELDS = {"id", "title", "content", "word_count", "user_id", "created_at", "updated_at"}
V2_FIELDS = V1_FIELDS | {"category"}
FIELDS_BY_VERSION = {"v1": V1_FIELDS, "v2": V2_FIELDS}
MISSING_TITLE_OR_CONTENT = "Missing title or content"


INVALID_V2_CATEGORIES = [
    pytest.param("c" * 51, id="51-chars"),
    pytest.param("", id="empty"),
    pytest.param(7, id="number"),
    pytest.param(None, id="null"),
    pytest.param("a\x00", id="nul"),
]


def posts_url(version: str, post_id: int | None = None) -> str:
    return f"/api/{version}/posts" + (f"/{post_id}" if post_id is not None else "")


VALID_POST = {"title": "Valid", "content": "Valid content"}


# --- create ----------------------------------------------------------------------------------


@both_versions
def test_create_post_returns_201_with_location_of_the_new_post(
    client: FlaskClient, alice: Account, version: str
) -> None:
    response = client.post(
        posts_url(version),
        json={"title": "Hello", "content": "Five words in this post"},
        headers=alice.headers,
    )

    assert response.status_code == 201
    post = response.get_json()
    assert set(post) == FIELDS_BY_VERSION[version]
    assert post["title"] == "Hello"
    assert post["content"] == "Five words in this post"
    assert post["word_count"] == 5
    assert post["user_id"] == alice.id
    assert datetime.fromisoformat(post["created_at"]).utcoffset() is not None
    assert datetime.fromisoformat(post["updated_at"]).utcoffset() is not None
    assert response.headers["Location"] == posts_url(version, post["id"])
    assert client.get(response.headers["Location"]).get_json() == post


def test_v2_post_category_defaults_to_general(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v2")

    assert post["category"] == "general"


def test_v2_post_stores_category(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v2", category="travel")

    assert post["category"] == "travel"
    assert client.get(posts_url("v2", post["id"])).get_json()["category"] == "travel"
    assert "category" not in client.get(posts_url("v1", post["id"])).get_json()


def test_v1_post_gets_the_default_category(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v1")

    assert client.get(posts_url("v2", post["id"])).get_json()["category"] == "general"


@both_versions
def test_create_post_accepts_limits_of_title_and_content(
    client: FlaskClient, alice: Account, version: str
) -> None:
    post = create_post(client, alice, version, title="t" * 200, content="w " * 50_000)

    assert post["title"] == "t" * 200
    assert post["word_count"] == 50_000


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("one", 1),
        ("two words", 2),
        ("  spaced   out\ttabs\nand lines  ", 5),
        ("punctuation, counts as part-of a word!", 6),
        ("日本語 テキスト", 2),
    ],
)
def test_post_word_count_counts_words_in_content(
    client: FlaskClient, alice: Account, content: str, words: int
) -> None:
    post = create_post(client, alice, "v2", content=content)

    assert post["word_count"] == words
    assert client.get(posts_url("v1", post["id"])).get_json()["word_count"] == words


@both_versions
@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="neither"),
        pytest.param({"title": "Only a title"}, id="no-content"),
        pytest.param({"content": "Only content"}, id="no-title"),
    ],
)
def test_create_post_without_title_or_content_is_rejected(
    client: FlaskClient, alice: Account, row_counts: RowCounts, version: str, body: dict[str, Any]
) -> None:
    before = row_counts()

    response = client.post(posts_url(version), json=body, headers=alice.headers)

    assert_error(response, 400, MISSING_TITLE_OR_CONTENT, {"title", "content"} - set(body))
    assert row_counts() == before


@pytest.mark.parametrize("category", INVALID_V2_CATEGORIES)
def test_v2_create_post_with_invalid_category_writes_nothing(
    client: FlaskClient, alice: Account, row_counts: RowCounts, category: Any
) -> None:
    before = row_counts()

    response = client.post(
        posts_url("v2"), json={**VALID_POST, "category": category}, headers=alice.headers
    )

    assert_error(response, 400, "Invalid field(s): category", {"category"})
    assert row_counts() == before


def test_v1_create_post_rejects_category_as_unknown_field(
    client: FlaskClient, alice: Account, row_counts: RowCounts
) -> None:
    before = row_counts()

    response = client.post(
        posts_url("v1"), json={**VALID_POST, "category": "travel"}, headers=alice.headers
    )

    assert_error(response, 400, "Unknown field(s): category", {"category"})
    assert row_counts() == before


@both_versions
def test_create_post_requires_a_token(
    client: FlaskClient, row_counts: RowCounts, version: str
) -> None:
    before = row_counts()

    response = client.post(posts_url(version), json=VALID_POST)

    assert_error(response, 401, "Missing token")
    assert row_counts() == before


# --- read ------------------------------------------------------------------------------------


@both_versions
def test_posts_are_public_to_read(client: FlaskClient, alice: Account, version: str) -> None:
    post = create_post(client, alice, version)

    listed = client.get(f"{posts_url(version)}?count=true")
    single = client.get(posts_url(version, post["id"]))

    assert listed.status_code == 200
    assert listed.get_json() == {
        "posts": [post],
        "pagination": {"total": 1, "limit": 20, "offset": 0, "next": None},
    }
    assert single.status_code == 200
    assert single.get_json() == post


@both_versions
def test_get_unknown_post_is_404(client: FlaskClient, alice: Account, version: str) -> None:
    create_post(client, alice, version)

    assert_error(client.get(posts_url(version, 999_999)), 404, "Post not found")


@both_versions
def test_list_posts_filters_by_author(
    client: FlaskClient, alice: Account, bob: Account, version: str
) -> None:
    by_alice = [create_post(client, alice, version)["id"] for _ in range(2)]
    by_bob = create_post(client, bob, version)["id"]

    assert ids_of(client.get(f"{posts_url(version)}?user_id={alice.id}"), "posts") == by_alice
    assert ids_of(client.get(f"{posts_url(version)}?user_id={bob.id}"), "posts") == [by_bob]
    assert ids_of(client.get(f"{posts_url(version)}?user_id=999999"), "posts") == []


@both_versions
@pytest.mark.parametrize("user_id", ["0", "-1", "abc", "99999999999"])
def test_list_posts_rejects_invalid_author_filter(
    client: FlaskClient, version: str, user_id: str
) -> None:
    response = client.get(f"{posts_url(version)}?user_id={user_id}")

    assert_error(response, 400, "Invalid query parameter(s): user_id", {"user_id"})


def test_v2_list_posts_filters_by_category(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    travel = create_post(client, alice, "v2", category="travel")["id"]
    create_post(client, alice, "v2", category="food")
    create_post(client, bob, "v2")
    bobs_travel = create_post(client, bob, "v2", category="travel")["id"]

    assert ids_of(client.get("/api/v2/posts?category=travel"), "posts") == [travel, bobs_travel]
    assert ids_of(client.get(f"/api/v2/posts?category=travel&user_id={bob.id}"), "posts") == [
        bobs_travel
    ]
    assert ids_of(client.get("/api/v2/posts?category=Travel"), "posts") == []


def test_v2_list_posts_rejects_category_filter_over_50_chars(client: FlaskClient) -> None:
    response = client.get(f"/api/v2/posts?category={'c' * 51}")

    assert_error(response, 400, "Invalid query parameter(s): category", {"category"})


@both_versions
def test_list_posts_paginates(client: FlaskClient, alice: Account, version: str) -> None:
    ids = [create_post(client, alice, version, title=f"Post {n}")["id"] for n in range(23)]

    assert_paginates(client, posts_url(version), "posts", ids, {})


# --- v2 recent posts -------------------------------------------------------------------------


def test_v2_recent_posts_are_the_five_newest_newest_first(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    ids = [create_post(client, author, "v2")["id"] for author in [alice, bob] * 4]

    response = client.get("/api/v2/posts/recent")

    assert response.status_code == 200
    assert set(response.get_json()) == {"posts"}
    assert ids_of(response, "posts") == ids[::-1][:5]
    assert set(response.get_json()["posts"][0]) == V2_FIELDS


def test_v2_recent_posts_lists_fewer_when_there_are_fewer(
    client: FlaskClient, alice: Account
) -> None:
    assert client.get("/api/v2/posts/recent").get_json() == {"posts": []}
    ids = [create_post(client, alice, "v1")["id"] for _ in range(2)]

    assert ids_of(client.get("/api/v2/posts/recent"), "posts") == ids[::-1]


def test_recent_posts_exist_only_in_v2(client: FlaskClient) -> None:
    assert client.get("/api/v1/posts/recent").status_code == 404


# --- update ----------------------------------------------------------------------------------


@both_versions
def test_author_updates_only_the_given_fields(
    client: FlaskClient, alice: Account, version: str
) -> None:
    post = create_post(client, alice, version, title="Old title", content="Old content here")

    response = client.put(
        posts_url(version, post["id"]), json={"title": "New title"}, headers=alice.headers
    )

    assert response.status_code == 200
    updated = response.get_json()
    assert updated["title"] == "New title"
    assert {k: v for k, v in updated.items() if k not in {"title", "updated_at"}} == {
        k: v for k, v in post.items() if k not in {"title", "updated_at"}
    }
    assert datetime.fromisoformat(updated["updated_at"]) >= datetime.fromisoformat(
        post["updated_at"]
    )
    assert client.get(posts_url(version, post["id"])).get_json() == updated


@both_versions
def test_updating_content_recounts_words(client: FlaskClient, alice: Account, version: str) -> None:
    post = create_post(client, alice, version, content="just two")

    response = client.put(
        posts_url(version, post["id"]),
        json={"content": "now there are five words"},
        headers=alice.headers,
    )

    assert response.get_json()["word_count"] == 5


def test_v2_author_updates_category(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v2")

    response = client.put(
        posts_url("v2", post["id"]), json={"category": "news"}, headers=alice.headers
    )

    assert response.status_code == 200
    assert response.get_json()["category"] == "news"


@both_versions
def test_update_unknown_post_is_404(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account, version: str
) -> None:
    create_post(client, alice, version)
    before = (row_counts(), table_rows(app, "posts"))

    response = client.put(posts_url(version, 999_999), json={"title": "x"}, headers=alice.headers)

    assert_error(response, 404, "Post not found")
    assert (row_counts(), table_rows(app, "posts")) == before


@pytest.mark.parametrize("category", INVALID_V2_CATEGORIES)
def test_v2_update_post_with_invalid_category_changes_nothing(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account, category: Any
) -> None:
    post = create_post(client, alice, "v2")
    before = (row_counts(), table_rows(app, "posts"))

    response = client.put(
        posts_url("v2", post["id"]), json={"category": category}, headers=alice.headers
    )

    assert_error(response, 400, "Invalid field(s): category", {"category"})
    assert (row_counts(), table_rows(app, "posts")) == before


def test_v1_update_post_rejects_category_as_unknown_field(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account
) -> None:
    post = create_post(client, alice, "v1")
    before = (row_counts(), table_rows(app, "posts"))

    response = client.put(
        posts_url("v1", post["id"]), json={"category": "news"}, headers=alice.headers
    )

    assert_error(response, 400, "Unknown field(s): category", {"category"})
    assert (row_counts(), table_rows(app, "posts")) == before


@both_versions
@pytest.mark.parametrize("body", NOT_A_JSON_OBJECT)
def test_update_post_with_body_that_is_not_a_json_object_changes_nothing(
    app: Flask,
    client: FlaskClient,
    row_counts: RowCounts,
    alice: Account,
    version: str,
    body: dict[str, Any],
) -> None:
    post = create_post(client, alice, version)
    before = (row_counts(), table_rows(app, "posts"))

    response = client.put(posts_url(version, post["id"]), headers=alice.headers, **body)

    assert_error(response, 400, REQUEST_MUST_BE_JSON)
    assert (row_counts(), table_rows(app, "posts")) == before


@both_versions
def test_update_post_with_body_over_one_mebibyte_is_413(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account, version: str
) -> None:
    post = create_post(client, alice, version)
    before = (row_counts(), table_rows(app, "posts"))

    response = client.put(posts_url(version, post["id"]), headers=alice.headers, **huge_body())

    assert_error(response, 413, TOO_LARGE_MESSAGE)
    assert (row_counts(), table_rows(app, "posts")) == before


# --- delete ----------------------------------------------------------------------------------


@both_versions
def test_author_deletes_post(client: FlaskClient, alice: Account, version: str) -> None:
    post = create_post(client, alice, version)
    kept = create_post(client, alice, version)

    response = client.delete(posts_url(version, post["id"]), headers=alice.headers)

    assert response.status_code == 200
    assert response.get_json() == {"message": "Post deleted"}
    assert_error(client.get(posts_url(version, post["id"])), 404, "Post not found")
    assert ids_of(client.get(posts_url(version)), "posts") == [kept["id"]]


@both_versions
def test_delete_unknown_post_is_404(
    client: FlaskClient, alice: Account, row_counts: RowCounts, version: str
) -> None:
    create_post(client, alice, version)
    before = row_counts()

    response = client.delete(posts_url(version, 999_999), headers=alice.headers)

    assert_error(response, 404, "Post not found")
    assert row_counts() == before


@both_versions
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_changing_a_post_requires_a_token(
    app: Flask,
    client: FlaskClient,
    row_counts: RowCounts,
    alice: Account,
    version: str,
    method: str,
) -> None:
    post = create_post(client, alice, version)
    before = (row_counts(), table_rows(app, "posts"))

    response = client.open(posts_url(version, post["id"]), method=method, json={"title": "x"})

    assert_error(response, 401, "Missing token")
    assert (row_counts(), table_rows(app, "posts")) == before


# --- DELETE /posts/all -----------------------------------------------------------------------


@both_versions
def test_admin_deletes_all_posts(
    client: FlaskClient, alice: Account, bob: Account, admin: Account, version: str
) -> None:
    for author in (alice, bob, admin):
        create_post(client, author, version)

    response = client.delete(f"{posts_url(version)}/all", headers=admin.headers)

    assert response.status_code == 200
    assert response.get_json() == {"message": "All posts deleted"}
    for other in VERSIONS:
        assert client.get(posts_url(other)).get_json()["posts"] == []


@both_versions
def test_delete_all_posts_requires_a_token(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account, version: str
) -> None:
    create_post(client, alice, version)
    before = (row_counts(), table_rows(app, "posts"))

    response = client.delete(f"{posts_url(version)}/all")

    assert_error(response, 401, "Missing token")
    assert (row_counts(), table_rows(app, "posts")) == before


@both_versions
def test_get_posts_all_is_405_not_a_post_lookup(
    client: FlaskClient, admin: Account, version: str
) -> None:
    create_post(client, admin, version)

    response = client.get(f"{posts_url(version)}/all")

    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, OPTIONS"
    assert response.get_json()["error"] == "Method Not Allowed"

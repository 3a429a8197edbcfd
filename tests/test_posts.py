"""Posts (SPEC §3, §4.1, §4.4): what only posts do: word counts, the v2 category and recent
posts, filtering by author, deleting all posts.

What posts share with to-dos (creating, reading, listing, updating and deleting one, the bodies
refused) is in test_resources_contract.py; who may change whose post is in
security/test_ownership.py. Here the author (or an admin) writes.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from support import Account, assert_error, table_rows
from support.resources import (
    POSTS,
    VERSIONS,
    RowCounts,
    both_versions,
    create_post,
    ids_of,
)

# --- create ----------------------------------------------------------------------------------


@both_versions
def test_a_new_post_links_to_its_jobs_in_its_own_version(
    client: FlaskClient, alice: Account, version: str
) -> None:
    """The 201 says where the post is (`Location`) and where its background jobs are: the
    notification e-mail (and a v2 post's audit record) can be followed from the answer."""
    response = client.post(
        f"/api/{version}/posts", json={"title": "T", "content": "C"}, headers=alice.headers
    )

    assert response.status_code == 201
    post_id = response.json["id"]
    jobs = f"/api/{version}/posts/{post_id}/jobs"
    assert response.headers["Location"] == f"/api/{version}/posts/{post_id}"
    assert response.headers.getlist("Link") == [f'<{jobs}>; rel="jobs"']
    listed = client.get(jobs, headers=alice.headers)
    assert listed.status_code == 200
    assert {job["post_id"] for job in listed.json["jobs"]} == {post_id}


def test_v2_post_category_defaults_to_general(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v2")

    assert post["category"] == "general"


def test_v2_post_stores_category(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v2", category="travel")

    assert post["category"] == "travel"
    assert client.get(POSTS.url("v2", post["id"])).get_json()["category"] == "travel"
    assert "category" not in client.get(POSTS.url("v1", post["id"])).get_json()


def test_v1_post_gets_the_default_category(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v1")

    assert client.get(POSTS.url("v2", post["id"])).get_json()["category"] == "general"


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
    assert client.get(POSTS.url("v1", post["id"])).get_json()["word_count"] == words


# --- read ------------------------------------------------------------------------------------


@both_versions
def test_list_posts_filters_by_author(
    client: FlaskClient, alice: Account, bob: Account, version: str
) -> None:
    by_alice = [create_post(client, alice, version)["id"] for _ in range(2)]
    by_bob = create_post(client, bob, version)["id"]

    assert ids_of(client.get(f"{POSTS.url(version)}?user_id={alice.id}"), "posts") == by_alice
    assert ids_of(client.get(f"{POSTS.url(version)}?user_id={bob.id}"), "posts") == [by_bob]
    assert ids_of(client.get(f"{POSTS.url(version)}?user_id=999999"), "posts") == []


@both_versions
@pytest.mark.parametrize("user_id", ["0", "-1", "abc", "99999999999"])
def test_list_posts_rejects_invalid_author_filter(
    client: FlaskClient, version: str, user_id: str
) -> None:
    response = client.get(f"{POSTS.url(version)}?user_id={user_id}")

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


# --- v2 recent posts -------------------------------------------------------------------------


def test_v2_recent_posts_are_the_five_newest_newest_first(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    ids = [create_post(client, author, "v2")["id"] for author in [alice, bob] * 4]

    response = client.get("/api/v2/posts/recent")

    assert response.status_code == 200
    assert set(response.get_json()) == {"posts"}
    assert ids_of(response, "posts") == ids[::-1][:5]
    assert set(response.get_json()["posts"][0]) == POSTS.fields["v2"]


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
def test_updating_content_recounts_words(client: FlaskClient, alice: Account, version: str) -> None:
    post = create_post(client, alice, version, content="just two")

    response = client.put(
        POSTS.url(version, post["id"]),
        json={"content": "now there are five words"},
        headers=alice.headers,
    )

    assert response.get_json()["word_count"] == 5


def test_v2_author_updates_category(client: FlaskClient, alice: Account) -> None:
    post = create_post(client, alice, "v2")

    response = client.put(
        POSTS.url("v2", post["id"]), json={"category": "news"}, headers=alice.headers
    )

    assert response.status_code == 200
    assert response.get_json()["category"] == "news"


# --- delete ----------------------------------------------------------------------------------


# --- DELETE /posts/all -----------------------------------------------------------------------


@both_versions
def test_admin_deletes_all_posts(
    client: FlaskClient, alice: Account, bob: Account, admin: Account, version: str
) -> None:
    for author in (alice, bob, admin):
        create_post(client, author, version)

    response = client.delete(f"{POSTS.url(version)}/all", headers=admin.headers)

    assert response.status_code == 200
    assert response.get_json() == {"message": "All posts deleted"}
    for other in VERSIONS:
        assert client.get(POSTS.url(other)).get_json()["posts"] == []


@both_versions
def test_delete_all_posts_requires_a_token(
    app: Flask, client: FlaskClient, row_counts: RowCounts, alice: Account, version: str
) -> None:
    create_post(client, alice, version)
    before = (row_counts(), table_rows(app, "posts"))

    response = client.delete(f"{POSTS.url(version)}/all")

    assert_error(response, 401, "Missing token")
    assert (row_counts(), table_rows(app, "posts")) == before


@both_versions
def test_get_posts_all_is_405_not_a_post_lookup(
    client: FlaskClient, admin: Account, version: str
) -> None:
    create_post(client, admin, version)

    response = client.get(f"{POSTS.url(version)}/all")

    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, OPTIONS"
    assert response.get_json()["error"] == "Method Not Allowed"

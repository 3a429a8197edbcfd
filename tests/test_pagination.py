"""Keyset pagination on every list endpoint: `pagination.next` and the `Link` header lead through
every row exactly once, in order, also while rows are written between pages; the cursor in
`after` is opaque, encrypted and bound to its listing; the total is counted only with
`count=true`; `offset` stops at its bound."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from support import Account, assert_error, statements_run_by
from support.resources import (
    MAX_OFFSET,
    VERSIONS,
    RowCounts,
    both_versions,
    create_post,
    create_todo,
    follow_pages,
    ids_of,
)

INVALID_CURSOR = (
    "Invalid cursor: pass `after` exactly as a previous page's `pagination.next` gave it"
)
FOREIGN_CURSOR = (
    "This cursor belongs to another listing: keep the filters and sort of the page it came from"
)
TITLES = ["pear", "apple", "fig", "apple", "kiwi", "fig", "date"]


def walk(client: FlaskClient, url: str, key: str, headers: dict[str, str]) -> list[Any]:
    """Every id of the listing at `url`, page after page through `pagination.next`."""
    return [item for ids in follow_pages(client, url, key, headers) for item in ids]


def next_of(client: FlaskClient, url: str, headers: dict[str, str] | None = None) -> str:
    response = client.get(url, headers=headers or {})
    assert response.status_code == 200, response.get_json()
    next_url = response.get_json()["pagination"]["next"]
    assert next_url is not None
    return str(next_url)


def cursor_of(next_url: str) -> str:
    return parse_qs(urlsplit(next_url).query)["after"][0]


def sort_key(sort: str) -> Callable[[dict[str, Any]], Any]:
    """How the API orders to-dos for `sort`: the key, then the id in the same direction."""
    name = sort.lstrip("-")

    def key(todo: dict[str, Any]) -> Any:
        value = todo[name]
        if name == "created_at":
            value = datetime.fromisoformat(value)
        return (value, todo["id"])

    return key


@pytest.fixture
def alices_todos(client: FlaskClient, alice: Account) -> list[dict[str, Any]]:
    """Seven to-dos with repeated titles and priorities, so the id tie-break matters."""
    return [
        create_todo(client, alice, "v2", title=title, priority=n % 3)
        for n, title in enumerate(TITLES)
    ]


@pytest.fixture
def posts_by_two(client: FlaskClient, alice: Account, bob: Account) -> list[dict[str, Any]]:
    """Seven posts, interleaved between two authors and two categories."""
    return [
        create_post(client, bob if n % 3 == 0 else alice, "v2", category=("travel", "food")[n % 2])
        for n in range(7)
    ]


# --- every row once, in order ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sort", ["id", "-id", "created_at", "-created_at", "title", "-title", "priority", "-priority"]
)
@pytest.mark.parametrize("size", [1, 2, 3])
def test_following_next_lists_every_todo_once_in_sort_order(
    client: FlaskClient,
    alice: Account,
    alices_todos: list[dict[str, Any]],
    sort: str,
    size: int,
) -> None:
    expected = sorted(alices_todos, key=sort_key(sort), reverse=sort.startswith("-"))

    walked = walk(client, f"/api/v2/todos?sort={sort}&limit={size}", "todos", alice.headers)

    assert walked == [todo["id"] for todo in expected]


@both_versions
@pytest.mark.parametrize("sort", ["-id", "title", "-created_at"])
def test_following_next_keeps_the_filters_on_both_versions(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    alices_todos: list[dict[str, Any]],
    version: str,
    sort: str,
) -> None:
    create_todo(client, bob, "v1", title="apple")
    create_todo(client, alice, "v1", title="apple", completed=True)
    open_apples = [todo for todo in alices_todos if todo["title"] == "apple"]
    expected = sorted(open_apples, key=sort_key(sort), reverse=sort.startswith("-"))

    url = f"/api/{version}/todos?title=APP&completed=false&sort={sort}&limit=1"
    walked = walk(client, url, "todos", alice.headers)

    assert walked == [todo["id"] for todo in expected]


def test_following_next_lists_the_priority_listing_and_a_users_todos(
    client: FlaskClient, alice: Account, bob: Account, alices_todos: list[dict[str, Any]]
) -> None:
    create_todo(client, bob, "v2", priority=9)
    by_priority = sorted(alices_todos, key=sort_key("priority"), reverse=True)

    priority = walk(client, "/api/v2/todos/priority?limit=2", "todos", alice.headers)
    users_todos = walk(client, f"/api/v1/users/{alice.id}/todos?limit=2", "todos", alice.headers)

    assert priority == [todo["id"] for todo in by_priority]
    assert users_todos == [todo["id"] for todo in alices_todos]


@both_versions
@pytest.mark.parametrize("author", ["alice", "bob", None])
def test_following_next_lists_every_post_once_by_author_or_all(
    client: FlaskClient,
    alice: Account,
    bob: Account,
    posts_by_two: list[dict[str, Any]],
    version: str,
    author: str | None,
) -> None:
    ids = {"alice": alice.id, "bob": bob.id}
    wanted = [p for p in posts_by_two if author is None or p["user_id"] == ids[author]]
    query = f"user_id={ids[author]}&" if author else ""

    walked = walk(client, f"/api/{version}/posts?{query}limit=2", "posts", {})

    assert walked == [post["id"] for post in wanted]


def test_following_next_lists_v2_posts_of_one_category(
    client: FlaskClient, posts_by_two: list[dict[str, Any]]
) -> None:
    food = [post["id"] for post in posts_by_two if post["category"] == "food"]

    assert walk(client, "/api/v2/posts?category=food&limit=1", "posts", {}) == food


def test_following_next_lists_every_user_once(
    client: FlaskClient, make_account: Callable[..., Account]
) -> None:
    ids = [make_account(f"user_{n}").id for n in range(5)]

    assert walk(client, "/api/v1/users?limit=2", "users", {}) == ids


@pytest.mark.parametrize("status", [None, "pending"])
def test_following_next_lists_every_job_newest_first(
    client: FlaskClient, admin: Account, posts_by_two: list[dict[str, Any]], status: str | None
) -> None:
    query = f"status={status}&" if status else ""
    everything = client.get(f"/api/v1/jobs?{query}limit=100", headers=admin.headers)
    jobs = everything.get_json()["jobs"]
    assert len(jobs) == 2 * len(posts_by_two)
    newest_first = sorted(
        jobs, key=lambda job: (datetime.fromisoformat(job["created_at"]), job["id"]), reverse=True
    )

    walked = walk(client, f"/api/v1/jobs?{query}limit=3", "jobs", admin.headers)

    assert walked == [job["id"] for job in newest_first]


def test_next_after_an_offset_page_continues_after_it(
    client: FlaskClient, alice: Account, alices_todos: list[dict[str, Any]]
) -> None:
    ids = [todo["id"] for todo in alices_todos]

    next_url = next_of(client, "/api/v2/todos?offset=2&limit=2", alice.headers)

    assert ids_of(client.get(next_url, headers=alice.headers), "todos") == ids[4:6]


def test_next_keeps_filters_and_limit_but_not_offset_or_count(
    client: FlaskClient, alice: Account, alices_todos: list[dict[str, Any]]
) -> None:
    url = "/api/v2/todos?sort=-priority&completed=false&limit=2&offset=1&count=true"

    next_url = next_of(client, url, alice.headers)

    parts = urlsplit(next_url)
    assert parts.path == "/api/v2/todos"
    query = parse_qs(parts.query)
    assert set(query) == {"sort", "completed", "limit", "after"}
    assert (query["sort"], query["completed"], query["limit"]) == (["-priority"], ["false"], ["2"])


def test_last_page_has_no_next_and_no_link_header(
    client: FlaskClient, alice: Account, alices_todos: list[dict[str, Any]]
) -> None:
    exact = client.get(f"/api/v2/todos?limit={len(alices_todos)}", headers=alice.headers)
    empty = client.get("/api/v2/todos?offset=100", headers=alice.headers)

    for response in (exact, empty):
        assert response.get_json()["pagination"]["next"] is None
        assert "Link" not in response.headers


# --- writes between pages --------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["id", "-id", "-created_at", "title"])
def test_rows_written_between_pages_neither_repeat_nor_skip_existing_rows(
    client: FlaskClient, alice: Account, alices_todos: list[dict[str, Any]], sort: str
) -> None:
    expected = [
        todo["id"]
        for todo in sorted(alices_todos, key=sort_key(sort), reverse=sort.startswith("-"))
    ]
    first = client.get(f"/api/v2/todos?sort={sort}&limit=3", headers=alice.headers).get_json()
    assert [todo["id"] for todo in first["todos"]] == expected[:3]

    # New rows sort before, among and after the rows already listed.
    for title in ("aaa", "fig", "zzz"):
        create_todo(client, alice, "v2", title=title)
    rest = walk(client, first["pagination"]["next"], "todos", alice.headers)

    old_rows = [todo_id for todo_id in rest if todo_id in expected]
    assert old_rows == expected[3:]
    assert len(rest) == len(set(rest))


@both_versions
def test_a_post_deleted_at_the_end_of_a_page_does_not_break_its_cursor(
    client: FlaskClient, alice: Account, posts_by_two: list[dict[str, Any]], version: str
) -> None:
    ids = [post["id"] for post in posts_by_two]
    next_url = next_of(client, f"/api/{version}/posts?limit=3")
    client.delete(f"/api/{version}/posts/{ids[2]}", headers=alice.headers)
    created = create_post(client, alice, version)

    rest = walk(client, next_url, "posts", {})

    assert rest == [*ids[3:], created["id"]]


# --- the cursor ------------------------------------------------------------------------------


def sealed_bytes(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def as_cursor(sealed: bytes) -> str:
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def tampered(cursor: str) -> str:
    """One bit of the encrypted payload changed (just after the 12-byte nonce)."""
    sealed = bytearray(sealed_bytes(cursor))
    sealed[12] ^= 1
    return as_cursor(bytes(sealed))


def unsigned(cursor: str) -> str:
    """Without its 16-byte authentication tag."""
    return as_cursor(sealed_bytes(cursor)[:-16])


def flipped(cursor: str) -> str:
    """One bit of the authentication tag changed."""
    sealed = bytearray(sealed_bytes(cursor))
    sealed[-1] ^= 1
    return as_cursor(bytes(sealed))


@pytest.mark.scenario("S46")
@pytest.mark.parametrize("damage", [tampered, unsigned, flipped])
def test_a_tampered_cursor_is_400_and_changes_nothing(
    client: FlaskClient,
    alice: Account,
    alices_todos: list[dict[str, Any]],
    row_counts: RowCounts,
    damage: Callable[[str], str],
) -> None:
    cursor = cursor_of(next_of(client, "/api/v2/todos?limit=2", alice.headers))
    before = row_counts()

    response = client.get(f"/api/v2/todos?limit=2&after={damage(cursor)}", headers=alice.headers)

    body = assert_error(response, 400, "Invalid query parameter(s): after", {"after"})
    assert body["errors"]["after"] == [INVALID_CURSOR]
    assert row_counts() == before


@pytest.mark.scenario("S46")
@pytest.mark.parametrize("sort", ["title", "-title", "created_at", "-created_at"])
def test_a_cursor_reveals_none_of_the_sort_values_of_its_page(
    client: FlaskClient, alice: Account, sort: str
) -> None:
    """S46: cursors were signed, not encrypted: `?after=` held a private to-do's title (and
    its time) in base64, in URLs, `Link` headers and access logs. Decoded now, a cursor
    shows neither, nor the title's characters in any other encoding."""
    titles = [f"zzz secret title {number}" for number in range(3)]
    for title in titles:
        create_todo(client, alice, "v2", title=title)
    response = client.get(f"/api/v2/todos?sort={sort}&limit=1", headers=alice.headers)
    cursor = cursor_of(response.get_json()["pagination"]["next"])

    decoded = sealed_bytes(cursor)

    listed = response.get_json()["todos"][0]
    for secret in (listed["title"], listed["created_at"], "secret", "zzz"):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert secret.encode(encoding) not in decoded, (secret, encoding)
    assert "secret" not in response.headers["Link"]


@pytest.mark.scenario("S46")
def test_a_page_ending_at_a_long_non_ascii_title_leads_to_the_next(
    client: FlaskClient, alice: Account
) -> None:
    """A title of 100 emoji (the longest a to-do has) fits in a cursor: its `next` works."""
    title = "".join(chr(0x1F600 + number % 80) for number in range(100))
    ids = [create_todo(client, alice, "v2", title=title)["id"] for _ in range(3)]

    pages = list(follow_pages(client, "/api/v2/todos?sort=title&limit=1", "todos", alice.headers))

    assert [item for page in pages for item in page] == ids


@pytest.mark.parametrize(
    "garbage",
    ["x", "\x00", "....", "eyJhZnRlciI6IFsxXX0", "e30.AAAA", "🙂", "a" * 1024],
    ids=["short", "nul", "dots", "bare-json", "empty-object", "emoji", "longest"],
)
def test_a_made_up_cursor_is_400_on_every_list(
    client: FlaskClient, admin: Account, garbage: str
) -> None:
    urls = [
        *(f"/api/{version}/{resource}" for version in VERSIONS for resource in ("posts", "todos")),
        "/api/v2/todos/priority",
        f"/api/v1/users/{admin.id}/todos",
        "/api/v1/users",
        "/api/v1/jobs",
    ]
    for url in urls:
        response = client.get(url, query_string={"after": garbage}, headers=admin.headers)

        body = assert_error(response, 400, "Invalid query parameter(s): after", {"after"})
        assert body["errors"]["after"] == [INVALID_CURSOR], url


def test_a_cursor_signed_with_another_secret_is_400(
    client: FlaskClient,
    make_app: Callable[..., Flask],
    alice: Account,
    posts_by_two: list[dict[str, Any]],
) -> None:
    other = make_app(SECRET_KEY="another-secret-key-0123456789abcdef").test_client()
    cursor = cursor_of(next_of(other, "/api/v1/posts?limit=2"))

    response = client.get(f"/api/v1/posts?limit=2&after={cursor}")

    body = assert_error(response, 400, "Invalid query parameter(s): after", {"after"})
    assert body["errors"]["after"] == [INVALID_CURSOR]


@pytest.mark.parametrize(
    ("origin", "used_with"),
    [
        ("/api/v2/todos?sort=title", "/api/v2/todos?sort=-title"),
        ("/api/v2/todos?sort=title", "/api/v2/todos?sort=title&completed=false"),
        ("/api/v2/todos?priority=1", "/api/v2/todos?priority=2"),
        ("/api/v2/todos", "/api/v1/todos"),
        ("/api/v2/todos", "/api/v2/todos/priority"),
        ("/api/v1/todos", "/api/v1/users/{alice_id}/todos"),
        ("/api/v1/posts", "/api/v1/todos"),
        ("/api/v1/posts", "/api/v1/posts?user_id={alice_id}"),
    ],
)
def test_a_cursor_from_another_listing_is_400(
    client: FlaskClient,
    alice: Account,
    alices_todos: list[dict[str, Any]],
    posts_by_two: list[dict[str, Any]],
    origin: str,
    used_with: str,
) -> None:
    def url(template: str) -> str:
        separator = "&" if "?" in template else "?"
        return f"{template.format(alice_id=alice.id)}{separator}limit=1"

    cursor = cursor_of(next_of(client, url(origin), alice.headers))

    response = client.get(f"{url(used_with)}&after={cursor}", headers=alice.headers)

    body = assert_error(response, 400, "Invalid query parameter(s): after", {"after"})
    assert body["errors"]["after"] == [FOREIGN_CURSOR]


def test_the_same_cursor_serves_another_page_size(
    client: FlaskClient, alice: Account, alices_todos: list[dict[str, Any]]
) -> None:
    ids = [todo["id"] for todo in alices_todos]
    cursor = cursor_of(next_of(client, "/api/v2/todos?limit=2", alice.headers))

    response = client.get(f"/api/v2/todos?limit=4&after={cursor}", headers=alice.headers)

    assert ids_of(response, "todos") == ids[2:6]
    assert "offset" not in response.get_json()["pagination"]


def test_after_with_offset_is_400_naming_both(
    client: FlaskClient, posts_by_two: list[dict[str, Any]]
) -> None:
    cursor = cursor_of(next_of(client, "/api/v1/posts?limit=1"))

    response = client.get(f"/api/v1/posts?offset=0&after={cursor}")

    body = assert_error(response, 400, "Invalid query parameter(s): offset", {"offset"})
    assert "`after`" in body["errors"]["offset"][0]


# --- count and offset ------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["posts", "todos"])
def test_the_total_is_counted_only_when_asked(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    alices_todos: list[dict[str, Any]],
    posts_by_two: list[dict[str, Any]],
    resource: str,
) -> None:
    url = f"/api/v2/{resource}?limit=2"
    with statements_run_by(app) as plain_statements:
        plain = client.get(url, headers=alice.headers).get_json()["pagination"]
    with statements_run_by(app) as counted_statements_run:
        counted = client.get(f"{url}&count=true", headers=alice.headers).get_json()["pagination"]
    not_counted = client.get(f"{url}&count=false", headers=alice.headers).get_json()["pagination"]
    following = client.get(counted["next"], headers=alice.headers).get_json()["pagination"]

    assert "total" not in plain
    assert "total" not in not_counted
    assert counted["total"] == 7
    assert "total" not in following
    assert not any("count(" in sql.lower() for sql in plain_statements)
    assert sum("count(" in sql.lower() for sql in counted_statements_run) == 1


def test_count_is_also_served_with_a_cursor(
    client: FlaskClient, alice: Account, alices_todos: list[dict[str, Any]]
) -> None:
    cursor = cursor_of(next_of(client, "/api/v2/todos?limit=2", alice.headers))

    response = client.get(f"/api/v2/todos?limit=2&after={cursor}&count=true", headers=alice.headers)

    assert response.get_json()["pagination"]["total"] == len(alices_todos)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/posts",
        "/api/v2/posts",
        "/api/v1/todos",
        "/api/v2/todos",
        "/api/v2/todos/priority",
        "/api/v1/users/{admin_id}/todos",
        "/api/v1/users",
        "/api/v1/jobs",
    ],
)
def test_an_offset_beyond_the_bound_is_400_pointing_to_next(
    client: FlaskClient, admin: Account, row_counts: RowCounts, url: str
) -> None:
    before = row_counts()
    at_bound = client.get(
        f"{url.format(admin_id=admin.id)}?offset={MAX_OFFSET}", headers=admin.headers
    )
    beyond = client.get(
        f"{url.format(admin_id=admin.id)}?offset={MAX_OFFSET + 1}", headers=admin.headers
    )

    assert at_bound.status_code == 200
    body = assert_error(beyond, 400, "Invalid query parameter(s): offset", {"offset"})
    assert body["errors"]["offset"] == [
        f"Must be at most {MAX_OFFSET}: follow pagination.next (the `after` cursor) "
        "to read further."
    ]
    assert row_counts() == before

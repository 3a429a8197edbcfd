"""Shared by the to-do, post and ownership tests: create resources through the API, the request
bodies every JSON write endpoint must refuse, the pagination contract of list endpoints, and
`Resource`, what the contract suite (test_resources_contract.py) needs to know of posts and
to-dos to check the behaviour they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from support import Account, assert_error

# The `row_counts` fixture: rows per table.
RowCounts = Callable[[], dict[str, int]]

VERSIONS = ("v1", "v2")
both_versions = pytest.mark.parametrize("version", VERSIONS)

MAX_BODY_BYTES = 1024 * 1024
REQUEST_MUST_BE_JSON = "Request must be JSON"
# JSON that does not parse: the parser's words and where it stopped (SPEC §4.1 said "Request must
# be JSON" for it too; issue 23 asked for the position).
MALFORMED_JSON = (
    "Malformed JSON body: Expecting property name enclosed in double quotes at line 1, column 2 "
    "(char 1)"
)
TOO_LARGE_MESSAGE = "The data value transmitted exceeds the capacity limit."

# Request bodies that are not a JSON object (keyword arguments for the test client), and the
# message of the 400 each gets.
NOT_A_JSON_OBJECT = [
    pytest.param(
        {"data": "title=x", "content_type": "application/x-www-form-urlencoded"},
        REQUEST_MUST_BE_JSON,
        id="form",
    ),
    pytest.param({"data": "title", "content_type": "text/plain"}, REQUEST_MUST_BE_JSON, id="text"),
    pytest.param(
        {"data": "{not json", "content_type": "application/json"},
        MALFORMED_JSON,
        id="malformed-json",
    ),
    pytest.param({"json": ["title", "content"]}, REQUEST_MUST_BE_JSON, id="json-list"),
    pytest.param({"json": "title"}, REQUEST_MUST_BE_JSON, id="json-string"),
    pytest.param(
        {"data": "null", "content_type": "application/json"}, REQUEST_MUST_BE_JSON, id="json-null"
    ),
]


def refused(verdict: str, body: dict[str, Any], *fields: str, **param: Any) -> Any:
    """The parameters (body, message, fields named in `errors`) of a body refused as
    `<verdict> field(s): <fields>`; `fields` default to the body's own, `param` is
    `pytest.param`'s `id` or `marks`."""
    named = set(fields or body)
    return pytest.param(body, f"{verdict} field(s): {', '.join(sorted(named))}", named, **param)


def invalid(body: dict[str, Any], *fields: str, **param: Any) -> Any:
    """A body with a value the field does not take: `Invalid field(s): ...`."""
    return refused("Invalid", body, *fields, **param)


def unknown(body: dict[str, Any], *fields: str, **param: Any) -> Any:
    """A body with a field the endpoint does not take: `Unknown field(s): ...`."""
    return refused("Unknown", body, *fields, **param)


def invalid_titles(longest: int) -> list[Any]:
    """The titles every resource refuses: not a string, empty, one character too long, NUL."""
    return [
        invalid({"title": 5}, id="title-number"),
        invalid({"title": None}, id="title-null"),
        invalid({"title": ""}, id="title-empty"),
        invalid({"title": "x" * (longest + 1)}, id=f"title-{longest + 1}"),
        invalid({"title": "nul\x00byte"}, id="title-nul"),
    ]


# Fields only the server sets; a create or update body naming one is refused (mass assignment).
SERVER_SET_FIELDS = [
    unknown({"user_id": 2}, id="user_id"),
    unknown({"id": 7}, id="id"),
    unknown({"created_at": "2020-01-01T00:00:00+00:00"}, id="created_at"),
]


def huge_body() -> dict[str, Any]:
    """A JSON object just over the 1 MiB request limit."""
    padding = "x" * MAX_BODY_BYTES
    return {"data": f'{{"title": "{padding}"}}', "content_type": "application/json"}


def create_todo(
    client: FlaskClient, owner: Account, version: str = "v2", **fields: Any
) -> dict[str, Any]:
    fields.setdefault("title", "Buy milk")
    response = client.post(f"/api/{version}/todos", json=fields, headers=owner.headers)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def create_post(
    client: FlaskClient, author: Account, version: str = "v2", **fields: Any
) -> dict[str, Any]:
    fields.setdefault("title", "A post")
    fields.setdefault("content", "Some words to read")
    response = client.post(f"/api/{version}/posts", json=fields, headers=author.headers)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def ids_of(response: Any, key: str) -> list[int]:
    """The ids of the items of a collection response, in order."""
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()[key]]


# `offset` is served up to this depth; deeper pages are read through `pagination.next`.
MAX_OFFSET = 10_000

INVALID_PAGES = [
    pytest.param("limit=0", {"limit"}, id="limit-0"),
    pytest.param("limit=-1", {"limit"}, id="limit-negative"),
    pytest.param("limit=101", {"limit"}, id="limit-101"),
    pytest.param("limit=1000", {"limit"}, id="limit-1000"),
    pytest.param("limit=abc", {"limit"}, id="limit-abc"),
    pytest.param("limit=", {"limit"}, id="limit-empty"),
    pytest.param("limit=2.5", {"limit"}, id="limit-float"),
    pytest.param("offset=-1", {"offset"}, id="offset-negative"),
    pytest.param("offset=abc", {"offset"}, id="offset-abc"),
    pytest.param("offset=99999999999", {"offset"}, id="offset-beyond-int32"),
    pytest.param(f"offset={MAX_OFFSET + 1}", {"offset"}, id="offset-beyond-bound"),
    pytest.param("after=", {"after"}, id="after-empty"),
    pytest.param("after=not-a-cursor", {"after"}, id="after-not-a-cursor"),
    pytest.param("after=" + "a" * 2000, {"after"}, id="after-too-long"),
    pytest.param("offset=0&after=abc", {"offset"}, id="after-with-offset"),
    pytest.param("count=maybe", {"count"}, id="count-not-boolean"),
    pytest.param("limit=0&offset=-1", {"limit", "offset"}, id="both"),
]


def assert_rejects_page(
    client: FlaskClient, url: str, query: str, fields: set[str], headers: dict[str, str]
) -> None:
    separator = "&" if "?" in url else "?"
    response = client.get(f"{url}{separator}{query}", headers=headers)
    names = ", ".join(sorted(fields))
    assert_error(response, 400, f"Invalid query parameter(s): {names}", fields)


def follow_pages(
    client: FlaskClient, url: str, key: str, headers: dict[str, str]
) -> list[list[Any]]:
    """The ids of every page from `url` on, following `pagination.next`; each page's `Link`
    header names the same URL as `next`, and is absent exactly when `next` is null."""
    pages: list[list[Any]] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append([item["id"] for item in body[key]])
        next_url = body["pagination"]["next"]
        if next_url is None:
            assert "Link" not in response.headers
        else:
            assert response.headers["Link"] == f'<{next_url}>; rel="next"'
            assert "after=" in next_url
        assert len(pages) <= 1000, "pagination.next never ends"
    return pages


def assert_paginates(
    client: FlaskClient, url: str, key: str, expected_ids: list[int], headers: dict[str, str]
) -> None:
    """`url` lists `expected_ids` in this order, in offset pages of any size (with a correct
    total when asked with `count=true`) and page after page through `pagination.next`."""
    total = len(expected_ids)
    separator = "&" if "?" in url else "?"

    def page(query: str) -> dict[str, Any]:
        response = client.get(f"{url}{separator}{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())

    default = page("")
    assert set(default["pagination"]) == {"limit", "offset", "next"}
    assert default["pagination"]["limit"] == 20
    assert default["pagination"]["offset"] == 0
    assert (default["pagination"]["next"] is None) == (total <= 20)
    assert [item["id"] for item in default[key]] == expected_ids[:20]
    counted = page("count=true")["pagination"]
    assert counted == {**default["pagination"], "total": total}

    collected: list[int] = []
    for offset in range(0, total + 1, 2):
        body = page(f"limit=2&offset={offset}&count=true")
        pagination = body["pagination"]
        assert {name: pagination[name] for name in ("total", "limit", "offset")} == {
            "total": total,
            "limit": 2,
            "offset": offset,
        }
        assert (pagination["next"] is None) == (offset + 2 >= total)
        collected += [item["id"] for item in body[key]]
    assert collected == expected_ids

    assert page("limit=100&count=true")["pagination"] == {
        "total": total,
        "limit": 100,
        "offset": 0,
        "next": None,
    }
    beyond = page(f"offset={MAX_OFFSET}&count=true")
    assert beyond[key] == []
    assert beyond["pagination"] == {"total": total, "limit": 20, "offset": MAX_OFFSET, "next": None}

    for size in (1, 2, 3, 100):
        pages = follow_pages(client, f"{url}{separator}limit={size}", key, headers)
        assert [item for ids in pages for item in ids] == expected_ids
        assert all(len(ids) == size for ids in pages[:-1])


@dataclass(frozen=True)
class Example:
    """A create or update body and what the answer must show for it: the body's own fields and
    those the server derives (a post's `word_count`, a to-do's `user_username`)."""

    body: dict[str, Any]
    shown: dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """What posts and to-dos share in both versions, described for the contract suite."""

    name: str  # the URL segment, the table and the key of a listing: "posts"
    noun: str  # as the API's messages say it: "Post" ("Post not found", "Post deleted")
    create: Callable[..., dict[str, Any]]  # create_post or create_todo
    fields: dict[str, frozenset[str]]  # an item's fields, by version
    private: bool  # to-dos are their owner's: reading one needs a token; posts are public
    valid: dict[str, Any]  # the smallest body that creates one
    sample: Example  # a create body with every field an author sets
    longest: Example  # the longest values its fields accept
    missing: list[Any]  # (body, message, fields named in `errors`) for a missing required field
    timestamps: tuple[str, ...]  # the fields that hold a time
    change: dict[str, Any]  # an update of one field
    refreshed: tuple[str, ...]  # fields any update sets again (`updated_at`)
    deleted_with: tuple[str, ...]  # the tables whose rows go with an item (a post's jobs)
    v2_field: str  # the field only v2 knows
    v2_value: Any  # a valid value of it
    invalid_v2_values: list[Any]  # values of it v2 refuses

    def url(self, version: str, item_id: int | str | None = None) -> str:
        return f"/api/{version}/{self.name}" + (f"/{item_id}" if item_id is not None else "")

    def read_headers(self, owner: Account) -> dict[str, str]:
        """The headers that read `owner`'s items: a token only where they are private."""
        return owner.headers if self.private else {}


# The fields of an item in v1; v2 adds `category` to a post and `priority` to a to-do.
POST_FIELDS = frozenset(
    {"id", "title", "content", "word_count", "user_id", "created_at", "updated_at"}
)
TODO_FIELDS = frozenset(
    {"id", "title", "description", "completed", "created_at", "user_id", "user_username"}
)

POSTS = Resource(
    name="posts",
    noun="Post",
    create=create_post,
    fields={"v1": POST_FIELDS, "v2": POST_FIELDS | {"category"}},
    private=False,
    valid={"title": "Valid", "content": "Valid content"},
    sample=Example(
        {"title": "Hello", "content": "Five words in this post"}, shown={"word_count": 5}
    ),
    longest=Example(
        {"title": "t" * 200, "content": "w " * 50_000},
        shown={"title": "t" * 200, "word_count": 50_000},
    ),
    missing=[
        pytest.param({}, "Missing title or content", {"title", "content"}, id="neither"),
        pytest.param(
            {"title": "Only a title"}, "Missing title or content", {"content"}, id="no-content"
        ),
        pytest.param(
            {"content": "Only content"}, "Missing title or content", {"title"}, id="no-title"
        ),
    ],
    timestamps=("created_at", "updated_at"),
    change={"title": "New title"},
    refreshed=("updated_at",),
    deleted_with=("jobs",),
    v2_field="category",
    v2_value="travel",
    invalid_v2_values=[
        pytest.param("c" * 51, id="51-chars"),
        pytest.param("", id="empty"),
        pytest.param(7, id="number"),
        pytest.param(None, id="null"),
        pytest.param("a\x00", id="nul"),
    ],
)

TODOS = Resource(
    name="todos",
    noun="Todo",
    create=create_todo,
    fields={"v1": TODO_FIELDS, "v2": TODO_FIELDS | {"priority"}},
    private=True,
    valid={"title": "Valid"},
    sample=Example(
        {"title": "Buy milk", "description": "Semi-skimmed", "completed": True},
        shown={"user_username": "alice"},
    ),
    longest=Example(
        {"title": "t" * 100, "description": "d" * 255},
        shown={"title": "t" * 100, "description": "d" * 255},
    ),
    missing=[pytest.param({"description": "no title"}, "Missing title", {"title"}, id="no-title")],
    timestamps=("created_at",),
    change={"completed": True},
    refreshed=(),
    deleted_with=(),
    v2_field="priority",
    v2_value=3,
    invalid_v2_values=[
        pytest.param("3", id="string"),
        pytest.param(1.5, id="float"),
        pytest.param(2.0, id="whole-float"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="null"),
        pytest.param(2**31, id="beyond-int32"),
    ],
)

RESOURCES = (POSTS, TODOS)
each_resource = pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)


def cases_of_each_resource(cases: Callable[[Resource], Iterable[Any]]) -> list[Any]:
    """Parameters `(resource, *case)` for cases that differ by resource: each resource with the
    cases `cases(resource)` gives (`pytest.param`s), named `<resource>-<case>`."""
    return [
        pytest.param(resource, *case.values, id=f"{resource.name}-{case.id}", marks=case.marks)
        for resource in RESOURCES
        for case in cases(resource)
    ]

"""S18-S20 over the whole route inventory (`app.url_map`): every route is either on an explicit
public allowlist or refuses a caller without a token; exactly the admin routes refuse a normal
user; no method outside the documented ones (S19: there is no PATCH, SPEC §4); and no response
a user can get carries password hashes, token ids or another user's e-mail address.

SPEC differences: S19's `PATCH /posts/{id}` and `PATCH /users/me` do not exist (SPEC defines
PUT; a user's role is changed only through the admin's `PUT /users/<id>/role`), so PATCH is a
405 and mass assignment through PUT is a 400 (tests/security/test_request_validation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from attacks import on_both_versions
from effects import Snapshot
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.routing import Rule

from blog_api.extensions import db
from blog_api.models import Job
from support import Account, assert_error
from support.resources import create_post, create_todo

# (rule, method) a caller without a token may use.
PUBLIC = {
    ("/api", "GET"),
    ("/health", "GET"),
    ("/ready", "GET"),
    ("/metrics", "GET"),
    ("/api/v1/login", "POST"),
    ("/api/v1/refresh", "POST"),
    ("/api/v1/users", "GET"),
    ("/api/v1/users", "POST"),
    ("/api/v1/users/<id:user_id>", "GET"),
    # The token from the confirmation e-mail is the proof (SPEC §4.6).
    ("/api/v1/users/confirm-email", "POST"),
    # The token of a fan-out e-mail's one-click link is the proof (SPEC §4.7).
    ("/api/v1/unsubscribe", "GET"),
    ("/api/v1/unsubscribe", "POST"),
    ("/api/v2/posts/recent", "GET"),
    *(
        (rule.format(version=version), "GET")
        for version in ("v1", "v2")
        for rule in (
            "/api/{version}/docs/",
            "/api/{version}/docs/<path:path>",
            "/api/{version}/openapi.json",
            "/api/{version}/posts",
            "/api/{version}/posts/<id:post_id>",
        )
    ),
}
# (rule, method) only an admin may use.
ADMIN = {
    ("/api/v1/users/<id:user_id>/role", "GET"),
    ("/api/v1/users/<id:user_id>/role", "PUT"),
    ("/api/v1/users/<id:user_id>", "DELETE"),
    ("/api/v1/posts/all", "DELETE"),
    ("/api/v2/posts/all", "DELETE"),
    ("/api/v1/jobs", "GET"),
    ("/api/v1/jobs/<string(length=36):job_id>/retry", "POST"),
    ("/api/v1/posts/<id:post_id>/deliveries/retry", "POST"),
    ("/api/v2/posts/<id:post_id>/deliveries/retry", "POST"),
}


def routes(app: Flask) -> Iterator[tuple[Rule, str]]:
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method


def url_for_rule(app: Flask, rule: Rule, ids: dict[str, Any]) -> str:
    values = {argument: ids[argument] for argument in rule.arguments}
    return app.url_map.bind("localhost").build(rule.endpoint, values, force_external=False)


def fetch(client: FlaskClient, url: str, method: str, **kwargs: Any) -> Any:
    """The response, read and closed (the docs routes send files)."""
    response = client.open(url, method=method, **kwargs)
    response.get_data()
    response.close()
    return response


def dead_job_of(app: Flask, post_id: int) -> str:
    with app.app_context():
        job = db.session.scalars(db.select(Job).where(Job.post_id == post_id)).first()
        assert job is not None
        db.session.execute(update(Job).where(Job.id == job.id).values(status="dead"))
        db.session.commit()
        return job.id


@pytest.fixture
def ids(
    app: Flask, client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot]
) -> dict[str, Any]:
    """Ids of alice's own objects for every URL argument (her post's jobs have run)."""
    post = create_post(client, alice, "v2")
    snapshot()  # runs the post's jobs
    return {
        "user_id": alice.id,
        "post_id": post["id"],
        "todo_id": create_todo(client, alice, "v2")["id"],
        "job_id": dead_job_of(app, post["id"]),
        "author_id": alice.id,
        "path": "swagger-ui.css",
    }


@pytest.mark.scenario("S18")
def test_every_route_is_public_or_needs_a_token(
    app: Flask, client: FlaskClient, ids: dict[str, Any], snapshot: Callable[[], Snapshot]
) -> None:
    inventory = {(rule.rule, method) for rule, method in routes(app)}
    assert inventory >= PUBLIC | ADMIN  # the lists name real routes
    before = snapshot()

    for rule, method in routes(app):
        response = fetch(client, url_for_rule(app, rule, ids), method, json={})
        if (rule.rule, method) in PUBLIC:
            assert response.status_code != 401, (rule.rule, method)
        else:
            assert_error(response, 401, "Missing token")

    assert snapshot() == before


@pytest.mark.scenario("S18")
def test_exactly_the_admin_routes_refuse_a_normal_user(
    app: Flask, client: FlaskClient, alice: Account, ids: dict[str, Any]
) -> None:
    """Deny by default: a route that forgot its admin check, or a new admin route missing from
    ADMIN, fails here. Alice uses her own ids, so only the role check can refuse her."""
    refused = set()
    for rule, method in routes(app):
        if rule.rule == "/api/v1/logout":
            continue  # would revoke the token the rest of the loop uses
        response = fetch(
            client, url_for_rule(app, rule, ids), method, json={}, headers=alice.headers
        )
        if response.status_code == 403 and response.get_json() == {
            "error": "Forbidden",
            "message": "Admin access required",
        }:
            refused.add((rule.rule, method))

    assert refused == ADMIN


def admin_requests(
    app: Flask, client: FlaskClient, bob: Account
) -> list[tuple[str, Callable[[str], str], dict[str, Any] | None]]:
    """One valid request per admin route: (method, url for a version, body)."""
    post = create_post(client, bob, "v1")
    job_id = dead_job_of(app, post["id"])
    return [
        ("GET", lambda _v: f"/api/v1/users/{bob.id}/role", None),
        ("PUT", lambda _v: f"/api/v1/users/{bob.id}/role", {"role": "admin"}),
        ("GET", lambda _v: "/api/v1/jobs", None),
        ("POST", lambda _v: f"/api/v1/jobs/{job_id}/retry", None),
        ("DELETE", lambda v: f"/api/{v}/posts/all", None),
        ("DELETE", lambda _v: f"/api/v1/users/{bob.id}", None),
    ]


@pytest.mark.scenario("S18")
def test_admin_routes_are_403_for_a_user_and_200_for_an_admin(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    bob: Account,
    admin: Account,
    snapshot: Callable[[], Snapshot],
) -> None:
    requests = admin_requests(app, client, bob)
    before = snapshot()

    for method, url, body in requests:
        response = on_both_versions(
            lambda version, method=method, url=url, body=body: client.open(
                url(version), method=method, json=body, headers=alice.headers
            )
        )
        assert_error(response, 403, "Admin access required")
    assert snapshot() == before

    for method, url, body in requests:
        for version in ("v1", "v2"):
            response = client.open(url(version), method=method, json=body, headers=admin.headers)
            assert response.status_code == 200, (method, url(version), response.get_json())
            if url("v1") == url("v2"):
                break


@pytest.mark.scenario("S19")
@pytest.mark.parametrize("resource", ["posts", "todos"])
def test_patch_is_not_a_method_of_the_api(
    client: FlaskClient, alice: Account, snapshot: Callable[[], Snapshot], resource: str
) -> None:
    item = (create_post if resource == "posts" else create_todo)(client, alice, "v1")
    before = snapshot()

    response = on_both_versions(
        lambda version: client.patch(
            f"/api/{version}/{resource}/{item['id']}",
            json={"user_id": 99, "id": 5, "created_at": "2020-01-01T00:00:00+00:00"},
            headers=alice.headers,
        )
    )

    assert response.status_code == 405
    assert response.get_json()["error"] == "Method Not Allowed"
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
    assert (
        client.patch(
            f"/api/v1/users/{alice.id}", json={"role": "admin"}, headers=alice.headers
        ).status_code
        == 405
    )
    assert snapshot() == before


FORBIDDEN_TEXT = ("password_hash", "$argon2", "jti", "bob@example.com", "blocklist")


@pytest.mark.scenario("S20")
def test_no_response_leaks_hashes_token_ids_or_other_users_emails(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    bob: Account,
    ids: dict[str, Any],
) -> None:
    """Every GET route, for alice and for a caller without a token, with bob's data around (his
    post, to-do and a revoked token on the blocklist)."""
    create_post(client, bob, "v1")
    create_todo(client, bob, "v1")
    client.post("/api/v1/logout", headers=bob.headers)
    checked = 0

    for rule, method in routes(app):
        if method != "GET" or "/docs/" in rule.rule or rule.rule.endswith("openapi.json"):
            continue  # the API documents name the password fields of request bodies
        for headers in (alice.headers, {}):
            url = url_for_rule(app, rule, ids)
            text = fetch(client, url, "GET", headers=headers).get_data(as_text=True)
            leaked = [word for word in FORBIDDEN_TEXT if word in text.lower()]
            assert leaked == [], (rule.rule, leaked)
            checked += 1

    assert checked >= 30
    me = client.get("/api/v1/me", headers=alice.headers).get_json()
    assert me["email"] == "alice@example.com"  # her own address, on her own profile only


@pytest.mark.scenario("S29")
def test_versioned_routes_are_the_same_in_both_versions(app: Flask) -> None:
    """Every to-do and post route of v1 exists in v2 with the same methods and the same
    protection (the public/admin lists above treat both alike); v2's only additions are its
    two documented listings. Every S-test on these routes runs on both versions."""
    by_version: dict[str, set[tuple[str, str]]] = {"v1": set(), "v2": set()}
    for rule, method in routes(app):
        for version in by_version:
            prefix = f"/api/{version}/"
            if rule.rule.startswith(prefix) and rule.rule.split("/")[3] in {"posts", "todos"}:
                by_version[version].add((rule.rule.removeprefix(prefix), method))

    assert by_version["v2"] - by_version["v1"] == {
        ("posts/recent", "GET"),
        ("todos/priority", "GET"),
    }
    assert by_version["v1"] <= by_version["v2"]
    for path, method in by_version["v1"]:
        v1_route, v2_route = (f"/api/v1/{path}", method), (f"/api/v2/{path}", method)
        assert (v1_route in PUBLIC) == (v2_route in PUBLIC), v1_route
        assert (v1_route in ADMIN) == (v2_route in ADMIN), v1_route

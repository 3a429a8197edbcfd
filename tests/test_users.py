"""Users (SPEC §3, §4.2): registration, public profiles, `/me`, password, roles and deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from blog_api.extensions import db
from blog_api.models import Post, Todo, User
from blog_api.schemas.posts import MAX_CONTENT_CHARS
from support import PASSWORD, Account, assert_error, table_rows
from support.resources import create_post, invalid

PUBLIC_PROFILE_FIELDS = {"id", "username", "role", "created_at"}
NEW_PASSWORD = "a brand new passphrase"


def register(client: FlaskClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    body.setdefault("password", PASSWORD)
    return client.post("/api/v1/users", json=body, headers=headers or {})


def login(client: FlaskClient, username: str, password: str) -> Any:
    return client.post("/api/v1/login", json={"username": username, "password": password})


def stored_user(app: Flask, username: str) -> User | None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        if user is not None:
            db.session.expunge(user)
        return user


def add_posts_and_todos(app: Flask, user_id: int, count: int) -> None:
    with app.app_context():
        for number in range(count):
            db.session.add(Post(title=f"post {number}", content="some words", user_id=user_id))
            db.session.add(Todo(title=f"todo {number}", user_id=user_id))
        db.session.commit()


def owned_rows(app: Flask, model: type[Post] | type[Todo], user_id: int) -> int:
    with app.app_context():
        return len(db.session.scalars(select(model).where(model.user_id == user_id)).all())


# --- registration --------------------------------------------------------------------------------


def test_register_creates_a_user_and_returns_the_public_profile(
    app: Flask, client: FlaskClient, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    response = register(client, username="carol", email="Carol@Example.com")

    assert response.status_code == 201
    body = response.json
    assert set(body) == PUBLIC_PROFILE_FIELDS
    assert body["username"] == "carol"
    assert body["role"] == "user"
    assert body["created_at"].endswith("+00:00")
    assert response.headers["Location"] == f"/api/v1/users/{body['id']}"
    # The account, and the confirmation of its address with the job that e-mails it.
    assert row_counts() == {
        **before,
        "users": before["users"] + 1,
        "email_confirmations": before["email_confirmations"] + 1,
        "jobs": before["jobs"] + 1,
    }
    user = stored_user(app, "carol")
    assert user is not None
    assert user.email == "carol@example.com"
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_registered_user_can_log_in_and_see_their_own_profile(client: FlaskClient) -> None:
    register(client, username="carol", email="carol@example.com")

    token = login(client, "carol", PASSWORD).json["access_token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert me.status_code == 200
    assert me.json["username"] == "carol"
    assert me.json["email"] == "carol@example.com"
    assert "password_hash" not in me.get_data(as_text=True)


def test_register_without_email_is_allowed(client: FlaskClient) -> None:
    response = register(client, username="carol")

    assert response.status_code == 201


USERNAME_MESSAGE = "Username must be 3-50 characters: letters, digits, '_', '.', '-'."


@pytest.mark.scenario("S48")
@pytest.mark.parametrize(
    "username",
    [
        pytest.param("alice\n", id="trailing-newline"),
        pytest.param("admin\n", id="admin-trailing-newline"),
        pytest.param("alice\r", id="trailing-cr"),
        pytest.param("alice\r\n", id="trailing-crlf"),
        pytest.param("alice\x00", id="trailing-nul"),
        pytest.param("\nalice", id="leading-newline"),
    ],
)
def test_a_username_with_a_control_character_is_400_and_writes_nothing(
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    username: str,
) -> None:
    """S48: the pattern matched with `re.match`, whose `$` also matches before a final
    newline, so `alice\\n` registered as an account of its own next to `alice`."""
    before = row_counts()

    response = register(client, username=username, email="carol@example.com")

    body = assert_error(response, 400, "Invalid field(s): username", {"username"})
    assert body["errors"]["username"] == [USERNAME_MESSAGE]
    assert row_counts() == before


@pytest.mark.scenario("S48")
def test_logging_in_as_a_name_with_a_trailing_newline_does_not_reach_any_account(
    client: FlaskClient, alice: Account
) -> None:
    assert register(client, username="alice\n").status_code == 400

    assert_error(login(client, "alice\n", PASSWORD), 401, "Invalid credentials")
    assert login(client, "alice", PASSWORD).status_code == 200


# (address, a part of the message that names why): refused before anything is written.
NOT_ASCII = "Only ASCII e-mail addresses are accepted: the mail server cannot send to"
ROUTING_CHARACTERS = "'%' and '!' are not accepted before the @-sign"
UNSENDABLE_ADDRESSES = [
    pytest.param("root@localhost", "It should have a period", id="localhost"),
    pytest.param("carol@intranet", "It should have a period", id="dotless-domain"),
    pytest.param("root@mail.local", "special-use or reserved name", id="reserved-domain"),
    pytest.param("root@[127.0.0.1]", "bracketed IP address", id="ipv4-literal"),
    pytest.param("root@[IPv6:::1]", "bracketed IP address", id="ipv6-literal"),
    pytest.param("a%evil.com@example.com", ROUTING_CHARACTERS, id="percent-in-local-part"),
    pytest.param("evil.com!a@example.com", ROUTING_CHARACTERS, id="bang-in-local-part"),
    pytest.param('"carol"@example.com', "Quoting the part before the @-sign", id="quoted"),
    pytest.param('"a@b"@example.com', "Quoting the part before the @-sign", id="quoted-at-sign"),
    pytest.param("jos\u00e9@example.com", NOT_ASCII, id="non-ascii-local-part"),
    pytest.param("carol@b\u00fccher.de", NOT_ASCII, id="non-ascii-domain"),
    pytest.param("carol@example.com\n", "invalid characters", id="trailing-newline"),
]


@pytest.mark.scenario("S50")
@pytest.mark.parametrize(("email", "reason"), UNSENDABLE_ADDRESSES)
def test_an_address_the_mailer_cannot_or_must_not_send_to_is_400_and_writes_nothing(
    client: FlaskClient, row_counts: Callable[[], dict[str, int]], email: str, reason: str
) -> None:
    """S50: these registered (201) and queued a confirmation e-mail to a host of the server's
    network, a relay or, for a non-ASCII address, a job that could only end dead."""
    before = row_counts()

    response = register(client, username="carol", email=email)

    body = assert_error(response, 400, "Invalid field(s): email", {"email"})
    [message] = body["errors"]["email"]
    assert reason in message
    assert row_counts() == before


@pytest.mark.scenario("S50")
@pytest.mark.parametrize(
    "email",
    [
        "carol+news@example.com",
        "carol@mail.example.co.uk",
        "carol.o-neil@my-host.example.com",
        "Carol_99@Example.COM",
        "carol@xn--bcher-kva.de",
    ],
)
def test_ordinary_addresses_still_register(app: Flask, client: FlaskClient, email: str) -> None:
    response = register(client, username="carol", email=email)

    assert response.status_code == 201, response.json
    user = stored_user(app, "carol")
    assert user is not None
    assert user.email == email.lower()


def test_admin_can_register_another_admin(app: Flask, client: FlaskClient, admin: Account) -> None:
    response = register(client, headers=admin.headers, username="carol", role="admin")

    assert response.status_code == 201
    assert response.json["role"] == "admin"
    user = stored_user(app, "carol")
    assert user is not None
    assert user.is_admin


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("eight888", id="8-chars"),
        pytest.param("ü" * 8, id="8-multibyte-chars"),
        pytest.param("p" * 128, id="128-chars"),
        pytest.param("a" * 72 + "X", id="73-bytes"),
        pytest.param("密码" * 40, id="240-bytes-multibyte"),
        pytest.param("😀" * 20, id="emoji"),
    ],
)
def test_register_accepts_passwords_of_8_to_128_characters(
    client: FlaskClient, password: str
) -> None:
    assert register(client, username="carol", password=password).status_code == 201

    assert login(client, "carol", password).status_code == 200


def test_passwords_are_not_truncated_at_a_nul_byte(client: FlaskClient) -> None:
    assert register(client, username="carol", password="abcd\x00efgh").status_code == 201

    assert_error(login(client, "carol", "abcd\x00zzzz"), 401, "Invalid credentials")
    assert_error(login(client, "carol", "abcd"), 401, "Invalid credentials")
    assert login(client, "carol", "abcd\x00efgh").status_code == 200


def test_minimum_password_length_is_configurable(make_app: Callable[..., Flask]) -> None:
    client = make_app(PASSWORD_MIN_LENGTH=12).test_client()

    response = register(client, username="carol", password="eleven11111")

    assert_error(response, 400, "Invalid field(s): password", {"password"})
    assert response.json["errors"]["password"] == ["Shorter than minimum length 12."]


# --- public profiles and /me ---------------------------------------------------------------------


def test_list_users_shows_public_profiles_only(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    response = client.get("/api/v1/users?count=true")

    assert response.status_code == 200
    users = response.json["users"]
    assert [user["username"] for user in users] == ["alice", "bob"]
    assert all(set(user) == PUBLIC_PROFILE_FIELDS for user in users)
    text = response.get_data(as_text=True)
    assert "example.com" not in text
    assert "password" not in text
    assert "$argon2" not in text
    assert response.json["pagination"] == {"total": 2, "limit": 20, "offset": 0, "next": None}


def test_list_users_paginates(client: FlaskClient, make_account: Callable[..., Account]) -> None:
    for name in ("user_a", "user_b", "user_c"):
        make_account(name)

    response = client.get("/api/v1/users?limit=2&offset=1&count=true")

    assert [user["username"] for user in response.json["users"]] == ["user_b", "user_c"]
    assert response.json["pagination"] == {"total": 3, "limit": 2, "offset": 1, "next": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset")],
)
def test_list_users_rejects_invalid_pagination(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/api/v1/users?{query}")

    assert_error(response, 400, f"Invalid query parameter(s): {field}", {field})


@pytest.mark.scenario("S41")
def test_get_user_shows_the_public_profile_with_posts(
    app: Flask, client: FlaskClient, alice: Account, bob: Account
) -> None:
    """The profile names the user's newest posts (id, title, time; no content) and links to
    the whole list: SPEC §4.2 bounds it, where it used to embed every post in full."""
    add_posts_and_todos(app, alice.id, 2)
    add_posts_and_todos(app, bob.id, 1)

    response = client.get(f"/api/v1/users/{alice.id}")

    assert response.status_code == 200
    body = response.json
    assert set(body) == {
        *PUBLIC_PROFILE_FIELDS,
        "post_count",
        "posts",
        "posts_url",
        "subscriber_count",
    }
    assert body["username"] == "alice"
    assert body["post_count"] == 2
    assert body["subscriber_count"] == 0
    assert [post["title"] for post in body["posts"]] == ["post 1", "post 0"]
    assert all(set(post) == {"id", "title", "created_at"} for post in body["posts"])
    assert body["posts_url"] == f"/api/v1/posts?user_id={alice.id}"
    assert response.headers["Link"] == f'<{body["posts_url"]}>; rel="related"'
    linked = client.get(body["posts_url"]).get_json()["posts"]
    assert {post["id"] for post in linked} == {post["id"] for post in body["posts"]}
    text = response.get_data(as_text=True)
    assert "alice@example.com" not in text
    assert "password" not in text


@pytest.mark.scenario("S41")
def test_a_profile_shows_the_5_newest_posts_and_counts_them_all(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    """S41: the newest 5 of 8 posts, newest first, and the count of all 8."""
    written = [create_post(client, alice, title=f"post {number}")["id"] for number in range(8)]
    create_post(client, bob)

    body = client.get(f"/api/v1/users/{alice.id}").get_json()

    assert body["post_count"] == 8
    assert [post["id"] for post in body["posts"]] == written[::-1][:5]


@pytest.mark.scenario("S41")
def test_a_profile_does_not_grow_with_the_posts_content(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    """S41: 20 posts of 100,000 characters each made a 2 MB profile; it stays under 2 KB,
    the size of a profile with one short post."""
    create_post(client, bob, title="short", content="x")
    small = len(client.get(f"/api/v1/users/{bob.id}").get_data())
    for number in range(20):
        create_post(client, alice, title=f"long post {number}", content="x" * MAX_CONTENT_CHARS)

    response = client.get(f"/api/v1/users/{alice.id}")

    assert response.json["post_count"] == 20
    assert len(response.get_data()) < 2048
    assert len(response.get_data()) < small + 5 * 200
    assert "xxxx" not in response.get_data(as_text=True)


@pytest.mark.parametrize("user_id", ["999999", "0", "-1", "abc", "99999999999999999999"])
def test_get_unknown_user_is_404(client: FlaskClient, alice: Account, user_id: str) -> None:
    response = client.get(f"/api/v1/users/{user_id}")

    assert response.status_code == 404
    assert response.json["error"] == "Not Found"


def test_get_missing_user_says_user_not_found(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/users/999999"), 404, "User not found")


def test_me_shows_your_own_email(client: FlaskClient, alice: Account, bob: Account) -> None:
    response = client.get("/api/v1/me", headers=alice.headers)

    assert response.status_code == 200
    assert response.json["id"] == alice.id
    assert response.json["email"] == "alice@example.com"
    assert "bob@example.com" not in response.get_data(as_text=True)
    assert "password_hash" not in response.json


def test_me_without_token_is_401(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/me"), 401, "Missing token")


# --- password change -----------------------------------------------------------------------------


def change_password(
    client: FlaskClient, account: Account, user_id: int | None = None, **body: Any
) -> Any:
    body.setdefault("current_password", account.password)
    body.setdefault("new_password", NEW_PASSWORD)
    return client.put(
        f"/api/v1/users/{user_id or account.id}/password", json=body, headers=account.headers
    )


def test_change_password_replaces_the_password(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    response = change_password(client, alice)

    assert response.status_code == 200
    assert response.json == {"message": "Password has been changed successfully"}
    assert_error(login(client, "alice", PASSWORD), 401, "Invalid credentials")
    new_login = login(client, "alice", NEW_PASSWORD)
    assert new_login.status_code == 200
    headers = {"Authorization": f"Bearer {new_login.json['access_token']}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200


@pytest.mark.parametrize("caller", ["alice", "admin"])
def test_nobody_changes_another_users_password_not_even_an_admin(
    app: Flask, client: FlaskClient, alice: Account, bob: Account, admin: Account, caller: str
) -> None:
    users_before = table_rows(app, "users")

    response = change_password(client, {"alice": alice, "admin": admin}[caller], user_id=bob.id)

    assert_error(response, 403, "You can only change your own password")
    assert table_rows(app, "users") == users_before
    assert login(client, "bob", PASSWORD).status_code == 200


def test_change_password_without_token_is_401(
    app: Flask, client: FlaskClient, alice: Account
) -> None:
    users_before = table_rows(app, "users")

    response = client.put(
        f"/api/v1/users/{alice.id}/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )

    assert_error(response, 401, "Missing token")
    assert table_rows(app, "users") == users_before


@pytest.mark.parametrize(
    ("body", "message", "fields"),
    [
        pytest.param({}, "Missing current or new password", {"current_password", "new_password"}),
        pytest.param(
            {"current_password": PASSWORD}, "Missing current or new password", {"new_password"}
        ),
        pytest.param(
            {"new_password": NEW_PASSWORD}, "Missing current or new password", {"current_password"}
        ),
        invalid(
            {"current_password": PASSWORD, "new_password": "short"},
            "new_password",
            id="new-password-too-short",
        ),
        invalid(
            {"current_password": PASSWORD, "new_password": "n" * 129},
            "new_password",
            id="new-password-too-long",
        ),
        invalid(
            {"current_password": PASSWORD, "new_password": 123456789},
            "new_password",
            id="new-password-number",
        ),
        invalid(
            {"current_password": None, "new_password": NEW_PASSWORD},
            "current_password",
            id="current-password-null",
        ),
    ],
)
def test_change_password_rejects_invalid_bodies(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    row_counts: Callable[[], dict[str, int]],
    body: dict[str, Any],
    message: str,
    fields: set[str],
) -> None:
    before, users_before = row_counts(), table_rows(app, "users")

    response = client.put(f"/api/v1/users/{alice.id}/password", json=body, headers=alice.headers)

    assert_error(response, 400, message, fields)
    assert row_counts() == before
    assert table_rows(app, "users") == users_before


def test_new_password_may_be_73_bytes_of_multibyte_text(
    client: FlaskClient, alice: Account
) -> None:
    new_password = "é" * 36 + "x"  # 73 bytes

    assert change_password(client, alice, new_password=new_password).status_code == 200

    assert login(client, "alice", new_password).status_code == 200


# --- roles ---------------------------------------------------------------------------------------


def test_admin_can_view_a_users_role(client: FlaskClient, alice: Account, admin: Account) -> None:
    response = client.get(f"/api/v1/users/{alice.id}/role", headers=admin.headers)

    assert response.status_code == 200
    assert response.json == {"id": alice.id, "username": "alice", "role": "user"}


def test_admin_can_change_a_users_role(
    app: Flask, client: FlaskClient, alice: Account, admin: Account
) -> None:
    response = client.put(
        f"/api/v1/users/{alice.id}/role", json={"role": "admin"}, headers=admin.headers
    )

    assert response.status_code == 200
    assert response.json == {"id": alice.id, "username": "alice", "role": "admin"}
    user = stored_user(app, "alice")
    assert user is not None
    assert user.role == "admin"


def test_role_change_takes_effect_on_existing_tokens(
    client: FlaskClient, alice: Account, bob: Account, admin: Account
) -> None:
    role_url = f"/api/v1/users/{bob.id}/role"
    assert client.get(role_url, headers=alice.headers).status_code == 403

    client.put(f"/api/v1/users/{alice.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert client.get(role_url, headers=alice.headers).status_code == 200

    client.put(f"/api/v1/users/{alice.id}/role", json={"role": "user"}, headers=admin.headers)
    assert_error(client.get(role_url, headers=alice.headers), 403, "Admin access required")


@pytest.mark.parametrize("method", ["get", "put"])
def test_role_of_an_unknown_user_is_404(
    app: Flask, client: FlaskClient, admin: Account, method: str
) -> None:
    users_before = table_rows(app, "users")

    response = getattr(client, method)(
        "/api/v1/users/999999/role", json={"role": "admin"}, headers=admin.headers
    )

    assert_error(response, 404, "User not found")
    assert table_rows(app, "users") == users_before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "Missing role", id="missing"),
        pytest.param({"role": "superuser"}, "Invalid field(s): role", id="unknown-role"),
        pytest.param({"role": "Admin"}, "Invalid field(s): role", id="wrong-case"),
        pytest.param({"role": 1}, "Invalid field(s): role", id="number"),
        pytest.param({"role": None}, "Invalid field(s): role", id="null"),
    ],
)
def test_change_role_rejects_invalid_bodies(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    admin: Account,
    body: dict[str, Any],
    message: str,
) -> None:
    users_before = table_rows(app, "users")

    response = client.put(f"/api/v1/users/{alice.id}/role", json=body, headers=admin.headers)

    assert_error(response, 400, message, {"role"})
    assert table_rows(app, "users") == users_before


# --- deletion ------------------------------------------------------------------------------------


def test_admin_deletes_a_user_with_their_posts_and_todos(
    app: Flask,
    client: FlaskClient,
    alice: Account,
    bob: Account,
    admin: Account,
    row_counts: Callable[[], dict[str, int]],
) -> None:
    add_posts_and_todos(app, alice.id, 2)
    add_posts_and_todos(app, bob.id, 1)
    before = row_counts()

    response = client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers)

    assert response.status_code == 200
    assert response.json == {"message": "User deleted"}
    assert client.get(f"/api/v1/users/{alice.id}").status_code == 404
    assert owned_rows(app, Post, alice.id) == owned_rows(app, Todo, alice.id) == 0
    assert owned_rows(app, Post, bob.id) == owned_rows(app, Todo, bob.id) == 1
    after = row_counts()
    assert after["users"] == before["users"] - 1
    assert after["posts"] == before["posts"] - 2
    assert after["todos"] == before["todos"] - 2
    assert_error(
        client.get("/api/v1/me", headers=alice.headers), 401, "Invalid token: user not found"
    )
    assert client.get("/api/v1/me", headers=bob.headers).status_code == 200


def test_deleted_users_name_and_email_can_be_registered_again(
    client: FlaskClient, alice: Account, admin: Account
) -> None:
    client.delete(f"/api/v1/users/{alice.id}", headers=admin.headers)

    response = register(client, username="alice", email="alice@example.com")

    assert response.status_code == 201


def test_delete_unknown_user_is_404(
    client: FlaskClient, admin: Account, row_counts: Callable[[], dict[str, int]]
) -> None:
    before = row_counts()

    assert_error(
        client.delete("/api/v1/users/999999", headers=admin.headers), 404, "User not found"
    )
    assert row_counts() == before

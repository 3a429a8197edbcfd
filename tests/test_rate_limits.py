"""Rate limits (SPEC §5): login per IP and per username, registration per IP, shared through
Redis by every process, `429` with `Retry-After`, and an in-memory fallback when Redis is down."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_limiter import RequestLimit
from flask_limiter.util import get_remote_address

from blog_api.api import limits
from blog_api.config import Config
from blog_api.extensions import Limiter
from harness.launcher import wait_until
from support import PASSWORD, Account, assert_too_many_requests, rate_limit_items
from support.resources import create_post

LIMIT = "3 per minute"
TOO_MANY = "3 per 1 minute"

# Builds its own app, in its own process, on the same database and Redis, and spends the login
# budget of one username with wrong passwords. Prints the statuses it got.
OTHER_PROCESS = """
import json, sys
from blog_api import create_app

database_url, redis_url, prefix, username = sys.argv[1:]
app = create_app(
    "testing",
    SQLALCHEMY_DATABASE_URI=database_url,
    LOGIN_RATE_LIMIT="3 per minute",
    RATELIMIT_STORAGE_URI=redis_url,
    RATELIMIT_KEY_PREFIX=prefix,
)
client = app.test_client()
body = {"username": username, "password": "wrong password"}
print(json.dumps([client.post("/api/v1/login", json=body).status_code for _ in range(3)]))
"""


@pytest.fixture
def redis_limited_app(
    make_app: Callable[..., Flask], redis_url: str, alice: Account
) -> tuple[Flask, str]:
    """An app with a small login limit counted in Redis under a key prefix of its own."""
    prefix = f"test-{uuid.uuid4().hex}"
    app = make_app(
        LOGIN_RATE_LIMIT=LIMIT, RATELIMIT_STORAGE_URI=redis_url, RATELIMIT_KEY_PREFIX=prefix
    )
    return app, prefix


def login(client: FlaskClient, username: str, password: str, ip: str = "127.0.0.1") -> Any:
    return client.post(
        "/api/v1/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": ip},
    )


def test_login_limit_is_shared_by_processes_through_redis(
    redis_limited_app: tuple[Flask, str], database_url: str, redis_url: str
) -> None:
    app, prefix = redis_limited_app

    other = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, database_url, redis_url, prefix, "alice"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [401, 401, 401]
    assert_too_many_requests(login(app.test_client(), "alice", PASSWORD), TOO_MANY)


def test_login_limit_counts_per_username_across_ips(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """The ceiling per username over all addresses (LOGIN_USERNAME_CEILING, here as low as the
    per-address limit to show that it counts across addresses)."""
    client = make_app(LOGIN_RATE_LIMIT=LIMIT, LOGIN_USERNAME_CEILING=LIMIT).test_client()
    for number in range(3):
        login(client, "alice", "wrong password", ip=f"10.0.0.{number}")

    assert_too_many_requests(login(client, "ALICE", PASSWORD, ip="10.0.0.99"), TOO_MANY)
    assert login(client, "bob", "wrong password", ip="10.0.0.99").status_code == 401


def test_login_limit_counts_per_ip_across_usernames(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    client = make_app(LOGIN_RATE_LIMIT=LIMIT).test_client()
    for name in ("guess_a", "guess_b", "guess_c"):
        login(client, name, "wrong password", ip="10.0.0.1")

    assert_too_many_requests(login(client, "alice", PASSWORD, ip="10.0.0.1"), TOO_MANY)
    assert login(client, "alice", PASSWORD, ip="10.0.0.2").status_code == 200


@pytest.mark.scenario("S38")
def test_forwarded_for_header_does_not_escape_the_login_limit(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    client = make_app(LOGIN_RATE_LIMIT=LIMIT).test_client()
    for number in range(3):
        client.post(
            "/api/v1/login",
            json={"username": f"guess_{number}", "password": "wrong password"},
            headers={"X-Forwarded-For": f"203.0.113.{number}"},
        )

    response = client.post(
        "/api/v1/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.99"},
    )

    assert_too_many_requests(response, TOO_MANY)


def test_registration_limit_is_429_and_writes_nothing(
    make_app: Callable[..., Flask], row_counts: Callable[[], dict[str, int]]
) -> None:
    client = make_app(REGISTER_RATE_LIMIT="2 per minute").test_client()
    for name in ("carol", "dave"):
        assert (
            client.post("/api/v1/users", json={"username": name, "password": PASSWORD}).status_code
            == 201
        )
    before = row_counts()

    response = client.post("/api/v1/users", json={"username": "erin", "password": PASSWORD})

    assert_too_many_requests(response, "2 per 1 minute")
    assert row_counts() == before
    assert client.get("/api/v1/users").status_code == 200
    other_ip = client.post(
        "/api/v1/users",
        json={"username": "erin", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert other_ip.status_code == 201


@pytest.mark.scenario("S55")
def test_a_limit_hit_late_in_its_window_says_to_retry_when_the_window_ends(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S55: Retry-After was always the whole window (60 when 6 s of it were left), telling a
    client to wait longer than needed; now it is what is left of the window, in whole seconds
    rounded up. A window of 10 s here, met again a second or more into it."""
    client = make_app(LOGIN_RATE_LIMIT="2 per 10 seconds").test_client()
    started = time.monotonic()  # the window starts with the first login, after this
    assert [login(client, "alice", "wrong password").status_code for _ in range(2)] == [401] * 2
    opened = time.monotonic()  # ... and before this

    def refused_late() -> tuple[float, Any, float] | None:
        sent = time.monotonic()
        response = login(client, "alice", PASSWORD)
        assert_too_many_requests(response, "2 per 10 second")
        late = int(response.headers["Retry-After"]) < 10
        return (sent, response, time.monotonic()) if late else None

    sent, response, received = wait_until(refused_late, 5, "a 429 a second into the window")

    # The window ends 10 s after the first login: between `started` and `opened`.
    retry_after = int(response.headers["Retry-After"])
    assert math.ceil(started + 10 - received) <= retry_after <= math.ceil(opened + 10 - sent)
    assert rate_limit_items(response.headers["RateLimit-Policy"]) == {
        "login-per-address": {"q": 2, "w": 10}
    }
    assert rate_limit_items(response.headers["RateLimit"]) == {
        "login-per-address": {"r": 0, "t": retry_after}
    }


@pytest.mark.scenario("S55")
def test_a_429_says_to_wait_the_whole_window_when_its_storage_cannot_be_read_back(
    make_app: Callable[..., Flask], alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S55: reading the window back for the headers fails (the storage went away between the
    count and the answer): still a 429 with Retry-After, the broken limit's whole window, and no
    RateLimit fields rather than wrong ones."""
    client = make_app(LOGIN_RATE_LIMIT="1 per 10 seconds").test_client()
    login(client, "alice", "wrong password")

    def unreadable(_limit: RequestLimit) -> None:
        raise ConnectionError("storage gone")

    monkeypatch.setattr(RequestLimit, "window", property(unreadable))
    response = login(client, "alice", PASSWORD)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "10"
    assert "RateLimit" not in response.headers
    assert "RateLimit-Policy" not in response.headers


def test_with_rate_limit_headers_always_every_counted_response_describes_its_limits(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """Without the setting only a 429 carries the RateLimit fields (reading the windows back
    costs two Redis round trips per limit); with it every response counted against a limit,
    one item per limit, named by its scope, never by its key."""
    limits_of_login = {"LOGIN_RATE_LIMIT": LIMIT, "LOGIN_USERNAME_CEILING": "5 per minute"}
    quiet = login(make_app(**limits_of_login).test_client(), "alice", "wrong password")
    client = make_app(**limits_of_login, RATE_LIMIT_HEADERS_ALWAYS=True).test_client()

    response = login(client, "alice", "wrong password")

    assert quiet.status_code == response.status_code == 401
    assert "RateLimit" not in quiet.headers
    assert "RateLimit-Policy" not in quiet.headers
    assert rate_limit_items(response.headers["RateLimit-Policy"]) == {
        "login-per-address": {"q": 3, "w": 60},
        "login-per-username": {"q": 5, "w": 60},
    }
    states = rate_limit_items(response.headers["RateLimit"])
    assert {name: state["r"] for name, state in states.items()} == {
        "login-per-address": 2,
        "login-per-username": 4,
    }
    assert {59 <= state["t"] <= 60 for state in states.values()} == {True}
    assert client.get("/health").headers.get("RateLimit") is None  # counted against no limit


def test_login_works_when_the_limiter_storage_is_down(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    client = make_app(
        RATELIMIT_STORAGE_URI="redis://127.0.0.1:1", LOGIN_RATE_LIMIT=LIMIT
    ).test_client()

    statuses = [login(client, "alice", PASSWORD).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    # Meanwhile, the limit is still counted in memory.
    assert_too_many_requests(login(client, "alice", PASSWORD), TOO_MANY)


@pytest.mark.scenario("S38")
def test_wrong_guesses_from_other_addresses_do_not_lock_the_owner_out(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S38: with the production limits, 10 wrong guesses from each of 2 addresses (the
    attacker's per-address budget) leave the owner's own address free."""
    client = make_app(
        LOGIN_RATE_LIMIT=Config.LOGIN_RATE_LIMIT,
        LOGIN_USERNAME_CEILING=Config.LOGIN_USERNAME_CEILING,
    ).test_client()
    guesses = [
        login(client, "alice", "wrong password", ip=f"10.0.1.{number % 2}") for number in range(20)
    ]

    assert {response.status_code for response in guesses} == {401}
    assert login(client, "alice", PASSWORD, ip="10.0.0.99").status_code == 200


@pytest.mark.scenario("S38")
def test_login_ceiling_per_username_holds_across_many_addresses(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S38: the ceiling per username stops a guesser with many addresses, each well within its
    own limit."""
    client = make_app(LOGIN_RATE_LIMIT=LIMIT, LOGIN_USERNAME_CEILING="5 per minute").test_client()
    guesses = [
        login(client, "alice", "wrong password", ip=f"10.0.2.{number}") for number in range(5)
    ]

    assert [response.status_code for response in guesses] == [401] * 5
    assert_too_many_requests(login(client, "alice", PASSWORD, ip="10.0.2.99"), "5 per 1 minute")
    assert login(client, "bob_unknown", "wrong password", ip="10.0.2.99").status_code == 401


def forwarded_login(client: FlaskClient, username: str, forwarded_for: str) -> Any:
    """A login that arrives through a proxy at 10.9.9.9, which adds `forwarded_for`."""
    return client.post(
        "/api/v1/login",
        json={"username": username, "password": "wrong password"},
        headers={"X-Forwarded-For": forwarded_for},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )


@pytest.mark.scenario("S38")
def test_trusted_proxy_gives_each_client_its_own_login_limit(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S38: behind one trusted proxy every client is counted by the address the proxy saw;
    without TRUSTED_PROXIES they all share the proxy's address (the test above this one)."""
    client = make_app(LOGIN_RATE_LIMIT=LIMIT, TRUSTED_PROXIES=1).test_client()
    for number in range(3):
        forwarded_login(client, f"guess_{number}", "203.0.113.1")

    assert_too_many_requests(forwarded_login(client, "guess_x", "203.0.113.1"), TOO_MANY)
    assert forwarded_login(client, "guess_x", "203.0.113.2").status_code == 401


@pytest.mark.scenario("S38")
def test_trusted_proxy_count_ignores_addresses_the_client_made_up(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S38: with one trusted proxy only the entry it appended counts; a client that prepends
    invented addresses is still counted by its real one."""
    client = make_app(LOGIN_RATE_LIMIT=LIMIT, TRUSTED_PROXIES=1).test_client()
    for number in range(3):
        forwarded_login(client, f"guess_{number}", f"198.51.100.{number}, 203.0.113.7")

    response = forwarded_login(client, "guess_x", "198.51.100.99, 203.0.113.7")

    assert_too_many_requests(response, TOO_MANY)


@pytest.mark.scenario("S38")
def test_untrusted_forwarded_headers_do_not_change_the_client_address(
    make_app: Callable[..., Flask],
) -> None:
    """S38: TRUSTED_PROXIES is off by default: the address is the connection's."""
    app = make_app()
    with app.test_request_context(
        "/", headers={"X-Forwarded-For": "203.0.113.5"}, environ_base={"REMOTE_ADDR": "10.9.9.9"}
    ):
        assert limits.client_address() == "10.9.9.9"
    assert app.config["TRUSTED_PROXIES"] == 0


@pytest.mark.parametrize(
    ("option", "status"), [({"default_limits": ["1 per minute"]}, 429), ({}, 200)]
)
def test_limits_outside_the_views_are_still_applied_before_each_request(
    option: dict[str, Any], status: int
) -> None:
    """Our limiter skips Flask-Limiter's before-request pass only when no application, default,
    blueprint, meta or fallback limit is configured; a default limit is still enforced."""
    app = Flask(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    extension = Limiter(key_func=get_remote_address, **option)
    extension.init_app(app)
    app.add_url_rule("/open", "open", lambda: "ok")
    client = app.test_client()

    assert client.get("/open").status_code == 200
    assert client.get("/open").status_code == status


# --- anonymous reads, to-dos and refreshes -------------------------------------------------------


def public_reads(client: FlaskClient, author: Account) -> list[str]:
    """One URL of each public GET of the API."""
    post_id = create_post(client, author)["id"]
    return [
        "/api/v1/users",
        f"/api/v1/users/{author.id}",
        "/api/v1/posts",
        f"/api/v2/posts/{post_id}",
        "/api/v2/posts/recent",
    ]


@pytest.mark.scenario("S42")
def test_anonymous_reads_share_one_limit_per_client_address(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S42: the public GETs were not limited at all; now they share ANONYMOUS_RATE_LIMIT per
    client address (3 per minute in the test), with a JSON 429 and Retry-After."""
    client = make_app(ANONYMOUS_RATE_LIMIT=LIMIT).test_client()
    urls = public_reads(client, alice)

    assert [client.get(url).status_code for url in urls[:3]] == [200] * 3
    for url in urls:
        assert_too_many_requests(client.get(url), TOO_MANY)
    assert client.get(urls[0], environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200


@pytest.mark.scenario("S42")
def test_a_logged_in_client_is_not_counted_by_the_anonymous_limit(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S42: reads with a valid access token neither count nor are refused; a made-up token
    counts as anonymous."""
    client = make_app(ANONYMOUS_RATE_LIMIT=LIMIT).test_client()
    urls = public_reads(client, alice)

    assert {client.get(url, headers=alice.headers).status_code for url in urls * 2} == {200}
    assert [client.get(url).status_code for url in urls[:3]] == [200] * 3
    forged = {"Authorization": "Bearer not.a.token"}
    assert_too_many_requests(client.get(urls[0], headers=forged), TOO_MANY)
    assert {client.get(url, headers=alice.headers).status_code for url in urls} == {200}


@pytest.mark.scenario("S42")
def test_operations_and_docs_are_outside_the_anonymous_limit(
    make_app: Callable[..., Flask], alice: Account
) -> None:
    """S42: probes, scrapes and the documentation are not public reads of the data."""
    client = make_app(ANONYMOUS_RATE_LIMIT="1 per minute").test_client()
    client.get("/api/v1/posts")
    assert client.get("/api/v1/posts").status_code == 429

    for url in ("/health", "/ready", "/metrics", "/api/v1/openapi.json", "/api/v2/docs/"):
        assert [client.get(url).status_code for _ in range(2)] == [200, 200], url


@pytest.mark.scenario("S43")
def test_todo_creation_is_limited_per_user_over_both_versions(
    make_app: Callable[..., Flask],
    alice: Account,
    bob: Account,
    row_counts: Callable[[], dict[str, int]],
) -> None:
    """S43: one user created 303 to-dos a second; now TODO_RATE_LIMIT per user (3 per minute
    in the test) counts v1 and v2 together, and the refused request writes nothing."""
    client = make_app(TODO_RATE_LIMIT=LIMIT).test_client()
    statuses = [
        client.post(f"/api/{version}/todos", json={"title": "t"}, headers=alice.headers)
        for version in ("v1", "v2", "v1")
    ]
    assert [response.status_code for response in statuses] == [201] * 3
    before = row_counts()

    response = client.post("/api/v2/todos", json={"title": "t"}, headers=alice.headers)

    assert_too_many_requests(response, TOO_MANY)
    assert row_counts() == before
    other = client.post("/api/v1/todos", json={"title": "t"}, headers=bob.headers)
    assert other.status_code == 201


def refresh(client: FlaskClient, token: str) -> Any:
    return client.post("/api/v1/refresh", json={"refresh_token": token})


@pytest.mark.scenario("S43")
def test_token_refresh_is_limited_per_user(
    make_app: Callable[..., Flask],
    alice: Account,
    bob: Account,
    row_counts: Callable[[], dict[str, int]],
) -> None:
    """S43: one user refreshed 282 times a second, each leaving a blocklist row; now
    REFRESH_RATE_LIMIT per user (3 per minute in the test), keyed by the verified refresh
    token's user: a made-up token is a 401 and spends nobody's budget."""
    client = make_app(REFRESH_RATE_LIMIT=LIMIT).test_client()
    token = alice.refresh_token
    for _ in range(3):
        assert refresh(client, "made.up.token").status_code == 401
        response = refresh(client, token)
        assert response.status_code == 200, response.json
        token = response.json["refresh_token"]
    before = row_counts()

    assert_too_many_requests(refresh(client, token), TOO_MANY)
    assert row_counts() == before
    assert refresh(client, bob.refresh_token).status_code == 200
    # The refused token was not spent: an app with a fresh budget still takes it.
    assert refresh(make_app().test_client(), token).status_code == 200

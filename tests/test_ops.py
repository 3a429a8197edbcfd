"""`/health`, `/ready` and `/metrics`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from blog_api.config import ConfigError
from blog_api.ops import health
from support import Account, assert_error

REQUESTS = "blog_api_http_requests_total"
READY_CHECKS = {"database": "ok", "broker": "ok"}


def test_health_answers_without_dependencies(make_app: Callable[..., Flask]) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:1/none")

    response = app.test_client().get("/health")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_ready_when_database_and_broker_answer(client: FlaskClient) -> None:
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_not_ready_when_the_broker_is_unreachable(make_app: Callable[..., Flask]) -> None:
    app = make_app(CELERY_BROKER_URL="redis://127.0.0.1:1/0")

    response = app.test_client().get("/ready")

    assert response.status_code == 503
    assert response.json["error"] == "Service Unavailable"
    assert response.json["message"] == "Not ready: broker"
    assert response.json["checks"]["database"] == "ok"


def test_not_ready_when_the_database_is_unreachable(make_app: Callable[..., Flask]) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:1/none")

    response = app.test_client().get("/ready")

    assert response.status_code == 503
    assert response.json["message"] == "Not ready: database"
    assert response.json["checks"]["broker"] == "ok"


def test_metrics_count_requests_by_route_and_status(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()  # its own counters: the default app is shared by tests
    client.get("/api/v1/posts")
    client.get("/api/v1/posts/999")

    text = client.get("/metrics").get_data(as_text=True)

    assert (
        'blog_api_http_requests_total{method="GET",route="/api/v1/posts",status="200"} 1.0' in text
    )
    item_route = "/api/v1/posts/<id:post_id>"
    assert f'{{method="GET",route="{item_route}",status="404"}} 1.0' in text
    assert "blog_api_http_request_duration_seconds_bucket" in text


def test_metrics_show_jobs_by_kind_and_status_and_the_backlog(
    client: FlaskClient, alice: Account
) -> None:
    created = client.post(
        "/api/v2/posts", json={"title": "Counted", "content": "x"}, headers=alice.headers
    )
    assert created.status_code == 201

    text = client.get("/metrics").get_data(as_text=True)

    # The test broker accepts messages but no worker consumes them: both jobs stay pending.
    assert 'blog_api_jobs{kind="notify_author",status="pending"} 1.0' in text
    assert 'blog_api_jobs{kind="audit_post_created",status="pending"} 1.0' in text
    assert "blog_api_outbox_backlog 2.0" in text
    assert "blog_api_outbox_oldest_pending_age_seconds" in text


def test_unknown_method_on_health_is_a_json_405(client: FlaskClient) -> None:
    response = client.post("/health")

    assert_error(response, 405, "The method is not allowed for the requested URL.")
    assert "GET" in response.headers["Allow"]


def test_json_log_format_writes_one_object_per_line_with_request_id(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(LOG_FORMAT="json")
    capsys.readouterr()

    app.test_client().post(
        "/api/v1/login",
        json={"username": "mallory\nforged line", "password": "wrong-password"},
        headers={"X-Request-ID": "req-42"},
    )

    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if r["message"].startswith("Failed login attempt")]
    assert failed == [
        {
            "time": failed[0]["time"],
            "level": "WARNING",
            "logger": "blog_api",
            "message": "Failed login attempt for mallory\nforged line",
            "request_id": "req-42",
            "url": "http://localhost/api/v1/login",
        }
    ]


def request_series(client: FlaskClient) -> set[str]:
    text = client.get("/metrics").get_data(as_text=True)
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith(REQUESTS)}


@pytest.mark.scenario("S36")
def test_metrics_label_unknown_methods_and_paths_with_one_value_each(
    make_app: Callable[..., Flask],
) -> None:
    """S36: 200 invented methods and paths add at most a handful of series, not 200."""
    client = make_app().test_client()
    client.get("/api")
    before = request_series(client)

    for number in range(100):
        client.open("/api", method=f"INVENTED{number}")
        client.open(f"/no/such/path/{number}", method=f"OTHER{number}")
    after = request_series(client)

    assert len(after - before) <= 4, sorted(after - before)
    assert not any("INVENTED" in series or "/no/such" in series for series in after)
    assert f'{REQUESTS}{{method="OTHER",route="<unmatched>",status="405"}}' in after
    assert f'{REQUESTS}{{method="OTHER",route="<unmatched>",status="404"}}' in after


@pytest.mark.scenario("S44")
def test_ready_answers_from_its_last_check_for_ready_cache_seconds(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """S44: every `/ready` opened a broker connection (382 probes/s against 1,312 for
    `/health`); now one check serves READY_CACHE_SECONDS, on a clock the test moves."""
    app = make_app(READY_CACHE_SECONDS=1.0)
    checked: list[float] = []
    now = [1000.0]
    check_broker = health.check_broker

    def counted_check(*args: Any) -> None:
        checked.append(now[0])
        check_broker(*args)

    monkeypatch.setattr(health, "check_broker", counted_check)
    app.extensions[health.READY_CACHE].clock = lambda: now[0]
    client = app.test_client()

    assert client.get("/ready").status_code == 200
    now[0] += 0.9
    assert client.get("/ready").json == {"status": "ready", "checks": READY_CHECKS}
    assert checked == [1000.0]

    now[0] += 0.2
    assert client.get("/ready").status_code == 200
    assert checked == [1000.0, 1001.1]


@pytest.mark.scenario("S44")
def test_a_failed_ready_check_is_also_kept_for_ready_cache_seconds(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """S44: probes of a broker that is down do not pile up connections either, and the
    next check after the window sees it back."""
    app = make_app(READY_CACHE_SECONDS=1.0)
    broker_up = [False]

    def check_broker(*_args: Any) -> None:
        if not broker_up[0]:
            raise ConnectionRefusedError

    monkeypatch.setattr(health, "check_broker", check_broker)
    now = [0.0]
    app.extensions[health.READY_CACHE].clock = lambda: now[0]
    client = app.test_client()

    assert client.get("/ready").status_code == 503
    broker_up[0] = True
    assert client.get("/ready").status_code == 503
    now[0] += 1.0
    assert client.get("/ready").status_code == 200


METRICS_TOKEN = "a-long-random-metrics-token"


@pytest.mark.scenario("S44")
@pytest.mark.parametrize("path", ["/metrics", "/ready"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer"],
)
def test_with_metrics_token_metrics_and_ready_refuse_other_callers(
    make_app: Callable[..., Flask], path: str, authorization: str | None
) -> None:
    """S44: `/metrics` and `/ready` named worker hosts and counts to anyone; with
    METRICS_TOKEN set, only its bearer gets them."""
    client = make_app(METRICS_TOKEN=METRICS_TOKEN).test_client()
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get(path, headers=headers)

    assert_error(
        response, 401, "Missing or wrong metrics token (Authorization: Bearer <METRICS_TOKEN>)"
    )
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "blog_api" not in response.get_data(as_text=True)


@pytest.mark.scenario("S44")
def test_with_metrics_token_its_bearer_reads_metrics_and_ready_and_health_stays_open(
    make_app: Callable[..., Flask],
) -> None:
    """S44"""
    client = make_app(METRICS_TOKEN=METRICS_TOKEN).test_client()
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    assert "blog_api_http_requests_total" in client.get("/metrics", headers=bearer).text
    assert client.get("/ready", headers=bearer).json["status"] == "ready"
    assert client.get("/health").status_code == 200


@pytest.mark.scenario("S44")
def test_without_metrics_token_metrics_and_ready_are_open(
    make_app: Callable[..., Flask],
) -> None:
    """S44: unset (the default), a deployment restricts them at its proxy."""
    client = make_app().test_client()

    assert client.get("/metrics").status_code == 200
    assert client.get("/ready").status_code == 200


IN_PROGRESS = "blog_api_http_requests_in_progress"


def test_metrics_show_the_requests_in_progress_even_after_one_refused_before_its_timer(
    make_app: Callable[..., Flask],
) -> None:
    """The scrape itself is the one request in progress; a body refused before the timer
    started (malformed JSON) took nothing off the gauge."""
    client = make_app().test_client()
    refused = client.post("/api/v1/login", data="{", content_type="application/json")
    assert refused.status_code == 400

    text = client.get("/metrics").get_data(as_text=True)

    assert f"{IN_PROGRESS} 1.0" in text.splitlines()


def test_a_metrics_directory_set_after_start_is_a_startup_error(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prometheus-client chose its mode when it was imported: a PROMETHEUS_MULTIPROC_DIR that
    appears later (read from .env) would leave every process counting alone, silently."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    with pytest.raises(ConfigError, match=r"not in \.env"):
        make_app()

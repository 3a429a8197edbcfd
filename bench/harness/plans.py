# The password is the benchmark user's.
# ruff: noqa: S105
"""What each mode measures: the configurations (app, database, gunicorn worker class), the
scenarios each one runs, and how long every section lasts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASSWORD = "bench-password-123"
POST_BODY = {"title": "Benchmark post", "content": "A few words of content for the benchmark."}
POST_BODY_V2 = {**POST_BODY, "category": "bench"}
# The tutorial chapter's app (bench/apps/tutorial_app.py) as written, its task sleeping 5 s, and
# as the chapter says real apps run it, its task sending the e-mail with smtplib.
TUTORIAL_APPS = ("tutorial", "fair_tutorial")


@dataclass
class Config:
    name: str
    app: str  # bare | tutorial | fair_tutorial | ours
    database: str | None  # sqlite | postgresql
    worker_class: str  # sync | gthread
    scenarios: list[str]


SCENARIOS: dict[str, tuple[str, str, Any, bool]] = {
    # name: (method, path, body, needs a token)
    "GET /": ("GET", "/", None, False),
    "POST v1": ("POST", "/api/v1/posts", POST_BODY, True),
    "POST v2": ("POST", "/api/v2/posts", POST_BODY_V2, True),
    "GET list": ("GET", "/api/v1/posts?limit=20", None, False),
    "GET one": ("GET", "/api/v1/posts/{post_id}", None, False),
    "login": ("POST", "/api/v1/login", {"username": "bench", "password": PASSWORD}, False),
}


@dataclass
class Plan:
    rounds: int
    seconds: float
    configs: list[Config]
    latency_idle: tuple[float, float]  # rate, seconds
    latency_load: tuple[float, float]
    sustained: float
    broker: bool
    profile: float
    # Growth: the small and the large table size (posts), and (calls, repetitions) per path.
    growth: tuple[int, int] | None = None
    growth_calls: tuple[int, int] = (200, 5)
    # CPU per call (bench/cpu_per_call.py): calls per path and round, rounds.
    cpu: tuple[int, int] | None = None
    # Fan-out: subscribers of the post, e-mail tasks of the fair tutorial, seconds of the
    # MAIL_RATE_LIMIT run.
    fanout: tuple[int, int, float] | None = None


OURS_ALL = ["POST v1", "POST v2", "GET list", "GET one", "login"]
TUT_ALL = ["POST v1", "GET list", "GET one"]


def plan_for(mode: str) -> Plan:
    if mode == "smoke":
        return Plan(
            1,
            1,
            [Config("ours sqlite sync", "ours", "sqlite", "sync", ["POST v1", "GET list"])],
            (2, 1),
            (5, 1),
            0,
            False,
            0,
            growth=(100, 2_000),
            growth_calls=(5, 1),
        )
    if mode == "quick":
        return Plan(
            3,
            2,
            [
                Config("bare sync", "bare", None, "sync", ["GET /"]),
                Config("tutorial sqlite sync", "tutorial", "sqlite", "sync", TUT_ALL),
                Config("fair tutorial sqlite sync", "fair_tutorial", "sqlite", "sync", TUT_ALL),
                Config("ours sqlite sync", "ours", "sqlite", "sync", OURS_ALL),
            ],
            (2, 5),
            (20, 10),
            10,
            True,
            0,
            cpu=(100, 3),
            fanout=(10_000, 5_000, 15.0),
        )
    two = ["POST v1", "GET list"]
    return Plan(
        3,
        4,
        [
            Config("bare sync", "bare", None, "sync", ["GET /"]),
            Config("tutorial sqlite sync", "tutorial", "sqlite", "sync", TUT_ALL),
            Config("fair tutorial sqlite sync", "fair_tutorial", "sqlite", "sync", TUT_ALL),
            Config("ours sqlite sync", "ours", "sqlite", "sync", OURS_ALL),
            Config("tutorial postgresql sync", "tutorial", "postgresql", "sync", TUT_ALL),
            Config("fair tutorial postgresql sync", "fair_tutorial", "postgresql", "sync", TUT_ALL),
            Config("ours postgresql sync", "ours", "postgresql", "sync", OURS_ALL),
            Config("bare gthread", "bare", None, "gthread", ["GET /"]),
            Config("tutorial sqlite gthread", "tutorial", "sqlite", "gthread", two),
            Config("fair tutorial sqlite gthread", "fair_tutorial", "sqlite", "gthread", two),
            Config("ours sqlite gthread", "ours", "sqlite", "gthread", two),
            Config("tutorial postgresql gthread", "tutorial", "postgresql", "gthread", two),
            Config(
                "fair tutorial postgresql gthread", "fair_tutorial", "postgresql", "gthread", two
            ),
            Config("ours postgresql gthread", "ours", "postgresql", "gthread", two),
        ],
        (2, 10),
        (20, 30),
        60,
        True,
        8,
        growth=(1_000, 1_000_000),
        cpu=(300, 5),
        fanout=(100_000, 20_000, 60.0),
    )

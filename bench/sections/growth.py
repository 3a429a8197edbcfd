"""Growth: what each request path, a relay cycle and a retention pass cost as the tables grow
(issue 15: at 1M posts and 1M finished jobs, each at most 1.3x its cost at 1k).

For SQLite and PostgreSQL, one database of its own (dropped at the end) is loaded with set-based
SQL to the small size, measured, grown to the large size and measured again. Rows: the benchmark
user (registered through the API) owns most posts, ~100 other authors a few each, and every post
has its finished notification job. Each path runs through Flask's test client against the
production configuration (rate limits on, but high); its cost is CPU time per call, ours plus
PostgreSQL's backends' (harness/cpu.py), the median of a few repetitions after a warm-up.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select, text, update

from blog_api import create_app
from blog_api.extensions import db
from blog_api.jobs.outbox import ACTIVE, prune_finished_jobs
from blog_api.jobs.relay import relay_due_jobs
from blog_api.models import Job, JobStatus, User
from blog_api.models.base import utcnow
from blog_api.models.users import new_security_stamp
from harness.cpu import Probe, ServerClock, expect, measure_probes
from harness.launcher import BIN, create_database, drop_database
from harness.plans import PASSWORD, POST_BODY, Plan
from harness.report import Report
from harness.stack import HIGH_LIMIT, PG_ADMIN_URL, PUBLIC_BASE_URL, Bench

TARGET = 1.3
SMALL_AUTHORS = 100
POSTS_PER_SMALL_AUTHOR = 3
DUE_JOBS = 5
WARM_UP = 20
JOB_ID = "00000000-0000-4000-8000-{:012d}"
# Rows are dated from 20 days ago, one second apart: 1M of them stay younger than the 30 days
# after which retention deletes a finished job, so a retention pass finds nothing to delete.
AGE_DAYS = 20

# A CTE `rows(n, ts)` of the post numbers to load and their timestamps, as each database
# writes timestamps (SQLAlchemy stores SQLite's as 'YYYY-MM-DD HH:MM:SS.ffffff' text).
ROWS = {
    "postgresql": "WITH rows AS (SELECT n, to_timestamp(CAST(:epoch AS double precision) + n) AS ts"
    " FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n)",
    "sqlite": "WITH RECURSIVE seq(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM seq"
    " WHERE n < :last), rows AS (SELECT n,"
    " strftime('%Y-%m-%d %H:%M:%f', :epoch + n, 'unixepoch') || '000' AS ts FROM seq)",
}
JOB_ID_SQL = {
    "postgresql": "'00000000-0000-4000-8000-' || lpad(n::text, 12, '0')",
    "sqlite": "printf('00000000-0000-4000-8000-%012d', n)",
}
INSERT_POSTS = """{rows}
INSERT INTO posts (id, title, content, category, created_at, updated_at, user_id)
SELECT n, 'Post ' || n, :content, 'general', ts, ts,
       CASE WHEN n <= :small_rows THEN :first_small + (n - 1) % :authors ELSE :big END
FROM rows"""
INSERT_JOBS = """{rows}
INSERT INTO jobs (id, kind, post_id, status, attempts, max_attempts, available_at, created_at,
                  updated_at, finished_at)
SELECT {job_id}, 'notify_author', n, 'done', 1, :max_attempts, ts, ts, ts, ts FROM rows"""


PATH_LABELS = [
    "GET /posts?limit=20",
    "GET /posts?limit=20, second page",
    "GET /posts?user_id=<big author>",
    "GET /posts?user_id=<big author>, second page",
    "GET /posts?user_id=<small author>",
    "GET /posts/<id>",
    "POST /posts",
    f"relay cycle ({DUE_JOBS} due jobs)",
    "retention pass (nothing to delete)",
]


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    """Both databases at both sizes, then the table."""
    assert plan.growth
    results: dict[str, dict[str, list[list[float]]]] = {}
    report.add("\n## Growth: cost per call as the tables grow\n")
    for database in ("sqlite", "postgresql"):
        with growth_database(bench, database) as url:
            results[database] = grow_and_measure(bench, plan, database, url, report)
    report_growth(plan, results, report)


@contextlib.contextmanager
def growth_database(bench: Bench, database: str) -> Iterator[str]:
    """A fresh database's URL; PostgreSQL's is dropped afterwards, also after a failure."""
    if database == "sqlite":
        yield f"sqlite:///{bench.tmp / 'growth.db'}"
        return
    name = f"blog_api_bench_{bench.run_id}_growth"
    url = create_database(PG_ADMIN_URL, name)
    try:
        yield url
    finally:
        drop_database(PG_ADMIN_URL, name)


def build_app(bench: Bench, url: str) -> Flask:
    """The production configuration on `url` (migrated first), its console log going to a file
    as under gunicorn, and limits no benchmark user reaches."""
    env = {**bench.env_base, **bench.secrets, "FLASK_ENV": "production", "DATABASE_URL": url}
    env["PUBLIC_BASE_URL"] = PUBLIC_BASE_URL
    env |= {"REDIS_URL": bench.redis_url, "LOG_FILE": str(bench.tmp / "growth-migrate.log")}
    subprocess.run(  # noqa: S603 (our own command line)
        [str(BIN / "flask"), "--app", "blog_api", "db", "upgrade"],
        env=env,
        cwd=bench.tmp,
        check=True,
        capture_output=True,
        timeout=300,
    )
    limits = ("POST_RATE_LIMIT", "LOGIN_RATE_LIMIT", "REGISTER_RATE_LIMIT", "ANONYMOUS_RATE_LIMIT")
    app = create_app(
        "production",
        **bench.secrets,
        SQLALCHEMY_DATABASE_URI=url,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        REDIS_URL=bench.redis_url,
        CELERY_QUEUE=f"growth-{bench.run_id}",
        MAIL_PORT=bench.mail_port,
        LOG_FILE=str(bench.tmp / "growth-app.log"),
        POST_AUDIT_LOG=str(bench.tmp / "growth-audit.log"),
        LOGIN_USERNAME_CEILING=HIGH_LIMIT,
        # The registered user never confirms its address: its notifications must still be sent.
        EMAIL_CONFIRMATION_REQUIRED=False,
        **dict.fromkeys(limits, HIGH_LIMIT),
    )
    console = bench.tmp / "growth-console.log"
    for handler in app.logger.handlers:
        if type(handler) is logging.StreamHandler:
            handler.setStream(console.open("a"))
    return app


def grow_and_measure(
    bench: Bench, plan: Plan, database: str, url: str, report: Report
) -> dict[str, list[list[float]]]:
    """{path: [[app ms, server ms] at the small size, [...] at the large one]}."""
    app = build_app(bench, url)
    client = app.test_client()
    user = {"username": "bench", "password": PASSWORD, "email": "bench@example.com"}
    expect(201, client.post("/api/v1/users", json=user))
    with app.app_context():
        big, first_small = load_authors()
    figures: dict[str, list[list[float]]] = {label: [] for label in PATH_LABELS}
    try:
        for size in plan.growth or ():
            started = time.monotonic()
            loaded = load_posts(database, size, big, first_small, app)
            report.add(
                f"- {database}: {loaded:,} posts and their finished jobs loaded in "
                f"{time.monotonic() - started:.1f} s ({size:,} posts in all)"
            )
            login = client.post("/api/v1/login", json={"username": "bench", "password": PASSWORD})
            headers = {"Authorization": f"Bearer {login.json['access_token']}"}
            probes = build_probes(app, client, headers, big, first_small, size)
            server = ServerClock(url.rsplit("/", 1)[1] if database == "postgresql" else None)
            calls, repetitions = plan.growth_calls
            values = measure_probes(probes, calls, repetitions, min(WARM_UP, calls * 4), server)
            for label in PATH_LABELS:
                figures[label].append(values[label])
    finally:
        with app.app_context():
            db.engine.dispose()
    return figures


def load_authors() -> tuple[int, int]:
    """The small authors, beside the registered benchmark user; (its id, the first of theirs)."""
    bench_user = db.session.scalars(select(User).where(User.username == "bench")).one()
    authors = [
        {
            "username": f"author-{number}",
            "email": f"author-{number}@example.com",
            "password_hash": bench_user.password_hash,
            "security_stamp": new_security_stamp(),
        }
        for number in range(SMALL_AUTHORS)
    ]
    ids = db.session.scalars(insert(User).returning(User.id), authors).all()
    db.session.commit()
    return bench_user.id, min(ids)


def load_posts(database: str, size: int, big: int, first_small: int, app: Flask) -> int:
    """Posts up to `size` (each with its finished job) in two set-based statements; the first
    POSTS_PER_SMALL_AUTHOR x SMALL_AUTHORS of them are the small authors'."""
    with app.app_context(), db.engine.begin() as conn:
        count, last_id = conn.execute(text("SELECT count(*), max(id) FROM posts")).one()
        first = (last_id or 0) + 1
        params = {
            "first": first,
            "last": first + size - count - 1,
            "epoch": int(time.time() - AGE_DAYS * 86400),
            "content": POST_BODY["content"],
            "small_rows": min(SMALL_AUTHORS * POSTS_PER_SMALL_AUTHOR, size // 2),
            "first_small": first_small,
            "authors": SMALL_AUTHORS,
            "big": big,
            "max_attempts": app.config["MAIL_MAX_RETRIES"] + 1,
        }
        rows = ROWS[database]
        conn.execute(text(INSERT_POSTS.format(rows=rows)), params)
        conn.execute(text(INSERT_JOBS.format(rows=rows, job_id=JOB_ID_SQL[database])), params)
        if database == "postgresql":
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('posts', 'id'), :id)"),
                {"id": params["last"]},
            )
    with app.app_context(), db.engine.connect() as conn:
        if database == "postgresql":
            # What autovacuum does soon after a bulk load: statistics and the visibility map.
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE users, posts, jobs")
            )
        else:
            # The load is one transaction in the WAL; a checkpoint moves it into the file.
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return size - count


def build_probes(
    app: Flask, client: FlaskClient, headers: dict[str, str], big: int, first_small: int, size: int
) -> list[Probe]:
    """Every path of PATH_LABELS at this size; the second pages follow the first's `next`."""

    def get(url: str) -> Callable[[], None]:
        return lambda: expect(200, client.get(url))

    first_pages = {
        "all": "/api/v1/posts?limit=20",
        "big": f"/api/v1/posts?limit=20&user_id={big}",
        "small": f"/api/v1/posts?limit=20&user_id={first_small}",
    }
    second_pages = {
        name: expect(200, client.get(url)).json["pagination"]["next"]
        for name, url in first_pages.items()
        if name != "small"
    }
    due = [JOB_ID.format(number) for number in range(1, DUE_JOBS + 1)]

    def make_due() -> None:
        """The handful of jobs due now, every other active job (the POSTs') finished."""
        with app.app_context():
            now = utcnow()
            finished = {"status": JobStatus.DONE, "finished_at": now, "lease_until": None}
            db.session.execute(update(Job).where(ACTIVE, Job.id.not_in(due)).values(finished))
            db.session.execute(
                update(Job)
                .where(Job.id.in_(due))
                .values(status=JobStatus.PENDING, available_at=now - timedelta(seconds=1))
            )
            db.session.commit()

    def relay_cycle() -> None:
        with app.app_context():
            published = relay_due_jobs(lambda jobs: None)
        if published != DUE_JOBS:
            raise RuntimeError(f"the relay published {published} jobs, not {DUE_JOBS}")

    def retention_pass() -> None:
        with app.app_context():
            deleted = prune_finished_jobs()
        if deleted:
            raise RuntimeError(f"retention deleted {deleted} jobs")

    calls = [
        get(first_pages["all"]),
        get(second_pages["all"]),
        get(first_pages["big"]),
        get(second_pages["big"]),
        get(first_pages["small"]),
        get(f"/api/v1/posts/{size // 2}"),
        lambda: expect(201, client.post("/api/v1/posts", json=POST_BODY, headers=headers)),
        relay_cycle,
        retention_pass,
    ]
    probes = [Probe(label, call) for label, call in zip(PATH_LABELS, calls, strict=True)]
    probes[PATH_LABELS.index(f"relay cycle ({DUE_JOBS} due jobs)")].prepare = make_due
    return probes


def size_name(size: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return str(size)


def report_growth(
    plan: Plan, results: dict[str, dict[str, list[list[float]]]], report: Report
) -> None:
    assert plan.growth
    small, large = (size_name(size) for size in plan.growth)
    calls, repetitions = plan.growth_calls
    report.add(
        f"\nCPU ms per call, median of {repetitions} repetitions of {calls} calls after a warm-up"
        " (Flask test client, production configuration, the database grown in place). On"
        " PostgreSQL each cost is our process + the server's backends.\n"
    )
    report.add(f"| path | database | at {small} | at {large} | ratio | ≤ {TARGET}x |")
    report.add("|---|---|---|---|---|---|")
    for label in PATH_LABELS:
        for database, figures in results.items():
            (app_small, server_small), (app_large, server_large) = figures[label]
            ratio = (app_large + server_large) / (app_small + server_small)
            cells = [
                f"{app:.2f}" + (f" + {server:.2f}" if database == "postgresql" else "")
                for app, server in ((app_small, server_small), (app_large, server_large))
            ]
            met = "yes" if ratio <= TARGET else "**no**"
            report.add(f"| {label} | {database} | {cells[0]} | {cells[1]} | {ratio:.2f} | {met} |")
    report.data["growth"] = {"sizes": list(plan.growth), "ms_app_server": results}

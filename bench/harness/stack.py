# It runs only its own fixed command lines; the password is the benchmark user's.
# ruff: noqa: S603
"""The stack under test: the private Redis and SMTP sink, the databases, and one configuration's
gunicorn and Celery processes, seeded with the benchmark user and posts. The processes are started,
waited for and stopped by the launcher the integration tests use too (`harness.launcher`);
`start_workers` is the one place that knows how each app's background processes start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.launcher import (
    BIN,
    Launcher,
    Service,
    clean_environment,
    create_database,
    drop_database,
    free_port,
)
from harness.load import LoadResult, http_json, run_python_closed_loop, run_wrk
from harness.plans import PASSWORD, POST_BODY, SCENARIOS, TUTORIAL_APPS, Config
from harness.procfs import children, cpu_seconds, established_connections, proc_status

HERE = Path(__file__).resolve().parents[1]
APPS = HERE / "apps"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HIGH_LIMIT = "1000000 per minute"
# Production requires the API's public address (the links in fan-out e-mails).
PUBLIC_BASE_URL = "http://bench.invalid"
THREADS = 4  # gthread: threads per worker
# Pool processes of every Celery worker. Jobs wait on SMTP and the database more than they
# compute, so twice the cores: with 2 the backlog after 30 s of POSTs took 6.0 s to drain, with
# 4 it took 2.1 s, for 14 % fewer POSTs/s (bench/NOTES.md).
CELERY_POOL = 4


@dataclass
class Server:
    config: Config
    port: int
    gunicorn: Service
    worker: Service | None
    token: str
    post_id: int

    def worker_pids(self) -> list[int]:
        return children(self.gunicorn.pid)

    def celery_pids(self) -> list[int]:
        return [self.worker.pid, *children(self.worker.pid)] if self.worker else []


class Bench:
    """One run's stack: its temporary directory, ports, secrets and databases, and the
    processes of whichever configuration is being measured (started by `launcher`, which the
    driver closes at the end)."""

    def __init__(self, args: argparse.Namespace, tmp: Path, launcher: Launcher) -> None:
        self.args = args
        self.tmp = tmp
        self.launcher = launcher
        self.run_id = uuid.uuid4().hex[:8]
        self.env_base = clean_environment(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.redis_port = free_port()
        self.mail_port = free_port()
        self.mail_log = tmp / "mail.jsonl"
        self.redis: Service | None = None
        self.pg_database: str | None = None
        self.secrets = {
            "SECRET_KEY": secrets.token_hex(32),
            "JWT_SECRET_KEY": secrets.token_hex(32),
        }
        self.databases: dict[tuple[str, str], str] = {}
        self.load = run_wrk if shutil.which("wrk") else run_python_closed_loop
        self.load_tool = "wrk" if shutil.which("wrk") else "python closed loop"

    # -- services -------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        """The run's redis-server, durable as production's should be (an append-only file
        synced every second, no eviction): the broker and the rate limits' storage."""
        self.redis = self.launcher.start_redis(
            self.redis_port,
            *("--appendonly", "yes", "--appendfsync", "everysec"),
            *("--maxmemory-policy", "noeviction"),
        )

    def stop_redis(self) -> None:
        if self.redis:
            self.redis.stop()
            self.redis = None

    def start_sink(self) -> None:
        # A mail server elsewhere in production: no printing on the measured cores.
        self.launcher.start_smtp_sink(
            self.mail_port, "--quiet", record=self.mail_log, env=self.env_base
        )

    def create_pg_database(self) -> str:
        name = f"blog_api_bench_{self.run_id}"
        create_database(PG_ADMIN_URL, name)
        self.pg_database = name
        return name

    def drop_pg_databases(self) -> None:
        if not self.pg_database:
            return
        for suffix in ("", *(f"_{app}" for app in TUTORIAL_APPS)):
            drop_database(PG_ADMIN_URL, f"{self.pg_database}{suffix}")

    def database_url(self, app: str, database: str) -> str:
        key = (app, database)
        if key not in self.databases:
            if database == "sqlite":
                url = f"sqlite:///{self.tmp / f'{app}.db'}"
            else:
                if not self.pg_database:
                    self.create_pg_database()
                assert self.pg_database
                if app in TUTORIAL_APPS:
                    url = create_database(PG_ADMIN_URL, f"{self.pg_database}_{app}")
                else:
                    base = PG_ADMIN_URL.rsplit("/", 1)[0]
                    url = f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{self.pg_database}"
            self.databases[key] = url
            self.prepare_database(app, url)
        return self.databases[key]

    def app_env(self, config: Config) -> dict[str, str]:
        env = dict(self.env_base)
        if config.app == "ours":
            assert config.database
            env |= {
                "FLASK_ENV": "production",
                "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
                # The benchmark user never confirms its address: its notifications must still
                # be sent (the flag is read from the row the notification reads anyway).
                "EMAIL_CONFIRMATION_REQUIRED": "false",
                **self.secrets,
                "DATABASE_URL": self.database_url("ours", config.database),
                "REDIS_URL": self.redis_url,
                "CELERY_QUEUE": f"bench-{self.run_id}",
                "MAIL_SERVER": "127.0.0.1",
                "MAIL_PORT": str(self.mail_port),
                "POST_AUDIT_LOG": str(self.tmp / "post_audit.log"),
                "LOG_FILE": str(self.tmp / "app.log"),
                "LOG_LEVEL": "INFO",
                "INSTANCE_PATH": str(self.tmp / "instance"),
                # The limits stay on (their storage round-trips are part of the request) but
                # high enough that one benchmark user is never refused.
                "POST_RATE_LIMIT": HIGH_LIMIT,
                "LOGIN_RATE_LIMIT": HIGH_LIMIT,
                "REGISTER_RATE_LIMIT": HIGH_LIMIT,
                "ANONYMOUS_RATE_LIMIT": HIGH_LIMIT,
                # The per-username ceiling on logins too (30 a minute in production): the login
                # scenario is one user logging in thousands of times a minute.
                "LOGIN_USERNAME_CEILING": HIGH_LIMIT,
            }
        elif config.app in TUTORIAL_APPS:
            assert config.database
            env |= {
                "BENCH_DATABASE_URL": self.database_url(config.app, config.database),
                "BENCH_REDIS_URL": self.redis_url,
                "BENCH_QUEUE": f"{config.app}-{self.run_id}",
                "PYTHONPATH": str(APPS),
            }
            if config.app == "fair_tutorial":
                env["BENCH_MAIL_PORT"] = str(self.mail_port)
        else:
            env["PYTHONPATH"] = str(APPS)
        return env

    def prepare_database(self, app: str, url: str) -> None:
        cwd = self.tmp / f"{app}-cwd"
        cwd.mkdir(exist_ok=True)
        config = Config(
            "prepare", app, "sqlite" if url.startswith("sqlite") else "postgresql", "sync", []
        )
        self.databases[(app, config.database or "")] = url
        env = self.app_env(config)
        if app == "ours":
            args = [str(BIN / "flask"), "--app", "blog_api", "db", "upgrade"]
        else:
            args = [str(BIN / "python"), str(APPS / "tutorial_app.py"), "init"]
        subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True, timeout=120)

    # -- one configuration ----------------------------------------------------------------

    def start_server(self, config: Config, env: dict[str, str] | None = None) -> Server:
        """`config`'s gunicorn and background processes, seeded; `env` adds settings."""
        port = free_port()
        env = self.app_env(config) | (env or {})
        env |= {
            "BENCH_BIND": f"127.0.0.1:{port}",
            "BENCH_WORKER_CLASS": config.worker_class,
            "BENCH_THREADS": str(THREADS if config.worker_class == "gthread" else 1),
        }
        module = {
            "bare": "bare_app:app",
            "tutorial": "tutorial_app:app",
            "fair_tutorial": "tutorial_app:app",
            "ours": "blog_api.wsgi:flask_app",
        }[config.app]
        cwd = self.tmp / f"{config.app}-cwd"
        cwd.mkdir(exist_ok=True)
        worker = start_workers(self.launcher, config, env, cwd)
        gunicorn = self.launcher.start_gunicorn(
            f"gunicorn-{config.name}",
            module,
            *("-c", str(HERE / "gunicorn_bench.py")),
            env=env,
            cwd=cwd,
        )
        health = {
            "bare": "/",
            "tutorial": "/api/v1/posts?limit=1",
            "fair_tutorial": "/api/v1/posts?limit=1",
            "ours": "/health",
        }[config.app]
        try:
            # Any answer but a server error: the app is loaded and reaches its database.
            url = f"http://127.0.0.1:{port}{health}"
            gunicorn.wait_for_http(url, accept=range(100, 500), timeout=60)
            gunicorn.wait_for(lambda: len(children(gunicorn.pid)) >= 2, 30, "two gunicorn workers")
            if worker:
                worker.wait_for(lambda: len(children(worker.pid)) >= 2, 60, "the Celery pool")
        except TimeoutError as error:
            raise RuntimeError(
                f"{error}\n{gunicorn.log_tail()}\n{worker.log_tail() if worker else ''}"
            ) from error
        token, post_id = self.seed(config, port)
        return Server(config, port, gunicorn, worker, token, post_id)

    def seed(self, config: Config, port: int) -> tuple[str, int]:
        if config.app == "bare":
            return "", 0
        user = {"username": "bench", "password": PASSWORD, "email": "bench@example.com"}
        status, body = http_json(port, "POST", "/api/v1/users", user)
        if status not in (201, 409) and not (config.app in TUTORIAL_APPS and status == 500):
            raise RuntimeError(f"registering the bench user: {status} {body}")
        status, body = http_json(
            port, "POST", "/api/v1/login", {"username": "bench", "password": PASSWORD}
        )
        if status != 200:
            raise RuntimeError(f"login: {status} {body}")
        token = body["access_token"] if config.app == "ours" else body["token"]
        status, body = http_json(port, "GET", "/api/v1/posts?limit=20")
        posts = body["posts"]
        while len(posts) < 20:
            status, created = http_json(port, "POST", "/api/v1/posts", POST_BODY, token)
            if status != 201:
                raise RuntimeError(f"seeding posts: {status} {created}")
            posts.append(created)
        return token, int(posts[0]["id"])

    def stop_server(self, server: Server) -> None:
        server.gunicorn.stop()
        if server.worker:
            server.worker.stop()

    def memory(self, server: Server) -> dict[str, list[int]]:
        """Peak RSS (VmHWM, kB) of each gunicorn worker and each Celery process."""
        return {
            "gunicorn": [proc_status(pid, "VmHWM") for pid in server.worker_pids()],
            "celery": [proc_status(pid, "VmHWM") for pid in server.celery_pids()],
            "gunicorn now": [proc_status(pid, "VmRSS") for pid in server.worker_pids()],
        }

    def scenario(self, server: Server, name: str, seconds: float) -> LoadResult:
        method, path, body, needs_token = SCENARIOS[name]
        path = path.format(post_id=server.post_id)
        workers = server.worker_pids()
        cpu_before = {pid: cpu_seconds(pid) for pid in workers}
        spread: dict[int, int] = {}

        def sample() -> None:
            time.sleep(seconds / 2)
            spread.update(established_connections(workers, server.port))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = self.load(
            server.port,
            method,
            path,
            body,
            server.token if needs_token else None,
            seconds,
            self.args.connections,
        )
        sampler.join(timeout=5)
        result.spread = {
            "connections": [spread.get(pid, 0) for pid in workers],
            "cpu_s": [round(cpu_seconds(pid) - cpu_before[pid], 2) for pid in workers],
        }
        return result


def start_workers(
    launcher: Launcher, config: Config, env: dict[str, str], cwd: Path
) -> Service | None:
    """The background processes of one configuration: ours runs its Celery worker (its relay
    publishes the jobs the API stores); both tutorial apps the chapter's worker (the literal
    one's task sleeps 5 s, so it barely uses the CPU; the fair one's sends the e-mail); bare
    Flask none. Every section starts its servers through here."""
    celery_apps = {"ours": ("blog_api.wsgi.celery_app", "bench")}
    celery_apps |= dict.fromkeys(TUTORIAL_APPS, ("tutorial_app.celery", "tutorial"))
    if config.app not in celery_apps:
        return None
    celery_app, node = celery_apps[config.app]
    return launcher.start_celery_worker(
        f"celery-{config.name}",
        celery_app,
        *("-c", str(CELERY_POOL), "--loglevel", "WARNING"),
        *("-n", f"{node}-{uuid.uuid4().hex[:6]}@%h"),
        env=env,
        cwd=cwd,
    )

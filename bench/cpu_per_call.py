# It runs only its own fixed command lines; the password is the benchmark user's.
# ruff: noqa: S603
"""CPU time per call of our request paths and notification job, and of the reference apps', in
one process and one run.

    python bench/cpu_per_call.py                 # 5 interleaved rounds of 300 calls per path
    python bench/cpu_per_call.py --paths post    # only some paths (e.g. under a sampling profiler)
    python bench/cpu_per_call.py --profile post  # and the cProfile top of one of our paths
    python bench/cpu_per_call.py --json OUT.json # and each round's figures as JSON (make bench)

No HTTP server and no Celery broker round trip: each app is served through Flask's test client
(a private redis-server for the rate limits and the tutorial's `.delay()`, one SQLite file per
app), and a job runs through its Celery task's `apply()` against the SMTP sink in a subprocess.
The reference apps are `bench/apps/tutorial_app.py` loaded twice, as `bench/harness/stack.py`
runs it: the literal tutorial (its task sleeps 5 s, so only its request paths are measured) and
the fair tutorial (`BENCH_MAIL_PORT` set: its task sends the same e-mail with smtplib). Every
round measures every path of every app one after the other, the apps' order alternating from one
round to the next; each figure is the median of the rounds and each ratio the median of the
per-round ratios. What it shows is the code's own cost per call, free of the scheduling noise of
a loaded machine: the figure to compare before and after a change (see bench/NOTES.md).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import json
import os
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

# The driver's helpers and constants (this directory is on sys.path when run as a script).
from harness.launcher import BIN, Launcher, free_port
from harness.machine import machine_line
from harness.plans import PASSWORD, POST_BODY
from harness.stack import APPS, HIGH_LIMIT

PATHS = ("post", "list", "one", "job")
# path: (label, target ratio ours / reference, the reference it is measured against)
TARGETS = {
    "post": ("POST /api/v1/posts", 0.5, "tutorial"),
    "list": ("GET /api/v1/posts?limit=20", 0.7, "tutorial"),
    "one": ("GET /api/v1/posts/<id>", 0.8, "tutorial"),
    "job": ("notification job", 0.5, "fair tutorial"),
}
USER = {"username": "bench", "password": PASSWORD, "email": "bench@example.com"}


def cpu_ms_per_call(call: Callable[[], None], count: int) -> float:
    """Process CPU time (every thread) per call."""
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) * 1000 / count


def request_calls(
    client: Any, headers: dict[str, str], post_id: int
) -> dict[str, tuple[str, Callable[[], None]]]:
    """The three request paths, the same for every app; reading is public, so it is sent
    without a token, as the HTTP benchmark sends it."""
    return {
        "post": (
            "POST /api/v1/posts",
            lambda: expect(201, client.post("/api/v1/posts", json=POST_BODY, headers=headers)),
        ),
        "list": (
            "GET /api/v1/posts?limit=20",
            lambda: expect(200, client.get("/api/v1/posts?limit=20")),
        ),
        "one": (
            f"GET /api/v1/posts/{post_id}",
            lambda: expect(200, client.get(f"/api/v1/posts/{post_id}")),
        ),
    }


def expect(status: int, response: Any) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.status_code}: {response.get_data(as_text=True)}")


@dataclass
class Measured:
    """One app's measured paths: name -> (label, call), and the CPU ms per call of each round."""

    app: str
    calls: dict[str, tuple[str, Callable[[], None]]]
    before_round: Callable[[str, int], None] = lambda _path, _count: None
    results: dict[str, list[float]] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per path and round")
    parser.add_argument("--runs", "--rounds", dest="runs", type=int, default=5, help="rounds")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated: post,list,...")
    parser.add_argument("--no-reference", action="store_true", help="our app only")
    parser.add_argument("--profile", choices=PATHS, default=None)
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative, tottime")
    parser.add_argument("--json", default=None, help="also write each round's figures here")
    args = parser.parse_args(argv)
    args.paths = [path for path in PATHS if path in args.paths.split(",")]
    if args.profile and args.profile not in args.paths:
        args.paths.append(args.profile)
    command = "python bench/cpu_per_call.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load_at_start = os.getloadavg()

    tmp = Path(tempfile.mkdtemp(prefix="blog-cpu-"))
    redis_port, mail_port = free_port(), free_port()
    launcher = Launcher(tmp)
    cwd = Path.cwd()
    try:
        launcher.start_redis(redis_port)
        launcher.start_smtp_sink(mail_port, "--quiet")
        os.environ |= {
            "FLASK_ENV": "production",
            "PUBLIC_BASE_URL": "http://bench.invalid",
            # The user never confirms its address: its notification job must still send.
            "EMAIL_CONFIRMATION_REQUIRED": "false",
            "SECRET_KEY": secrets.token_hex(32),
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": f"sqlite:///{tmp / 'cpu.db'}",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "CELERY_QUEUE": "cpu-per-call",
            "MAIL_PORT": str(mail_port),
            "POST_AUDIT_LOG": str(tmp / "post_audit.log"),
            "LOG_FILE": str(tmp / "app.log"),
            "LOG_LEVEL": "INFO",
            "INSTANCE_PATH": str(tmp / "instance"),
            "POST_RATE_LIMIT": HIGH_LIMIT,
            "LOGIN_RATE_LIMIT": HIGH_LIMIT,
            "REGISTER_RATE_LIMIT": HIGH_LIMIT,
            "ANONYMOUS_RATE_LIMIT": HIGH_LIMIT,
        }
        subprocess.run(
            [str(BIN / "flask"), "--app", "blog_api", "db", "upgrade"],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        # Console lines go to a file, as the benchmark's servers' do (and the tutorial's task
        # prints one line per e-mail).
        # Flask's default handler writes to the request's `wsgi.errors`, the test client's
        # `sys.stderr`.
        with open(tmp / "console.log", "w") as console:
            with console_to(console):
                apps = [ours(args)]
                if not args.no_reference:
                    apps.append(tutorial("tutorial", args.paths, tmp, redis_port, None))
                    apps.append(tutorial("fair tutorial", args.paths, tmp, redis_port, mail_port))
                measure(args, apps)
                os.chdir(cwd)
            report(args, apps, command, load_at_start)
            if args.json:
                figures = {app.app: app.results for app in apps}
                Path(args.json).write_text(json.dumps({"command": command, "ms": figures}))
            if args.profile:
                with console_to(console):
                    text = profile(args, apps[0])
                print(text)
    finally:
        os.chdir(cwd)
        launcher.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


@contextlib.contextmanager
def console_to(stream: TextIO) -> Iterator[None]:
    """Handlers built meanwhile (`logging.StreamHandler()`) and `print` write to `stream`."""
    with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
        yield


def ours(args: argparse.Namespace) -> Measured:
    from sqlalchemy import select

    from blog_api import create_app
    from blog_api.extensions import db
    from blog_api.models import Job

    app = create_app()
    client = app.test_client()
    expect(201, client.post("/api/v1/users", json=USER))
    login = client.post("/api/v1/login", json={"username": "bench", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    post_id = client.post("/api/v1/posts", json=POST_BODY, headers=headers).json["id"]
    task = app.extensions["celery"].tasks["blog_api.send_post_notification"]
    queue: list[str] = []

    def fill_queue(path: str, count: int) -> None:
        if path != "job":
            return
        with app.app_context():
            statement = select(Job.id).where(Job.status == "pending", Job.kind == "notify_author")
            queue[:] = db.session.scalars(statement)
        if len(queue) < count:  # the posts measured so far did not leave enough
            for _ in range(count - len(queue)):
                expect(201, client.post("/api/v1/posts", json=POST_BODY, headers=headers))
            fill_queue(path, count)

    def run_job() -> None:
        task.apply(args=[queue.pop()]).get()

    calls = request_calls(client, headers, post_id)
    calls["job"] = ("notification job (claim, SMTP, finish)", run_job)
    return Measured("ours", {path: calls[path] for path in args.paths}, fill_queue)


def load_tutorial(name: str, directory: Path) -> ModuleType:
    """A fresh copy of the tutorial module (its own app, database, Celery app and task)."""
    spec = importlib.util.spec_from_file_location(name, APPS / "tutorial_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    os.chdir(directory)  # its `app.log` is relative to the working directory
    spec.loader.exec_module(module)
    return module


def tutorial(
    app_name: str,
    paths: list[str],
    tmp: Path,
    redis_port: int,
    mail_port: int | None,
) -> Measured:
    slug = app_name.replace(" ", "_")
    directory = tmp / slug
    directory.mkdir()
    os.environ |= {
        "BENCH_DATABASE_URL": f"sqlite:///{directory / 'tutorial.db'}",
        "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "BENCH_QUEUE": f"cpu-per-call-{slug}",
        "BENCH_MAIL_PORT": str(mail_port or ""),
    }
    module = load_tutorial(f"bench_{slug}", directory)
    with module.app.app_context():
        module.db.create_all()
    client = module.app.test_client()
    expect(201, client.post("/api/v1/users", json=USER))
    login = client.post("/api/v1/login", json={"username": "bench", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json['token']}"}
    created = client.post("/api/v1/posts", json=POST_BODY, headers=headers)
    expect(201, created)
    post_id, user_id = created.json["id"], created.json["user_id"]
    task = module.send_email_notification
    calls = request_calls(client, headers, post_id)
    if mail_port:  # the literal tutorial's task sleeps 5 s: no CPU to compare
        calls["job"] = (
            "task: the e-mail with smtplib",
            lambda: task.apply(args=[user_id, POST_BODY["title"]]).get(),
        )
    return Measured(app_name, {path: calls[path] for path in paths if path in calls})


def measure(args: argparse.Namespace, apps: list[Measured]) -> None:
    for app in apps:  # warm-up: lazy imports, compiled SQL, connections
        app.results = {path: [] for path in app.calls}
        for path, (_label, call) in app.calls.items():
            app.before_round(path, 5)
            for _ in range(5):
                call()
    for round_number in range(args.runs):
        order = apps if round_number % 2 == 0 else apps[::-1]
        for path in args.paths:
            for app in order:
                if path not in app.calls:
                    continue
                app.before_round(path, args.calls)
                app.results[path].append(cpu_ms_per_call(app.calls[path][1], args.calls))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} [{min(values):.2f}-{max(values):.2f}]"


def report(
    args: argparse.Namespace,
    apps: list[Measured],
    command: str,
    load_at_start: tuple[float, float, float],
) -> None:
    ours_app, references = apps[0], apps[1:]
    print(f"CPU ms per call, median [min-max] of {args.runs} runs of {args.calls} calls:")
    for path, (label, _call) in ours_app.calls.items():
        print(f"  {label:42} {_spread(ours_app.results[path])}")
    if not references:
        return
    print("\nReference apps, the same rounds:")
    for app in references:
        for path, (label, _call) in app.calls.items():
            print(f"  {app.app:14} {label:38} {_spread(app.results[path])}")
    print("\nOurs / reference, median [min-max] of the per-round ratios (target):")
    for path in ours_app.calls:
        label, target, target_app = TARGETS[path]
        cells = []
        for app in references:
            if path not in app.calls:
                continue
            ratios = [
                mine / theirs
                for mine, theirs in zip(ours_app.results[path], app.results[path], strict=True)
            ]
            mark = f" (target <= {target})" if app.app == target_app else ""
            cells.append(f"vs {app.app} {_spread(ratios).strip()}{mark}")
        print(f"  {label:28} " + "; ".join(cells))
    print(f"\nCommand: {command.strip()}")
    print(f"Machine: {machine_line()}")
    load = ", ".join(f"{value:.2f}" for value in load_at_start)
    print(f"Load average (1/5/15 min) at start: {load}; at end: ", end="")
    print(", ".join(f"{value:.2f}" for value in os.getloadavg()))


def profile(args: argparse.Namespace, app: Measured) -> str:
    assert args.profile
    label, call = app.calls[args.profile]
    app.before_round(args.profile, args.calls)
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(args.calls):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(40)
    return f"\ncProfile of {label} ({args.sort}, top 40):\n{out.getvalue()}"


if __name__ == "__main__":
    sys.exit(main())

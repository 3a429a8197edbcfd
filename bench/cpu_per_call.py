# It runs only its own fixed command lines; the password is the benchmark user's.
# ruff: noqa: S603
"""CPU time per call of the request paths and the notification job, in one process.

    python bench/cpu_per_call.py                 # median [min-max] of 3 runs of 300 calls
    python bench/cpu_per_call.py --profile post  # and the cProfile top of one path

No HTTP server and no Celery broker round trip: the production configuration is served through
Flask's test client (a private redis-server for the rate limits and the job messages, an SQLite
file), and a job runs through its Celery task's `apply()` against the SMTP sink in a subprocess.
What it shows is the code's own cost per call, free of the scheduling noise of a loaded machine:
the figure to compare before and after a change (see bench/NOTES.md).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The driver's helpers and constants (this directory is on sys.path when run as a script).
from harness.plans import PASSWORD, POST_BODY
from harness.processes import BIN, free_port, redis_server, wait_until
from harness.stack import HIGH_LIMIT


def listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def cpu_ms_per_call(call: Callable[[], None], count: int) -> float:
    """Process CPU time (every thread) per call."""
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) * 1000 / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=["post", "list", "one", "job"], default=None)
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative, tottime")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="blog-cpu-"))
    redis_port, mail_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            cwd=tmp,
        ),
        subprocess.Popen(
            [str(BIN / "python"), "-m", "blog_api.ops.smtp_sink", "--port", str(mail_port)],
            stdout=subprocess.DEVNULL,
            cwd=tmp,
        ),
    ]
    try:
        for port, proc in zip((redis_port, mail_port), procs, strict=True):
            wait_until(lambda p=port, c=proc: listening(p, c), 15, f"port {port}")
        os.environ |= {
            "FLASK_ENV": "production",
            "SECRET_KEY": secrets.token_hex(24),
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": f"sqlite:///{tmp / 'cpu.db'}",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "CELERY_QUEUE": "cpu-per-call",
            "MAIL_PORT": str(mail_port),
            "POST_AUDIT_LOG": str(tmp / "post_audit.log"),
            "LOG_FILE": str(tmp / "app.log"),
            "INSTANCE_PATH": str(tmp / "instance"),
            "POST_RATE_LIMIT": HIGH_LIMIT,
            "LOGIN_RATE_LIMIT": HIGH_LIMIT,
            "REGISTER_RATE_LIMIT": HIGH_LIMIT,
        }
        subprocess.run(
            [str(BIN / "flask"), "--app", "blog_api", "db", "upgrade"],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        measure(args)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from blog_api import create_app
    from blog_api.extensions import db
    from blog_api.models import Job

    app = create_app()
    client = app.test_client()
    user = {"username": "bench", "password": PASSWORD, "email": "bench@example.com"}
    assert client.post("/api/v1/users", json=user).status_code == 201
    login = client.post("/api/v1/login", json={"username": "bench", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    post_id = client.post("/api/v1/posts", json=POST_BODY, headers=headers).json["id"]
    task = app.extensions["celery"].tasks["blog_api.send_post_notification"]

    def expect(status: int, response: Any) -> None:
        if response.status_code != status:
            raise RuntimeError(f"{response.status_code}: {response.get_data(as_text=True)}")

    def pending_jobs() -> list[str]:
        with app.app_context():
            return list(
                db.session.scalars(
                    select(Job.id).where(Job.status == "pending", Job.kind == "notify_author")
                )
            )

    queue: list[str] = []

    def run_job() -> None:
        task.apply(args=[queue.pop()]).get()

    paths: dict[str, tuple[str, Callable[[], None]]] = {
        "post": (
            "POST /api/v1/posts",
            lambda: expect(201, client.post("/api/v1/posts", json=POST_BODY, headers=headers)),
        ),
        "list": (
            "GET /api/v1/posts?limit=20",
            lambda: expect(200, client.get("/api/v1/posts?limit=20", headers=headers)),
        ),
        "one": (
            f"GET /api/v1/posts/{post_id}",
            lambda: expect(200, client.get(f"/api/v1/posts/{post_id}", headers=headers)),
        ),
        "job": ("notification job (claim, SMTP, finish)", run_job),
    }
    for name, (_label, call) in paths.items():  # warm-up: lazy imports, connections
        if name == "job":
            queue[:] = pending_jobs()
        call()
    results: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.runs):
        for name, (_label, call) in paths.items():
            if name == "job":
                queue[:] = pending_jobs()
                if len(queue) < args.calls:
                    raise RuntimeError(f"only {len(queue)} pending jobs for {args.calls} calls")
            results[name].append(cpu_ms_per_call(call, args.calls))
    print(f"CPU ms per call, median [min-max] of {args.runs} runs of {args.calls} calls:")
    for name, (label, _call) in paths.items():
        values = results[name]
        print(
            f"  {label:42} {statistics.median(values):6.2f} [{min(values):.2f}-{max(values):.2f}]"
        )
    if args.profile:
        label, call = paths[args.profile]
        if args.profile == "job":
            for _ in range(args.calls):
                paths["post"][1]()
            queue[:] = pending_jobs()
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(args.calls):
            call()
        profiler.disable()
        print(f"\ncProfile of {label} ({args.sort}, top 40):")
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)


if __name__ == "__main__":
    sys.exit(main())

# It runs only git and make, with its own fixed arguments.
# ruff: noqa: S603, S607
"""A newcomer's first run, timed: a fresh clone, `make run`, the README's curl flow, the e-mail.

    python bench/first_run.py                    # this checkout's HEAD
    python bench/first_run.py --rev a6113e6 HEAD # two revisions, one after the other, paired rounds

For each revision and round: clone the repository into a temporary directory (nothing installed
yet, as on a fresh machine; the package cache is whatever pip's is, so run each revision once
before comparing, to measure with a warm cache), start `make run` there on free ports, and time
from the start of `make run` to the first `200` of `/health`, then register, log in and post as
the README does, and time until the sink prints the post's e-mail. Prints one line per round and
the median per revision; the stack is stopped (its whole process group) after each round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness.load import http_json

REPOSITORY = Path(__file__).resolve().parent.parent
TITLE = "First run probe"
# The sink prints each e-mail's Subject; the notification's names the post.
SUBJECT = f"Subject: Your post '{TITLE}' is published"
HEALTH_TIMEOUT = 600.0
MAIL_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(port: int, path: str, body: dict[str, str], token: str | None = None) -> Any:
    """POST `body`; the JSON answer, which must be a success."""
    status, answer = http_json(port, "POST", path, body, token)
    if status >= 400:
        raise RuntimeError(f"POST {path}: {status} {answer}")
    return answer


class Output:
    """The stack's output, read by a thread; `wait_for` blocks until a text shows up."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.text = ""
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            with self.changed:
                self.text += line
                self.changed.notify_all()

    def wait_for(self, needle: str, since: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while needle not in self.text[since:]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True


def one_round(rev: str) -> tuple[float, float, float]:
    """Seconds from `make run` to /health, to the post's e-mail, and from the POST to it."""
    with tempfile.TemporaryDirectory(prefix="first-run-") as directory:
        checkout = Path(directory) / "blog-api"
        subprocess.run(["git", "clone", "--quiet", str(REPOSITORY), str(checkout)], check=True)
        subprocess.run(["git", "-C", str(checkout), "checkout", "--quiet", rev], check=True)
        web, smtp = free_port(), free_port()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "FLASK"))},
            "WEB_PORT": str(web),
            "REDIS_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "SMTP_PORT": str(smtp),  # this name since the lean install
            "MAIL_PORT": str(smtp),  # the sink's port before it
            "PYTHONUNBUFFERED": "1",
        }
        started = time.monotonic()
        stack = subprocess.Popen(
            ["make", "run"],
            cwd=checkout,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        output = Output(stack.stdout)
        try:
            while True:
                if stack.poll() is not None or time.monotonic() - started > HEALTH_TIMEOUT:
                    raise RuntimeError(f"{rev}: the stack never answered:\n{output.text[-3000:]}")
                with contextlib.suppress(OSError):
                    if http_json(web, "GET", "/health", timeout=2.0)[0] == 200:
                        break
                time.sleep(0.1)
            healthy = time.monotonic() - started
            account = {"username": "alice", "password": "correct-horse"}
            call(web, "/api/v1/users", {**account, "email": "alice@example.com"})
            token = call(web, "/api/v1/login", account)["access_token"]
            mark = len(output.text)
            posted = time.monotonic()
            call(web, "/api/v1/posts", {"title": TITLE, "content": "Hello"}, token)
            if not output.wait_for(SUBJECT, mark, MAIL_TIMEOUT):
                raise RuntimeError(f"{rev}: no e-mail in {MAIL_TIMEOUT} s:\n{output.text[-3000:]}")
            mailed = time.monotonic()
            return healthy, mailed - started, mailed - posted
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stack.pid, signal.SIGTERM)
            try:
                stack.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revs", nargs="*", default=["HEAD"], help="revisions (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    figures: dict[str, list[tuple[float, float, float]]] = {rev: [] for rev in arguments.revs}
    for round_number in range(1, arguments.rounds + 1):
        for rev in arguments.revs:
            healthy, mailed, post_to_mail = one_round(rev)
            figures[rev].append((healthy, mailed, post_to_mail))
            print(
                f"round {round_number} {rev}: /health after {healthy:.1f} s, post's e-mail after"
                f" {mailed:.1f} s ({post_to_mail:.2f} s after the POST)",
                flush=True,
            )
    for rev, rows in figures.items():
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        print(
            f"{rev}: median /health {medians[0]:.1f} s, e-mail {medians[1]:.1f} s,"
            f" POST to e-mail {medians[2]:.2f} s over {len(rows)} rounds"
        )


if __name__ == "__main__":
    main()

# It runs only git and make, with its own fixed arguments.
# ruff: noqa: S603, S607
"""A newcomer's first run, timed: a fresh clone, `make run`, the README's curl flow, the e-mail.

    python bench/first_run.py                    # this checkout's HEAD
    python bench/first_run.py a6113e6 HEAD       # two revisions, one after the other, paired rounds

For each revision and round: clone the repository into a temporary directory (nothing installed
yet, as on a fresh machine; the package cache is whatever pip's is, so run each revision once
before comparing, to measure with a warm cache), start `make run` there on free ports, and time
from the start of `make run` to the first `200` of `/health`, then register, log in and post as
the README does, and time until the sink prints the post's e-mail. Prints one line per round and
the median per revision; the stack is stopped (its whole process group) after each round, by
the launcher the benchmark and the integration tests start their processes with.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.launcher import REPOSITORY, Launcher, clean_environment, free_port
from harness.load import http_json

TITLE = "First run probe"
# The sink prints each e-mail's Subject; the notification's names the post.
SUBJECT = f"Subject: Your post '{TITLE}' is published"
HEALTH_TIMEOUT = 600.0
MAIL_TIMEOUT = 60.0


def call(port: int, path: str, body: dict[str, str], token: str | None = None) -> Any:
    """POST `body`; the JSON answer, which must be a success."""
    status, answer = http_json(port, "POST", path, body, token)
    if status >= 400:
        raise RuntimeError(f"POST {path}: {status} {answer}")
    return answer


def one_round(rev: str) -> tuple[float, float, float]:
    """Seconds from `make run` to /health, to the post's e-mail, and from the POST to it."""
    with tempfile.TemporaryDirectory(prefix="first-run-") as directory:
        checkout = Path(directory) / "blog-api"
        subprocess.run(["git", "clone", "--quiet", str(REPOSITORY), str(checkout)], check=True)
        subprocess.run(["git", "-C", str(checkout), "checkout", "--quiet", rev], check=True)
        web, smtp = free_port(), free_port()
        environment = clean_environment(
            WEB_PORT=str(web),
            REDIS_PORT=str(free_port()),
            FLOWER_PORT=str(free_port()),
            SMTP_PORT=str(smtp),  # this name since the lean install
            MAIL_PORT=str(smtp),  # the sink's port before it
        )
        with Launcher(Path(directory), environment) as launcher:
            started = time.monotonic()
            stack = launcher.start("make-run", ["make", "run"], cwd=checkout)
            stack.wait_for_http(f"http://127.0.0.1:{web}/health", timeout=HEALTH_TIMEOUT)
            healthy = time.monotonic() - started
            account = {"username": "alice", "password": "correct-horse"}
            call(web, "/api/v1/users", {**account, "email": "alice@example.com"})
            token = call(web, "/api/v1/login", account)["access_token"]
            posted = time.monotonic()
            call(web, "/api/v1/posts", {"title": TITLE, "content": "Hello"}, token)
            stack.wait_for_log(SUBJECT, MAIL_TIMEOUT)
            mailed = time.monotonic()
        return healthy, mailed - started, mailed - posted


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

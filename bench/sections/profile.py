# It runs only py-spy, with its own fixed arguments.
# ruff: noqa: S603
"""Profile section: py-spy samples both gunicorn workers during POST load, and the samples inside
Flask's request dispatch are split into the parts of the request, in order."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter

from harness import jobs
from harness.launcher import BIN
from harness.plans import Config, Plan
from harness.report import Report
from harness.stack import Bench

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


def measure(bench: Bench, plan: Plan, report: Report) -> None:
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
        jobs.wait_jobs_done(bench, "sqlite", 60)
    finally:
        bench.stop_server(server)
    report.add("## Profile of the POST path (py-spy, both gunicorn workers, ours sqlite sync)")
    report.add("")
    if not out.exists():
        report.add(f"py-spy produced no profile: {err.decode(errors='replace')[-300:]}")
        return
    stacks = read_stacks(out.read_text())
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
    for label, count in bucket_counts(active).items():
        breakdown[label] = count / total
        report.add(f"| {label} | {100 * count / total:.1f} % |")
    report.add("")
    report.add("Functions of the app by inclusive share:")
    report.add("")
    report.add("| function | share |")
    report.add("|---|---|")
    for frame, count in app_functions(active).most_common(15):
        report.add(f"| `{frame}` | {100 * count / total:.1f} % |")
    report.add("")
    report.data["profile"] = breakdown


def read_stacks(text: str) -> list[tuple[str, int]]:
    """py-spy's raw format: one `frame;frame;... count` line per distinct stack."""
    stacks: list[tuple[str, int]] = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack, int(count)))
    return stacks


def bucket_counts(active: list[tuple[str, int]]) -> dict[str, int]:
    """Samples per row of PROFILE_BUCKETS, in its order."""
    return {
        label: sum(
            c
            for s, c in active
            if any(n in s for n in needles) and not any(x in s for x in excluded)
        )
        for label, needles, excluded in PROFILE_BUCKETS
    }


def app_functions(active: list[tuple[str, int]]) -> Counter[str]:
    """Samples inside each function of the app, counted once per stack (inclusive)."""
    inclusive: Counter[str] = Counter()
    for stack, count in active:
        frames = {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}
        for frame in frames:
            if "blog_api/" in frame:
                inclusive[frame] += count
    return inclusive

"""Test-only fault points: at a named point of a job the worker SIGKILLs itself, or pauses.

Inert unless the app runs with TESTING on and `FAULT_POINT` names the point. The setting is
`<point>[:<seconds>][@<post id>]`: without seconds the process SIGKILLs itself there, with
seconds it sleeps that long (a hook that widens a race window); `@<post id>` limits the fault
to the jobs (or the request) of that post, e.g. a poison pill among healthy posts.

Points: after_claim, before_smtp_data, after_smtp_250_before_commit, after_commit_before_ack,
after_audit_write_before_commit (in the tasks), between_flush_and_commit (in create_post).
"""

from __future__ import annotations

import os
import signal
import time

from flask import current_app

FAULT_POINTS = frozenset(
    {
        "after_claim",
        "before_smtp_data",
        "after_smtp_250_before_commit",
        "after_commit_before_ack",
        "after_audit_write_before_commit",
        "between_flush_and_commit",
    }
)


def parse_fault_point(value: str) -> tuple[str, float | None, int | None]:
    """`<point>[:<seconds>][@<post id>]` -> (point, seconds or None, post id or None)."""
    spec, _, post = value.partition("@")
    name, _, seconds = spec.partition(":")
    if name not in FAULT_POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    return name, float(seconds) if seconds else None, int(post) if post else None


def crash_point(name: str, post_id: int | None = None) -> None:
    config = current_app.config
    value = config.get("FAULT_POINT")
    if not (config["TESTING"] and value):
        return
    point, seconds, only_post = parse_fault_point(value)
    if point != name or (only_post is not None and only_post != post_id):
        return
    if seconds is None:
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        time.sleep(seconds)

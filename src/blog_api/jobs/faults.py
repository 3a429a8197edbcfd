"""Test-only crash points: the worker SIGKILLs itself at a named point of a job.

Inert unless the app runs with TESTING on and `FAULT_POINT` names the point. Points:
after_claim, before_smtp_data, after_smtp_250_before_commit, after_commit_before_ack,
after_audit_write_before_commit.
"""

from __future__ import annotations

import os
import signal

from flask import current_app

FAULT_POINTS = frozenset(
    {
        "after_claim",
        "before_smtp_data",
        "after_smtp_250_before_commit",
        "after_commit_before_ack",
        "after_audit_write_before_commit",
    }
)


def crash_point(name: str) -> None:
    config = current_app.config
    if config["TESTING"] and config.get("FAULT_POINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

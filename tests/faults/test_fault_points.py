"""The fault rig's hooks: the FAULT_POINT grammar, that a hook acts only in its own app, and
FAULT_ONCE."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.models import Job
from support.fault_hooks import FAULT_POINTS, FaultHooks, FaultPoint


def test_the_five_crash_points_of_the_issue_the_commit_hook_and_the_fan_out_chunk_exist() -> None:
    assert {
        "after_expansion_chunk",
        "after_claim",
        "before_smtp_data",
        "after_smtp_250_before_commit",
        "after_commit_before_ack",
        "after_audit_write_before_commit",
        "between_flush_and_commit",
    } == FAULT_POINTS


def test_a_fault_point_names_a_point_and_optionally_a_pause_and_a_post() -> None:
    assert FaultPoint.parse("after_claim") == FaultPoint("after_claim")
    assert FaultPoint.parse("between_flush_and_commit:2") == FaultPoint(
        "between_flush_and_commit", 2
    )
    assert FaultPoint.parse("after_claim@17") == FaultPoint("after_claim", None, 17)
    assert FaultPoint.parse("before_smtp_data:0.5@3") == FaultPoint("before_smtp_data", 0.5, 3)
    with pytest.raises(ValueError, match="unknown fault point"):
        FaultPoint.parse("after_lunch")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pause_point_sleeps_only_for_its_post_and_only_in_its_own_app(
    make_app: Callable[..., Flask],
) -> None:
    """A kill would end the test process, so the pause form shows the gating."""
    app, other_app = make_app(), make_app()
    hooks = FaultHooks(app, "after_claim:0.3@7")
    try:
        with app.app_context():
            started = time.monotonic()
            job_checkpoint.send(Job(post_id=8), point=Checkpoint.AFTER_CLAIM)  # another post
            job_checkpoint.send(Job(post_id=7), point=Checkpoint.BEFORE_SMTP_DATA)  # another point
            assert time.monotonic() - started < 0.3
            job_checkpoint.send(Job(post_id=7), point=Checkpoint.AFTER_CLAIM)
            assert time.monotonic() - started >= 0.3
        with other_app.app_context():
            started = time.monotonic()
            job_checkpoint.send(Job(post_id=7), point=Checkpoint.AFTER_CLAIM)
            assert time.monotonic() - started < 0.3
    finally:
        hooks.remove()
    with app.app_context():
        started = time.monotonic()
        job_checkpoint.send(Job(post_id=7), point=Checkpoint.AFTER_CLAIM)
        assert time.monotonic() - started < 0.3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_fault_once_strikes_only_where_it_creates_its_file(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """The processes of a rig share the file: the first arrival strikes, every later one (a
    crashed worker's replacement, another process) passes."""
    marker = tmp_path / "struck"
    app = make_app()
    hooks = FaultHooks(app, "after_claim:0.3", once=str(marker))
    try:
        with app.app_context():
            started = time.monotonic()
            job_checkpoint.send(Job(post_id=7), point=Checkpoint.AFTER_CLAIM)
            assert time.monotonic() - started >= 0.3
            assert marker.exists()
            started = time.monotonic()
            job_checkpoint.send(Job(post_id=7), point=Checkpoint.AFTER_CLAIM)
            assert time.monotonic() - started < 0.3
    finally:
        hooks.remove()

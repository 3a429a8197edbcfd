"""The test-only FAULT_POINT setting: its grammar, and that it is inert outside testing."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask

from blog_api.jobs.faults import FAULT_POINTS, crash_point, parse_fault_point


def test_the_five_crash_points_of_the_issue_and_the_commit_hook_exist() -> None:
    assert {
        "after_claim",
        "before_smtp_data",
        "after_smtp_250_before_commit",
        "after_commit_before_ack",
        "after_audit_write_before_commit",
        "between_flush_and_commit",
    } == FAULT_POINTS


def test_a_fault_point_names_a_point_and_optionally_a_pause_and_a_post() -> None:
    assert parse_fault_point("after_claim") == ("after_claim", None, None)
    assert parse_fault_point("between_flush_and_commit:2") == ("between_flush_and_commit", 2, None)
    assert parse_fault_point("after_claim@17") == ("after_claim", None, 17)
    assert parse_fault_point("before_smtp_data:0.5@3") == ("before_smtp_data", 0.5, 3)
    with pytest.raises(ValueError, match="unknown fault point"):
        parse_fault_point("after_lunch")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pause_point_sleeps_only_for_its_post_and_only_when_testing(
    make_app: Callable[..., Flask],
) -> None:
    """A kill would end the test process, so the pause form shows the gating."""
    app = make_app(FAULT_POINT="after_claim:0.3@7")
    with app.app_context():
        started = time.monotonic()
        crash_point("after_claim", 8)  # another post
        crash_point("before_smtp_data", 7)  # another point
        assert time.monotonic() - started < 0.3
        crash_point("after_claim", 7)
        assert time.monotonic() - started >= 0.3
        app.config["TESTING"] = False
        started = time.monotonic()
        crash_point("after_claim", 7)
        assert time.monotonic() - started < 0.3

"""Fixtures of the fault suite, on the integration rig (`support.integration_stack`: Stack,
wait_until, ...).

`report_figures` appends each scenario's oracle figures as one JSON line to the file named by
the environment variable FAULT_FIGURES (default: fault-figures.jsonl in pytest's base temp
directory); `python tests/faults/render_reliability.py FILE` puts them into docs/RELIABILITY.md.

A `fault_stack` has no broker chosen yet: each scenario starts its own redis-server. Its
processes are stopped (by PID) and its temp directory removed when the test ends, pass or fail;
on failure their logs are attached to the report.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oracle import Figures

from harness.launcher import free_port
from support import RUN_ID
from support.integration_stack import Stack

_numbers = itertools.count(1)


@pytest.fixture
def fault_stack(make_stack: Callable[[str], Stack]) -> Stack:
    return make_stack(f"fault_{RUN_ID}_{next(_numbers)}")


@pytest.fixture
def report_figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., None]:
    """`report_figures("R4", "injection", figures, **extra)`: one JSON line per scenario run."""
    started = time.monotonic()

    def report(scenario: str, injection: str, figures: Figures, **extra: Any) -> None:
        # The figures land in the row of docs/RELIABILITY.md the test is marked with.
        marked = {id_ for mark in request.node.iter_markers("scenario") for id_ in mark.args}
        assert scenario in marked, f"{scenario} is not among the test's scenario marks {marked}"
        paragraph = (request.node.function.__doc__ or "").strip().split("\n\n", 1)[0]
        entry = {
            "scenario": scenario,
            "summary": " ".join(paragraph.split()).split(": ", 1)[-1] or request.node.name,
            "injection": injection,
            "node_id": request.node.nodeid,
            "seconds": round(time.monotonic() - started, 1),
            "long": request.node.get_closest_marker("long") is not None,
            "figures": dataclasses.asdict(figures),
            "extra": extra,
        }
        configured = os.environ.get("FAULT_FIGURES")
        path = Path(configured or tmp_path_factory.getbasetemp() / "fault-figures.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as figures_file:
            figures_file.write(json.dumps(entry) + "\n")
        for key, value in entry.items():
            request.node.user_properties.append((key, value))

    return report


@pytest.fixture
def redis_stack(fault_stack: Stack) -> Stack:
    """A fault stack on its own redis-server (no persistence) behind nothing."""
    port = free_port()
    fault_stack.configure(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    fault_stack.start_redis(port)
    return fault_stack


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long variants run only with FAULT_LONG=1 (`make test-faults-long`)."""
    if os.environ.get("FAULT_LONG") == "1":
        return
    long_items = [item for item in items if item.get_closest_marker("long")]
    if long_items:
        config.hook.pytest_deselected(items=long_items)
        items[:] = [item for item in items if not item.get_closest_marker("long")]

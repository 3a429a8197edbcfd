"""Fixtures of the fault suite. It reuses the integration tier's rig (`integration_stack`:
Stack, wait_until, ...), made importable here by putting tests/integration on sys.path.

A `fault_stack` has no broker chosen yet: each scenario starts its own redis-server. Its
processes are stopped (by PID) and its temp directory removed when the test ends, pass or fail;
on failure their logs are attached to the report.
"""

from __future__ import annotations

import itertools
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from integration_stack import Stack  # noqa: E402

from support import RUN_ID  # noqa: E402

_numbers = itertools.count(1)


@pytest.fixture
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    make_app: Callable[..., Flask],
) -> Iterator[Stack]:
    queue = f"fault_{RUN_ID}_{next(_numbers)}"
    directory = tmp_path_factory.mktemp(queue)
    stack = Stack(directory, database_url, queue, make_app)
    try:
        yield stack
    finally:
        stack.close()
        shutil.rmtree(directory, ignore_errors=True)

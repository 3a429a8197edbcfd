"""Fixtures of the Postman suite: a live stack (gunicorn, a Celery worker with its relay, a
private redis-server as the broker, the SMTP sink) built from the integration tier's rig, which
is made importable by putting tests/integration on sys.path.

Every process is stopped by PID when the test ends, pass or fail; on failure their logs are
attached to the report (the root conftest's hook reads `Stack.log_sections`).
"""

from __future__ import annotations

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


@pytest.fixture
def live_stack(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    make_app: Callable[..., Flask],
) -> Iterator[Stack]:
    """A stack without processes yet; its broker is a redis-server the test starts."""
    queue = f"pm_{RUN_ID}"
    stack = Stack(tmp_path_factory.mktemp(queue), database_url, queue, make_app)
    try:
        yield stack
    finally:
        stack.close()

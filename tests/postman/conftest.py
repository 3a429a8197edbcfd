"""Fixtures of the Postman suite: a live stack (gunicorn, a Celery worker with its relay, a
private redis-server as the broker, the SMTP sink) built from the integration rig
(`support.integration_stack`).

Every process is stopped by PID when the test ends, pass or fail; on failure their logs are
attached to the report (the root conftest's hook reads `Stack.log_sections`).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import RUN_ID
from support.integration_stack import Stack


@pytest.fixture
def live_stack(make_stack: Callable[[str], Stack]) -> Stack:
    """A stack without processes yet; its broker is a redis-server the test starts."""
    return make_stack(f"pm_{RUN_ID}")

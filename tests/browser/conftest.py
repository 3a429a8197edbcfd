"""Fixtures of the browser tests: the app served by gunicorn on a free port (testing settings,
a migrated SQLite file of this run) and Debian's headless Chromium driven by Playwright.

The integration rig (`integration_stack`, `live_server`) is made importable by putting
tests/integration on sys.path. The server is stopped by PID when the module's tests are done.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from integration_stack import Stack  # noqa: E402
from live_server import LiveServer, start_gunicorn  # noqa: E402

from blog_api import create_app  # noqa: E402
from support import RUN_ID  # noqa: E402


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[LiveServer]:
    """gunicorn serving the app; the docs need neither a broker nor a worker."""
    make_app = functools.partial(create_app, "testing")
    stack = Stack(tmp_path_factory.mktemp(f"browser_{RUN_ID}"), database_url, "unused", make_app)
    try:
        yield start_gunicorn(stack, workers=1)
    finally:
        stack.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Name the screenshots a test saved (`record_property("screenshot", path)`) in its report:
    shown with `-rA` or on failure, and written to JUnit XML as properties."""
    report: pytest.TestReport = yield
    if report.when == "call":
        shots = [str(value) for name, value in item.user_properties if name == "screenshot"]
        if shots:
            report.sections.append(("screenshots", "\n".join(shots)))
    return report

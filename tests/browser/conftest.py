"""Fixtures of the browser tests: the app served by gunicorn on a free port (testing settings,
a migrated SQLite file of this run) and Debian's headless Chromium driven by Playwright.

The server is started by the integration rig (`support.integration_stack`,
`support.live_server`) and stopped by PID when the module's tests are done.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from blog_api import create_app
from support import RUN_ID
from support.integration_stack import stack_in
from support.live_server import LiveServer, start_gunicorn


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[LiveServer]:
    """gunicorn serving the app; the docs need neither a broker nor a worker."""
    make_app = functools.partial(create_app, "testing")
    with stack_in(tmp_path_factory, f"browser_{RUN_ID}", database_url, make_app) as stack:
        yield start_gunicorn(stack, workers=1)


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

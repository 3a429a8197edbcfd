"""Swagger UI of each API version, rendered by a real browser (Debian's Chromium, headless,
driven by Playwright): every operation of the version's OpenAPI document is on the page, and
the page loads nothing from anywhere but the server itself (it must work offline).

Screenshots are saved in the test's tmp dir; their paths are in the report (`screenshot`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Route, sync_playwright

from support import require_service
from support.live_server import LiveServer, http_get

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = [pytest.mark.integration, SQLITE_ONLY]

CHROMIUM = Path("/usr/bin/chromium")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Flags for a headless Chromium that talks to nobody but the page's server.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def openapi_operations(server: LiveServer, version: str) -> set[tuple[str, str]]:
    status, body = http_get(f"{server.url}/api/{version}/openapi.json")
    assert status == 200, body
    document = json.loads(body)
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


class RecordingBrowser:
    """A Chromium profile that records every request its pages make and lets through only
    those to `origin` (others are recorded, then aborted: the test never reaches outside)."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.context = context
        self.origin = origin
        self.requests: list[str] = []
        self.errors: list[str] = []
        context.route("**/*", self._route)
        context.on("page", self._watch)

    def _route(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url == self.origin or url.startswith(self.origin + "/"):
            route.continue_()
        else:
            route.abort()

    def _watch(self, page: Page) -> None:
        page.on("websocket", lambda socket: self.requests.append(socket.url))
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                message.type == "error" and self.errors.append(f"console: {message.text}")
            ),
        )

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.origin + "/")]


@pytest.fixture(scope="module")
def browser(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        require_service(
            "Chromium (/usr/bin/chromium, Debian package chromium)", FileNotFoundError()
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
            timeout=60_000,  # generous: the machine may be busy
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_swagger_ui_shows_every_operation_without_leaving_the_server(
    live_server: LiveServer,
    browser: BrowserContext,
    version: str,
    tmp_path: Path,
    record_property: Any,
) -> None:
    expected = openapi_operations(live_server, version)
    recorder = RecordingBrowser(browser, live_server.url)
    page = browser.new_page()
    try:
        page.goto(f"{live_server.url}/api/{version}/docs", wait_until="networkidle")
        page.locator(".opblock").first.wait_for()
        page.wait_for_load_state("networkidle")
        screenshot = tmp_path / f"swagger-ui-{version}.png"
        page.screenshot(path=str(screenshot), full_page=True)
        record_property("screenshot", str(screenshot))
        shown = page.eval_on_selector_all(
            ".opblock",
            """blocks => blocks.map(block => [
                block.querySelector('.opblock-summary-method').textContent.trim(),
                block.querySelector('.opblock-summary-path').getAttribute('data-path'),
            ])""",
        )
        title = page.locator(".information-container .title").inner_text()
        authorize = page.locator("button.authorize").count()
    finally:
        page.close()

    assert expected, "the OpenAPI document lists no operation"
    assert {(method, path) for method, path in shown} == expected
    assert len(shown) == len(expected), "an operation is shown twice"
    assert title.startswith("Blog API"), title
    assert authorize == 1, "no Authorize button for the bearer token"
    assert f"{live_server.url}/api/{version}/openapi.json" in recorder.requests
    assert recorder.foreign_requests() == []
    assert recorder.errors == []

"""`make run`'s stack (scripts/run-stack.sh under honcho): the API with its worker, its own
redis-server and the printing SMTP sink, and Flower, which answers only with the credentials
given in FLOWER_BASIC_AUTH and then shows the stack's worker.

The script runs with free ports and a temp state directory (VAR_DIR), never the developer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path

import pytest

from support.integration_stack import Service, Stack, free_port, wait_until
from support.live_server import basic_auth, http_get, http_request, http_status, wait_for_http

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = [pytest.mark.integration, SQLITE_ONLY]

RUN_STACK = Path(__file__).resolve().parents[2] / "scripts" / "run-stack.sh"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-secret"


def stop_honcho(honcho: Service) -> None:
    """SIGTERM lets honcho stop its children; each runs in a session of its own, so if honcho
    had to be killed, they are killed by the pids it logged."""
    if honcho.stop(signal.SIGTERM, timeout=30) == -signal.SIGKILL:
        for pid in re.findall(r"started \(pid=(\d+)\)", honcho.log()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


def test_dev_stack_serves_the_api_and_flower_behind_basic_auth(bare_stack: Stack) -> None:
    web_port, flower_port, redis_port = free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    web, flower = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{flower_port}"
    honcho = bare_stack.start(
        "run-stack",
        ["bash", str(RUN_STACK)],
        bare_stack.env(
            FLASK_ENV="development",
            VAR_DIR=str(bare_stack.tmp_path / "var"),
            WEB_PORT=str(web_port),
            REDIS_PORT=str(redis_port),
            # Spelled out so that a developer's .env (read in development) cannot point
            # this stack at another broker.
            CELERY_BROKER_URL=redis_url,
            RATELIMIT_STORAGE_URI=redis_url,
            FLOWER_PORT=str(flower_port),
            FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        ),
    )
    try:
        wait_for_http(honcho, f"{web}/ready", {200}, timeout=90)
        wait_for_http(honcho, f"{flower}/healthcheck", {200, 401}, timeout=60)

        for path in ("/", "/workers", "/api/workers"):
            assert http_status(flower + path) == 401, path
            assert http_status(flower + path, basic_auth(FLOWER_USER, "wrong")) == 401, path
            assert http_status(flower + path, basic_auth("intruder", FLOWER_PASSWORD)) == 401
            assert http_status(flower + path, basic_auth(FLOWER_USER, FLOWER_PASSWORD)) == 200

        def flower_sees_the_worker() -> bool:
            status, body = http_get(
                f"{flower}/api/workers?refresh=1", basic_auth(FLOWER_USER, FLOWER_PASSWORD), 10
            )
            return status == 200 and bool(json.loads(body))

        wait_until(flower_sees_the_worker, 60, "Flower to list the stack's worker", 1.0)

        login = {"username": "devstack", "password": "dev stack password"}
        user = login | {"email": "d@example.com"}
        assert http_request("POST", f"{web}/api/v1/users", user)[0] == 201
        status, body = http_request("POST", f"{web}/api/v1/login", login)
        assert status == 200, body
        token = json.loads(body)["access_token"]
        post = {"title": "From make run", "content": "Hello"}
        headers = {"Authorization": f"Bearer {token}"}
        assert http_request("POST", f"{web}/api/v1/posts", post, headers)[0] == 201
        bare_stack.wait_for_log(honcho, "--- e-mail to d@example.com ---", timeout=60)
        # The post's own e-mail (registering also sent a confirmation e-mail to the address).
        bare_stack.wait_for_log(honcho, "Subject: Your post 'From make run' is published", 60)
    finally:
        stop_honcho(honcho)

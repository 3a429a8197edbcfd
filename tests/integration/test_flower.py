"""Flower, the Celery monitor of the dev stack, answers only with the credentials it was given
in FLOWER_BASIC_AUTH, and with them shows the workers of its broker."""

from __future__ import annotations

import json

import pytest
from integration_stack import Stack, free_port, wait_until
from live_server import basic_auth, http_get, http_status, start_flower

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = [pytest.mark.integration, SQLITE_ONLY]


def _workers(url: str, headers: dict[str, str]) -> dict[str, object]:
    status, body = http_get(f"{url}/api/workers?refresh=1", headers, timeout=10)
    return dict(json.loads(body)) if status == 200 else {}


def test_flower_needs_its_basic_auth_credentials(bare_stack: Stack) -> None:
    port = free_port()
    bare_stack.start_redis(port)
    bare_stack.configure(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    worker = bare_stack.start_worker()
    flower = start_flower(bare_stack, "ops:flower-test-secret")

    for path in ("/", "/workers", "/api/workers"):
        assert http_status(flower.url + path) == 401, path
        assert http_status(flower.url + path, basic_auth("ops", "wrong")) == 401, path
        assert http_status(flower.url + path, basic_auth("intruder", "flower-test-secret")) == 401
        assert http_status(flower.url + path, basic_auth("ops", "flower-test-secret")) == 200, path

    node = f"{bare_stack.queue}-w1@"
    credentials = basic_auth("ops", "flower-test-secret")
    wait_until(
        lambda: any(name.startswith(node) for name in _workers(flower.url, credentials)),
        60,
        lambda: f"Flower to list worker {node}*; worker log:\n{worker.log()[-2000:]}",
        interval=1.0,
    )

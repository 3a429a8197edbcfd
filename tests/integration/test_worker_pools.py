"""The worker with each execution pool it may run with: prefork (the default, Linux and macOS),
solo (Windows, where prefork does not work: the tutorial's `--pool=solo`) and threads. Its relay
publishes, its tasks deliver each e-mail once on the connection they keep, its heartbeat shows
in `/metrics`, and a warm shutdown says QUIT on every kept SMTP connection."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from harness.launcher import wait_until
from support import heartbeat_ages
from support.integration_stack import POSTGRESQL_ONLY, Stack, assert_each_effect_once, create_posts

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]


@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_each_pool_delivers_every_email_once_beats_and_quits_its_smtp_connections(
    stack: Stack, make_account: Callable[..., Any], pool: str
) -> None:
    """PostgreSQL only: the worker's pool is under test, not the database."""
    stack.configure(WORKER_HEARTBEAT_INTERVAL=0.5)
    sink = stack.start_sink()
    worker = stack.start_worker(pool=pool, concurrency=2)
    app = stack.app()
    client = app.test_client()
    author = make_account(email="pools@example.com")

    posts = create_posts(client, author.headers, 6, versions=("v1", "v2"))
    assert_each_effect_once(stack, app, posts, within=60)
    node = f"{stack.queue}-w1@"
    wait_until(
        lambda: any(
            name.startswith(node) and age < 3 for name, age in heartbeat_ages(client).items()
        ),
        30,
        f"a fresh heartbeat of {node}",
    )
    # Messages after the first on one connection: the connections are kept between tasks.
    peers = [record["peer"] for record in stack.deliveries()]
    assert len(set(peers)) < len(peers), peers

    assert worker.stop() == 0
    wait_until(
        lambda: set(re.findall(r"--- (\S+) said QUIT ---", sink.log())) >= set(peers),
        10,
        lambda: f"QUIT on every connection of {sorted(set(peers))}:\n{sink.log()[-2000:]}",
    )

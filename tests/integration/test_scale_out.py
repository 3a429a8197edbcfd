"""Scale-out: two workers with distinct node names, each with its relay, on one broker and one
PostgreSQL database process 500 posts: every e-mail and every v2 audit line exactly once, both
workers share the work, and both relays publish (they split the due jobs with `FOR UPDATE SKIP
LOCKED`).

Four clients post at once through two API processes, as several API machines would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.launcher import Service, free_port
from support.integration_stack import POSTGRESQL_ONLY, Stack, assert_each_effect_once, create_posts

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]
POSTS = 500
EFFECT_LINES = ("Email sent to user", "Audit record written for post")


def effects_logged(worker: Service) -> int:
    return sum(any(e in line for e in EFFECT_LINES) for line in worker.log().splitlines())


def jobs_relayed(worker: Service) -> int:
    """Messages this worker's relay published (its DEBUG line per pass)."""
    return sum(int(n) for n in re.findall(r"Relay published (\d+) job", worker.log()))


def test_two_workers_with_two_relays_process_500_posts_each_effect_once(
    bare_stack: Stack, make_account: Callable[..., Any]
) -> None:
    stack = bare_stack
    stack.configure(
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        # Long enough that a job waiting its turn in the queue is rarely published twice.
        JOB_REPUBLISH_AFTER=10,
        WORKER_HEARTBEAT_INTERVAL=1,
    )
    port = int(stack.broker_url.rsplit(":", 1)[1].split("/")[0])
    stack.start_redis(port)
    sink = stack.start_sink(wait=False)
    # DEBUG for the package's loggers: each relay pass logs how many jobs it published.
    workers = [stack.start_worker(concurrency=2, wait=False, LOG_LEVEL="DEBUG") for _ in (1, 2)]
    first_api, second_api = stack.app(), stack.app()
    author = make_account(email="scale@example.com")
    stack.wait_until_ready(sink, *workers)

    quarter = POSTS // 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = [
            pool.submit(create_posts, api.test_client(), author.headers, quarter, title=title)
            for api, title in [
                (first_api, "First A"),
                (first_api, "First B"),
                (second_api, "Second A"),
                (second_api, "Second B"),
            ]
        ]
        posts = [post for batch in batches for post in batch.result()]
    assert_each_effect_once(stack, first_api, posts, within=240)
    jobs = POSTS + sum(post.version == "v2" for post in posts)
    per_worker = [effects_logged(worker) for worker in workers]
    assert sum(per_worker) == jobs, per_worker
    assert all(count > 0 for count in per_worker), per_worker
    relayed = [jobs_relayed(worker) for worker in workers]
    assert sum(relayed) >= jobs, relayed
    assert all(count > 0 for count in relayed), relayed
    names = {f"{stack.queue}-w{n}@" for n in (1, 2)}
    metrics = first_api.test_client().get("/metrics").get_data(as_text=True)
    for name in names:
        assert f'blog_api_worker_heartbeat_age_seconds{{worker="{name}' in metrics

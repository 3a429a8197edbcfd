"""Scale-out: two workers with distinct node names and two sweepers (two `celery beat`
processes) on one broker and one PostgreSQL database process 500 posts, every e-mail and every
v2 audit line exactly once, and both workers share the work.

Four clients post at once. Half of the posts are created by an API process whose broker is
unreachable, so their jobs reach the queue only through the two concurrent sweepers (`FOR UPDATE
SKIP LOCKED`); the other half take the fast path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from integration_stack import (
    POSTGRESQL_ONLY,
    Service,
    Stack,
    assert_each_effect_once,
    create_posts,
    free_port,
    wait_for_jobs,
)

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]
POSTS = 500
EFFECT_LINES = ("Email sent to user", "Audit record written for post")


def effects_logged(worker: Service) -> int:
    return sum(any(e in line for e in EFFECT_LINES) for line in worker.log().splitlines())


def jobs_swept(worker: Service) -> int:
    return sum(int(n) for n in re.findall(r"Sweeper re-published (\d+) job", worker.log()))


def test_two_workers_and_two_sweepers_process_500_posts_each_effect_once(
    bare_stack: Stack, make_account: Callable[..., Any]
) -> None:
    stack = bare_stack
    stack.configure(
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        # Long enough that the fast-path half is rarely re-published while it waits its turn
        # in the queue; the other half becomes due for the sweepers this long after creation.
        JOB_REPUBLISH_AFTER=10,
        WORKER_HEARTBEAT_INTERVAL=1,
    )
    port = int(stack.broker_url.rsplit(":", 1)[1].split("/")[0])
    stack.start_redis(port)
    sink = stack.start_sink(wait=False)
    workers = [stack.start_worker(concurrency=2, wait=False) for _ in range(2)]
    beats = [stack.start_beat(f"beat{number}", wait=False) for number in (1, 2)]
    app = stack.app()
    # An API process cut off from the broker: its jobs wait in the outbox for the sweepers.
    cut_off = stack.app(CELERY_BROKER_URL="redis://127.0.0.1:1/0", JOB_DISPATCH_COOLDOWN=3600)
    author = make_account(email="scale@example.com")
    stack.wait_until_ready(sink, *workers)
    for beat in beats:
        stack.wait_for_log(beat, "beat: Starting")

    # Four clients post at once, two per API process, as several API machines would.
    quarter = POSTS // 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = [
            pool.submit(create_posts, api.test_client(), author.headers, quarter, title=title)
            for api, title in [
                (app, "Fast A"),
                (app, "Fast B"),
                (cut_off, "Swept A"),
                (cut_off, "Swept B"),
            ]
        ]
        fast_a, fast_b, swept_a, swept_b = (batch.result() for batch in batches)
    swept = swept_a + swept_b
    posts = fast_a + fast_b + swept
    wait_for_jobs(stack, app, [post.id for post in posts], timeout=240)

    assert_each_effect_once(stack, app, posts)
    jobs = POSTS + sum(post.version == "v2" for post in posts)
    per_worker = [effects_logged(worker) for worker in workers]
    assert sum(per_worker) == jobs, per_worker
    assert all(count > 0 for count in per_worker), per_worker
    # Every job of the cut-off half was published by a sweep, from both schedulers.
    swept_jobs = len(swept) + sum(post.version == "v2" for post in swept)
    assert sum(jobs_swept(worker) for worker in workers) >= swept_jobs
    for beat in beats:
        assert "Sending due task sweep-jobs" in beat.log(), beat.log()
    names = {f"{stack.queue}-w{n}@" for n in (1, 2)}
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    for name in names:
        assert f'blog_api_worker_heartbeat_age_seconds{{worker="{name}' in metrics

"""Fixtures of the integration tier: a `Stack` (SMTP sink + Celery workers as subprocesses) on
the run's database, with its own queue name on the machine's Redis (or another broker).

`stack` depends on `make_app`, so its processes are stopped before `make_app` empties the
tables. When a test fails, the logs of every process it started are attached to the report.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest
from kombu import Connection

from support import RUN_ID, require_service
from support.integration_stack import Stack, purge_redis_queue

_queue_numbers = itertools.count(1)
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def bare_stack(make_stack: Callable[[str], Stack]) -> Stack:
    """A stack without a broker chosen yet (`stack.configure(CELERY_BROKER_URL=...)`)."""
    return make_stack(f"it_{RUN_ID}_{next(_queue_numbers)}")


@pytest.fixture
def stack(bare_stack: Stack, redis_url: str) -> Iterator[Stack]:
    """A stack whose broker is the machine's Redis (this run's db, this test's queue)."""
    bare_stack.configure(CELERY_BROKER_URL=redis_url)
    yield bare_stack
    bare_stack.close()
    purge_redis_queue(redis_url, bare_stack.queue)


@pytest.fixture
def rabbitmq_stack(bare_stack: Stack) -> Iterator[Stack]:
    """A stack on RabbitMQ; its queue and exchange are deleted afterwards."""
    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:
        require_service("RabbitMQ", error)
    bare_stack.configure(CELERY_BROKER_URL=RABBITMQ_URL)
    yield bare_stack
    bare_stack.close()
    with Connection(RABBITMQ_URL, connect_timeout=3) as connection:
        channel = connection.channel()
        channel.queue_delete(bare_stack.queue)
        channel.exchange_delete(bare_stack.queue)

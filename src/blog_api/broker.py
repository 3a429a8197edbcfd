"""The broker's settings, derived from the Flask configuration, and the readiness check of the
broker. No Celery here: a web server only writes jobs to the database (the relay in each worker
publishes them), so its process never loads Celery; it reads these settings for `/ready`."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from kombu import Connection

from blog_api.config import ConfigError


def check_timeouts(config: Mapping[str, Any]) -> None:
    """Refuse timeouts that would let a job run twice by accident (reliability §1.3, §2.3)."""
    chain = [
        ("MAIL_TIMEOUT", config["MAIL_TIMEOUT"]),
        ("TASK_SOFT_TIME_LIMIT", config["TASK_SOFT_TIME_LIMIT"]),
        ("TASK_TIME_LIMIT", config["TASK_TIME_LIMIT"]),
        ("JOB_LEASE_SECONDS", config["JOB_LEASE_SECONDS"]),
        ("BROKER_VISIBILITY_TIMEOUT", config["BROKER_VISIBILITY_TIMEOUT"]),
    ]
    for (low_name, low), (high_name, high) in itertools.pairwise(chain):
        if not low < high:
            raise ConfigError(f"{low_name} ({low}) must be less than {high_name} ({high})")


def celery_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Lower-case Celery settings derived from the Flask configuration."""
    check_timeouts(config)
    broker_url = config["CELERY_BROKER_URL"] or config["REDIS_URL"] or "redis://127.0.0.1:6379/0"
    transport_options: dict[str, Any] = {
        "visibility_timeout": config["BROKER_VISIBILITY_TIMEOUT"],
    }
    if broker_url.startswith(("redis://", "rediss://")):
        # Finite socket timeouts so that no publish or consume blocks forever on a hung Redis.
        transport_options |= {"socket_timeout": 10, "socket_connect_timeout": 3}
        # A message whose consumer never acknowledged it (a killed worker, or Redis restarted
        # from its AOF) is restored after the visibility timeout plus at most 10 s; kombu's
        # default checks only every tenth 10 s tick, up to 100 s late.
        transport_options["unacked_restore_throttle"] = 1
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": config["CELERY_QUEUE"],
        "task_create_missing_queues": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # A crash means redelivery, never loss; the job claim makes redelivery harmless.
        "task_acks_late": True,
        "worker_prefetch_multiplier": config["CELERY_PREFETCH_MULTIPLIER"],
        # A killed pool child is re-driven by the relay once its lease expires, and the
        # attempt counter dead-letters a job that keeps killing workers (no poison loop).
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": config["TASK_SOFT_TIME_LIMIT"],
        "task_time_limit": config["TASK_TIME_LIMIT"],
        "worker_hijack_root_logger": False,
    }


def check_broker(settings: Mapping[str, Any], timeout: int) -> None:
    """Connect to the broker once (raises when it does not answer within `timeout`)."""
    with Connection(
        settings["broker_url"],
        transport_options=settings["broker_transport_options"],
        connect_timeout=timeout,
    ) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)

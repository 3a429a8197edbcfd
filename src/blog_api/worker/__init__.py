"""The worker's front door: Celery wired the way Flask documents it (one Celery app per Flask
app, every task in that app's context, settings from the `CELERY` mapping built here), the
tasks, the worker's own threads (heartbeat, relay) and its logging.

Worker:  celery -A blog_api.wsgi.celery_app worker --loglevel=INFO
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, cast

from celery import Celery, Task
from flask import Flask

from blog_api.config import ConfigError

# Imported with this package, so that every Celery app knows the tasks: a worker never drops
# a message as "unregistered".
from blog_api.worker import signals, tasks  # noqa: F401
from blog_api.worker.bootsteps import HeartbeatStep, RelayStep


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


class FlaskCelery(Celery):
    """A Celery app bound to one Flask app: its tasks and worker threads use that app."""

    def __init__(self, flask_app: Flask) -> None:
        super().__init__(flask_app.name, task_cls=FlaskTask)
        self.flask_app = flask_app


class FlaskTask(Task):
    """Runs every task inside an app context of its Celery app's Flask app."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with cast(FlaskCelery, self.app).flask_app.app_context():
            return self.run(*args, **kwargs)


def celery_init_app(app: Flask) -> FlaskCelery:
    """Create the Celery app bound to `app` (Flask's documented pattern), configured from
    `app.config["CELERY"]` (see `celery_settings`)."""
    celery_app = FlaskCelery(app)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    celery_app.steps["worker"].update({HeartbeatStep, RelayStep})
    signals.connect_logging(app)
    app.extensions["celery"] = celery_app
    return celery_app

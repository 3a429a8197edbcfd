"""Celery wired the way Flask documents it: one Celery app per Flask app, every task in an
app context, settings from a `CELERY` mapping built from our configuration.

Worker:  celery -A blog_api.wsgi.celery_app worker --beat --loglevel=INFO
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from contextvars import Token
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.signals import (
    after_setup_logger,
    task_postrun,
    task_prerun,
    worker_process_shutdown,
)
from flask import Flask

from blog_api.config import ConfigError
from blog_api.ops.logging import begin_job_log_scope, end_job_log_scope, tag_worker_handlers


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
    if not config["MAIL_RETRY_BACKOFF_MAX"] < config["BROKER_VISIBILITY_TIMEOUT"]:
        raise ConfigError("MAIL_RETRY_BACKOFF_MAX must be less than BROKER_VISIBILITY_TIMEOUT")


def celery_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Lower-case Celery settings derived from the Flask configuration."""
    check_timeouts(config)
    broker_url = config["CELERY_BROKER_URL"] or config["REDIS_URL"] or "redis://127.0.0.1:6379/0"
    transport_options: dict[str, Any] = {
        "visibility_timeout": config["BROKER_VISIBILITY_TIMEOUT"],
    }
    if broker_url.startswith(("redis://", "rediss://")):
        # Finite socket timeouts so that no publish or consume blocks forever on a hung Redis.
        # (A request's wait is bounded separately by the dispatcher, see jobs/outbox.py.)
        transport_options |= {"socket_timeout": 10, "socket_connect_timeout": 3}
        # A message whose consumer never acknowledged it (a killed worker, or Redis restarted
        # from its AOF) is restored after the visibility timeout plus at most 10 s; kombu's
        # default checks only every tenth 10 s tick, up to 100 s late.
        transport_options["unacked_restore_throttle"] = 1
    queue = config["CELERY_QUEUE"]
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": queue,
        "task_create_missing_queues": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # A crash means redelivery, never loss; the job claim makes redelivery harmless.
        "task_acks_late": True,
        "worker_prefetch_multiplier": config["CELERY_PREFETCH_MULTIPLIER"],
        # A killed pool child is re-driven by the sweeper once its lease expires, and the
        # attempt counter dead-letters a job that keeps killing workers (no poison loop).
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": config["TASK_SOFT_TIME_LIMIT"],
        "task_time_limit": config["TASK_TIME_LIMIT"],
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "sweep-jobs": {
                "task": "blog_api.sweep_jobs",
                "schedule": timedelta(seconds=config["JOB_SWEEP_INTERVAL"]),
                "options": {"queue": queue},
            },
            "purge-expired-tokens": {
                "task": "blog_api.purge_expired_tokens",
                "schedule": timedelta(hours=1),
                "options": {"queue": queue},
            },
        },
    }


# The log scope of each task run in this process, from task_prerun to task_postrun: it covers
# Celery's own "succeeded" / "retry" line, which is logged after the task body returns.
_log_scopes: dict[tuple[int, str], Token[dict[str, str] | None]] = {}


@task_prerun.connect
def open_job_log_scope(task_id: str, **_: Any) -> None:
    _log_scopes[threading.get_ident(), task_id] = begin_job_log_scope()


@task_postrun.connect
def close_job_log_scope(task_id: str, **_: Any) -> None:
    token = _log_scopes.pop((threading.get_ident(), task_id), None)
    if token is not None:
        end_job_log_scope(token)


@worker_process_shutdown.connect
def close_smtp_connection(**_: Any) -> None:
    """A pool process that exits says QUIT on the SMTP connection it kept."""
    from blog_api.services.mailer import close_kept_connection

    close_kept_connection()


def celery_init_app(app: Flask) -> Celery[Any]:
    """Create the Celery app bound to `app` (Flask's documented pattern)."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    # Importing the tasks registers them on this app: a worker never drops a message as
    # "unregistered".
    from blog_api.jobs import tasks  # noqa: F401
    from blog_api.jobs.heartbeat import install_heartbeat

    install_heartbeat(celery_app, app)

    def tag_celery_log_lines(logger: Any, format: str, **_: Any) -> None:
        tag_worker_handlers(logger, app.config["LOG_FORMAT"], format)

    # A worker process builds one app; the first app of a process owns this receiver.
    after_setup_logger.connect(tag_celery_log_lines, weak=False, dispatch_uid="blog_api.logging")
    return celery_app

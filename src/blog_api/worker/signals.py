"""Celery signal receivers of a worker: each task run's log scope, the database and SMTP
connections of a pool process, our log format on Celery's own handlers, and the metrics
directory its pool processes count in."""

from __future__ import annotations

import threading
from contextvars import Token
from typing import Any

from celery.signals import (
    after_setup_logger,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from flask import Flask

from blog_api.effects.mailer import close_kept_connections
from blog_api.extensions import db
from blog_api.logs import (
    begin_job_log_scope,
    end_job_log_scope,
    log_json_from_the_start,
    tag_worker_handlers,
)
from blog_api.ops.metrics import empty_multiprocess_directory

# The log scope of each task run in this process, from task_prerun to task_postrun: it covers
# Celery's own "succeeded" line, which is logged after the task body returns.
_log_scopes: dict[tuple[int, str], Token[dict[str, str] | None]] = {}


@task_prerun.connect
def open_job_log_scope(task_id: str, **_: Any) -> None:
    _log_scopes[threading.get_ident(), task_id] = begin_job_log_scope()


@task_postrun.connect
def close_job_log_scope(task_id: str, **_: Any) -> None:
    token = _log_scopes.pop((threading.get_ident(), task_id), None)
    if token is not None:
        end_job_log_scope(token)


@worker_init.connect
def start_counting_afresh(**_: Any) -> None:
    """In the worker's main process, before its pool starts: the files of an earlier run (a pid
    used again would take its counts over) leave the metrics directory (ops/metrics.py)."""
    empty_multiprocess_directory()


@worker_process_shutdown.connect
@worker_shutdown.connect
def close_smtp_connections(**_: Any) -> None:
    """A process that ran tasks says QUIT on the SMTP connections it kept when it exits: a
    prefork pool's child (worker_process_shutdown), or the worker itself when the tasks ran
    in it (the solo and threads pools, e.g. on Windows; worker_shutdown comes after the pool
    has stopped)."""
    close_kept_connections()


def connect_logging(app: Flask) -> None:
    """Give the handlers Celery sets up in a worker our filter and `LOG_FORMAT`."""

    def tag_celery_log_lines(logger: Any, format: str, **_: Any) -> None:
        tag_worker_handlers(logger, app.config["LOG_FORMAT"], format)

    def only_json_lines(instance: Any, **_: Any) -> None:
        # With LOG_FORMAT=json every line of the worker's output is a JSON object: no banner
        # (Celery prints it outside logging), and JSON before Celery's handlers exist.
        if app.config["LOG_FORMAT"] == "json":
            instance.quiet = True
            log_json_from_the_start()

    # A worker process builds one app; the first app of a process owns these receivers.
    after_setup_logger.connect(tag_celery_log_lines, weak=False, dispatch_uid="blog_api.logging")
    celeryd_init.connect(only_json_lines, weak=False, dispatch_uid="blog_api.json_lines")


def connect_pool_processes(app: Flask) -> None:
    """A forked pool process must not reuse the database connections of its parent."""

    def dispose_inherited_connections(**_: Any) -> None:
        with app.app_context():
            db.engine.dispose(close=False)

    worker_process_init.connect(
        dispose_inherited_connections, weak=False, dispatch_uid="blog_api.pool_connections"
    )

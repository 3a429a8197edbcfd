"""Stage 4 of a post's path, the worker's front door: Celery wired the way Flask documents it
(one Celery app per Flask app, every task in that app's context, settings from the `CELERY`
mapping that `blog_api.broker` builds), the tasks (each one attempt at a job, with its effect
from `blog_api.effects`), the worker's own threads (heartbeat, relay) and its logging.

Worker:  celery -A blog_api.wsgi.celery_app worker --loglevel=INFO

Only processes that publish or run tasks build a Celery app: the worker (`blog_api.wsgi`'s
`celery_app`, built on first access) and the `flask` command line; a web server never imports
Celery (see `blog_api.broker`).
"""

from __future__ import annotations

from typing import Any, cast

from celery import Celery, Task
from flask import Flask

# Imported with this package, so that every Celery app knows the tasks: a worker never drops
# a message as "unregistered".
from blog_api.jobs.errors import AttemptFailed
from blog_api.worker import signals, tasks  # noqa: F401
from blog_api.worker.bootsteps import HeartbeatStep, MetricsServerStep, RelayStep


class FlaskCelery(Celery):
    """A Celery app bound to one Flask app: its tasks and worker threads use that app."""

    def __init__(self, flask_app: Flask) -> None:
        super().__init__(flask_app.name, task_cls=FlaskTask)
        self.flask_app = flask_app


class FlaskTask(Task):
    """Runs every task inside an app context of its Celery app's Flask app.

    A failed attempt ends its task run with `AttemptFailed`, after the outbox recorded it: the
    run is a failure in Flower, and the worker logs Celery's "raised expected" line at INFO,
    without a traceback (the attempt's own warning says why). The message is acknowledged all
    the same (`task_acks_on_failure_or_timeout`), and no task has `autoretry_for` nor calls
    `retry`: Celery sends nothing again, the relay publishes the job when its row is due.
    """

    throws = (AttemptFailed,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with cast(FlaskCelery, self.app).flask_app.app_context():
            return self.run(*args, **kwargs)


def celery_init_app(app: Flask) -> FlaskCelery:
    """Create the Celery app bound to `app` (Flask's documented pattern), configured from
    `app.config["CELERY"]` (see `celery_settings`)."""
    celery_app = FlaskCelery(app)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    celery_app.steps["worker"].update({HeartbeatStep, RelayStep, MetricsServerStep})
    signals.connect_logging(app)
    signals.connect_pool_processes(app)
    app.extensions["celery"] = celery_app
    return celery_app

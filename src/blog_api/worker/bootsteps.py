"""The worker's own threads, started in its main process after the pool (never in a pool child,
so no task waits for them) and stopped at shutdown: the heartbeat, the relay that publishes
due jobs, and the metrics endpoint (WORKER_METRICS_PORT). A worker and its relay share fate:
where workers run, jobs are published.

Celery's StartStopStep starts and stops the object its `create` returns.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import bootsteps
from celery.concurrency.prefork import TaskPool as PreforkPool

from blog_api.config import ConfigError
from blog_api.jobs import deliveries, outbox
from blog_api.jobs.relay import Relay
from blog_api.ops.metrics import MULTIPROCESS_DIRECTORY, MetricsServer, multiprocess_directory
from blog_api.services.idempotency import prune_expired_keys
from blog_api.services.tokens import purge_expired_tokens
from blog_api.worker.heartbeat import Heartbeat
from blog_api.worker.tasks import publish_jobs

AFTER_THE_POOL = ("celery.worker.components:Pool",)


class HeartbeatStep(bootsteps.StartStopStep):
    requires = AFTER_THE_POOL

    # celery-types declares Step.create as returning None; Celery starts what it returns.
    def create(self, parent: Any) -> Heartbeat:  # type: ignore[override]
        return Heartbeat(parent.app.flask_app, parent.hostname)


class RelayStep(bootsteps.StartStopStep):
    """The relay, in every worker unless JOB_RELAY is off; it also runs retention hourly."""

    requires = AFTER_THE_POOL

    def include_if(self, parent: Any) -> bool:
        return bool(parent.app.flask_app.config["JOB_RELAY"])

    def create(self, parent: Any) -> Relay:  # type: ignore[override]
        return Relay(
            parent.app.flask_app,
            partial(publish_jobs, parent.app),
            chores=[
                outbox.prune_finished_jobs,
                deliveries.prune_finished_deliveries,
                purge_expired_tokens,
                prune_expired_keys,
            ],
            name=f"relay-{parent.hostname}",
        )


class MetricsServerStep(bootsteps.StartStopStep):
    """`/metrics` on WORKER_METRICS_PORT (unset: none): the job attempts of this worker."""

    requires = AFTER_THE_POOL

    def include_if(self, parent: Any) -> bool:
        return parent.app.flask_app.config["WORKER_METRICS_PORT"] is not None

    def create(self, parent: Any) -> MetricsServer:  # type: ignore[override]
        # Pool processes count in their own memory, which the main process cannot read: only
        # the files of multiprocess mode carry their counts to it.
        if issubclass(parent.pool_cls, PreforkPool) and not multiprocess_directory():
            raise ConfigError(
                f"WORKER_METRICS_PORT with the prefork pool needs {MULTIPROCESS_DIRECTORY}"
            )
        config = parent.app.flask_app.config
        return MetricsServer(
            config["WORKER_METRICS_ADDRESS"], config["WORKER_METRICS_PORT"], config["METRICS_TOKEN"]
        )

"""Worker heartbeats: every worker records "I am alive" in the database every few seconds.

A worker bootstep (`blog_api.worker.bootsteps`) starts one daemon thread in the worker's main
process (never in a pool child, so a task is never delayed by it, and a stuck database only
stalls this thread). The thread writes the worker's node name and the time to
`worker_heartbeats`, and drops rows silent for longer than `WORKER_HEARTBEAT_FORGET_AFTER`.
`/metrics` reads the rows (see ops/health.py), so any API process on any machine shows every
worker's heartbeat age.
"""

from __future__ import annotations

import logging

from flask import Flask

from blog_api.jobs.heartbeats import forget_silent_workers, record_heartbeat
from blog_api.jobs.threads import WorkerThread
from blog_api.models.base import utcnow

log = logging.getLogger(__name__)


class Heartbeat(WorkerThread):
    """The thread that beats for one worker until `stop()`."""

    stop_timeout = 5.0

    def __init__(self, app: Flask, worker: str) -> None:
        super().__init__(app, f"heartbeat-{worker}")
        self.worker = worker
        self.interval = float(app.config["WORKER_HEARTBEAT_INTERVAL"])
        self.started_at = utcnow()

    def beat(self) -> None:
        """One heartbeat; a database failure is logged (once per outage) and never raised."""
        try:
            with self.app.app_context():
                record_heartbeat(self.worker, self.started_at)
                forget_silent_workers()
        except Exception as error:
            if not self._failing:
                log.warning("Worker heartbeat of %s not recorded: %r", self.worker, error)
            self._failing = True
        else:
            if self._failing:
                log.info("Worker heartbeat of %s recorded again", self.worker)
            self._failing = False

    def run(self) -> None:
        while True:
            self.beat()
            if self._stopping.wait(self.interval):
                return

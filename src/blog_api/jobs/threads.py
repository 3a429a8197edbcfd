"""The worker's own threads (the relay, the heartbeat) share one shape: a daemon thread in the
worker's main process that loops until `stop()`."""

from __future__ import annotations

import threading

from flask import Flask


class WorkerThread:
    """A daemon thread bound to `app` that runs `run` until `stop()`; `run` waits on
    `self._stopping` between rounds, and `self._failing` remembers an outage so that it is
    logged once, not once per round."""

    stop_timeout = 10.0

    def __init__(self, app: Flask, name: str) -> None:
        self.app = app
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        self._thread.join(self.stop_timeout if timeout is None else timeout)

    def run(self) -> None:
        raise NotImplementedError

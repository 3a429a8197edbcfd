"""CPU time per call, in this process and in the database server: a call's own cost, little
moved by the rest of a loaded machine. With PostgreSQL the queries run in the server's backend
processes, not in ours; their CPU time (/proc/<pid>/schedstat, the server runs on this machine)
is counted beside ours, so that a query that grows with its table cannot hide there.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from harness.stack import PG_ADMIN_URL


@dataclass
class Probe:
    """One measured path: `call` is timed, `prepare` (untimed) runs before each call."""

    label: str
    call: Callable[[], None]
    prepare: Callable[[], None] | None = None


class ServerClock:
    """CPU time (ns) of the PostgreSQL backends connected to one database; always 0 for SQLite,
    whose work is done in our process (and for a server on another machine, whose processes
    /proc does not show)."""

    def __init__(self, postgresql_database: str | None) -> None:
        self.name = postgresql_database
        self.pids: list[int] = []

    def refresh(self) -> None:
        """The backends open now (after a warm-up the pool holds every one the app uses)."""
        if self.name is None:
            return
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchall()
        self.pids = [row[0] for row in rows]

    def ns(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        return total


def measure_probes(
    probes: list[Probe], calls: int, repetitions: int, warm_up: int, server: ServerClock
) -> dict[str, list[float]]:
    """{label: [median ms in this process, median ms in the server]} per call, over the
    repetitions (interleaved: every probe once per repetition), after `warm_up` calls of each."""
    for probe in probes:
        for _ in range(warm_up):
            if probe.prepare:
                probe.prepare()
            probe.call()
    server.refresh()
    runs: dict[str, list[tuple[float, float]]] = {probe.label: [] for probe in probes}
    for _ in range(repetitions):
        for probe in probes:
            app_s, server_ns = 0.0, 0
            for _ in range(calls):
                if probe.prepare:
                    probe.prepare()
                server_before = server.ns()
                started = time.process_time()
                probe.call()
                app_s += time.process_time() - started
                server_ns += server.ns() - server_before
            runs[probe.label].append((app_s * 1000 / calls, server_ns / 1e6 / calls))
    return {
        label: [statistics.median(a for a, _ in values), statistics.median(s for _, s in values)]
        for label, values in runs.items()
    }


def expect(status: int, response: Any) -> Any:
    """The test client's response, if its status is `status`."""
    if response.status_code != status:
        raise RuntimeError(f"{response.status_code}: {response.get_data(as_text=True)[:300]}")
    return response

"""Sustained section: POSTs at the highest rate for the plan's duration, then the time until every
e-mail is sent, the e-mails delivered during and after the load, and the peak RSS after it; ours
and the fair tutorial app (its task sends the same e-mail with smtplib) in the same conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import jobs
from harness.load import LoadResult
from harness.plans import Config, Plan
from harness.report import Report
from harness.stack import Bench

DRAIN_TIMEOUT = 300
CONFIGS = [
    Config("ours sqlite sync", "ours", "sqlite", "sync", []),
    Config("fair tutorial sqlite sync", "fair_tutorial", "sqlite", "sync", []),
]


@dataclass
class Sustained:
    load: LoadResult
    drain_s: float | None  # None: not within DRAIN_TIMEOUT
    delivered: int
    during: int
    seconds_loaded: float
    seconds_total: float
    memory_kb: dict[str, list[int]]

    @property
    def rate(self) -> float:
        """E-mails delivered per second, from the start of the load to the last one."""
        return self.delivered / self.seconds_total if self.seconds_total > 0 else 0.0

    @property
    def during_rate(self) -> float:
        return self.during / self.seconds_loaded if self.seconds_loaded > 0 else 0.0

    @property
    def after_rate(self) -> float:
        return (self.delivered - self.during) / self.drain_s if self.drain_s else 0.0


def _drain_waiter(config: Config, bench: Bench) -> Callable[[float], float | None]:
    if config.app == "ours":
        return lambda timeout: jobs.wait_jobs_done(bench, "sqlite", timeout)
    return lambda timeout: jobs.wait_tutorial_mail_sent(bench, timeout)


def _ours(entry: dict[str, Any]) -> bool:
    """Our e-mails carry a Message-ID (the job id); the tutorial app's carry none."""
    return entry.get("message_id") is not None


def run_one(bench: Bench, config: Config, seconds: float) -> Sustained:
    server = bench.start_server(config)
    wait_drained = _drain_waiter(config, bench)
    mine = _ours if config.app == "ours" else (lambda entry: not _ours(entry))
    try:
        wait_drained(120)
        before = len(jobs.deliveries(bench))
        started = time.time()
        result = bench.scenario(server, "POST v1", seconds)
        stopped = time.time()
        drain = wait_drained(DRAIN_TIMEOUT)
        finished = time.time()
        delivered = [
            entry
            for entry in jobs.deliveries(bench)[before:]
            if entry["time"] >= started and mine(entry)
        ]
        memory = bench.memory(server)
    finally:
        bench.stop_server(server)
    during = sum(1 for entry in delivered if entry["time"] <= stopped)
    return Sustained(
        result, drain, len(delivered), during, stopped - started, finished - started, memory
    )


def _line(config: Config, run: Sustained) -> str:
    drain = f"not within {DRAIN_TIMEOUT} s" if run.drain_s is None else f"{run.drain_s:.1f} s"
    return (
        f"| {config.name} | {run.load.requests} | {run.load.rps:.1f} | {run.load.p99_ms:.1f} | "
        f"{run.load.errors} | {drain} | {run.delivered} | {run.rate:.1f} | "
        f"{run.during_rate:.1f} | {run.after_rate:.1f} |"
    )


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    runs = [(config, run_one(bench, config, plan.sustained)) for config in CONFIGS]
    report.add(
        f"## Sustained load: {plan.sustained:g} s of POST /api/v1/posts at the highest "
        "rate (closed loop), then every e-mail sent"
    )
    report.add("")
    report.add(
        "Targets: every job done within 10 s after the load; e-mails delivered per second "
        "≥ 1.5x the fair tutorial app's in the same conditions (one run each, one after the "
        "other, same machine, same sink)."
    )
    report.add("")
    report.add(
        "| configuration | posts | req/s | p99 ms | errors | all sent after the load | e-mails | "
        "e-mails/s (start to last) | e-mails/s during | e-mails/s after |"
    )
    report.add("|---|---|---|---|---|---|---|---|---|---|")
    for config, run in runs:
        report.add(_line(config, run))
    report.add("")
    (_, ours), (_, fair) = runs
    if fair.rate:
        report.add(
            f"- E-mails per second, ours vs the fair tutorial's: {ours.rate / fair.rate:.2f}x "
            f"(target ≥ 1.5x); POSTs per second {ours.load.rps / max(fair.load.rps, 1e-9):.2f}x."
        )
    for config, run in runs:
        report.add(
            f"- Peak RSS after it ({config.name}): gunicorn workers "
            f"{[round(k / 1024, 1) for k in run.memory_kb['gunicorn']]} MB, Celery processes "
            f"{[round(k / 1024, 1) for k in run.memory_kb['celery']]} MB."
        )
    report.add("")
    report.data["sustained"] = {
        config.name: {
            "load": vars(run.load),
            "drain_s": run.drain_s,
            "delivered": run.delivered,
            "notifications_per_s": run.rate,
            "delivered_during_load": run.during,
            "memory_kb": run.memory_kb,
        }
        for config, run in runs
    }

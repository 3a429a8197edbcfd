"""Sustained section: POSTs at the highest rate for the plan's duration, then the time until every
job is done, the e-mails delivered during and after the load, and the peak RSS after it."""

from __future__ import annotations

import time

from harness import jobs
from harness.plans import Config, Plan
from harness.report import Report
from harness.stack import Bench


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    config = Config("ours sqlite sync", "ours", "sqlite", "sync", [])
    server = bench.start_server(config)
    try:
        jobs.wait_jobs_done(bench, "sqlite", 120)
        before = len(jobs.deliveries(bench))
        started = time.time()
        result = bench.scenario(server, "POST v1", plan.sustained)
        stopped = time.time()
        drain = jobs.wait_jobs_done(bench, "sqlite", 300)
        finished = time.time()
        delivered = [e for e in jobs.deliveries(bench)[before:] if e["time"] >= started]
        memory = bench.memory(server)
    finally:
        bench.stop_server(server)
    report.add(
        f"## Sustained load: {plan.sustained:g} s of POST /api/v1/posts at the highest "
        "rate (closed loop), then every job done"
    )
    report.add("")
    rate = len(delivered) / (finished - started) if finished > started else 0
    during = sum(1 for entry in delivered if entry["time"] <= stopped)
    drain_rate = (len(delivered) - during) / drain if drain else 0
    report.add(
        f"- ours sqlite sync: {result.requests} posts at {result.rps:.1f} req/s, p99 "
        f"{result.p99_ms:.1f} ms, {result.errors} errors."
    )
    report.add(
        f"- Every job done {'(not within 300 s)' if drain is None else f'{drain:.1f} s'} "
        f"after the load stopped (target ≤ 10 s); {len(delivered)} e-mails delivered, "
        f"{rate:.1f} notifications/s from load start to the last job: "
        f"{during / (stopped - started):.1f}/s during the load ({during} e-mails), "
        f"{drain_rate:.1f}/s after it ({len(delivered) - during})."
    )
    report.add(
        f"- Peak RSS after it: gunicorn workers {[round(k / 1024, 1) for k in memory['gunicorn']]}"
        f" MB, Celery processes {[round(k / 1024, 1) for k in memory['celery']]} MB."
    )
    report.add("")
    report.data["sustained"] = {
        "load": vars(result),
        "drain_s": drain,
        "delivered": len(delivered),
        "notifications_per_s": rate,
        "delivered_during_load": during,
        "memory_kb": memory,
    }

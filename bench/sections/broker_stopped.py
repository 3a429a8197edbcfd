"""Broker-stopped section: POST throughput with the private redis-server up, then killed, for
ours and the tutorial app, and how long ours takes to finish every job once Redis is back."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness import jobs
from harness.load import LoadResult
from harness.plans import Config, Plan
from harness.report import Report, ratio_values, summary
from harness.stack import Bench


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    report.add("## Broker stopped (the private redis-server killed) during POST /api/v1/posts")
    report.add("")
    report.add(
        "Each round: the same server measured with the broker up, then with it stopped, "
        "then Redis is restarted; ratio = down / up within the round. For ours, the "
        "time until every job is done after the restart (the relay publishes them) is measured."
    )
    report.add("")
    rows: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(plan.rounds):
        for config in (
            Config("ours sqlite sync", "ours", "sqlite", "sync", []),
            Config("tutorial sqlite sync", "tutorial", "sqlite", "sync", []),
        ):
            server = bench.start_server(config)
            try:
                bench.load(server.port, "GET", "/api/v1/posts?limit=1", None, None, 1, 2)
                up = bench.scenario(server, "POST v1", plan.seconds)
                if config.app == "ours":
                    jobs.wait_jobs_done(bench, "sqlite", 120)
                bench.stop_redis()
                down = bench.scenario(server, "POST v1", plan.seconds)
                bench.start_redis()
                rows[config.name]["up"].append(up)
                rows[config.name]["down"].append(down)
                if config.app == "ours":
                    drain = jobs.wait_jobs_done(bench, "sqlite", 120)
                    rows[config.name]["drain"].append(drain)
                    rows[config.name]["jobs"].append(dict(jobs.job_counts(bench, "sqlite")))
                print(
                    f"broker {config.name}: up {up.rps:.1f} req/s, down {down.rps:.1f} req/s "
                    f"errors {down.errors} p99 {down.p99_ms:.1f} ms",
                    flush=True,
                )
            finally:
                bench.stop_server(server)
    report.add(
        "| configuration | up req/s | down req/s | down/up | down p99 ms | down errors | "
        "jobs done after restart (s) |"
    )
    report.add("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        drains = row.get("drain", [])
        drain_text = ", ".join("not within 120 s" if d is None else f"{d:.1f}" for d in drains)
        report.add(
            f"| {name} | {summary([r.rps for r in row['up']])} | "
            f"{summary([r.rps for r in row['down']])} | "
            f"{summary(ratio_values(row['down'], row['up'], 'rps'), 2)} | "
            f"{summary([r.p99_ms for r in row['down']], 1)} | "
            f"{down_errors(row['down'])} | "
            f"{drain_text or 'n/a'} |"
        )
    report.data["broker_stopped"] = {
        name: {
            key: [vars(v) if isinstance(v, LoadResult) else v for v in values]
            for key, values in row.items()
        }
        for name, row in rows.items()
    }
    report.add("")


def down_errors(results: list[LoadResult]) -> str:
    completed = sum(r.requests for r in results)
    errors = sum(r.errors for r in results)
    if completed == 0:
        return "no response at all: every request hung for the whole run"
    return f"{errors} of {completed} completed"

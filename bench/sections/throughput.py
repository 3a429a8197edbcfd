"""Throughput section: every configuration's scenarios under wrk's closed loop, configurations
interleaved in rounds, reported as median [min-max] of the rounds and as round-paired ratios
against the reference apps. The rounds also record the memory peaks (sections/memory.py)."""

from __future__ import annotations

import statistics
from collections import defaultdict

from harness import jobs
from harness.load import LoadResult
from harness.plans import Plan
from harness.report import Report, cpu_per_request, ratio_values, summary
from harness.stack import THREADS, Bench
from sections.memory import Peaks, new_peaks, record_peaks

# configuration name -> scenario -> one result per round
Results = dict[str, dict[str, list[LoadResult]]]


def measure_rounds(bench: Bench, plan: Plan) -> tuple[Results, Peaks]:
    results: Results = defaultdict(lambda: defaultdict(list))
    peaks = new_peaks()
    for round_index in range(plan.rounds):
        for config in plan.configs:
            server = bench.start_server(config)
            try:
                # Warm-up: first requests import lazily and open connections.
                bench.load(
                    server.port,
                    "GET",
                    "/api/v1/posts?limit=1" if config.app != "bare" else "/",
                    None,
                    None,
                    1,
                    2,
                )
                for name in config.scenarios:
                    if name == "login":  # argon2id's memory cost shows in the peak RSS
                        suffix = " (before the login scenario)"
                        record_peaks(peaks, config.name, bench.memory(server), suffix)
                    result = bench.scenario(server, name, plan.seconds)
                    results[config.name][name].append(result)
                    print(
                        f"round {round_index + 1} {config.name:28} {name:9} "
                        f"{result.rps:8.1f} req/s p99 {result.p99_ms:7.1f} ms "
                        f"errors {result.errors} spread {result.spread}",
                        flush=True,
                    )
                    if config.app == "ours" and name.startswith("POST"):
                        jobs.wait_jobs_done(bench, config.database or "sqlite", 120)
                record_peaks(peaks, config.name, bench.memory(server))
            finally:
                bench.stop_server(server)
    return results, peaks


def report_throughput(plan: Plan, results: Results, report: Report) -> None:
    report.add("## Throughput and latency (closed loop)")
    report.add("")
    report.add(
        f"gunicorn 2 workers (gthread: {THREADS} threads each), one config file for every "
        f"app; load: {report.data['load_tool']}, 1 thread, {plan.seconds:g} s per "
        f"scenario, rounds interleaved: {plan.rounds}. Figures: median [min-max] of the "
        "rounds."
    )
    report.add("")
    report.add(
        "| configuration | scenario | req/s | p50 ms | p99 ms | errors | "
        "gunicorn CPU ms per request | connections per worker (mid-run) | CPU s per worker |"
    )
    report.add("|---|---|---|---|---|---|---|---|---|")
    for config in plan.configs:
        for name in config.scenarios:
            values = results[config.name][name]
            report.add(
                f"| {config.name} | {name} | {summary([v.rps for v in values])} | "
                f"{summary([v.p50_ms for v in values], 1)} | "
                f"{summary([v.p99_ms for v in values], 1)} | {sum(v.errors for v in values)} | "
                f"{summary([cpu_per_request(v) for v in values], 2)} | "
                f"{'; '.join(str(v.spread.get('connections')) for v in values)} | "
                f"{'; '.join(str(v.spread.get('cpu_s')) for v in values)} |"
            )
    report.add("")
    rows = []
    for config in plan.configs:
        if config.app != "ours":
            continue
        suffix = config.name.removeprefix("ours ")
        tutorial = results.get(f"tutorial {suffix}", {})
        bare = results.get(f"bare {config.worker_class}", {}).get("GET /", [])
        ours = results[config.name]
        if "POST v1" in ours and "POST v1" in tutorial:
            rows.append(
                (
                    config.name,
                    "POST v1 req/s vs tutorial",
                    "≥ 1.5",
                    ratio_values(ours["POST v1"], tutorial["POST v1"], "rps"),
                    1.5,
                    True,
                )
            )
            rows.append(
                (
                    config.name,
                    "POST v1 p99 vs tutorial",
                    "≤ 0.7",
                    ratio_values(ours["POST v1"], tutorial["POST v1"], "p99_ms"),
                    0.7,
                    False,
                )
            )
        if "POST v1" in ours and "POST v1" in tutorial:
            rows.append(
                (
                    config.name,
                    "POST v1 CPU per request vs tutorial",
                    "(info)",
                    [
                        cpu_per_request(a) / cpu_per_request(b)
                        for a, b in zip(ours["POST v1"], tutorial["POST v1"], strict=False)
                        if cpu_per_request(b)
                    ],
                    None,
                    False,
                )
            )
        if "POST v1" in ours and bare:
            rows.append(
                (
                    config.name,
                    "POST v1 req/s vs bare",
                    "≥ 0.20",
                    ratio_values(ours["POST v1"], bare, "rps"),
                    0.20,
                    True,
                )
            )
        if "GET list" in ours and bare:
            rows.append(
                (
                    config.name,
                    "GET list req/s vs bare",
                    "≥ 0.35",
                    ratio_values(ours["GET list"], bare, "rps"),
                    0.35,
                    True,
                )
            )
        if "GET list" in ours and "GET list" in tutorial:
            rows.append(
                (
                    config.name,
                    "GET list req/s vs tutorial",
                    "(info)",
                    ratio_values(ours["GET list"], tutorial["GET list"], "rps"),
                    None,
                    True,
                )
            )
    if rows:
        report.add("### Round-paired ratios (each round's figures divided, then median [min-max])")
        report.add("")
        report.add("| configuration | ratio | target | measured | met (median) |")
        report.add("|---|---|---|---|---|")
        targets = {}
        for config_name, label, target, values, bound, higher in rows:
            met = (
                ""
                if bound is None or not values
                else (
                    "yes"
                    if (
                        statistics.median(values) >= bound
                        if higher
                        else statistics.median(values) <= bound
                    )
                    else "**no**"
                )
            )
            report.add(f"| {config_name} | {label} | {target} | {summary(values, 2)} | {met} |")
            targets[f"{config_name}: {label}"] = values
        report.data["ratios"] = targets
        report.add("")

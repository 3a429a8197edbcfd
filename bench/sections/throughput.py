"""Throughput section: every configuration's scenarios under wrk's closed loop, configurations
interleaved in rounds, reported as median [min-max] of the rounds and as round-paired ratios
against the reference apps. The rounds also record the memory peaks (sections/memory.py)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from harness import jobs
from harness.load import LoadResult
from harness.plans import Plan
from harness.report import Report, ratio_values, summary
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
                    elif config.app == "fair_tutorial" and name.startswith("POST"):
                        jobs.wait_tutorial_mail_sent(bench, 120)
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
                f"{summary([v.cpu_ms_per_request for v in values], 2)} | "
                f"{'; '.join(str(v.spread.get('connections')) for v in values)} | "
                f"{'; '.join(str(v.spread.get('cpu_s')) for v in values)} |"
            )
    report.add("")
    report_ratios(plan, results, report)


@dataclass(frozen=True)
class Ratio:
    """Ours over a reference app in the same round: the same scenario, except against bare
    Flask, whose one scenario is GET /."""

    scenario: str
    measure: str  # a LoadResult attribute
    reference: str  # bare | tutorial | fair tutorial: the start of its configuration's name
    target: str
    bound: float | None = None  # None: for information only

    @property
    def label(self) -> str:
        what = {"rps": "req/s", "p99_ms": "p99", "cpu_ms_per_request": "CPU per request"}
        return f"{self.scenario} {what[self.measure]} vs {self.reference}"

    def met(self, values: list[float]) -> str:
        if self.bound is None or not values:
            return ""
        median = statistics.median(values)
        within = median >= self.bound if self.measure == "rps" else median <= self.bound
        return "yes" if within else "**no**"


RATIOS = [
    Ratio("POST v1", "rps", "tutorial", "≥ 1.5", 1.5),
    Ratio("POST v1", "p99_ms", "tutorial", "≤ 0.7", 0.7),
    Ratio("POST v1", "cpu_ms_per_request", "tutorial", "(info)"),
    Ratio("POST v1", "rps", "bare", "≥ 0.20", 0.20),
    Ratio("GET list", "rps", "bare", "≥ 0.35", 0.35),
    Ratio("GET list", "rps", "tutorial", "(info)"),
    Ratio("POST v1", "rps", "fair tutorial", "≥ 1.5", 1.5),
    Ratio("POST v1", "p99_ms", "fair tutorial", "≤ 0.7", 0.7),
    Ratio("POST v1", "cpu_ms_per_request", "fair tutorial", "(info)"),
    Ratio("GET list", "rps", "fair tutorial", "(info)"),
]


def report_ratios(plan: Plan, results: Results, report: Report) -> None:
    rows: list[tuple[str, Ratio, list[float]]] = []
    for config in plan.configs:
        if config.app != "ours":
            continue
        ours = results[config.name]
        for ratio in RATIOS:
            if ratio.reference == "bare":
                reference = results.get(f"bare {config.worker_class}", {}).get("GET /", [])
            else:
                suffix = config.name.removeprefix("ours ")
                reference = results.get(f"{ratio.reference} {suffix}", {}).get(ratio.scenario, [])
            if ratio.scenario in ours and reference:
                values = ratio_values(ours[ratio.scenario], reference, ratio.measure)
                rows.append((config.name, ratio, values))
    if not rows:
        return
    report.add("### Round-paired ratios (each round's figures divided, then median [min-max])")
    report.add("")
    report.add("| configuration | ratio | target | measured | met (median) |")
    report.add("|---|---|---|---|---|")
    targets = {}
    for config_name, ratio, values in rows:
        report.add(
            f"| {config_name} | {ratio.label} | {ratio.target} | {summary(values, 2)} | "
            f"{ratio.met(values)} |"
        )
        targets[f"{config_name}: {ratio.label}"] = values
    report.data["ratios"] = targets
    report.add("")

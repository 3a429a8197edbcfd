"""Memory section: the peak RSS of every gunicorn worker and Celery process, recorded during the
throughput rounds and reported as the highest over them."""

from __future__ import annotations

from collections import defaultdict

from harness.report import Report

# configuration name -> "gunicorn 1", "celery 2", ... -> kB
Peaks = dict[str, dict[str, int]]


def new_peaks() -> Peaks:
    return defaultdict(lambda: defaultdict(int))


def record_peaks(
    peaks: Peaks, config_name: str, sample: dict[str, list[int]], suffix: str = ""
) -> None:
    """Keeps the highest figure of the N-th largest process of each kind (a sample is what
    `Bench.memory` returns)."""
    for kind, values in sample.items():
        for index, kb in enumerate(sorted(values, reverse=True)):
            key = f"{kind} {index + 1}{suffix}"
            peaks[config_name][key] = max(peaks[config_name][key], kb)


def report_memory(memory: Peaks, report: Report) -> None:
    report.add("## Memory: peak RSS (VmHWM) per process, highest over the rounds")
    report.add("")
    report.add(
        "Targets: each gunicorn worker ≤ 100 MB, each Celery process ≤ 120 MB. Rows: `gunicorn "
        "N` / `celery N` = peak RSS (VmHWM) of the N-th largest process; `(before the login "
        "scenario)` = the same just before it (the driver itself logs in once at start-up, "
        "and that hash lands on one worker); `gunicorn now N` = RSS (VmRSS) at the end of "
        "the configuration's scenarios (argon2id frees its memory after each hash)."
    )
    report.add("")
    report.add("| configuration | process | peak RSS MB |")
    report.add("|---|---|---|")
    for config, values in memory.items():
        for key, kb in sorted(values.items()):
            report.add(f"| {config} | {key} | {kb / 1024:.1f} |")
    report.add("")

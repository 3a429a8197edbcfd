# It runs only bench/cpu_per_call.py and py-spy, with their own fixed arguments.
# ruff: noqa: S603
"""CPU section: `bench/cpu_per_call.py` (our request paths and notification job against the
tutorial apps, in one process, interleaved rounds) and, for every path whose target is missed,
a py-spy profile of that path alone: where its CPU goes, by function of the app and by library."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections import Counter

from cpu_per_call import TARGETS
from harness.launcher import BIN
from harness.plans import Plan
from harness.report import HERE, Report
from harness.stack import Bench
from sections.profile import app_functions, read_stacks

SCRIPT = HERE / "cpu_per_call.py"
# py-spy's frame: `function (path/of/file.py:line)`, the path relative to its sys.path entry.
FRAME_FILE = re.compile(r"\(([^()]+?)(?::\d+)?\)$")


def _median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _ratios(mine: list[float], theirs: list[float]) -> list[float]:
    return [a / b for a, b in zip(mine, theirs, strict=True)]


def _owner(frame: str) -> str:
    """The package (or module) whose code a frame runs: `sqlalchemy`, `blog_api`, `socket`."""
    found = FRAME_FILE.search(frame)
    if not found:
        return "other"
    first = found.group(1).lstrip("./").split("/", 1)[0]
    return first.removesuffix(".py")


def libraries(active: list[tuple[str, int]]) -> Counter[str]:
    """Samples by the code running at the top of the stack (self time), by package."""
    own: Counter[str] = Counter()
    for stack, count in active:
        own[_owner(stack.rsplit(";", 1)[-1])] += count
    return own


def profile_path(bench: Bench, path: str, calls: int) -> list[tuple[str, int]]:
    """py-spy samples of `cpu_per_call.py` running one of our paths, restricted to the calls."""
    out = bench.tmp / f"cpu-{path}.txt"
    command = [
        str(BIN / "py-spy"),
        "record",
        "--rate",
        "500",
        "--format",
        "raw",
        "--nonblocking",
        # Only samples holding the GIL: CPU spent in Python code, not waits on a socket.
        "--gil",
        "--output",
        str(out),
        "--",
        sys.executable,
        str(SCRIPT),
        "--paths",
        path,
        "--no-reference",
        "--runs",
        "1",
        "--calls",
        str(calls),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return [(s, c) for s, c in read_stacks(out.read_text()) if "cpu_ms_per_call" in s]


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    assert plan.cpu is not None
    calls, runs = plan.cpu
    figures_file = bench.tmp / "cpu.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--calls",
            str(calls),
            "--runs",
            str(runs),
            "--json",
            str(figures_file),
        ],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    figures = json.loads(figures_file.read_text())
    ms: dict[str, dict[str, list[float]]] = figures["ms"]
    report.add("## CPU per call, in one process: ours against the tutorial apps")
    report.add("")
    report.add(
        f"`python bench/cpu_per_call.py --calls {calls} --runs {runs}`: each app served "
        "through Flask's test client (SQLite file, private redis-server), the job through "
        "its Celery task's `apply()` against the SMTP sink; "
        f"{runs} interleaved rounds of {calls} calls per path, ms of process CPU per call, "
        "median [min-max]; ratios are the median of the per-round ratios."
    )
    report.add("")
    report.add("| path | ours | tutorial | fair tutorial | ours / reference | target | met |")
    report.add("|---|---|---|---|---|---|---|")
    missed: list[str] = []
    summary: dict[str, float] = {}
    for path, (label, target, reference) in TARGETS.items():
        ours = ms["ours"].get(path)
        theirs = ms[reference].get(path)
        if not ours or not theirs:
            continue
        ratios = _ratios(ours, theirs)
        ratio = statistics.median(ratios)
        summary[path] = ratio
        cells = [
            _median_spread(ms[app][path]) if ms[app].get(path) else "n/a"
            for app in ("ours", "tutorial", "fair tutorial")
        ]
        met = ratio <= target
        if not met:
            missed.append(path)
        report.add(
            f"| {label} | {' | '.join(cells)} | {_median_spread(ratios)} vs {reference} | "
            f"≤ {target} | {'yes' if met else 'no'} |"
        )
    report.add("")
    report.data["cpu_per_call"] = {"ms": ms, "ratios": summary}
    for path in missed:
        active = profile_path(bench, path, calls * 10)
        total = sum(count for _, count in active) or 1
        report.add(
            f"### Where a {TARGETS[path][0]} spends its CPU (py-spy --gil, {total} samples at "
            "500 Hz of our path alone, waits on sockets excluded)"
        )
        report.add("")
        report.add("| function of the app (inclusive) | share | | code running (self) | share |")
        report.add("|---|---|---|---|---|")
        functions = app_functions(active).most_common(12)
        owners = libraries(active).most_common(12)
        for row in range(max(len(functions), len(owners))):
            left = (
                f"`{functions[row][0]}` | {100 * functions[row][1] / total:.1f} %"
                if row < len(functions)
                else " | "
            )
            right = (
                f"{owners[row][0]} | {100 * owners[row][1] / total:.1f} %"
                if row < len(owners)
                else " | "
            )
            report.add(f"| {left} | | {right} |")
        report.add("")
        report.data.setdefault("cpu_profiles", {})[path] = {
            "functions": dict(functions),
            "libraries": dict(owners),
            "samples": total,
        }

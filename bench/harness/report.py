"""The report: lines printed as they are added and written to bench/RESULTS.md under a header
with the command, the machine and the load average; every figure also goes to `data` (JSON)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.load import LoadResult

HERE = Path(__file__).resolve().parents[1]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def summary(values: list[float], digits: int = 0) -> str:
    if not values:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}]"
    )


def ratio_values(a: list[LoadResult], b: list[LoadResult], attr: str) -> list[float]:
    return [
        getattr(x, attr) / getattr(y, attr) for x, y in zip(a, b, strict=False) if getattr(y, attr)
    ]


def write_results(args: argparse.Namespace, report: Report, started: float) -> None:
    command = (
        "make bench"
        if args.mode == "full"
        else (
            "make bench-quick"
            if args.mode == "quick"
            else f"python bench/run.py --mode {args.mode}"
        )
    )
    if getattr(args, "only", None):
        command = f"python bench/run.py --mode {args.mode} --only {args.only}"
    header = [
        "# Benchmark results",
        "",
        "Written by `bench/run.py`; every figure below was measured in this run. Reproduce with:",
        "",
        f"    {command}",
        "",
        f"- Mode: `{args.mode}`, finished {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        f"- Machine: {report.data.get('machine', '?')}",
        f"- Load average (1/5/15 min) at start: {report.data.get('load_start')}, "
        f"at end: {os.getloadavg()}",
        "",
    ]
    notes_path = HERE / "NOTES.md"
    notes = notes_path.read_text() if notes_path.exists() and args.mode != "smoke" else ""
    Path(args.output).write_text("\n".join(header + report.lines) + "\n" + notes)
    if args.json:
        Path(args.json).write_text(json.dumps(report.data, indent=1, default=str))

"""The benchmark driver: starts every server itself, runs every configuration interleaved in
rounds, prints median [min-max] and round-paired ratios, and writes bench/RESULTS.md.

    python bench/run.py --mode full      # make bench        (about 20 minutes)
    python bench/run.py --mode quick     # make bench-quick  (about 5 minutes)
    python bench/run.py --mode smoke --output OUT.md --json OUT.json   # a few seconds (tests)

Everything it starts (redis-server, SMTP sink, gunicorn masters, Celery workers) runs in its own
session and is stopped by PID (then its process group is killed); the temporary directory and the
PostgreSQL database it creates are removed at the end, also after a failure or Ctrl-C.

The sections live in bench/sections/ (one module each, in the order of the report), the stack,
the load tools and the report they share in bench/harness/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.launcher import Interrupted, Launcher, interrupt_on_signals
from harness.machine import machine_line
from harness.plans import Plan, plan_for
from harness.report import HERE, Report, write_results
from harness.stack import Bench
from sections import (
    broker_stopped,
    cpu,
    fanout,
    growth,
    latency,
    memory,
    profile,
    sustained,
    throughput,
)

# The sections `--only` can run by themselves (each needs nothing the others measure).
ALONE = {
    "cpu": cpu.measure,
    "latency": latency.measure,
    "sustained": sustained.measure,
    "growth": growth.measure,
    "fanout": fanout.measure,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Blog API benchmark driver")
    parser.add_argument("--mode", choices=["full", "quick", "smoke"], default="quick")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--json", default=None, help="also write every figure as JSON here")
    parser.add_argument("--connections", type=int, default=8, help="held connections (wrk -c)")
    parser.add_argument(
        "--only",
        choices=list(ALONE),
        default=None,
        help="run only this section of the plan (e.g. to re-measure latency after a change)",
    )
    args = parser.parse_args(argv)
    interrupt_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix="blog-bench-"))
    launcher = Launcher(tmp)
    bench = Bench(args, tmp, launcher)
    started = time.monotonic()
    report = Report()
    try:
        run(bench, plan_for(args.mode), report)
        report.add(f"\nTotal run time: {time.monotonic() - started:.0f} s.")
        write_results(args, report, started)
        return 0
    except Interrupted as error:
        print(f"interrupted ({error}); cleaning up", file=sys.stderr)
        return 130
    finally:
        launcher.close()
        with contextlib.suppress(Exception):
            bench.drop_pg_databases()
        shutil.rmtree(tmp, ignore_errors=True)


def run(bench: Bench, plan: Plan, report: Report) -> None:
    """Every section the plan asks for, in the order of the report."""
    report.data["machine"] = machine_line()
    report.data["load_start"] = os.getloadavg()
    report.data["load_tool"] = bench.load_tool
    bench.start_redis()
    bench.start_sink()
    print(
        f"mode plan: {len(plan.configs)} configurations x {plan.rounds} rounds, "
        f"{plan.seconds:g} s per scenario, load tool {bench.load_tool}",
        flush=True,
    )
    if bench.args.only:
        ALONE[bench.args.only](bench, plan, report)
        return
    if plan.cpu:
        cpu.measure(bench, plan, report)
    results, peaks = throughput.measure_rounds(bench, plan)
    throughput.report_throughput(plan, results, report)
    memory.report_memory(peaks, report)
    if plan.latency_idle[1]:
        latency.measure(bench, plan, report)
    if plan.broker:
        broker_stopped.measure(bench, plan, report)
    if plan.sustained:
        sustained.measure(bench, plan, report)
    if plan.profile:
        profile.measure(bench, plan, report)
    if plan.growth:
        growth.measure(bench, plan, report)
    if plan.fanout:
        fanout.measure(bench, plan, report)
    report.data["throughput"] = {
        config: {name: [vars(result) for result in values] for name, values in scenarios.items()}
        for config, scenarios in results.items()
    }
    report.data["memory_kb"] = peaks


if __name__ == "__main__":
    sys.exit(main())

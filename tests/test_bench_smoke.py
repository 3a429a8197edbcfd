"""The benchmark driver still runs: its smoke mode starts the real stack (private Redis, SMTP sink,
migrated SQLite database, gunicorn, Celery worker), drives two scenarios for a second each and the
latency probe, and writes a well-formed report. No figure is asserted: speed is not a test here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "bench" / "run.py"
TIMEOUT = 300


def test_the_benchmark_driver_runs_end_to_end_in_smoke_mode(tmp_path: Path) -> None:
    output, data = tmp_path / "RESULTS.md", tmp_path / "results.json"
    work = tmp_path / "work"
    work.mkdir()
    # The driver's own temporary directory lands under tmp_path, so nothing can outlive the test.
    env = {**os.environ, "TMPDIR": str(work)}
    process = subprocess.Popen(
        [
            sys.executable,
            str(DRIVER),
            "--mode",
            "smoke",
            "--output",
            str(output),
            "--json",
            str(data),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the driver stop what it started (by PID) and remove its directory.
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=60)
        pytest.fail(f"the smoke run took over {TIMEOUT}s:\n{log.decode(errors='replace')}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.decode(errors="replace")
    assert process.returncode == 0, text

    results = json.loads(data.read_text())
    runs = results["throughput"]["ours sqlite sync"]
    assert set(runs) == {"POST v1", "GET list"}
    for scenario in runs.values():
        assert len(scenario) == 1
        assert {"requests", "seconds", "errors", "p50_ms", "p99_ms"} <= set(scenario[0])
    assert {"gunicorn 1", "gunicorn 2"} <= set(results["memory_kb"]["ours sqlite sync"])
    assert {"sent", "notified", "notify_ms", "floor_ms"} <= set(results["latency open loop"])
    report = output.read_text()
    assert report.startswith("# Benchmark results")
    assert "| ours sqlite sync | POST v1 |" in report
    assert "## Notification latency" in report
    # Everything it started is gone, and so is its temporary directory.
    assert list(work.iterdir()) == []


def test_the_cpu_per_call_tool_runs_every_path_and_cleans_up(tmp_path: Path) -> None:
    """`bench/cpu_per_call.py` (its own redis-server, SMTP sink and SQLite file) measures all four
    paths; a few calls, no figure asserted."""
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cpu_per_call.py"), "--calls", "3", "--runs", "1"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(work)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "CPU ms per call, median [min-max] of 1 runs of 3 calls:"
    labels = ["POST /api/v1/posts", "GET /api/v1/posts?limit=20", "GET /api/v1/posts/"]
    labels.append("notification job (claim, SMTP, finish)")
    for label, line in zip(labels, lines[1:5], strict=True):
        assert line.strip().startswith(label), line
    assert list(work.iterdir()) == []

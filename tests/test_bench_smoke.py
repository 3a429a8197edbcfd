"""The benchmark driver still runs: its smoke mode starts the real stack (private Redis, SMTP sink,
migrated SQLite database, gunicorn, Celery worker), drives two scenarios for a second each, the
latency probe and a tiny growth run (100, then 2,000 posts), and writes a well-formed report.
Every section module imports, and the helpers that parse and tabulate (wrk's report, py-spy's
stacks, the ratios) run on canned input. No figure is asserted: speed is not a test here.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DRIVER = BENCH / "run.py"
TIMEOUT = 300
SECTIONS = sorted(path.stem for path in (BENCH / "sections").glob("[!_]*.py"))


@pytest.fixture
def bench_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Imports a module of bench/ by the name the driver uses (bench/ is its sys.path entry)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


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
    for database in ("sqlite", "postgresql"):
        latency = results[f"latency {database} open loop"]
        assert {"sent", "notified", "notify_ms", "floor_ms"} <= set(latency)
    growth = results["growth"]
    assert growth["sizes"] == [100, 2_000]
    for database in ("sqlite", "postgresql"):
        paths = growth["ms_app_server"][database]
        assert {"GET /posts?limit=20", "POST /posts", "relay cycle (5 due jobs)"} <= set(paths)
        for figures in paths.values():
            assert len(figures) == 2  # one [app ms, server ms] per size
    report = output.read_text()
    assert report.startswith("# Benchmark results")
    assert "| ours sqlite sync | POST v1 |" in report
    assert "## Notification latency" in report
    assert "| GET /posts?limit=20 | postgresql |" in report
    # Everything it started is gone, and so is its temporary directory.
    assert list(work.iterdir()) == []


def test_the_cpu_per_call_tool_runs_every_path_and_cleans_up(tmp_path: Path) -> None:
    """`bench/cpu_per_call.py` (its own redis-server, SMTP sink and SQLite file) measures all four
    paths; a few calls, no figure asserted."""
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "cpu_per_call.py"),
            "--calls",
            "3",
            "--runs",
            "1",
            "--json",
            str(tmp_path / "cpu.json"),
        ],
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
    figures = json.loads((tmp_path / "cpu.json").read_text())["ms"]
    assert set(figures) == {"ours", "tutorial", "fair tutorial"}
    assert set(figures["ours"]) == {"post", "list", "one", "job"}
    assert all(len(rounds) == 1 for rounds in figures["ours"].values())


BenchModule = Callable[[str], ModuleType]
WRK_REPORT = {
    "requests": 1510,
    "duration_us": 2000300,
    "connect_errors": 0,
    "read_errors": 1,
    "write_errors": 0,
    "status_errors": 2,
    "timeouts": 3,
    "p50_us": 9800,
    "p90_us": 14100,
    "p99_us": 25300,
    "max_us": 41200,
}
WRK_OUTPUT = f"""Running 2s test @ http://127.0.0.1:40123/api/v1/posts
  1 threads and 8 connections
  1510 requests in 2.00s, 0.98MB read
Requests/sec:    754.90
BENCH_JSON {json.dumps(WRK_REPORT)}
"""


@pytest.mark.parametrize("name", ["run", "cpu_per_call", *(f"sections.{s}" for s in SECTIONS)])
def test_every_bench_module_imports(bench_module: BenchModule, name: str) -> None:
    bench_module(name)


def test_every_section_module_has_its_entry_point(bench_module: BenchModule) -> None:
    entry_points = {"throughput": "measure_rounds", "memory": "report_memory"}
    for name in SECTIONS:
        module = bench_module(f"sections.{name}")
        assert callable(getattr(module, entry_points.get(name, "measure"))), name


def test_celery_workers_start_in_one_place_for_the_bench_and_one_for_the_tests() -> None:
    """How the workers start is about to change: it stays one edit. The command line is built
    by the launcher alone; which worker a configuration runs is chosen in `start_workers` (the
    benchmark) and `Stack.start_worker` (the tests)."""

    def files_containing(text: str) -> list[str]:
        files = [*BENCH.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
        return sorted(
            path.relative_to(ROOT).as_posix()
            for path in files
            if path != Path(__file__)
            and "node_modules" not in path.parts
            and text in path.read_text()
        )

    assert files_containing('BIN / "celery"') == ["bench/harness/launcher.py"]
    assert files_containing(".start_celery_worker(") == [
        "bench/harness/stack.py",
        "tests/support/integration_stack.py",
    ]


def test_a_wrk_report_becomes_a_load_result(bench_module: BenchModule) -> None:
    load = bench_module("harness.load")

    result = load.parse_wrk_report(WRK_OUTPUT)

    assert (result.requests, result.errors) == (1510, 6)
    assert result.seconds == pytest.approx(2.0003)
    assert (result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms) == (9.8, 14.1, 25.3, 41.2)
    assert result.rps == pytest.approx(1510 / 2.0003)


def test_percentiles_summary_and_ratios(bench_module: BenchModule) -> None:
    load, report = bench_module("harness.load"), bench_module("harness.report")

    assert load.percentiles([0.4, 0.1, 0.3, 0.2], (50, 100)) == [0.2, 0.4]
    assert report.summary([3.0, 1.0, 2.0]) == "2 [1-3]"
    assert report.summary([], 2) == "n/a"
    fast = [load.LoadResult(200, 1.0, 0, 1, 2, 3, 4), load.LoadResult(300, 1.0, 0, 1, 2, 3, 4)]
    slow = [load.LoadResult(100, 1.0, 0, 1, 2, 3, 4), load.LoadResult(0, 1.0, 0, 1, 2, 3, 4)]
    assert report.ratio_values(fast, slow, "rps") == [2.0]


def test_memory_peaks_keep_the_highest_of_each_rank(bench_module: BenchModule) -> None:
    memory = bench_module("sections.memory")
    peaks = memory.new_peaks()

    memory.record_peaks(peaks, "ours", {"gunicorn": [100, 300], "celery": [50]})
    memory.record_peaks(peaks, "ours", {"gunicorn": [200, 150]}, " (before)")
    memory.record_peaks(peaks, "ours", {"gunicorn": [250, 120]})

    assert peaks["ours"] == {
        "gunicorn 1": 300,
        "gunicorn 2": 120,
        "celery 1": 50,
        "gunicorn 1 (before)": 200,
        "gunicorn 2 (before)": 150,
    }


def test_py_spy_stacks_are_split_into_the_parts_of_the_request(bench_module: BenchModule) -> None:
    profile = bench_module("sections.profile")
    dispatch = "handle (gunicorn/sync.py:1);full_dispatch_request (flask/app.py:2)"
    raw = "\n".join(
        [
            f"{dispatch};verify_jwt_in_request (flask_jwt_extended/view_decorators.py:3) 6",
            f"{dispatch};PostList.post (blog_api/api/posts.py:9);"
            "create_post (blog_api/services/posts.py:40);execute (sqlalchemy/engine.py:7) 3",
            "accept (gunicorn/sync.py:5) 11",
            "not a stack line",
        ]
    )

    stacks = profile.read_stacks(raw)
    counts = profile.bucket_counts([s for s in stacks if "full_dispatch_request" in s[0]])

    assert len(stacks) == 3
    assert counts["JWT: decode, owner + blocklist query, user"] == 6
    assert counts["create_post: INSERT post + jobs, COMMIT"] == 3
    assert counts["(across all rows) SQLAlchemy"] == 3
    assert list(counts) == [label for label, _, _ in profile.PROFILE_BUCKETS]
    functions = profile.app_functions(stacks)
    assert functions["create_post (blog_api/services/posts.py)"] == 3


def test_cpu_profiles_count_self_time_by_package(bench_module: BenchModule) -> None:
    cpu = bench_module("sections.cpu")
    loop = "main (cpu_per_call.py:1);cpu_ms_per_call (cpu_per_call.py:2)"
    stacks = [
        (f"{loop};post (flask/testing.py:3);execute (sqlalchemy/engine/base.py:4)", 5),
        (f"{loop};create_post (blog_api/services/posts.py:5)", 2),
        (f"{loop};sendall (socket.py:6)", 1),
    ]

    owners = cpu.libraries(stacks)

    assert owners == {"sqlalchemy": 5, "blog_api": 2, "socket": 1}


def test_a_broker_outage_without_any_response_says_so(bench_module: BenchModule) -> None:
    load, broker = bench_module("harness.load"), bench_module("sections.broker_stopped")

    hung = [load.LoadResult(0, 2.0, 8, 0, 0, 0, 0)]
    answered = [load.LoadResult(40, 2.0, 3, 1, 2, 3, 4)]

    assert broker.down_errors(hung).startswith("no response at all")
    assert broker.down_errors(answered) == "3 of 40 completed"


@pytest.mark.parametrize("mode", ["smoke", "quick", "full"])
def test_every_plan_runs_known_scenarios_on_distinct_configurations(
    bench_module: BenchModule, mode: str
) -> None:
    plans = bench_module("harness.plans")

    plan = plans.plan_for(mode)

    names = [config.name for config in plan.configs]
    assert len(names) == len(set(names))
    for config in plan.configs:
        assert set(config.scenarios) <= set(plans.SCENARIOS), config.name


def test_ours_is_compared_with_both_tutorial_apps_and_bare_flask(
    bench_module: BenchModule,
) -> None:
    """The literal tutorial app (its task sleeps) and the fair one (its task sends the e-mail with
    smtplib) each get their rows, beside the ratios against bare Flask."""
    load, plans = bench_module("harness.load"), bench_module("harness.plans")
    report_module, throughput = bench_module("harness.report"), bench_module("sections.throughput")
    plan = plans.plan_for("quick")
    assert {config.app for config in plan.configs} == {"bare", "tutorial", "fair_tutorial", "ours"}
    cpu = {"cpu_s": [0.5, 0.5]}
    results = {
        config.name: {
            name: [load.LoadResult(200 if config.app == "ours" else 100, 1.0, 0, 1, 2, 4, 9, cpu)]
            for name in config.scenarios
        }
        for config in plan.configs
    }
    report = report_module.Report(data={"load_tool": "wrk"})

    throughput.report_throughput(plan, results, report)

    rows = set(report.lines)
    assert "| fair tutorial sqlite sync | POST v1 | 100 [100-100] | 1.0 [1.0-1.0] |" in "\n".join(
        rows
    )
    ours = "| ours sqlite sync |"
    assert f"{ours} POST v1 req/s vs tutorial | ≥ 1.5 | 2.00 [2.00-2.00] | yes |" in rows
    assert f"{ours} POST v1 req/s vs fair tutorial | ≥ 1.5 | 2.00 [2.00-2.00] | yes |" in rows
    assert f"{ours} POST v1 p99 vs fair tutorial | ≤ 0.7 | 1.00 [1.00-1.00] | **no** |" in rows
    assert f"{ours} GET list req/s vs bare | ≥ 0.35 | 2.00 [2.00-2.00] | yes |" in rows
    ratios = report.data["ratios"]
    assert ratios["ours sqlite sync: POST v1 CPU per request vs fair tutorial"] == [0.5]

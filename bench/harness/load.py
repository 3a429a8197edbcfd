# It runs only wrk, with its own fixed arguments.
# ruff: noqa: S603
"""Load: one JSON request, wrk (closed loop) and the report its script prints, a Python closed
loop when wrk is missing, and the open-loop generator the latency section uses."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRK_SCRIPT = Path(__file__).resolve().parents[1] / "wrk_report.lua"


def http_json(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(
            method, path, body=json.dumps(body) if body is not None else None, headers=headers
        )
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:
        return response.status, data.decode(errors="replace")


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    spread: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        """CPU time the gunicorn workers spent per answered request (ms): independent of how busy
        the rest of the machine is, unlike req/s (`spread` is filled in by `Bench.scenario`)."""
        return 1000 * sum(self.spread.get("cpu_s", [])) / self.requests if self.requests else 0


def run_wrk(
    port: int,
    method: str,
    path: str,
    body: Any,
    token: str | None,
    seconds: float,
    connections: int,
) -> LoadResult:
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_BODY": json.dumps(body) if body is not None else "",
        "BENCH_TOKEN": token or "",
    }
    args = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(
        args,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return parse_wrk_report(out)


def parse_wrk_report(out: str) -> LoadResult:
    """The `BENCH_JSON {...}` line that wrk_report.lua prints after wrk's own summary."""
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    data = json.loads(line.split(" ", 1)[1])
    errors = sum(
        data[key]
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def run_python_closed_loop(
    port: int,
    method: str,
    path: str,
    body: Any,
    token: str | None,
    seconds: float,
    connections: int,
) -> LoadResult:
    """A small closed-loop generator, used only when wrk is unavailable (smoke mode)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                status, _ = http_json(port, method, path, body, token)
                ok = status < 400
            except OSError:
                ok = False
            with lock:
                latencies.append(time.monotonic() - started)
                errors[0] += not ok

    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    p50, p90, p99, top = percentiles(latencies, (50, 90, 99, 100))
    return LoadResult(
        len(latencies), elapsed, errors[0], p50 * 1000, p90 * 1000, p99 * 1000, top * 1000
    )


def percentiles(values: list[float], points: tuple[float, ...]) -> list[float]:
    if not values:
        return [float("nan")] * len(points)
    ordered = sorted(values)
    result = []
    for point in points:
        index = min(len(ordered) - 1, max(0, round(point / 100 * len(ordered)) - 1))
        result.append(ordered[index])
    return result


@dataclass
class Sent:
    scheduled: float  # wall-clock time the request was due
    finished: float
    status: int
    payload: Any


def open_loop(
    port: int, path: str, body: Any, token: str, rate: float, seconds: float
) -> list[Sent]:
    """Fixed-rate POSTs; each request's latency counts from its *scheduled* time, so a slow
    server cannot slow the generator down (no coordinated omission)."""
    count = max(1, int(rate * seconds))
    results: list[Sent] = []
    lock = threading.Lock()

    def send(scheduled_wall: float) -> None:
        try:
            status, payload = http_json(port, "POST", path, body, token)
        except OSError as error:
            status, payload = 0, repr(error)
        with lock:
            results.append(Sent(scheduled_wall, time.time(), status, payload))

    start = time.monotonic() + 0.2
    offset = time.time() - time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for index in range(count):
            due = start + index / rate
            time.sleep(max(0.0, due - time.monotonic()))
            pool.submit(send, due + offset)
    return results

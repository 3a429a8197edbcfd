# It runs only wrk and redis-server, each with --version.
# ruff: noqa: S603, S607
"""The machine line of the report: cores, CPU model, kernel, Python and the versions of every
library and server the run measures."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from pathlib import Path

from harness.launcher import redis_server
from harness.stack import PG_ADMIN_URL


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("flask", "sqlalchemy", "gunicorn", "celery", "redis"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
    tools = []
    with contextlib.suppress(Exception):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        tools.append((out.stdout + out.stderr).split("[")[0].strip())
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [redis_server(), "--version"], capture_output=True, text=True, check=False
        )
        match = re.search(r"v=(\S+)", out.stdout)
        tools.append(f"redis-server {match.group(1) if match else '?'}")
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            tools.append(f"PostgreSQL {row[0].split()[0] if row else '?'}")
    return (
        f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, " + ", ".join(versions + tools)
    )

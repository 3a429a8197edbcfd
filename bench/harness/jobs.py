"""What the background work did: the rows of our jobs table and the SMTP sink's record of every
delivered e-mail. Read from outside the stack, so that reading costs the measured processes
nothing."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from harness.processes import wait_until
from harness.stack import Bench


def _rows(bench: Bench, database: str, sql: str) -> list[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(bench.database_url("ours", database))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def job_counts(bench: Bench, database: str) -> Counter[str]:
    rows = _rows(bench, database, "SELECT status, count(*) FROM jobs GROUP BY status")
    return Counter({str(row[0]): int(row[1]) for row in rows})


def wait_jobs_done(bench: Bench, database: str, timeout: float) -> float | None:
    """Seconds until no job is pending or running (None: not within `timeout`)."""
    started = time.monotonic()
    try:
        wait_until(
            lambda: (lambda c: c["pending"] + c["running"] == 0)(job_counts(bench, database)),
            timeout,
            "every job to finish",
            interval=0.1,
        )
    except TimeoutError:
        return None
    return time.monotonic() - started


def job_posts(bench: Bench, database: str) -> dict[str, int]:
    """Each notification job's post id, by job id (the e-mail's Message-ID carries the job id)."""
    rows = _rows(bench, database, "SELECT id, post_id FROM jobs WHERE kind = 'notify_author'")
    return {str(row[0]): int(row[1]) for row in rows}


def deliveries(bench: Bench) -> list[dict[str, Any]]:
    if not bench.mail_log.exists():
        return []
    entries = [json.loads(line) for line in bench.mail_log.read_text().splitlines() if line]
    return [entry for entry in entries if entry.get("event") == "delivered"]

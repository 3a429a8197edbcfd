"""What the background work did: the rows of our jobs table, the posts of the fair tutorial app
and the SMTP sink's record of every delivered e-mail. Read from outside the stack, so that reading
costs the measured processes nothing."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from harness.launcher import wait_until
from harness.stack import Bench


def _rows(bench: Bench, database: str, sql: str, app: str = "ours") -> list[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(bench.database_url(app, database))
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


def wait_tutorial_mail_sent(bench: Bench, timeout: float) -> float | None:
    """Seconds until the sink has received one e-mail per post of every fair tutorial database
    (None: not within `timeout`), so that its backlog does not run into the next measurement, as
    ours is waited for. Its e-mails are the ones without a Message-ID (ours always carry one)."""
    databases = [database for app, database in bench.databases if app == "fair_tutorial"]

    def all_sent() -> bool:
        posts = sum(
            int(_rows(bench, database, "SELECT count(*) FROM post", "fair_tutorial")[0][0])
            for database in databases
        )
        sent = sum(1 for entry in deliveries(bench) if entry.get("message_id") is None)
        return sent >= posts

    started = time.monotonic()
    try:
        wait_until(all_sent, timeout, "the fair tutorial's e-mails", interval=0.1)
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

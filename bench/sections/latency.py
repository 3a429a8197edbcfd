"""Latency section: how long after its commit a post's notification reaches the SMTP sink, idle
and under an open-loop POST rate, beside the floor of a raw Redis LPUSH -> BRPOP at the same rate.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime

from harness import jobs
from harness.load import http_json, open_loop, percentiles
from harness.plans import POST_BODY, Config, Plan
from harness.report import Report
from harness.stack import Bench

WARM_UP_POSTS = 6  # before the latency measurement: every pool process runs a job first


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    report.add("## Notification latency: post commit → SMTP sink received")
    report.add("")
    report.add(
        "Open-loop generator in Python (requests are sent at fixed times; HTTP latency "
        "counts from the scheduled send time). Commit time: the post's `created_at`, "
        "set by the app just before its INSERT, so the figure slightly overstates. "
        "Floor: raw Redis LPUSH → BRPOP at the same rate, in the same run, same Redis. "
        f"Warm-up first: {WARM_UP_POSTS} posts, notified before the measurement starts (the "
        "first job of each pool process compiles its SQL and opens its connections)."
    )
    report.add("")
    report.add(
        "| database | load | posts | HTTP p50 / p99 ms | notification p50 / p90 / p99 / max ms | "
        "Redis floor p50 / p99 ms | errors |"
    )
    report.add("|---|---|---|---|---|---|---|")
    for database in ("sqlite", "postgresql"):
        measure_database(bench, plan, report, database)
    report.add("")


def measure_database(bench: Bench, plan: Plan, report: Report, database: str) -> None:
    import redis

    server = bench.start_server(Config(f"ours {database} sync", "ours", database, "sync", []))
    try:
        for _ in range(WARM_UP_POSTS):
            http_json(server.port, "POST", "/api/v1/posts", POST_BODY, server.token)
        for label, (rate, seconds) in (
            ("idle", plan.latency_idle),
            ("open loop", plan.latency_load),
        ):
            jobs.wait_jobs_done(bench, database, 60)
            client = redis.Redis(port=bench.redis_port)
            key = f"bench:floor:{bench.run_id}"
            floor: list[float] = []

            def consume(
                count: int, client: redis.Redis = client, floor: list[float] = floor, key: str = key
            ) -> None:
                reader = redis.Redis(port=bench.redis_port)
                for _ in range(count):
                    item = reader.brpop([key], timeout=10)
                    if item is None:
                        break
                    floor.append(time.time() - float(item[1]))
                reader.close()

            count = max(1, int(rate * seconds))
            consumer = threading.Thread(target=consume, args=(count,), daemon=True)
            consumer.start()

            def produce(
                count: int = count, rate: float = rate, key: str = key, client: redis.Redis = client
            ) -> None:
                start = time.monotonic() + 0.25
                for index in range(count):
                    time.sleep(max(0.0, start + index / rate - time.monotonic()))
                    client.lpush(key, repr(time.time()))

            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            sent = open_loop(server.port, "/api/v1/posts", POST_BODY, server.token, rate, seconds)
            producer.join(30)
            consumer.join(30)
            client.close()
            jobs.wait_jobs_done(bench, database, 60)
            job_posts = jobs.job_posts(bench, database)
            delivered = {}
            for entry in jobs.deliveries(bench):
                match = re.match(r"<notify-(.+)@", entry.get("message_id") or "")
                if match and match.group(1) in job_posts:
                    delivered.setdefault(job_posts[match.group(1)], entry["time"])
            http_latency = [s.finished - s.scheduled for s in sent]
            notify = []
            for s in sent:
                if s.status == 201 and s.payload["id"] in delivered:
                    created = datetime.fromisoformat(s.payload["created_at"]).timestamp()
                    notify.append(delivered[s.payload["id"]] - created)
            errors = sum(s.status != 201 for s in sent)
            h50, h99 = percentiles(http_latency, (50, 99))
            n50, n90, n99, nmax = percentiles(notify, (50, 90, 99, 100))
            f50, f99 = percentiles(floor, (50, 99))
            report.add(
                f"| {database} | {label}, {rate:g} posts/s for {seconds:g} s | {len(sent)} sent, "
                f"{len(notify)} notified | {h50 * 1000:.1f} / {h99 * 1000:.1f} | "
                f"{n50 * 1000:.1f} / {n90 * 1000:.1f} / {n99 * 1000:.1f} / {nmax * 1000:.1f} | "
                f"{f50 * 1000:.2f} / {f99 * 1000:.2f} | {errors} |"
            )
            report.data[f"latency {database} {label}"] = {
                "rate": rate,
                "sent": len(sent),
                "notified": len(notify),
                "errors": errors,
                "http_ms": [h50 * 1000, h99 * 1000],
                "notify_ms": [n50 * 1000, n90 * 1000, n99 * 1000, nmax * 1000],
                "floor_ms": [f50 * 1000, f99 * 1000],
            }
    finally:
        bench.stop_server(server)

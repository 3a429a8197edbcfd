# It starts only Postfix's smtp-sink, with its own fixed arguments.
"""Fan-out section (on PostgreSQL): one post of an author with N confirmed subscribers, against
the fair tutorial's way (one Celery task per e-mail, smtplib, a new connection per task) in the
same run and on the same SMTP sink.

The sink is Postfix's `smtp-sink` (Debian package postfix, installed by `make bench-deps`),
keeping nothing, only counting; it is measured alone first, so that it is known not to be the
bottleneck. Then:

- POST /api/v1/posts CPU per call (in one process, the server's backends counted) by an author
  with N subscribers and by one without: the request writes one job row more, never a delivery;
- ours: the expansion time (the post's summary row: started -> every delivery written), the
  e-mails per second from the POST to the last e-mail, the Celery worker's CPU per e-mail (its
  main process and pool, the relay included) and PostgreSQL's, the pool's RSS growth, and the
  check that the sink counted exactly N e-mails (plus the author's own notification) with every
  delivery `sent` once;
- DELETE /api/v1/posts/<id> of that post (its N deliveries go by cascade);
- the fair tutorial: N' tasks queued first, then its worker started, timed to the last e-mail;
- MAIL_RATE_LIMIT=200 over the plan's seconds: e-mails per second in the window.
"""

from __future__ import annotations

import itertools
import re
import shutil
import smtplib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from celery import Celery

from harness.cpu import Probe, ServerClock, measure_probes
from harness.launcher import Service, free_port, wait_until
from harness.load import http_json
from harness.plans import PASSWORD, Config, Plan
from harness.procfs import children, cpu_seconds, proc_status
from harness.report import Report
from harness.stack import Bench, start_workers
from sections.growth import build_app

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
OURS = Config("ours postgresql fan-out", "ours", "postgresql", "sync", [])
FAIR = Config("fair tutorial postgresql fan-out", "fair_tutorial", "postgresql", "sync", [])
RATE_LIMIT = 200
SINK_ALONE_MESSAGES = 20_000
COUNTER = re.compile(rb"mesg=(\d+)")


@dataclass
class Sink:
    proc: Service
    port: int

    def count(self) -> int:
        """Messages accepted so far (smtp-sink's -c counter, the last one it printed)."""
        found = COUNTER.findall(self.proc.log_path.read_bytes()[-200:])
        return int(found[-1]) if found else 0

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


@dataclass
class Run:
    """One measured fan-out (or the fair tutorial's drain)."""

    emails: int
    seconds: float
    worker_cpu_s: float
    server_cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.emails / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.worker_cpu_s / self.emails * 1000 if self.emails else 0.0


def measure(bench: Bench, plan: Plan, report: Report) -> None:
    assert plan.fanout
    subscribers, fair_tasks, rate_seconds = plan.fanout
    report.add(f"\n## Fan-out: one post to {subscribers:,} confirmed subscribers (PostgreSQL)\n")
    if not shutil.which(SMTP_SINK):
        report.add("Skipped: Postfix's smtp-sink is missing (`make bench-deps` installs it).")
        return
    sink = start_sink(bench)
    sink_figures = sink_alone(sink)
    url = bench.database_url("ours", "postgresql")
    author, one, alone = seed(bench, url, subscribers)
    post_cpu = post_cpu_per_call(bench, url, author, one, alone)
    ours, deleted_ms = fan_out(bench, sink, url, author, subscribers)
    fair = fair_tutorial(bench, sink, fair_tasks)
    limited = rate_limited(bench, sink, url, author, rate_seconds)
    write(
        report, subscribers, sink_figures, post_cpu, ours, deleted_ms, fair, limited, rate_seconds
    )


def start_sink(bench: Bench) -> Sink:
    """smtp-sink on a free port: counts (-c), keeps nothing; as root it drops to nobody."""
    port = free_port()
    args = [SMTP_SINK, "-c", "-u", "nobody", f"127.0.0.1:{port}", "1024"]
    proc = bench.launcher.start("smtp-sink", args, bench.env_base)

    def answers() -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=1) as smtp:
                return smtp.noop()[0] == 250
        except OSError:
            return False

    proc.wait_for(answers, 15, "smtp-sink")
    return Sink(proc, port)


def sink_alone(sink: Sink) -> dict[str, float]:
    """One smtplib connection sending as fast as it can: what the sink takes, at what cost."""
    before_count, before_cpu = sink.count(), sink.cpu()
    message = b"Subject: sink alone\r\nMessage-ID: <alone@bench>\r\n\r\nA few words.\r\n"
    started, client_cpu = time.monotonic(), time.process_time()
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
        for _ in range(SINK_ALONE_MESSAGES):
            smtp.sendmail("bench@example.com", ["reader@example.com"], message)
    seconds = time.monotonic() - started
    client_cpu = time.process_time() - client_cpu
    wait_until(lambda: sink.count() - before_count >= SINK_ALONE_MESSAGES, 10, "the sink count")
    return {
        "per_s": SINK_ALONE_MESSAGES / seconds,
        "sink_cpu_ms": (sink.cpu() - before_cpu) / SINK_ALONE_MESSAGES * 1000,
        "client_cpu_ms": client_cpu / SINK_ALONE_MESSAGES * 1000,
    }


def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def add_subscribers(
    conn: psycopg.Connection[Any], author_id: int, password_hash: str, prefix: str, count: int
) -> None:
    """`count` readers with confirmed addresses, named `<prefix><n>` and sharing one password
    hash, who followed the author a minute ago: two set-based INSERTs in the caller's
    transaction."""
    conn.execute(
        "INSERT INTO users (username, email, email_confirmed_at, password_hash, role, "
        "created_at, password_changed_at, security_stamp) "
        "SELECT %(prefix)s || g, %(prefix)s || g || '@example.com', now(), %(hash)s, 'user', "
        "now(), now(), md5(g::text) FROM generate_series(1, %(n)s) AS g",
        {"prefix": prefix, "hash": password_hash, "n": count},
    )
    conn.execute(
        "INSERT INTO subscriptions (subscriber_id, author_id, created_at) "
        "SELECT id, %(author)s, now() - interval '1 minute' FROM users "
        "WHERE username LIKE %(prefix)s",
        {"author": author_id, "prefix": f"{prefix}%"},
    )


def seed(bench: Bench, url: str, subscribers: int) -> tuple[str, str, str]:
    """An author with `subscribers` confirmed subscribers (one password hash for all, written
    in bulk), one with a single subscriber and one with none; their usernames."""
    app = build_app(bench, url)
    client = app.test_client()
    names = (f"fanout_{bench.run_id}", f"one_{bench.run_id}", f"alone_{bench.run_id}")
    for name in names:
        body = {"username": name, "password": PASSWORD, "email": f"{name}@example.com"}
        response = client.post("/api/v1/users", json=body)
        assert response.status_code == 201, response.get_data(as_text=True)
    started = time.monotonic()
    with psycopg.connect(_pg(url), autocommit=False) as conn:
        author_id, password_hash = conn.execute(
            "SELECT id, password_hash FROM users WHERE username = %s", (names[0],)
        ).fetchone()  # type: ignore[misc]
        add_subscribers(conn, author_id, password_hash, f"reader_{bench.run_id}_", subscribers)
        conn.execute(
            "INSERT INTO subscriptions (subscriber_id, author_id, created_at) "
            "SELECT a.id, b.id, now() FROM users AS a, users AS b "
            "WHERE a.username = %s AND b.username = %s",
            (names[2], names[1]),
        )
        conn.commit()
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE subscriptions")
        conn.commit()
    print(f"fanout: {subscribers:,} subscribers seeded in {time.monotonic() - started:.1f} s")
    return names


def post_cpu_per_call(
    bench: Bench, url: str, author: str, one: str, alone: str
) -> dict[str, list[float]]:
    """CPU ms per POST (ours, server) by each author, in one process, no worker running; the
    posts are deleted again (their fan-out job with them)."""
    app = build_app(bench, url)
    client = app.test_client()

    def poster(name: str) -> Callable[[], None]:
        login = client.post("/api/v1/login", json={"username": name, "password": PASSWORD})
        headers = {"Authorization": f"Bearer {login.json['access_token']}"}

        def post() -> None:
            body = {"title": "Fan-out bench", "content": "A few words."}
            response = client.post("/api/v1/posts", json=body, headers=headers)
            assert response.status_code == 201, response.get_data(as_text=True)

        return post

    probes = [
        Probe("POST by the author with the subscribers", poster(author)),
        Probe("POST by an author with one subscriber", poster(one)),
        Probe("POST by an author without subscribers", poster(alone)),
    ]
    server = ServerClock(url.rsplit("/", 1)[1])
    values = measure_probes(probes, 100, 3, 30, server)
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        conn.execute(
            "DELETE FROM posts WHERE user_id IN "
            "(SELECT id FROM users WHERE username IN (%s, %s, %s))",
            (author, one, alone),
        )
    return values


def _worker_cpu(worker: Service) -> float:
    return sum(cpu_seconds(pid) for pid in [worker.pid, *children(worker.pid)])


def _pool_rss_kb(worker: Service) -> list[int]:
    return [proc_status(pid, "VmRSS") for pid in children(worker.pid)]


def _active_jobs(url: str) -> int:
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
        ).fetchone()
    return int(row[0]) if row else 0


def _counts(url: str, post_id: int) -> dict[str, int]:
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM deliveries WHERE post_id = %s GROUP BY status", (post_id,)
        ).fetchall()
    return {str(status): int(count) for status, count in rows}


def fan_out(bench: Bench, sink: Sink, url: str, author: str, subscribers: int) -> tuple[Run, float]:
    """Our stack (gunicorn and one Celery worker, as docs/operations.md runs them): one POST,
    timed to the last e-mail; then the post's DELETE, timed."""
    server = bench.start_server(OURS, env={"MAIL_PORT": str(sink.port)})
    assert server.worker
    try:
        status, body = http_json(
            server.port, "POST", "/api/v1/login", {"username": author, "password": PASSWORD}
        )
        token = body["access_token"]
        clock = ServerClock(url.rsplit("/", 1)[1])
        # The seed's notifications sent: from here on the sink counts the fan-out only.
        wait_until(lambda: _active_jobs(url) == 0, 120, "the seed's jobs")
        clock.refresh()
        rss_before = _pool_rss_kb(server.worker)
        cpu_before, server_before, sink_before = (
            _worker_cpu(server.worker),
            clock.ns(),
            sink.count(),
        )
        started = time.monotonic()
        status, post = http_json(
            server.port, "POST", "/api/v1/posts", {"title": "Fan-out", "content": "x"}, token
        )
        assert status == 201, post

        def sent() -> bool:
            return _counts(url, post["id"]).get("sent", 0) >= subscribers

        wait_until(sent, 1800, "every e-mail of the fan-out", interval=0.5)
        seconds = time.monotonic() - started
        clock.refresh()
        run = Run(
            subscribers,
            seconds,
            _worker_cpu(server.worker) - cpu_before,
            (clock.ns() - server_before) / 1e9,
        )
        wait_until(lambda: sink.count() - sink_before >= subscribers + 1, 30, "the sink count")
        time.sleep(1)  # anything more would be a duplicate: give it time to show
        with psycopg.connect(_pg(url), autocommit=True) as conn:
            expansion, attempts, first, last = conn.execute(
                "SELECT extract(epoch FROM s.expanded_at - s.started_at), "
                "(SELECT max(attempts) FROM deliveries WHERE post_id = %(p)s), "
                "(SELECT min(finished_at) FROM deliveries WHERE post_id = %(p)s), "
                "(SELECT max(finished_at) FROM deliveries WHERE post_id = %(p)s) "
                "FROM delivery_summaries AS s WHERE s.post_id = %(p)s",
                {"p": post["id"]},
            ).fetchone()  # type: ignore[misc]
        run.extra = {
            "expansion_s": float(expansion),
            "first_to_last_s": (last - first).total_seconds(),
            "sink_count": sink.count() - sink_before,
            "max_attempts": attempts,
            "counts": _counts(url, post["id"]),
            "rss_growth_mb": [
                round((after - before) / 1024, 1)
                for before, after in zip(rss_before, _pool_rss_kb(server.worker), strict=False)
            ],
        }
        deleting = time.monotonic()
        status, _ = http_json(
            server.port, "DELETE", f"/api/v1/posts/{post['id']}", None, token, 120
        )
        assert status == 200
        deleted_ms = (time.monotonic() - deleting) * 1000
    finally:
        bench.stop_server(server)
    return run, deleted_ms


def fair_tutorial(bench: Bench, sink: Sink, tasks: int) -> Run:
    """The fair tutorial's worker: `tasks` e-mail tasks queued first (one per subscriber, as a
    `.delay()` per subscriber would), then its worker started and timed to the last e-mail."""
    url = bench.database_url("fair_tutorial", "postgresql")
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        conn.execute(
            'INSERT INTO "user" (username, password, email, is_admin) '
            "SELECT 'fair_' || g, 'x', 'fair_' || g || '@example.com', false "
            "FROM generate_series(1, %s) AS g",
            (tasks,),
        )
        ids = [
            row[0] for row in conn.execute("SELECT id FROM \"user\" WHERE username LIKE 'fair_%'")
        ]
    env = bench.app_env(FAIR) | {"BENCH_MAIL_PORT": str(sink.port)}
    queue = env["BENCH_QUEUE"]
    publisher = Celery("bench-fan-out", broker=bench.redis_url)
    try:
        with publisher.producer_or_acquire() as producer:
            for user_id in ids:
                publisher.send_task(
                    "tutorial_app.send_email_notification",
                    args=[user_id, "Fan-out"],
                    queue=queue,
                    producer=producer,
                )
    finally:
        publisher.close()
    cwd = bench.tmp / "fair_tutorial-cwd"
    cwd.mkdir(exist_ok=True)
    sink_before = sink.count()
    worker = start_workers(bench.launcher, FAIR, env, cwd)
    assert worker
    try:
        worker.wait_for(lambda: len(children(worker.pid)) >= 2, 60, "the fair tutorial's pool")
        cpu_before = _worker_cpu(worker)
        started = time.monotonic()
        wait_until(
            lambda: sink.count() - sink_before >= len(ids),
            1800,
            "the fair tutorial's e-mails",
            interval=0.05,
        )
        seconds = time.monotonic() - started
        return Run(len(ids), seconds, _worker_cpu(worker) - cpu_before)
    finally:
        worker.stop()


def rate_limited(bench: Bench, sink: Sink, url: str, author: str, seconds: float) -> Run:
    """Ours with MAIL_RATE_LIMIT=200 (counted in the run's Redis): the e-mails per second over
    `seconds`, after the first second (the fan-out's expansion)."""
    env = {"MAIL_PORT": str(sink.port), "MAIL_RATE_LIMIT": str(RATE_LIMIT)}
    server = bench.start_server(OURS, env=env)
    try:
        _, body = http_json(
            server.port, "POST", "/api/v1/login", {"username": author, "password": PASSWORD}
        )
        status, post = http_json(
            server.port,
            "POST",
            "/api/v1/posts",
            {"title": "Throttled", "content": "x"},
            body["access_token"],
        )
        assert status == 201, post
        wait_until(lambda: _counts(url, post["id"]).get("sent", 0) > 0, 60, "the first e-mail")
        time.sleep(1)
        before, started = sink.count(), time.monotonic()
        samples = []
        while time.monotonic() - started < seconds:
            time.sleep(5)
            samples.append(sink.count())
        elapsed = time.monotonic() - started
        counts = [before, *samples]
        per_5s = [(b - a) / 5 for a, b in itertools.pairwise(counts)]
        return Run(sink.count() - before, elapsed, 0.0, extra={"per_5s": per_5s})
    finally:
        bench.stop_server(server)
        with psycopg.connect(_pg(url), autocommit=True) as conn:
            conn.execute("DELETE FROM posts WHERE title = 'Throttled'")


def write(
    report: Report,
    subscribers: int,
    alone: dict[str, float],
    post_cpu: dict[str, list[float]],
    ours: Run,
    deleted_ms: float,
    fair: Run,
    limited: Run,
    rate_seconds: float,
) -> None:
    report.add(
        f"- The sink alone (Postfix's smtp-sink, one smtplib connection, {SINK_ALONE_MESSAGES:,} "
        f"messages): {alone['per_s']:,.0f} messages/s; sink CPU {alone['sink_cpu_ms']:.3f} ms and "
        f"client CPU {alone['client_cpu_ms']:.3f} ms per message."
    )
    [with_subs, with_one, without] = post_cpu.values()
    report.add(
        f"- POST /api/v1/posts CPU per call (ours + PostgreSQL): {with_subs[0]:.3f} + "
        f"{with_subs[1]:.3f} ms by the author with {subscribers:,} subscribers, "
        f"{with_one[0]:.3f} + {with_one[1]:.3f} ms by one with a single subscriber: "
        f"{sum(with_subs) / sum(with_one):.2f}x (target ≤ 1.05x: the request does nothing per "
        f"subscriber). By an author without subscribers, who gets no fan-out job: "
        f"{without[0]:.3f} + {without[1]:.3f} ms ({sum(with_subs) / sum(without):.2f}x)."
    )
    extra = ours.extra
    report.add(
        f"- Expansion of the {subscribers:,} deliveries (and their batch jobs): "
        f"{extra['expansion_s']:.2f} s (target ≤ 5 s)."
    )
    report.add("")
    report.add(
        "| fan-out | e-mails | seconds | e-mails/s | worker CPU ms per e-mail "
        "| PostgreSQL CPU ms per e-mail |"
    )
    report.add("|---|---|---|---|---|---|")
    report.add(
        f"| ours (POST to last e-mail) | {ours.emails:,} | {ours.seconds:.1f} | {ours.rate:,.0f} | "
        f"{ours.cpu_ms:.3f} | {ours.server_cpu_s / ours.emails * 1000:.3f} |"
    )
    report.add(
        f"| fair tutorial (one task per e-mail) | {fair.emails:,} | {fair.seconds:.1f} | "
        f"{fair.rate:,.0f} | {fair.cpu_ms:.3f} | n/a |"
    )
    report.add("")
    report.add(
        f"- Ours vs the fair tutorial: {ours.rate / fair.rate:.2f}x the e-mails per second "
        f"(target ≥ 5x and ≥ 1,000/s), {ours.cpu_ms / fair.cpu_ms:.2f}x the worker CPU per e-mail "
        f"(target ≤ 0.3x). First to last e-mail: {extra['first_to_last_s']:.1f} s."
    )
    report.add(
        f"- Exactly one e-mail each: the sink counted {extra['sink_count']:,} (the subscribers and "
        f"the author's own notification), deliveries {extra['counts']}, at most "
        f"{extra['max_attempts']} attempt(s) each."
    )
    report.add(
        f"- Worker pool RSS growth over the fan-out: {extra['rss_growth_mb']} MB (target ≤ 30 MB)."
    )
    report.add(
        f"- DELETE /api/v1/posts/<id> of the fanned-out post ({subscribers:,} deliveries by "
        f"cascade): {deleted_ms:.0f} ms."
    )
    per_5s = limited.extra["per_5s"]
    report.add(
        f"- MAIL_RATE_LIMIT={RATE_LIMIT}: {limited.rate:.1f} e-mails/s over {rate_seconds:.0f} s "
        f"(target {RATE_LIMIT} ± 10 %); per 5 s: median {statistics.median(per_5s):.0f}, "
        f"min {min(per_5s):.0f}, max {max(per_5s):.0f}."
    )
    report.add("")
    report.data["fanout"] = {
        "sink_alone": alone,
        "post_cpu_ms": post_cpu,
        "ours": {**vars(ours), "rate": ours.rate, "cpu_ms": ours.cpu_ms},
        "fair": {**vars(fair), "rate": fair.rate, "cpu_ms": fair.cpu_ms},
        "delete_ms": deleted_ms,
        "rate_limited": {**vars(limited), "rate": limited.rate},
    }

"""Fan-out faults (R40-R47): a post to an author's subscribers under a worker SIGKILLed
mid-batch, an SMTP server answering 451 for a while, SMTP connections dropped mid-batch,
PostgreSQL cut during the expansion, Redis killed mid-fan-out, the post deleted mid-fan-out and
subscribers unsubscribing mid-fan-out, plus the happy path on two workers; R40-naive is the
negative control (one Celery message per e-mail, no per-delivery record) under R40's fault.

The oracle (fanout_oracle.py) counts per post and subscriber: exactly one e-mail to each
confirmed subscriber, none to the unconfirmed, the address-less and those whose delivery an
unsubscribe cancelled; 0 lost, 0 duplicated, at most one ambiguous per killed process.
Runs with EMAIL_CONFIRMATION_REQUIRED, batches of 25 and expansion chunks of 50 (the default
run: 100 confirmed subscribers; the long variant of R47: 2,000).
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from aiosmtpd.controller import Controller
from fanout_oracle import (
    Audience,
    Owed,
    create_fan_out_post,
    fan_out_busy,
    fan_out_records,
    make_audience,
    measure_fan_out,
    one_delivery_each,
)
from flask import Flask
from oracle import Figures, queued_messages

from blog_api.extensions import db
from blog_api.models import Delivery, Post
from blog_api.services import subscriptions
from harness.launcher import Service, wait_until
from smtp_sink import SinkHandler
from support.fault_hooks import NAIVE_FAN_OUT_TASK
from support.integration_stack import POSTGRESQL_ONLY, Stack

pytestmark = [pytest.mark.integration, POSTGRESQL_ONLY]

CONFIRMED, UNCONFIRMED, WITHOUT_ADDRESS = 100, 10, 5
FAN_OUT = {
    "EMAIL_CONFIRMATION_REQUIRED": "true",
    "DELIVERY_BATCH_SIZE": "25",
    "DELIVERY_EXPANSION_CHUNK": "50",
}
# Where a worker is killed: its lease decides when the batch is taken up again.
SHORT_LEASE = {
    "MAIL_TIMEOUT": "1",
    "TASK_SOFT_TIME_LIMIT": "2",
    "TASK_TIME_LIMIT": "3",
    "JOB_LEASE_SECONDS": "4",
}
DEADLINE = 60.0
# What a prefork worker logs about a pool process that died by SIGKILL. (It may notice only
# when the task's hard time limit passes, and then logs that limit first.)
KILLED = re.compile(r"Process '[^']+' pid:(\d+) exited with 'signal 9 \(SIGKILL\)'")


def kills(worker: Service) -> int:
    """How many pool processes of `worker` died by SIGKILL (each replacement counts its own
    messages again, and is killed at its n-th too)."""
    return len(set(KILLED.findall(worker.log())))


def audience_of(stack: Stack, name: str, confirmed: int = CONFIRMED) -> tuple[Flask, Audience]:
    app = stack.app()
    return app, make_audience(
        app, f"{name}_{uuid.uuid4().hex[:6]}", confirmed, UNCONFIRMED, WITHOUT_ADDRESS
    )


def owed_to(audience: Audience, post_id: int, title: str) -> Owed:
    return Owed(title, post_id, set(audience.confirmed), never=set(audience.unconfirmed))


def fan_out_sent(stack: Stack, title: str) -> int:
    return sum(
        str(record["subject"]).endswith(f": {title}") for record in fan_out_records(stack.mail_log)
    )


def settle(
    app: Flask, stack: Stack, owed: list[Owed], deadline: float = DEADLINE
) -> tuple[Figures, dict[str, int]]:
    """Wait (hard deadline) until no job of the posts runs or waits and no delivery is
    unfinished; then measure."""
    ids = [post.post_id for post in owed]
    wait_until(
        lambda: fan_out_busy(app, ids) == 0,
        deadline,
        lambda: f"the fan-out to finish; {fan_out_busy(app, ids)} job(s) or deliveries left",
        interval=0.3,
    )
    return measure_fan_out(app, owed, stack.mail_log)


def assert_fan_out_clean(figures: Figures, extra: dict[str, int], ambiguous: int = 0) -> None:
    assert (figures.emails_lost, figures.emails_duplicated, figures.emails_dead) == (0, 0, 0), (
        figures
    )
    assert figures.emails_delivered == figures.emails_expected, figures
    assert figures.emails_ambiguous <= ambiguous, figures
    assert extra["forbidden_received"] == 0, extra


@contextmanager
def sink_in_this_process(
    stack: Stack, fail_codes: list[str | None] | None = None
) -> Iterator[SinkHandler]:
    """The project's sink on the stack's mail port, in the test process, so that the test can
    change its answers while the fan-out runs (`handler.always = "451"`)."""
    handler = SinkHandler(str(stack.mail_log), list(fail_codes or []), None, quiet=True)
    controller = Controller(handler, hostname="127.0.0.1", port=stack.mail_port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.mark.scenario("R40")
def test_a_worker_killed_mid_batch_leaves_at_most_its_message_in_flight_ambiguous(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R40: a worker's pool process SIGKILLed mid-batch, right after its 40th message was
    accepted and before its outcome was recorded (and so is each replacement process at its
    40th); the batch is taken up again after the lease."""
    stack = redis_stack
    stack.configure(**FAN_OUT, **SHORT_LEASE)
    [worker] = stack.up(concurrency=1, FAULT_POINT="after_smtp_250_before_commit#40")
    app, audience = audience_of(stack, "r40")
    title = f"R40 {uuid.uuid4().hex[:8]}"
    post_id = create_fan_out_post(app, audience, title)

    wait_until(lambda: kills(worker), 30, "the pool process to be killed")
    figures, extra = settle(app, stack, [owed_to(audience, post_id, title)])
    killed = kills(worker)
    report_figures(
        "R40",
        "pool process SIGKILLed after its 40th message's 250",
        figures,
        killed=killed,
        **extra,
    )

    assert_fan_out_clean(figures, extra, ambiguous=killed)
    assert one_delivery_each(app, post_id)


@pytest.mark.scenario("R40-naive")
def test_naive_fan_out_loses_the_message_of_a_killed_worker_and_the_oracle_says_so(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R40-naive: the same kill with the naive fan-out, one Celery message per e-mail and no
    per-delivery record (the negative control)."""
    stack = redis_stack
    stack.configure(**FAN_OUT, **SHORT_LEASE)
    [worker] = stack.up(concurrency=1, relay=False, FAULT_NAIVE_KILL_AT="40")
    app, audience = audience_of(stack, "r40naive")
    title = f"R40-naive {uuid.uuid4().hex[:8]}"
    celery_app = app.extensions["celery"]
    with celery_app.producer_or_acquire() as producer:
        for address in audience.confirmed:  # as a `.delay()` per subscriber after the commit
            celery_app.send_task(
                NAIVE_FAN_OUT_TASK, args=[audience.author, title, address], producer=producer
            )

    wait_until(lambda: kills(worker), 30, "the pool process to be killed")
    wait_until(
        lambda: (
            queued_messages(stack.broker_url, stack.queue) == 0
            and fan_out_sent(stack, title) + kills(worker) >= CONFIRMED
        ),
        30,
        "the other messages",
    )
    owed = Owed(title, 0, set(audience.confirmed), never=set(audience.unconfirmed))
    figures, extra = measure_fan_out(app, [owed], stack.mail_log)
    killed = kills(worker)
    report_figures(
        "R40-naive",
        "as R40 (before the message), one message per e-mail (negative control)",
        figures,
        killed=killed,
        **extra,
    )

    # Nothing re-drives a message whose process died: each kill lost one e-mail for good.
    assert figures.emails_lost == killed >= 1, figures
    assert figures.emails_delivered == CONFIRMED - killed, figures


@pytest.mark.scenario("R41")
def test_a_mail_server_answering_451_for_a_while_delays_the_fan_out_and_loses_nothing(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R41: the SMTP server answers 451 to every message for 4 s mid-fan-out (SPEC's 10 s,
    shortened to keep the file short), then accepts again."""
    stack = redis_stack
    # Small batches, throttled (100 e-mails take 5 s), so that the fan-out is still sending
    # when the sink starts refusing: unthrottled, a fast run had sent all 100 by then.
    stack.configure(
        **{**FAN_OUT, "DELIVERY_BATCH_SIZE": "10"}, MAIL_MAX_RETRIES=10, MAIL_RATE_LIMIT=20
    )
    with sink_in_this_process(stack) as sink:
        stack.start_worker(concurrency=2)
        app, audience = audience_of(stack, "r41")
        title = f"R41 {uuid.uuid4().hex[:8]}"
        post_id = create_fan_out_post(app, audience, title)
        wait_until(lambda: fan_out_sent(stack, title) >= 20, 30, "20 e-mails")
        sink.always = "451"
        time.sleep(4)
        sink.always = None
        figures, extra = settle(app, stack, [owed_to(audience, post_id, title)])
    refused = sum(1 for line in stack.mail_log.read_text().splitlines() if '"refused"' in line)
    report_figures(
        "R41", "sink answers 451 to every DATA for 4 s", figures, refused=refused, **extra
    )

    assert refused > 0
    assert_fan_out_clean(figures, extra)


@pytest.mark.scenario("R42")
def test_smtp_connections_dropped_mid_batch_are_reopened_and_nothing_is_lost(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R42: the SMTP server drops the connection after the DATA of two messages mid-batch
    (the messages are not taken); the batches go on over new connections."""
    stack = redis_stack
    stack.configure(**FAN_OUT)
    script: list[str | None] = [*[None] * 20, "drop", *[None] * 30, "drop"]
    with sink_in_this_process(stack, script):
        stack.start_worker(concurrency=2)
        app, audience = audience_of(stack, "r42")
        title = f"R42 {uuid.uuid4().hex[:8]}"
        post_id = create_fan_out_post(app, audience, title)
        figures, extra = settle(app, stack, [owed_to(audience, post_id, title)])
    dropped = sum(1 for line in stack.mail_log.read_text().splitlines() if '"dropped"' in line)
    report_figures(
        "R42", "sink drops the connection after 2 DATAs", figures, dropped=dropped, **extra
    )

    assert dropped == 2
    assert_fan_out_clean(figures, extra)


@pytest.mark.scenario("R43")
def test_postgresql_cut_during_the_expansion_resumes_without_duplicates_or_gaps(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R43: the worker's PostgreSQL cut (proxy reset) for 2 s while the post's deliveries are
    being written, chunk by chunk (chunks of 20, a 0.2 s hook after each)."""
    stack = redis_stack
    stack.configure(**{**FAN_OUT, "DELIVERY_EXPANSION_CHUNK": "20"})
    stack.start_sink()
    proxy = stack.proxy(5432)
    database = stack.database_url.replace(":5432/", f":{proxy.port}/")
    stack.start_worker(
        concurrency=2, DATABASE_URL=database, FAULT_POINT="after_expansion_chunk:0.2"
    )
    app, audience = audience_of(stack, "r43")
    title = f"R43 {uuid.uuid4().hex[:8]}"
    post_id = create_fan_out_post(app, audience, title)

    wait_until(lambda: deliveries_written(app, post_id) >= 40, 30, "two chunks written")
    proxy.set_mode("reset")
    time.sleep(2)
    written_during_the_cut = deliveries_written(app, post_id)
    proxy.set_mode("pass")
    figures, extra = settle(app, stack, [owed_to(audience, post_id, title)])
    report_figures(
        "R43",
        "proxy resets PostgreSQL for 2 s mid-expansion",
        figures,
        written_before_the_cut=written_during_the_cut,
        **extra,
    )

    assert written_during_the_cut < CONFIRMED
    assert deliveries_written(app, post_id) == CONFIRMED
    assert one_delivery_each(app, post_id)
    assert_fan_out_clean(figures, extra)


def deliveries_written(app: Flask, post_id: int) -> int:
    with app.app_context():
        count = db.session.query(Delivery).filter(Delivery.post_id == post_id).count()
        db.session.remove()
        return count


@pytest.mark.scenario("R44")
def test_redis_killed_mid_fan_out_loses_nothing(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R44: Redis (the broker, no persistence) SIGKILLed mid-fan-out and back 2 s later: the
    queued batch messages are gone, the running batches are cancelled; the relay publishes
    every batch again from its row."""
    stack = redis_stack
    stack.configure(**FAN_OUT, **SHORT_LEASE)
    port = int(stack.broker_url.rsplit(":", 1)[1].split("/")[0])
    [broker] = [service for service in stack.services if service.name == f"redis-{port}"]
    stack.up(concurrency=2)
    app, audience = audience_of(stack, "r44")
    title = f"R44 {uuid.uuid4().hex[:8]}"
    post_id = create_fan_out_post(app, audience, title)

    wait_until(lambda: fan_out_sent(stack, title) >= 30, 30, "30 e-mails")
    broker.stop(signal.SIGKILL)
    time.sleep(2)
    stack.start_redis(port)
    figures, extra = settle(app, stack, [owed_to(audience, post_id, title)])
    report_figures("R44", "redis-server SIGKILLed mid-fan-out, back after 2 s", figures, **extra)

    # Each of the 2 pool processes may have had a message in flight when its task was cancelled.
    assert_fan_out_clean(figures, extra, ambiguous=2)


@pytest.mark.scenario("R45")
def test_a_post_deleted_mid_fan_out_stops_its_e_mails_and_another_post_goes_on(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R45: one of two posts deleted by its author mid-fan-out: its remaining deliveries go
    with it (at most the messages in flight still arrive), the other post reaches everyone."""
    stack = redis_stack
    # Small batches, throttled (the two posts' 200 e-mails take 10 s), so that most of the doomed
    # post's deliveries still wait when it goes: unthrottled, a fast run can send all 100 first.
    stack.configure(**{**FAN_OUT, "DELIVERY_BATCH_SIZE": "10"}, MAIL_RATE_LIMIT=20)
    stack.up(concurrency=2)
    app, audience = audience_of(stack, "r45")
    doomed_title, kept_title = (f"R45 {name} {uuid.uuid4().hex[:8]}" for name in ("gone", "kept"))
    doomed = create_fan_out_post(app, audience, doomed_title)
    kept = create_fan_out_post(app, audience, kept_title)

    wait_until(lambda: fan_out_sent(stack, doomed_title) >= 25, 30, "25 e-mails of the post")
    with app.app_context():
        db.session.delete(db.session.get_one(Post, doomed))
        db.session.commit()
        db.session.remove()
    deleted_at = time.time()
    owed = [
        Owed(
            doomed_title,
            doomed,
            set(),
            never=set(audience.unconfirmed),
            at_most_once=set(audience.confirmed),
        ),
        owed_to(audience, kept, kept_title),
    ]
    figures, extra = settle(app, stack, owed)
    after = sum(
        1
        for record in fan_out_records(stack.mail_log)
        if str(record["subject"]).endswith(doomed_title)
        and float(record["time"]) > deleted_at + 0.2  # type: ignore[arg-type]
    )
    sent_for_deleted = fan_out_sent(stack, doomed_title)
    report_figures(
        "R45",
        "post deleted after 25 of its e-mails",
        figures,
        sent_for_deleted_post=sent_for_deleted,
        sent_after_delete=after,
        **extra,
    )

    assert sent_for_deleted < CONFIRMED
    assert after <= 2  # the pool's messages in flight at most
    assert_fan_out_clean(figures, extra)


@pytest.mark.scenario("R46")
def test_subscribers_unsubscribing_mid_fan_out_get_nothing_more(
    redis_stack: Stack, report_figures: Callable[..., None]
) -> None:
    """R46: 30 subscribers unsubscribe mid-fan-out: those whose delivery the unsubscribe
    cancelled get nothing; one already in a worker's hands gets at most one; everyone else
    exactly one."""
    stack = redis_stack
    # Small batches, throttled (100 e-mails take 5 s), so that batches still wait when the 30
    # leave: with batches of 25 unthrottled, a fast run had sent or claimed all four by then.
    stack.configure(**{**FAN_OUT, "DELIVERY_BATCH_SIZE": "10"}, MAIL_RATE_LIMIT=20)
    stack.up(concurrency=2)
    app, audience = audience_of(stack, "r46")
    title = f"R46 {uuid.uuid4().hex[:8]}"
    post_id = create_fan_out_post(app, audience, title)

    wait_until(lambda: fan_out_sent(stack, title) >= 30, 30, "30 e-mails")
    leaving = audience.confirmed[-30:]
    cancelled, in_hands = set(), set()
    with app.app_context():
        for address in leaving:
            done = subscriptions.unsubscribe(audience.ids[address], audience.author_id)
            (cancelled if post_id in done.cancelled_post_ids else in_hands).add(address)
        db.session.remove()
    owed = Owed(
        title,
        post_id,
        set(audience.confirmed) - set(leaving),
        never=set(audience.unconfirmed) | cancelled,
        at_most_once=in_hands,
    )
    figures, extra = settle(app, stack, [owed])
    report_figures(
        "R46",
        "30 subscribers unsubscribe after 30 e-mails",
        figures,
        cancelled=len(cancelled),
        already_in_hands=len(in_hands),
        **extra,
    )

    assert cancelled, "no delivery was still waiting: the scenario tested nothing"
    assert_fan_out_clean(figures, extra)


@pytest.mark.scenario("R47")
@pytest.mark.parametrize(
    "confirmed",
    [
        CONFIRMED,
        pytest.param(2000, marks=pytest.mark.long),
    ],
)
def test_a_post_reaches_every_confirmed_subscriber_once_on_two_workers(
    redis_stack: Stack, report_figures: Callable[..., None], confirmed: int
) -> None:
    """R47: happy path, two workers with their relays share the batches; the unconfirmed and
    the address-less get nothing."""
    stack = redis_stack
    stack.configure(**FAN_OUT)
    workers = stack.up(workers=2, concurrency=2)
    app, audience = audience_of(stack, "r47", confirmed)
    title = f"R47 {uuid.uuid4().hex[:8]}"
    post_id = create_fan_out_post(app, audience, title)
    started = time.monotonic()

    figures, extra = settle(app, stack, [owed_to(audience, post_id, title)], deadline=120)
    seconds = round(time.monotonic() - started, 1)
    shares = [worker.log().count("blog_api.deliver_batch") for worker in workers]
    report_figures(
        "R47",
        f"none: {confirmed} confirmed subscribers, 2 workers",
        figures,
        fan_out_s=seconds,
        **extra,
    )

    assert_fan_out_clean(figures, extra)
    assert all(shares), shares
    assert one_delivery_each(app, post_id)

"""Named points in a job's run, sent as a blinker signal: `job_checkpoint.send(job, point=...)`.

The tasks send them and never look at who listens. Receivers:
- `inject_mail_failures` below: the tutorial's "random failure" exercise (MAIL_FAILURE_RATE,
  seedable with MAIL_FAILURE_SEED), a transient failure before the e-mail is sent;
- the fault suite's rig (tests only), which kills or pauses the worker at a named point.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Any

from blinker import Namespace
from flask import current_app

from blog_api.jobs.errors import TransientJobError
from blog_api.models import ErrorCode


class Checkpoint(StrEnum):
    AFTER_CLAIM = "after_claim"
    BEFORE_SMTP_DATA = "before_smtp_data"
    AFTER_SMTP_250_BEFORE_COMMIT = "after_smtp_250_before_commit"
    AFTER_AUDIT_WRITE_BEFORE_COMMIT = "after_audit_write_before_commit"
    AFTER_COMMIT_BEFORE_ACK = "after_commit_before_ack"
    # A fan-out's expansion wrote (and committed) one chunk of deliveries.
    AFTER_EXPANSION_CHUNK = "after_expansion_chunk"


signals = Namespace()
# Sender: the Job being run; keyword argument `point`: a Checkpoint.
job_checkpoint = signals.signal("job-checkpoint")

_failure_rngs: dict[int | None, random.Random] = {}


@job_checkpoint.connect
def inject_mail_failures(_job: Any, *, point: Checkpoint, **_: Any) -> None:
    """Fail an e-mail before it is sent with probability MAIL_FAILURE_RATE (0: never)."""
    config = current_app.config
    rate = config["MAIL_FAILURE_RATE"]
    if point != Checkpoint.BEFORE_SMTP_DATA or rate <= 0:
        return
    seed = config["MAIL_FAILURE_SEED"]
    rng = _failure_rngs.setdefault(seed, random.Random(seed))
    if rng.random() < rate:
        raise TransientJobError("injected failure (MAIL_FAILURE_RATE)", ErrorCode.INJECTED_FAILURE)

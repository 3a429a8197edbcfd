"""MAIL_RATE_LIMIT: at most that many fan-out messages per second, all workers together.

The count lives in the rate-limit storage (`RATELIMIT_STORAGE_URI`, Redis in production, the one
Flask-Limiter uses), in one fixed one-second window shared by every worker process. A worker
takes its messages' tokens a few at a time (a fiftieth of the rate per round trip), not one round
trip per message; tokens a worker took and did not use lapse with their window. Without a limit
(unset or 0) nothing here runs and a message costs nothing extra.

With `memory://` (no Redis) every worker process counts alone, so N processes send up to N times
the rate.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

IDENTIFIERS = ("blog_api", "fan-out-mail")
# Tokens per round trip to the storage: a fiftieth of the rate, at least one.
TAKE_SHARE = 50
# While the window's tokens are spent, ask again this often (seconds). The storage tells when a
# window ends only to the second (Redis TTL), which would leave a window idle for up to half a
# second; asking every 20 ms leaves at most that.
POLL = 0.02


class ThrottleUnavailable(Exception):
    """The rate-limit storage does not answer: no message may go out meanwhile."""


class MailThrottle:
    """Hands out send tokens at `rate` per second to all processes sharing the storage."""

    def __init__(self, rate: int, storage_uri: str, options: dict[str, Any]) -> None:
        self.item = RateLimitItemPerSecond(rate)
        storage = storage_from_string(storage_uri, wrap_exceptions=True, **options)
        self.limiter = FixedWindowRateLimiter(storage)
        self.chunk = max(1, rate // TAKE_SHARE)
        self.tokens = 0

    def take(self, deadline: float) -> bool:
        """One token, waiting for the next window while the rate is used up; False when that
        wait would end after `deadline` (time.monotonic()). ThrottleUnavailable when the
        storage fails."""
        while self.tokens == 0:
            try:
                if self.limiter.hit(self.item, *IDENTIFIERS, cost=self.chunk):
                    self.tokens = self.chunk
                    break
            except StorageError as error:
                raise ThrottleUnavailable(f"rate-limit storage failed: {error!r}") from error
            if time.monotonic() + POLL > deadline:
                return False
            time.sleep(POLL)
        self.tokens -= 1
        return True


_throttles: dict[tuple[int, str], MailThrottle] = {}


def mail_throttle() -> MailThrottle | None:
    """This process's throttle for the app's MAIL_RATE_LIMIT, or None without a limit."""
    config = current_app.config
    rate = int(config["MAIL_RATE_LIMIT"] or 0)
    if rate <= 0:
        return None
    uri = str(config.get("RATELIMIT_STORAGE_URI") or config.get("REDIS_URL") or "memory://")
    throttle = _throttles.get((rate, uri))
    if throttle is None:
        options = dict(config["RATELIMIT_STORAGE_OPTIONS"])
        throttle = _throttles[(rate, uri)] = MailThrottle(rate, uri, options)
    return throttle

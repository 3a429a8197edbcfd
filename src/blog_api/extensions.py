"""Unbound extension singletons, bound to an application in `create_app`."""

from __future__ import annotations

import flask_limiter
from blinker import Namespace
from flask import current_app
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy
from limits import parse as parse_limit
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints, so that migrations can drop and alter them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
jwt = JWTManager()
cors = CORS()

signals = Namespace()
# Sent with the app as sender when the rate limiter stops using its storage (ops/health.py
# counts it in /metrics).
rate_limit_storage_failed = signals.signal("rate-limit-storage-failed")


class Limiter(flask_limiter.Limiter):
    """Flask-Limiter, saying so when it falls back from its storage to per-process memory.

    Meanwhile every process counts on its own, so each allows the whole limit: the switch is
    logged as an error and counted. Flask-Limiter takes any exception raised while it checks a
    request for a storage error; the key functions (api/limits.py) never raise and the bodies
    they read were checked first (api/bodies.py), so only a storage failure gets here.

    Every limit of this API decorates its view, and each decorator checks its own limits. The
    pass Flask-Limiter makes before every request only applies application-wide, default,
    blueprint, meta and in-memory fallback limits; with none of them configured it finds nothing
    to check, at a tenth of a cheap request's CPU, so it is skipped then.
    """

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if in_middleware and not self._limits_beyond_views():
            return
        storage_was_alive = not self._storage_dead
        try:
            super()._check_request_limit(callable_name, in_middleware)
        finally:
            if storage_was_alive and self._storage_dead:
                self._report_storage_failure()

    def hit(self, limit: str, *identifiers: str) -> bool:
        """Count one event against `limit` (`"3 per hour"`) under `identifiers`; whether it is
        within the limit. Always within it when rate limiting is off.

        For a limit keyed by what a request does rather than by who sends it, which no view
        decorator can express (the recipient of an e-mail). Counted as the views' limits are:
        the same storage and key prefix, and per-process memory while the storage is down.
        """
        if not self.enabled:
            return True
        item = parse_limit(limit)
        keys = [self._key_prefix, *identifiers] if self._key_prefix else [*identifiers]
        try:
            return self.limiter.hit(item, *keys)
        except Exception:
            if self._storage_dead or not self._in_memory_fallback_enabled:
                raise
            self._storage_dead = True
            self._report_storage_failure()
            return self.limiter.hit(item, *keys)

    def _report_storage_failure(self) -> None:
        current_app.logger.error(
            "Rate-limit storage failed: limits are counted per process until it answers"
        )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        rate_limit_storage_failed.send(app)

    def _limits_beyond_views(self) -> bool:
        """Whether any limit applies outside the decorated views (read once per app; these are
        fixed by `init_app`)."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        answer: bool | None = app.extensions.get("blog_api_limits_beyond_views")
        if answer is None:
            manager = self.limit_manager
            answer = bool(
                manager.application_limits
                or manager.default_limits
                or manager._blueprint_limits
                or self._meta_limits
                or self._in_memory_fallback
            )
            app.extensions["blog_api_limits_beyond_views"] = answer
        return answer


limiter = Limiter(key_func=get_remote_address)

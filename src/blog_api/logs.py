"""Logging as the tutorial sets it up, made safe and traceable.

Console always, plus a rotating file (`LOG_FILE`, default `app.log`) when not in debug mode. Every
line carries the request id and URL (`-` outside a request, e.g. at startup). In a worker, the
lines logged while a job runs carry the id of the request that created the job (`bind_job`).
Messages are escaped so that user input cannot forge log lines. Calling `configure_logging` again
(tests create many apps) replaces our handlers instead of adding duplicates.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler

from flask import Flask, Response, g, has_request_context, request
from flask.logging import default_handler

TEXT_FORMAT = "%(asctime)s %(levelname)s [request_id=%(request_id)s] %(message)s [%(url)s]"
FILE_FORMAT = TEXT_FORMAT + " [in %(pathname)s:%(lineno)d]"
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
# The job a worker is running in this context: {"job_id": ..., "request_id": ...} once bound.
_job_scope: ContextVar[dict[str, str] | None] = ContextVar("blog_api_job_scope", default=None)


def escape_control_chars(text: str) -> str:
    """Render CR, LF and other control characters visibly, so one record stays one line."""
    return _CONTROL_CHARS.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def valid_request_id(value: str) -> bool:
    # The whole value: with `re.match` and `$`, "abc\n" passed, and echoing it raised a 500.
    return _VALID_REQUEST_ID.fullmatch(value) is not None


def begin_job_log_scope() -> Token[dict[str, str] | None]:
    """At the start of a task run (Celery's task_prerun); `bind_job` fills the scope in."""
    return _job_scope.set({})


def end_job_log_scope(token: Token[dict[str, str] | None]) -> None:
    """After the task run, including Celery's own "succeeded" or "retry" line (task_postrun)."""
    _job_scope.reset(token)


def bind_job(job_id: str, request_id: str | None) -> None:
    """Tag the rest of this task run's log lines with the job and its request id."""
    scope = _job_scope.get()
    if scope is not None:
        # Stored ids passed the header check; checked again, as they come from the database.
        safe = request_id if request_id and valid_request_id(request_id) else "-"
        scope.update(job_id=job_id, request_id=safe)


class RequestContextFilter(logging.Filter):
    """Adds `request_id` and `url` to every record (and `job_id` in a job's run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _job_scope.get()
        if has_request_context():
            record.request_id = g.get("request_id", "-")
            record.url = escape_control_chars(request.url)
        elif scope:
            record.request_id = scope["request_id"]
            record.job_id = scope["job_id"]
            record.url = getattr(record, "url", "-")
        else:
            record.request_id = getattr(record, "request_id", "-")
            record.url = getattr(record, "url", "-")
        return True


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control_chars(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`LOG_FORMAT=json`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "url": getattr(record, "url", "-"),
        }
        if hasattr(record, "job_id"):
            entry["job_id"] = record.job_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def _formatter(app: Flask, fmt: str) -> logging.Formatter:
    if app.config["LOG_FORMAT"] == "json":
        return JsonFormatter()
    return SafeFormatter(fmt)


def tag_worker_handlers(logger: logging.Logger, log_format: str, celery_format: str) -> None:
    """Give the handlers Celery sets up in a worker our filter and `LOG_FORMAT`, so that its own
    lines about a job ("succeeded", "retry") carry the request id too."""
    for handler in logger.handlers:
        if getattr(handler, "blog_api", False):
            continue
        handler.addFilter(RequestContextFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            tagged = celery_format.replace("%(message)s", "[request_id=%(request_id)s] %(message)s")
            handler.setFormatter(SafeFormatter(tagged))


def configure_logging(app: Flask) -> None:
    logger = app.logger
    logger.removeHandler(default_handler)
    for handler in [h for h in logger.handlers if getattr(h, "blog_api", False)]:
        logger.removeHandler(handler)
        handler.close()

    handlers: list[logging.Handler] = []
    console = logging.StreamHandler()
    console.setFormatter(_formatter(app, TEXT_FORMAT))
    handlers.append(console)
    if not app.debug and app.config.get("LOG_FILE"):
        file_handler = RotatingFileHandler(
            app.config["LOG_FILE"], maxBytes=10_000_000, backupCount=3, encoding="utf-8"
        )
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(_formatter(app, FILE_FORMAT))
        handlers.append(file_handler)
    for handler in handlers:
        handler.blog_api = True  # type: ignore[attr-defined]
        handler.addFilter(RequestContextFilter())
        logger.addHandler(handler)
    logger.setLevel(app.config["LOG_LEVEL"])
    # Our handlers replace Flask's default one, which would print every line twice.
    logger.propagate = False

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if valid_request_id(incoming) else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response

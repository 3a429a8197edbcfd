"""Logging as the tutorial sets it up, made safe and traceable, in one of two formats.

Console always, plus a rotating file (`LOG_FILE`, default `app.log`) when not in debug mode.
`LOG_FORMAT=json` writes one JSON object per line (python-json-logger) with the keys `time`,
`level`, `logger`, `message` and `request_id`, plus `url` while serving a request, `job_id` while
running a job and `exception` with a traceback; gunicorn.conf.py gives gunicorn's lines the same
keys and the worker's (Celery's) handlers get them here (`tag_worker_handlers`). `text` writes
`time LEVEL [request_id=...] message`, with ` [url]` at the end while serving a request.

Every line carries the request id (`-` outside a request, e.g. at startup). In a worker, the
lines logged while a job runs carry the id of the request that created the job (`bind_job`).
Messages are escaped so that user input cannot forge log lines: JSON escapes control characters,
the text format renders them visibly. Calling `configure_logging` again (tests create many apps)
replaces our handlers instead of adding duplicates.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar, Token
from logging.handlers import RotatingFileHandler

from flask import Flask, Response, g, has_request_context, request
from flask.logging import default_handler
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s [request_id=%(request_id)s] %(message)s"
FILE_FORMAT = TEXT_FORMAT + " [in %(pathname)s:%(lineno)d]"
# The keys of a JSON line, as gunicorn.conf.py writes them too (a test compares the two): the
# record's attributes in `fields`, renamed; every other attribute a filter or Celery added
# (`url`, `job_id`, Celery's `data`) follows under its own name.
JSON_FIELDS = ["levelname", "name", "message", "request_id"]
JSON_RENAMED = {"levelname": "level", "name": "logger", "exc_info": "exception"}
JSON_TIME = "time"  # ISO 8601, UTC
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
    """Adds `request_id` to every record, and `url` in a request (`job_id` in a job's run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _job_scope.get()
        if has_request_context():
            record.request_id = g.get("request_id", "-")
            record.url = escape_control_chars(request.url)
        elif scope:
            record.request_id = scope["request_id"]
            record.job_id = scope["job_id"]
        else:
            record.request_id = getattr(record, "request_id", "-")
        return True


class TextFormatter(logging.Formatter):
    """A text format with control characters rendered visibly, and the URL of the request being
    served at the end of the line (no placeholder outside a request)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control_chars(record.message)
        line = super().formatMessage(record)
        url = getattr(record, "url", None)
        return f"{line} [{url}]" if url else line


def json_formatter() -> logging.Formatter:
    """One JSON object per line (`LOG_FORMAT=json`)."""
    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMED, timestamp=JSON_TIME)


def _formatter(app: Flask, fmt: str) -> logging.Formatter:
    if app.config["LOG_FORMAT"] == "json":
        return json_formatter()
    return TextFormatter(fmt)


def log_json_from_the_start() -> None:
    """JSON lines on the root logger, Python's warnings included, until Celery replaces its
    handlers with its own (which `tag_worker_handlers` then formats): a worker's first lines
    (a warning when it runs as root) come before its logging is set up."""
    logging.captureWarnings(True)
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestContextFilter())
    logging.getLogger().addHandler(handler)


def tag_worker_handlers(logger: logging.Logger, log_format: str, celery_format: str) -> None:
    """Give the handlers Celery sets up in a worker our filter and `LOG_FORMAT`, so that its own
    lines about a job ("succeeded", "retry") carry the request id too."""
    for handler in logger.handlers:
        if getattr(handler, "blog_api", False):
            continue
        handler.addFilter(RequestContextFilter())
        if log_format == "json":
            handler.setFormatter(json_formatter())
        else:
            tagged = celery_format.replace("%(message)s", "[request_id=%(request_id)s] %(message)s")
            handler.setFormatter(TextFormatter(tagged))


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

"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py blog_api.wsgi:flask_app`.

Every value can be overridden from the environment (GUNICORN_* below) or the command line.
Logging follows the app's `LOG_FORMAT`; with `PROMETHEUS_MULTIPROC_DIR` set, `/metrics` sums the
counts of every worker (the hooks at the end). This file never imports the app: gunicorn's master
process stays small, and a new worker loads the code as it is on disk.
"""

import glob
import logging
import os
from typing import Any

# Loopback only: sync workers serve one connection each, so a client sending its request slowly
# holds a worker; only a buffering proxy on this machine talks to gunicorn (deploy/nginx.conf).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# Requests never talk to the broker (the workers' relay publishes the jobs they store), so a
# short keep-alive and the default sync workers are enough for a JSON API behind a proxy.
keepalive = 5
accesslog = "-"
# The combined log format, and the request id the app answered with (X-Request-ID), the id its
# own lines and the worker's lines about the request's jobs carry.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s'
)
# gunicorn 27 would otherwise create a control socket in ~/.gunicorn/.
control_socket_disable = True
proc_name = "blog-api"
# The app reads X-Forwarded-For/-Proto/-Host itself (TRUSTED_PROXIES, werkzeug's ProxyFix), so
# gunicorn acts on no forwarded header, from any peer. Its defaults trust 127.0.0.1, where nginx
# and every local client connect from: a client's `SCRIPT_NAME` header became the app's script
# name (an HTML 500 when the path did not start with it) and contradictory X-Forwarded-Proto /
# X-Forwarded-Ssl headers an HTML 400. Header names with an underscore are dropped (header_map).
forwarded_allow_ips = ""
forwarder_headers = ""
secure_scheme_headers: dict[str, str] = {}


# --- logging: LOG_FORMAT (text | json), as the app reads it -------------------------------------


def _log_format() -> str:
    """The environment's LOG_FORMAT, else `.env`'s (which the app reads too, but in the workers,
    after this file has set up gunicorn's logging), except under FLASK_ENV=testing."""
    if "LOG_FORMAT" in os.environ or os.environ.get("FLASK_ENV") == "testing":
        return os.environ.get("LOG_FORMAT", "text")
    from dotenv import dotenv_values, find_dotenv

    return dotenv_values(find_dotenv(usecwd=True)).get("LOG_FORMAT") or "text"


class GunicornRequestId(logging.Filter):
    """`request_id` on gunicorn's records: on an access line, the X-Request-ID header of the
    response; `-` on the others."""

    def filter(self, record: logging.LogRecord) -> bool:
        access = record.name == "gunicorn.access" and isinstance(record.args, dict)
        atoms = record.args if access else {}
        record.request_id = atoms.get("{x-request-id}o", "-")
        return True


# The app's formats (blog_api/logs.py: TEXT_FORMAT, json_formatter), which this file cannot import
# without loading the app into the master; a test compares the lines of both.
_JSON_LINES = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": ["levelname", "name", "message", "request_id"],
    "rename_fields": {"levelname": "level", "name": "logger", "exc_info": "exception"},
    "timestamp": "time",
}
_TEXT_LINES = {"format": "%(asctime)s %(levelname)s [request_id=%(request_id)s] %(message)s"}
_json = _log_format() == "json"
# In JSON, Python's warnings too are log records (a JSON line each), not bare text on stderr.
logging.captureWarnings(_json)

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": GunicornRequestId}},
    "formatters": {
        "lines": _JSON_LINES if _json else _TEXT_LINES,
        # In text, an access line is the access log format alone, which has its own time.
        "access": _JSON_LINES if _json else {"format": "%(message)s"},
    },
    "handlers": {
        "errors": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "lines",
            "filters": ["request_id"],
        },
        "access": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "access",
            "filters": ["request_id"],
        },
    },
    # Levels: gunicorn's own (`--log-level`) for its loggers; other libraries' warnings.
    "root": {"level": "WARNING", "handlers": ["errors"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["errors"], "propagate": False},
        "gunicorn.access": {"handlers": ["access"], "propagate": False},
    },
}


# --- metrics: one directory of counts for all workers (blog_api/ops/metrics.py) ----------------


def on_starting(server: Any) -> None:
    """Count from zero: the files of an earlier run (whose pids new workers may get again, and
    take their counts over) leave PROMETHEUS_MULTIPROC_DIR before any worker starts."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited (stopped, recycled or killed): its live gauges (requests in progress)
    leave the sum; its counts stay, as what it answered was answered."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, directory)

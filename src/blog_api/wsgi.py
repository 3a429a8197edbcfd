"""The web server's entry object (deliberately not named `app`).

gunicorn --no-control-socket -w 2 "blog_api.wsgi:flask_app"

A server only writes rows (the relay in each worker publishes the jobs): it loads neither Celery
nor Alembic. The worker's entry object is in `blog_api.worker_app`.
"""

from __future__ import annotations

from blog_api import create_app

# Servers never run migrations (`flask --app blog_api db upgrade` does) nor any other command.
flask_app = create_app(CLI=False)

"""Entry objects for servers (deliberately not named `app`, which Celery would pick first).

gunicorn --no-control-socket -w 2 "blog_api.wsgi:flask_app"
celery -A blog_api.wsgi.celery_app worker --loglevel=INFO     # each worker runs a relay too

A web server only writes rows (the relay in each worker publishes the jobs), so it loads neither
Celery nor Alembic: `celery_app` is built the first time it is asked for, which only Celery does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blog_api import create_app

if TYPE_CHECKING:
    from blog_api.worker import FlaskCelery

# Servers and workers never run migrations (`flask --app blog_api db upgrade` does) nor any
# other command.
flask_app = create_app(CLI=False)


def __getattr__(name: str) -> FlaskCelery:
    """`celery_app`: the Celery app bound to `flask_app`, built on first access (PEP 562)."""
    if name != "celery_app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Imported here, not at the top: importing Celery costs a web server 7 MB it never uses.
    from blog_api.worker import celery_init_app

    celery_app = celery_init_app(flask_app)
    globals()["celery_app"] = celery_app
    return celery_app


def __dir__() -> list[str]:
    return [*globals(), "celery_app"]

"""Blog API: a Flask REST API for users, to-dos and posts, with durable background jobs.

`create_app()` builds the application; `blog_api.wsgi` holds the objects gunicorn and Celery use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dotenv import find_dotenv, load_dotenv
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from blog_api.api import register_apis
from blog_api.api.bodies import register_body_checks
from blog_api.auth.tokens import register_jwt_callbacks
from blog_api.broker import celery_settings
from blog_api.config import config_class, read_environment
from blog_api.database import configure_engines
from blog_api.errors import register_error_handlers
from blog_api.extensions import db, limiter
from blog_api.logs import configure_logging
from blog_api.ops.cli import register_cli
from blog_api.ops.health import register_ops
from blog_api.ops.security import register_security
from blog_api.tracing import configure_tracing

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(config_name: str | None = None, **overrides: Any) -> Flask:
    """Build the application for `config_name` (default: `FLASK_ENV`, else development).

    `.env` is read except under testing; environment variables override the class defaults and
    `overrides` override both. A configuration that cannot run safely raises `ConfigError`.
    """
    if (config_name or os.environ.get("FLASK_ENV")) != "testing":
        load_dotenv(find_dotenv(usecwd=True), override=False)
    config = config_class(config_name)

    instance_path = os.path.abspath(os.environ.get("INSTANCE_PATH", "instance"))
    app = Flask(__name__, instance_path=instance_path, static_folder=None)
    app.config.from_object(config)
    app.config.update(read_environment(os.environ))
    app.config.update(overrides)
    config.validate(app.config)
    if not app.config["POST_AUDIT_LOG"]:
        app.config["POST_AUDIT_LOG"] = os.path.join(app.instance_path, "post_audit.log")
    # "/todos/" answers like "/todos", never with a redirect (a redirected POST loses its body).
    app.url_map.strict_slashes = False

    app.config["CELERY"] = celery_settings(app.config)
    configure_logging(app)
    register_proxies(app)
    register_body_checks(app)
    register_extensions(app)
    register_apis(app)
    register_error_handlers(app)
    register_security(app)
    register_ops(app)
    configure_tracing(app)
    if app.config["CLI"]:
        register_commands(app)
    return app


def register_proxies(app: Flask) -> None:
    """Behind `TRUSTED_PROXIES` reverse proxies, take the client's address, scheme and host
    from the X-Forwarded-* entries those proxies added; with 0, from the connection only."""
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )


def register_extensions(app: Flask) -> None:
    """Bind the database, JWT and rate limiting to `app`."""
    db.init_app(app)
    configure_engines(app)
    register_jwt_callbacks(app)
    if not app.config.get("RATELIMIT_STORAGE_URI"):
        app.config["RATELIMIT_STORAGE_URI"] = app.config.get("REDIS_URL") or "memory://"
    limiter.init_app(app)


def register_commands(app: Flask) -> None:
    """The `flask` command groups (db, users, tokens, jobs) and the Celery app `flask jobs sweep`
    publishes with. Imported here: servers and workers build the app without them, and so never
    load Alembic (11 MB) nor, in a web server, Celery."""
    from flask_migrate import Migrate

    from blog_api.worker import celery_init_app
    from blog_api.worker.cli import jobs_cli

    Migrate(app, db, directory=str(MIGRATIONS_DIR))
    register_cli(app)
    app.cli.add_command(jobs_cli)
    celery_init_app(app)

"""Migrations: the schema they build is the models' schema, and migration 0008 (e-mail
confirmation) keeps every row of a database made before it.

0008 rebuilds `users` and `jobs` on SQLite; with foreign keys enforced, dropping the old `users`
table would have deleted every post, to-do and job by cascade. Runs on a SQLite file and on a
PostgreSQL database of its own.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.exc import IntegrityError

from blog_api import create_app
from blog_api.extensions import db
from support import RUN_ID, create_postgres_database

BEFORE_CONFIRMATION = "0007"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An app on an empty database of its own."""
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'migrations.db'}", (lambda: None)
    else:
        url, drop = create_postgres_database(f"blog_api_migrations_{RUN_ID}_{uuid.uuid4().hex[:6]}")
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    drop()


def execute(statement: str, **values: object) -> None:
    """Run raw SQL; `:now` is bound as a DateTime, written in each database's format by
    SQLAlchemy (sqlite3's own datetime adapter is deprecated since Python 3.12)."""
    clause = text(statement)
    if "now" in values:
        clause = clause.bindparams(bindparam("now", type_=DateTime(timezone=True)))
    db.session.execute(clause, values)
    db.session.commit()


def count(table: str) -> int:
    return int(db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def add_user(username: str, email: str) -> None:
    execute(
        "INSERT INTO users (username, email, password_hash, role, created_at, "
        "password_changed_at, security_stamp) VALUES (:username, :email, 'h', 'user', :now, :now, "
        "'stamp')",
        username=username,
        email=email,
        now=datetime.now(UTC),
    )


def test_the_migrations_build_the_models_schema(empty_app: Flask) -> None:
    with empty_app.app_context():
        upgrade()
        with db.engine.connect() as connection, warnings.catch_warnings():
            # SQLite's expression index (usernames regardless of case) cannot be reflected.
            warnings.filterwarnings("ignore", ".*expression-based index")
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, db.metadata) == []


def test_upgrading_to_email_confirmation_keeps_every_row_and_confirms_nobody(
    empty_app: Flask,
) -> None:
    with empty_app.app_context():
        upgrade(revision=BEFORE_CONFIRMATION)
        add_user("alice", "alice@example.com")
        now = datetime.now(UTC)
        execute(
            "INSERT INTO posts (title, content, category, created_at, updated_at, user_id) "
            "VALUES ('t', 'c', 'general', :now, :now, 1)",
            now=now,
        )
        execute(
            "INSERT INTO todos (title, completed, priority, created_at, user_id) "
            "VALUES ('t', false, 0, :now, 1)",
            now=now,
        )
        execute(
            "INSERT INTO jobs (id, kind, post_id, status, attempts, max_attempts, available_at, "
            "created_at, updated_at) VALUES ('job-1', 'notify_author', 1, 'pending', 0, 6, :now, "
            ":now, :now)",
            now=now,
        )
        db.session.remove()

        upgrade()

        assert (count("users"), count("posts"), count("todos"), count("jobs")) == (1, 1, 1, 1)
        assert db.session.execute(text("SELECT email_confirmed_at FROM users")).scalar() is None
        add_user("carol", "alice@example.com")  # unconfirmed accounts may share an address
        execute("UPDATE users SET email_confirmed_at = :now WHERE username = 'alice'", now=now)
        with pytest.raises(IntegrityError):  # confirmed ones may not
            execute("UPDATE users SET email_confirmed_at = :now WHERE username = 'carol'", now=now)
        db.session.rollback()
        with pytest.raises(IntegrityError):  # usernames stay unique regardless of case
            add_user("ALICE", "other@example.com")
        db.session.rollback()

        execute("DELETE FROM users WHERE username = 'carol'")
        db.session.remove()
        downgrade(revision=BEFORE_CONFIRMATION)
        assert (count("users"), count("posts"), count("todos"), count("jobs")) == (1, 1, 1, 1)


def test_claiming_keys_in_the_effects_transaction_keeps_every_stored_answer(
    empty_app: Flask,
) -> None:
    """0009 drops the two columns of the claim that committed on its own (`owner`,
    `locked_at`); every key and its answer stay, and a downgrade gives them values again."""
    answer = '{"id": 1}'
    with empty_app.app_context():
        upgrade(revision="0008")
        execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, owner, locked_at, expires_at, "
            "response_status, response_body, location) VALUES ('user:1', 'k', 'f', 'o', :now, "
            ":now, 201, :answer, '/api/v1/posts/1')",
            now=datetime.now(UTC),
            answer=answer,
        )
        db.session.remove()

        upgrade(revision="0009")
        stored = "SELECT scope, key, fingerprint, response_status, response_body, location FROM "
        kept = db.session.execute(text(f"{stored} idempotency_keys")).one()
        assert tuple(kept) == ("user:1", "k", "f", 201, answer, "/api/v1/posts/1")
        db.session.remove()

        downgrade(revision="0008")
        assert tuple(db.session.execute(text(f"{stored} idempotency_keys")).one()) == tuple(kept)
        assert db.session.execute(text("SELECT owner FROM idempotency_keys")).scalar() == ""


@pytest.mark.scenario("S45")
def test_upgrading_to_error_codes_gives_failed_jobs_the_code_of_their_text(
    empty_app: Flask,
) -> None:
    """Migration 0010: jobs that failed before it get the code their `last_error` shows, so
    their authors see a reason too."""
    texts = {
        "SMTP 550 5.1.1 <alice@example.com>: Recipient address rejected": "smtp_permanent",
        "SMTP 451 4.3.0 try again later": "smtp_transient",
        "SMTP connection failed: gaierror(-2, 'Name or service not known')": "connection_failed",
        "audit log not writable: [Errno 13] Permission denied: '/proc/1/blog'": (
            "audit_log_unwritable"
        ),
        "e-mail address of user 1 is not confirmed (EMAIL_CONFIRMATION_REQUIRED)": (
            "address_not_confirmed"
        ),
        "attempts exhausted: the worker was lost on every attempt": "attempts_exhausted",
        "OperationalError: database is locked": "unknown",
        None: None,
    }
    with empty_app.app_context():
        upgrade(revision="0009")
        add_user("alice", "alice@example.com")
        now = datetime.now(UTC)
        for number, last_error in enumerate(texts, start=1):
            execute(
                "INSERT INTO posts (title, content, category, created_at, updated_at, user_id) "
                "VALUES ('t', 'c', 'general', :now, :now, 1)",
                now=now,
            )
            execute(
                "INSERT INTO jobs (id, kind, post_id, status, attempts, max_attempts, "
                "available_at, created_at, updated_at, last_error) VALUES (:id, "
                "'notify_author', :number, 'dead', 6, 6, :now, :now, :now, :last_error)",
                id=f"job-{number}",
                number=number,
                now=now,
                last_error=last_error,
            )
        db.session.remove()

        upgrade()

        rows = db.session.execute(text("SELECT last_error, error_code FROM jobs")).all()
        assert dict(rows) == texts
        db.session.remove()
        downgrade(revision="0009")
        assert count("jobs") == len(texts)


def test_stored_answers_keep_their_location_and_a_posts_gains_its_link(empty_app: Flask) -> None:
    """Migration 0012: a key stores every header of its answer; an answer stored before it
    keeps its Location, and a post's gets the Link its request is answered with now, so a replay
    after the upgrade sends the same headers. A downgrade keeps each Location."""
    locations = {"post": "/api/v2/posts/7", "todo": "/api/v1/todos/3"}
    with empty_app.app_context():
        upgrade(revision="0011")
        for key, location in locations.items():
            execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, expires_at, "
                "response_status, response_body, location) VALUES ('user:1', :key, 'f', :now, "
                "201, '{}', :location)",
                key=key,
                location=location,
                now=datetime.now(UTC),
            )
        db.session.remove()

        upgrade()

        rows = db.session.execute(text("SELECT key, response_headers FROM idempotency_keys"))
        assert {key: json.loads(headers) for key, headers in rows} == {
            "post": [
                ["Location", "/api/v2/posts/7"],
                ["Link", '</api/v2/posts/7/jobs>; rel="jobs"'],
            ],
            "todo": [["Location", "/api/v1/todos/3"]],
        }
        db.session.remove()
        downgrade(revision="0011")
        rows = db.session.execute(text("SELECT key, location FROM idempotency_keys"))
        assert dict(rows.all()) == locations

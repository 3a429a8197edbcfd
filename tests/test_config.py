"""Configuration (SPEC §2): environment selection, production secrets, parsing, and `.env`."""

from __future__ import annotations

import base64
import os
import random
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import dotenv
import pytest
from flask import Flask
from sqlalchemy import create_engine

from blog_api import create_app
from blog_api.config import (
    ENVIRONMENT_VARIABLES,
    RATE_LIMIT_SETTINGS,
    ConfigError,
    ProductionConfig,
    TestingConfig,
    read_environment,
)
from blog_api.extensions import db

REPOSITORY = Path(__file__).resolve().parents[1]
# Made at run time: production refuses every key committed to the repository (S34, S51).
GOOD_SECRET_KEY = secrets.token_urlsafe(48)
GOOD_JWT_SECRET_KEY = secrets.token_urlsafe(48)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: no FLASK_ENV, no settings, no developer `.env`, logs in tmp."""
    monkeypatch.delenv("FLASK_ENV", raising=False)
    for variable in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("blog_api.load_dotenv", lambda *_args, **_kwargs: False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOG_FILE", str(tmp_path / "app.log"))
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))


@pytest.fixture
def production_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET_KEY)
    monkeypatch.setenv("JWT_SECRET_KEY", GOOD_JWT_SECRET_KEY)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'production.db'}")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://blog.example.com")


def test_unknown_environment_name_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown FLASK_ENV 'prod'"):
        create_app("prod")

    monkeypatch.setenv("FLASK_ENV", "staging")
    with pytest.raises(ConfigError, match="unknown FLASK_ENV 'staging'"):
        create_app()


def test_flask_env_selects_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_ENV", "testing")

    assert create_app().config["ENV_NAME"] == "testing"


def test_development_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_app().config["ENV_NAME"] == "development"


@pytest.mark.parametrize("setting", RATE_LIMIT_SETTINGS)
def test_a_rate_limit_that_does_not_parse_is_refused_at_startup(setting: str) -> None:
    """Not a 500 on the first request it would count."""
    with pytest.raises(ConfigError, match=f"{setting}: couldn't parse rate limit string"):
        create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://", **{setting: "often"})


@pytest.mark.usefixtures("production_environment")
def test_production_starts_with_good_settings(tmp_path: Path) -> None:
    app = create_app("production")

    assert app.config["ENV_NAME"] == "production"
    assert not app.debug
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'production.db'}"
    response = app.test_client().get("/api")
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.usefixtures("production_environment")
def test_production_logs_to_the_configured_file(tmp_path: Path) -> None:
    app = create_app("production")

    with app.test_request_context("/api"):
        app.logger.warning("written to the file")

    assert "written to the file" in (tmp_path / "app.log").read_text()


@pytest.mark.usefixtures("production_environment")
@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY and JWT_SECRET_KEY must be set"),
        ("JWT_SECRET_KEY", "SECRET_KEY and JWT_SECRET_KEY must be set"),
        ("DATABASE_URL", "DATABASE_URL is not set"),
        ("PUBLIC_BASE_URL", "PUBLIC_BASE_URL is not set"),
    ],
)
def test_production_refuses_to_start_without_a_required_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, message: str
) -> None:
    monkeypatch.delenv(variable)

    with pytest.raises(ConfigError, match=message):
        create_app("production")


@pytest.mark.parametrize("wait", ["0", "-1", "0.0004"])
def test_an_idempotency_wait_of_no_time_is_refused(wait: str) -> None:
    """PostgreSQL reads a lock_timeout of 0 as none: a retry would wait for ever."""
    settings = read_environment({"IDEMPOTENCY_WAIT": wait})

    with pytest.raises(ConfigError, match="IDEMPOTENCY_WAIT must be at least "):
        create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://", **settings)


@pytest.mark.scenario("S16")
@pytest.mark.usefixtures("production_environment")
@pytest.mark.parametrize(
    ("jwt_secret", "message"),
    [
        ("", "SECRET_KEY and JWT_SECRET_KEY must be set"),
        ("change-me", "known placeholder"),
        ("your-256-bit-secret", "known placeholder"),
        ("CHANGE-ME", "known placeholder"),
        ("x" * 31, "at least 32 bytes"),
        ("dev-only-jwt-secret-key-not-for-production-use", "development key"),
    ],
)
def test_production_refuses_a_weak_jwt_secret(
    monkeypatch: pytest.MonkeyPatch, jwt_secret: str, message: str
) -> None:
    monkeypatch.setenv("JWT_SECRET_KEY", jwt_secret)

    with pytest.raises(ConfigError, match=message):
        create_app("production")


@pytest.mark.usefixtures("production_environment")
@pytest.mark.parametrize("encoding", ["hex", "base64url"])
def test_production_accepts_a_jwt_secret_of_exactly_32_random_bytes(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """32 random bytes (a fixed draw, so that the test never meets the rare random key that
    holds a word or a run by chance), hex- or base64url-encoded."""
    key_bytes = random.Random(32).randbytes(32)
    if encoding == "hex":
        key = key_bytes.hex()
    else:
        key = base64.urlsafe_b64encode(key_bytes).decode().rstrip("=")
    monkeypatch.setenv("JWT_SECRET_KEY", key)

    assert create_app("production").config["JWT_SECRET_KEY"] == key


# Keys neither secret may be: (key, the reason given).
GUESSABLE_KEYS = [
    pytest.param(
        "correct-horse-battery-staple-orange-purple-monkey-dishwasher-window",
        "is guessable",
        id="passphrase",
    ),
    pytest.param(secrets.token_hex(16), "is too short", id="16-random-bytes-as-hex"),
    pytest.param(secrets.token_urlsafe(24), "is too short", id="24-random-bytes"),
]
GUESSABLE_JWT_SECRETS = [
    pytest.param("testing-jwt-secret-key-0123456789abcdef", "is published", id="testing-key"),
    pytest.param("a" * 40, "has only 1 different characters", id="a-x-40"),
    pytest.param("k" * 32, "has only 1 different characters", id="k-x-32"),
    pytest.param("changeme" * 4, "has only 7 different characters", id="changeme-x-4"),
    pytest.param("abcdefghij" * 4, "is too short", id="alphabet-x-4"),
    pytest.param("abcdefghijklmnop" * 4, "is guessable", id="alphabet-x-4-long"),
    pytest.param("a-real-production-jwt-signing-key-0123456789abcdef", "is guessable", id="words"),
    *GUESSABLE_KEYS,
    pytest.param(secrets.token_hex(31), "is too short", id="31-random-bytes-as-hex"),
]
GUESSABLE_SECRET_KEYS = [
    pytest.param("a" * 16, "has only 1 different characters", id="a-x-16"),
    pytest.param("testing-secret-key-0123456789abcdef", "is published", id="testing-key"),
    pytest.param("a-real-production-secret-key-f00d", "is too short", id="words-33-chars"),
    pytest.param("a-real-production-flask-secret-key-0123456789abcdef", "is guessable", id="words"),
    *GUESSABLE_KEYS,
]


@pytest.mark.usefixtures("production_environment")
@pytest.mark.parametrize(
    ("setting", "key", "message"),
    [
        *(
            pytest.param(
                "JWT_SECRET_KEY",
                *case.values,
                id=f"jwt-secret-key-{case.id}",
                marks=pytest.mark.scenario("S34"),
            )
            for case in GUESSABLE_JWT_SECRETS
        ),
        *(
            pytest.param(
                "SECRET_KEY",
                *case.values,
                id=f"secret-key-{case.id}",
                marks=pytest.mark.scenario("S51"),
            )
            for case in GUESSABLE_SECRET_KEYS
        ),
    ],
)
def test_production_refuses_a_guessable_key(
    monkeypatch: pytest.MonkeyPatch, setting: str, key: str, message: str
) -> None:
    """Keys published in the repository, of few characters, made of words, runs or repeats,
    or of fewer than 32 random bytes; the message names the setting, says why and how to make
    a good key. JWT_SECRET_KEY (S34) and SECRET_KEY (S51: it keys confirmation tokens, list
    cursors and Idempotency-Key fingerprints, yet only placeholders and keys under 16 bytes were
    refused, so `aaaaaaaaaaaaaaaa` started production) get the same check."""
    monkeypatch.setenv(setting, key)

    with pytest.raises(ConfigError, match=rf"^{setting} {message}") as refused:
        create_app("production")
    assert "secrets.token_urlsafe(48)" in str(refused.value)


# Values given to a secret-named setting anywhere in the repository: `NAME = "value"`,
# `NAME="value"`, `"NAME": "value"` or an environment line `NAME=value`.
SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)\b\w*(?:secret|_key)\w*["']?\s*[:=]\s*(?:["']([^"'\s]{8,})["']|([^\s"'#]{8,})$)""",
    re.MULTILINE,
)


def committed_secrets() -> set[str]:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout.split()
    found: set[str] = set()
    for name in files:
        path = REPOSITORY / name
        if path.suffix in {".png", ".ico", ".lock"} or name.endswith("package-lock.json"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found.update(quoted or bare for quoted, bare in SECRET_ASSIGNMENT.findall(text))
    return found


@pytest.mark.usefixtures("production_environment")
@pytest.mark.parametrize(
    ("setting", "committed"),
    [
        pytest.param(
            "JWT_SECRET_KEY",
            TestingConfig.JWT_SECRET_KEY,
            id="jwt-secret-key",
            marks=pytest.mark.scenario("S34"),
        ),
        pytest.param(
            "SECRET_KEY",
            TestingConfig.SECRET_KEY,
            id="secret-key",
            marks=pytest.mark.scenario("S51"),
        ),
    ],
)
def test_production_refuses_every_secret_committed_to_the_repository(
    monkeypatch: pytest.MonkeyPatch, setting: str, committed: str
) -> None:
    """S34, S51: scans the committed files for values of secret-named settings; none is
    accepted as JWT_SECRET_KEY or SECRET_KEY (a key that can be read here can be guessed)."""
    candidates = committed_secrets()
    assert committed in candidates  # the scan finds what it should

    accepted = []
    for candidate in sorted(candidates):
        monkeypatch.setenv(setting, candidate)
        try:
            create_app("production")
        except ConfigError:
            continue
        accepted.append(candidate)

    assert accepted == []


@pytest.mark.usefixtures("production_environment")
@pytest.mark.parametrize("secret", ["change-me", "secret", "short"])
def test_production_refuses_a_weak_secret_key(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("SECRET_KEY", secret)

    with pytest.raises(ConfigError, match="SECRET_KEY is a placeholder or too short"):
        create_app("production")


@pytest.mark.scenario("S51")
@pytest.mark.usefixtures("production_environment")
def test_production_accepts_a_fresh_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_urlsafe(48)
    monkeypatch.setenv("SECRET_KEY", key)

    assert create_app("production").config["SECRET_KEY"] == key


@pytest.mark.usefixtures("production_environment")
def test_production_refuses_debug_mode() -> None:
    with pytest.raises(ConfigError, match="DEBUG must be off"):
        create_app("production", DEBUG=True)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JWT_ACCESS_TOKEN_EXPIRES", "abc"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "1.5"),
        ("PASSWORD_MIN_LENGTH", "eight"),
        ("MAX_CONTENT_LENGTH", "1MB"),
        ("RATELIMIT_ENABLED", "maybe"),
    ],
)
def test_malformed_environment_variable_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=variable):
        create_app("testing")


def test_environment_variables_override_class_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_ACCESS_TOKEN_EXPIRES", "300")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")

    app = create_app("testing")

    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds() == 300
    assert app.config["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert app.config["RATELIMIT_ENABLED"] is False


def test_overrides_win_over_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_VERSION", "from-environment")

    assert create_app("testing", API_VERSION="from-override").config["API_VERSION"] == (
        "from-override"
    )


def load_dotenv_from(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the factory's `.env` loading read `path` (and undo what it sets after the test)."""
    monkeypatch.setenv("API_VERSION", "placeholder")
    monkeypatch.delenv("API_VERSION")

    def load(*_args: object, override: bool = False) -> bool:
        return dotenv.load_dotenv(path, override=override)

    monkeypatch.setattr("blog_api.load_dotenv", load)


def test_testing_does_not_load_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("API_VERSION=from-dotenv\n")
    load_dotenv_from(tmp_path / ".env", monkeypatch)

    assert create_app("testing").config["API_VERSION"] == "1.0"


def test_development_loads_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("API_VERSION=from-dotenv\n")
    load_dotenv_from(tmp_path / ".env", monkeypatch)

    app: Flask = create_app("development", SQLALCHEMY_DATABASE_URI="sqlite://")

    assert app.config["API_VERSION"] == "from-dotenv"


def _probe(tmp_path: Path, probe: str) -> list[str]:
    env = {**os.environ, "FLASK_ENV": "testing", "LOG_FILE": str(tmp_path / "app.log")}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_server_processes_leave_the_commands_alembic_and_celery_out(tmp_path: Path) -> None:
    """`blog_api.wsgi` (gunicorn) never loads Flask-Migrate and Alembic (11 MB of RSS per
    process), Celery (7 MB: a server only writes job rows) nor, on SQLite, psycopg (9 MB); its
    `celery_app`, which only Celery asks for, is built on first access; the `flask` commands
    stay on every other app."""
    server = _probe(
        tmp_path,
        "import sys, blog_api.wsgi as w; "
        "print(*(m in sys.modules for m in ('alembic', 'celery', 'psycopg')), "
        "'migrate' in w.flask_app.extensions, 'celery' in w.flask_app.extensions, "
        "'db' in w.flask_app.cli.commands, 'jobs' in w.flask_app.cli.commands)",
    )
    assert server == ["False"] * 7

    worker = _probe(
        tmp_path,
        "import sys, blog_api.wsgi as w; c = w.celery_app; "
        "print('alembic' in sys.modules, w.flask_app.extensions['celery'] is c, "
        "'celery' in sys.modules, 'db' in w.flask_app.cli.commands)",
    )
    assert worker == ["False", "True", "True", "False"]

    app = create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://")
    assert "migrate" in app.extensions
    assert "celery" in app.extensions
    assert {"db", "users", "tokens", "jobs"} <= set(app.cli.commands)


def test_redis_broker_options_bound_every_wait_and_restore_orphans_promptly() -> None:
    app = create_app(
        "testing", SQLALCHEMY_DATABASE_URI="sqlite://", CELERY_BROKER_URL="redis://r:6379/0"
    )
    options = app.config["CELERY"]["broker_transport_options"]
    assert options["socket_timeout"] == 10
    assert options["socket_connect_timeout"] == 3
    assert options["unacked_restore_throttle"] == 1
    assert options["visibility_timeout"] == app.config["BROKER_VISIBILITY_TIMEOUT"]

    amqp = create_app(
        "testing", SQLALCHEMY_DATABASE_URI="sqlite://", CELERY_BROKER_URL="amqp://guest@r//"
    )
    assert "unacked_restore_throttle" not in amqp.config["CELERY"]["broker_transport_options"]


# Settings whose commented-out line in .env.example states the default in use.
DOCUMENTED_DEFAULTS = [
    "ARGON2_TIME_COST",
    "ARGON2_MEMORY_COST",
    "ARGON2_PARALLELISM",
    "JWT_ACCESS_TOKEN_EXPIRES",
    "JWT_REFRESH_TOKEN_EXPIRES",
    "PASSWORD_MIN_LENGTH",
    "LOGIN_RATE_LIMIT",
    "LOGIN_USERNAME_CEILING",
    "PASSWORD_CHANGE_RATE_LIMIT",
    "REGISTER_RATE_LIMIT",
    "POST_RATE_LIMIT",
    "TODO_RATE_LIMIT",
    "REFRESH_RATE_LIMIT",
    "ANONYMOUS_RATE_LIMIT",
    "RATE_LIMIT_HEADERS_ALWAYS",
    "READY_CACHE_SECONDS",
    "WORKER_METRICS_PORT",
    "WORKER_METRICS_ADDRESS",
    "EMAIL_CONFIRMATION_REQUIRED",
    "EMAIL_CONFIRM_TTL",
    "CONFIRM_EMAIL_RATE_LIMIT",
    "CONFIRM_EMAIL_RESEND_RATE_LIMIT",
    "CONFIRM_EMAIL_RECIPIENT_LIMIT",
    "TRUSTED_PROXIES",
    "MAX_CONTENT_LENGTH",
    "IDEMPOTENCY_TTL",
    "IDEMPOTENCY_WAIT",
    "SUBSCRIBE_RATE_LIMIT",
    "DELIVERY_BATCH_SIZE",
    "DELIVERY_EXPANSION_CHUNK",
    "MAIL_RATE_LIMIT",
    "DELIVERY_SYNCHRONOUS_COMMIT",
]


@pytest.mark.scenario("S40")
@pytest.mark.parametrize("variable", DOCUMENTED_DEFAULTS)
def test_env_example_states_the_default_in_use(variable: str) -> None:
    """S40: .env.example described argon2 parameters (3/65536/4) that were not the ones used."""
    example = (REPOSITORY / ".env.example").read_text()
    (value,) = re.findall(rf"^# {variable}=(.*)$", example, re.MULTILINE)
    key = ENVIRONMENT_VARIABLES[variable][0]

    assert read_environment({variable: value})[key] == getattr(ProductionConfig, key)


def test_sqlite_settings_apply_to_the_apps_engine_only(tmp_path: Path) -> None:
    """The app's SQLite connections run in WAL mode with a busy timeout; another engine in the
    same process (a tool reading some other app's file) is left as it is."""
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}")
    with app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000

    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with other.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
    finally:
        other.dispose()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PUBLIC_BASE_URL": "ftp://blog.example.com"}, "PUBLIC_BASE_URL must be an http"),
        ({"PUBLIC_BASE_URL": "https://blog.example.com/?a=1"}, "PUBLIC_BASE_URL must be an http"),
        ({"PUBLIC_BASE_URL": "https://blog.example.com/"}, "PUBLIC_BASE_URL must be an http"),
        ({"PUBLIC_BASE_URL": "blog.example.com"}, "PUBLIC_BASE_URL must be an http"),
        ({"DELIVERY_BATCH_SIZE": 0}, "DELIVERY_BATCH_SIZE must be at least 1"),
        ({"DELIVERY_EXPANSION_CHUNK": 0}, "DELIVERY_EXPANSION_CHUNK must be at least 1"),
        ({"MAIL_RATE_LIMIT": -1}, "MAIL_RATE_LIMIT must be 0"),
    ],
)
def test_fan_out_settings_that_cannot_work_refuse_to_start(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://", **overrides)


def test_public_base_url_from_the_environment_loses_its_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://blog.example.com/api-host/ ")

    app = create_app("testing", SQLALCHEMY_DATABASE_URI="sqlite://")

    assert app.config["PUBLIC_BASE_URL"] == "https://blog.example.com/api-host"

"""Configuration: one class per environment, every setting overridable from the environment.

`FLASK_ENV` picks the class (`development`, `testing`, `production`); an unknown name is a startup
error rather than a silent fallback, so a typo can never run production with development settings.
Every variable read here is listed, with its default and meaning, in `.env.example` and
docs/configuration.md (tests/test_docs.py checks that table against this module).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from limits import parse_many

from blog_api.secret_keys import MAKE_A_KEY, guessable

# Secrets that tutorials and templates ship with; production refuses to start with any of them.
KNOWN_PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "secret",
        "default-secret-key",
        "jwt-secret-key",
        "your-256-bit-secret",
        "your-secret-key",
        "super-secret",
        "dev",
        "development",
    }
)
MIN_JWT_SECRET_BYTES = 32


class ConfigError(RuntimeError):
    """The configuration cannot run safely; raised at startup."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _seconds(value: str) -> timedelta:
    return timedelta(seconds=int(value))


def _base_url(value: str) -> str:
    return value.strip().rstrip("/")


def _port_or_none(value: str) -> int | None:
    """A TCP port, or None for an empty value (the setting is off)."""
    if not value.strip():
        return None
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"not a TCP port: {value!r}")
    return port


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


# Environment variable -> (config key, parser). The single place that reads the environment.
ENVIRONMENT_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SECRET_KEY": ("SECRET_KEY", str),
    "JWT_SECRET_KEY": ("JWT_SECRET_KEY", str),
    "DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", str),
    "API_VERSION": ("API_VERSION", str),
    # Flask's own debug switch (`flask --debug`, FLASK_DEBUG=1): read here so that production's
    # startup check sees it; the CLI would otherwise turn debug on after the factory returned.
    "FLASK_DEBUG": ("DEBUG", _bool),
    "JWT_ACCESS_TOKEN_EXPIRES": ("JWT_ACCESS_TOKEN_EXPIRES", _seconds),
    "JWT_REFRESH_TOKEN_EXPIRES": ("JWT_REFRESH_TOKEN_EXPIRES", _seconds),
    "PASSWORD_MIN_LENGTH": ("PASSWORD_MIN_LENGTH", int),
    "ARGON2_TIME_COST": ("ARGON2_TIME_COST", int),
    "ARGON2_MEMORY_COST": ("ARGON2_MEMORY_COST", int),
    "ARGON2_PARALLELISM": ("ARGON2_PARALLELISM", int),
    "REDIS_URL": ("REDIS_URL", str),
    "RATELIMIT_STORAGE_URI": ("RATELIMIT_STORAGE_URI", str),
    "RATELIMIT_ENABLED": ("RATELIMIT_ENABLED", _bool),
    "RATE_LIMIT_HEADERS_ALWAYS": ("RATE_LIMIT_HEADERS_ALWAYS", _bool),
    "LOGIN_RATE_LIMIT": ("LOGIN_RATE_LIMIT", str),
    "REGISTER_RATE_LIMIT": ("REGISTER_RATE_LIMIT", str),
    "POST_RATE_LIMIT": ("POST_RATE_LIMIT", str),
    "CORS_ORIGINS": ("CORS_ORIGINS", _csv),
    "MAX_CONTENT_LENGTH": ("MAX_CONTENT_LENGTH", int),
    "LOG_LEVEL": ("LOG_LEVEL", str),
    "LOG_FILE": ("LOG_FILE", str),
    "LOG_FORMAT": ("LOG_FORMAT", str),
    "CELERY_BROKER_URL": ("CELERY_BROKER_URL", str),
    "CELERY_QUEUE": ("CELERY_QUEUE", str),
    "CELERY_PREFETCH_MULTIPLIER": ("CELERY_PREFETCH_MULTIPLIER", int),
    "MAIL_SERVER": ("MAIL_SERVER", str),
    "MAIL_PORT": ("MAIL_PORT", int),
    "MAIL_USE_TLS": ("MAIL_USE_TLS", _bool),
    "MAIL_USE_SSL": ("MAIL_USE_SSL", _bool),
    "MAIL_USERNAME": ("MAIL_USERNAME", str),
    "MAIL_PASSWORD": ("MAIL_PASSWORD", str),
    "MAIL_DEFAULT_SENDER": ("MAIL_DEFAULT_SENDER", str),
    "MAIL_TIMEOUT": ("MAIL_TIMEOUT", float),
    "MAIL_CONNECTION_MAX_IDLE": ("MAIL_CONNECTION_MAX_IDLE", float),
    "MAIL_CONNECTION_MAX_MESSAGES": ("MAIL_CONNECTION_MAX_MESSAGES", int),
    "MAIL_MAX_RETRIES": ("MAIL_MAX_RETRIES", int),
    "MAIL_RETRY_BACKOFF": ("MAIL_RETRY_BACKOFF", float),
    "MAIL_RETRY_BACKOFF_MAX": ("MAIL_RETRY_BACKOFF_MAX", float),
    "MAIL_FAILURE_RATE": ("MAIL_FAILURE_RATE", float),
    "MAIL_FAILURE_SEED": ("MAIL_FAILURE_SEED", int),
    "MAIL_MESSAGE_ID_DOMAIN": ("MAIL_MESSAGE_ID_DOMAIN", str),
    "POST_AUDIT_LOG": ("POST_AUDIT_LOG", str),
    "JOB_LEASE_SECONDS": ("JOB_LEASE_SECONDS", float),
    "JOB_RELAY": ("JOB_RELAY", _bool),
    "JOB_RELAY_INTERVAL": ("JOB_RELAY_INTERVAL", float),
    "JOB_RELAY_POLL": ("JOB_RELAY_POLL", float),
    "JOB_REPUBLISH_AFTER": ("JOB_REPUBLISH_AFTER", float),
    "JOB_RETENTION_DAYS": ("JOB_RETENTION_DAYS", float),
    "IDEMPOTENCY_TTL": ("IDEMPOTENCY_TTL", _seconds),
    "IDEMPOTENCY_WAIT": ("IDEMPOTENCY_WAIT", float),
    "WORKER_HEARTBEAT_INTERVAL": ("WORKER_HEARTBEAT_INTERVAL", float),
    "WORKER_HEARTBEAT_FORGET_AFTER": ("WORKER_HEARTBEAT_FORGET_AFTER", float),
    "TASK_SOFT_TIME_LIMIT": ("TASK_SOFT_TIME_LIMIT", float),
    "TASK_TIME_LIMIT": ("TASK_TIME_LIMIT", float),
    "BROKER_VISIBILITY_TIMEOUT": ("BROKER_VISIBILITY_TIMEOUT", float),
    # Security settings: the login ceiling per username, the password-change limit, trusted proxies.
    "LOGIN_USERNAME_CEILING": ("LOGIN_USERNAME_CEILING", str),
    "PASSWORD_CHANGE_RATE_LIMIT": ("PASSWORD_CHANGE_RATE_LIMIT", str),
    "TRUSTED_PROXIES": ("TRUSTED_PROXIES", int),
    # E-mail confirmation (services/confirmations.py).
    "EMAIL_CONFIRMATION_REQUIRED": ("EMAIL_CONFIRMATION_REQUIRED", _bool),
    "EMAIL_CONFIRM_TTL": ("EMAIL_CONFIRM_TTL", _seconds),
    "EMAIL_CONFIRM_URL": ("EMAIL_CONFIRM_URL", str),
    "CONFIRM_EMAIL_RATE_LIMIT": ("CONFIRM_EMAIL_RATE_LIMIT", str),
    "CONFIRM_EMAIL_RESEND_RATE_LIMIT": ("CONFIRM_EMAIL_RESEND_RATE_LIMIT", str),
    "CONFIRM_EMAIL_RECIPIENT_LIMIT": ("CONFIRM_EMAIL_RECIPIENT_LIMIT", str),
    # Bounded answers and limits: anonymous reads, to-dos and refreshes per user, the
    # `/ready` cache and the token that guards `/metrics` and `/ready`.
    "ANONYMOUS_RATE_LIMIT": ("ANONYMOUS_RATE_LIMIT", str),
    "TODO_RATE_LIMIT": ("TODO_RATE_LIMIT", str),
    "REFRESH_RATE_LIMIT": ("REFRESH_RATE_LIMIT", str),
    "READY_CACHE_SECONDS": ("READY_CACHE_SECONDS", float),
    "METRICS_TOKEN": ("METRICS_TOKEN", str),
    # Subscriptions and the fan-out of posts to subscribers (services/subscriptions.py,
    # jobs/deliveries.py, effects/fanout.py).
    "PUBLIC_BASE_URL": ("PUBLIC_BASE_URL", _base_url),
    "SUBSCRIBE_RATE_LIMIT": ("SUBSCRIBE_RATE_LIMIT", str),
    "DELIVERY_BATCH_SIZE": ("DELIVERY_BATCH_SIZE", int),
    "DELIVERY_EXPANSION_CHUNK": ("DELIVERY_EXPANSION_CHUNK", int),
    "DELIVERY_SYNCHRONOUS_COMMIT": ("DELIVERY_SYNCHRONOUS_COMMIT", _bool),
    "MAIL_RATE_LIMIT": ("MAIL_RATE_LIMIT", int),
    # The worker's metrics endpoint (ops/metrics.py).
    "WORKER_METRICS_PORT": ("WORKER_METRICS_PORT", _port_or_none),
    "WORKER_METRICS_ADDRESS": ("WORKER_METRICS_ADDRESS", str),
}


# The settings that are rate limits in Flask-Limiter's notation ("10 per minute; 100 per day").
RATE_LIMIT_SETTINGS = tuple(
    key
    for key, parse in ENVIRONMENT_VARIABLES.values()
    if parse is str and key.endswith(("_RATE_LIMIT", "_CEILING", "_RECIPIENT_LIMIT"))
)
# What PUBLIC_BASE_URL must look like: a scheme and a host, no query, no trailing slash.
BASE_URL_PATTERN = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*[^/?#\s])?")


class Config:
    """Defaults shared by every environment."""

    ENV_NAME = "base"
    DEBUG = False
    TESTING = False
    SECRET_KEY: str | None = None
    SQLALCHEMY_DATABASE_URI: str | None = None
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True}
    API_VERSION = "1.0"

    JWT_SECRET_KEY: str | None = None
    JWT_ALGORITHM = "HS256"
    JWT_DECODE_ALGORITHMS = ["HS256"]
    JWT_TOKEN_LOCATION = ["headers"]
    JWT_REFRESH_JSON_KEY = "refresh_token"
    # Short-lived access tokens (RFC 8725 practice); long sessions go through refresh rotation.
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=15)
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(days=7)

    # The `flask` commands (db, users, tokens, jobs) and the Celery app they publish with; the
    # entry objects of servers and workers (blog_api.wsgi) turn them off.
    CLI = True

    PASSWORD_MIN_LENGTH = 8
    PASSWORD_MAX_LENGTH = 128
    # OWASP's argon2id configuration (Password Storage Cheat Sheet): 19 MiB, t=2, p=1. Each
    # hash briefly adds its memory to the web worker (argon2-cffi's own default, RFC 9106's
    # 64 MiB, put a worker at ~150 MB); hashes made with other parameters are re-made at the
    # next successful login.
    ARGON2_TIME_COST = 2
    ARGON2_MEMORY_COST = 19456
    ARGON2_PARALLELISM = 1

    REDIS_URL: str | None = None
    RATELIMIT_STORAGE_URI: str | None = None
    RATELIMIT_ENABLED = True
    # Flask-Limiter's own X-RateLimit-* headers stay off: api/limits.py sends the IETF draft's
    # RateLimit and RateLimit-Policy fields instead, always on a 429 (with an exact Retry-After).
    RATELIMIT_HEADERS_ENABLED = False
    # Those fields on every rate-limited response too, so that clients can slow down before a
    # 429: reading each limit's window back costs two more Redis round trips per request,
    # 7-20 % more CPU for POST /api/v1/posts (bench/cpu_per_call.py --paths post; README).
    RATE_LIMIT_HEADERS_ALWAYS = False
    # A limiter whose Redis is down must not turn logins into 500s: count in memory meanwhile.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_STORAGE_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    LOGIN_RATE_LIMIT = "10 per minute"
    REGISTER_RATE_LIMIT = "20 per hour"
    POST_RATE_LIMIT = "60 per minute"

    CORS_ORIGINS: list[str] = []
    MAX_CONTENT_LENGTH = 1024 * 1024

    LOG_LEVEL = "INFO"
    LOG_FILE: str | None = "app.log"
    LOG_FORMAT = "text"

    # Background jobs (SPEC §6). Timeouts are ordered so that no job runs twice by accident:
    # MAIL_TIMEOUT < TASK_SOFT_TIME_LIMIT < TASK_TIME_LIMIT < JOB_LEASE_SECONDS
    #   < BROKER_VISIBILITY_TIMEOUT. A retry's backoff lives in the job row (the relay
    # publishes it when due), so no countdown message has to fit in the visibility timeout.
    CELERY_BROKER_URL: str | None = None
    CELERY_QUEUE = "blog_api"
    # Messages each pool process may hold ahead (Celery's worker_prefetch_multiplier).
    CELERY_PREFETCH_MULTIPLIER = 1
    MAIL_SERVER = "127.0.0.1"
    MAIL_PORT = 8025
    MAIL_USE_TLS = False
    MAIL_USE_SSL = False
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_DEFAULT_SENDER = "Blog API <noreply@blog-api.local>"
    MAIL_TIMEOUT = 10.0
    # A worker keeps its SMTP connection for the next message (effects/mailer.py): closed
    # after this many idle seconds or messages; MAIL_CONNECTION_MAX_MESSAGES=1 turns it off.
    MAIL_CONNECTION_MAX_IDLE = 15.0
    MAIL_CONNECTION_MAX_MESSAGES = 50
    MAIL_MAX_RETRIES = 5
    MAIL_RETRY_BACKOFF = 2.0
    MAIL_RETRY_BACKOFF_MAX = 60.0
    MAIL_FAILURE_RATE = 0.0
    MAIL_FAILURE_SEED: int | None = None
    MAIL_MESSAGE_ID_DOMAIN = "blog-api.local"
    # The v2 audit file; unset: `post_audit.log` in the instance folder (INSTANCE_PATH).
    POST_AUDIT_LOG: str | None = None
    JOB_LEASE_SECONDS = 90.0
    # The relay (jobs/relay.py) runs in every worker unless JOB_RELAY is off. It wakes when a
    # job may be due (PostgreSQL NOTIFY, or SQLite's data_version polled every JOB_RELAY_POLL
    # seconds) and at least every JOB_RELAY_INTERVAL seconds; a published job nobody claimed
    # is published again after JOB_REPUBLISH_AFTER (2x, 4x, 8x that as it ages).
    JOB_RELAY = True
    JOB_RELAY_INTERVAL = 5.0
    JOB_RELAY_POLL = 0.005
    JOB_REPUBLISH_AFTER = 30.0
    # Done and skipped jobs are deleted this long after they finished; dead ones stay.
    JOB_RETENTION_DAYS = 30.0
    # Idempotency-Key (api/idempotency.py): a stored answer is replayed for IDEMPOTENCY_TTL,
    # then the key is free and pruned. A request with a key held by another request still
    # running waits for it (a sync worker's whole time) up to IDEMPOTENCY_WAIT seconds, then
    # answers 409: PostgreSQL's lock_timeout for the claim (SQLite: its busy_timeout, 5 s).
    # A request that dies holds nothing: its key is free at once.
    IDEMPOTENCY_TTL = timedelta(hours=24)
    IDEMPOTENCY_WAIT = 2.0
    # Each worker writes its heartbeat row this often; a row silent for FORGET_AFTER is
    # dropped (until then a dead worker's age keeps growing in /metrics, where alerts see it).
    WORKER_HEARTBEAT_INTERVAL = 5.0
    WORKER_HEARTBEAT_FORGET_AFTER = 86400.0
    TASK_SOFT_TIME_LIMIT = 30.0
    TASK_TIME_LIMIT = 60.0
    BROKER_VISIBILITY_TIMEOUT = 300.0

    # flask-smorest: one OpenAPI document per version, served under the version prefix.
    V1_API_TITLE = "Blog API"
    V1_API_VERSION = "v1"
    V1_OPENAPI_VERSION = "3.0.3"
    V1_OPENAPI_URL_PREFIX = "/api/v1"
    V1_OPENAPI_JSON_PATH = "openapi.json"
    V2_API_TITLE = "Blog API"
    V2_API_VERSION = "v2"
    V2_OPENAPI_VERSION = "3.0.3"
    V2_OPENAPI_URL_PREFIX = "/api/v2"
    V2_OPENAPI_JSON_PATH = "openapi.json"
    V1_API_SPEC_OPTIONS = {
        "info": {"description": "Users, tokens, to-dos and posts. Log in at POST /api/v1/login."}
    }
    V2_API_SPEC_OPTIONS = {
        "info": {
            "description": "v2 adds to-do priority and post category. Users and tokens live in "
            "v1: log in at POST /api/v1/login and use the access token here."
        }
    }

    # Security settings (api/limits.py). LOGIN_RATE_LIMIT counts per client address; the
    # ceiling per username over all addresses is higher, so that a few addresses cannot lock
    # the owner out. TRUSTED_PROXIES: how many reverse proxies in front of the app set
    # X-Forwarded-For/-Proto/-Host (werkzeug's ProxyFix); 0 trusts no such header.
    LOGIN_USERNAME_CEILING = "30 per minute"
    PASSWORD_CHANGE_RATE_LIMIT = "5 per minute"  # noqa: S105 (a rate limit, not a password)
    TRUSTED_PROXIES = 0

    # E-mail confirmation. With EMAIL_CONFIRMATION_REQUIRED, post notifications go to confirmed
    # addresses only (the others end `skipped`). A confirmation token is valid EMAIL_CONFIRM_TTL;
    # EMAIL_CONFIRM_URL, when set, is the public page that takes the token as `?token=` (else
    # the e-mail explains the API call). Confirming is limited per client address, asking for
    # a new confirmation e-mail per user. CONFIRM_EMAIL_RECIPIENT_LIMIT bounds the confirmation
    # e-mails one address receives, whoever asks (registrations and resends naming it): beyond
    # it nothing is sent, and the answer is the same, so that it cannot flood an inbox.
    EMAIL_CONFIRMATION_REQUIRED = True
    EMAIL_CONFIRM_TTL = timedelta(hours=24)
    EMAIL_CONFIRM_URL: str | None = None
    CONFIRM_EMAIL_RATE_LIMIT = "10 per minute"
    CONFIRM_EMAIL_RESEND_RATE_LIMIT = "3 per hour"
    CONFIRM_EMAIL_RECIPIENT_LIMIT = "3 per hour"

    # Anonymous reads (every public GET: users, posts, recent posts) share this budget per
    # client address; a request with a valid access token is not counted. Generous: a person
    # browsing never meets it, a scraper or a flood does.
    ANONYMOUS_RATE_LIMIT = "300 per minute"
    # Per user, both API versions together (like POST_RATE_LIMIT): each to-do and each refresh
    # leaves a row (the to-do, a spent refresh token on the blocklist).
    TODO_RATE_LIMIT = "120 per minute"
    REFRESH_RATE_LIMIT = "30 per minute"
    # `/ready` answers from its last check for this long (per process): a load balancer's
    # probes then cost one broker connection a second, not one each. 0 checks every time.
    READY_CACHE_SECONDS = 1.0
    # When set, `/metrics` and `/ready` need `Authorization: Bearer <METRICS_TOKEN>`: they name
    # worker hosts and counts. Unset, they are open (restrict them at the proxy instead).
    METRICS_TOKEN: str | None = None
    # A Celery worker serves the job attempts its pool processes counted at
    # http://WORKER_METRICS_ADDRESS:WORKER_METRICS_PORT/metrics (METRICS_TOKEN applies);
    # unset, it serves nothing. Loopback by default, like gunicorn: a scraper on another machine
    # needs 0.0.0.0 (and METRICS_TOKEN) or a proxy. The prefork pool needs
    # PROMETHEUS_MULTIPROC_DIR for it (ops/metrics.py).
    WORKER_METRICS_PORT: int | None = None
    WORKER_METRICS_ADDRESS = "127.0.0.1"

    # Subscriptions and fan-out. PUBLIC_BASE_URL is where readers reach this API (the
    # unsubscribe links and post links of fan-out e-mails; never taken from a request's Host):
    # production requires it. Subscribing is limited per user. A post's deliveries are written
    # DELIVERY_EXPANSION_CHUNK per transaction and sent DELIVERY_BATCH_SIZE per job (one Celery
    # message, one kept SMTP connection). MAIL_RATE_LIMIT caps fan-out messages per second over
    # all workers (0: no cap). DELIVERY_SYNCHRONOUS_COMMIT=false records each message's outcome
    # with PostgreSQL's synchronous_commit off (docs/background-jobs.md: a PostgreSQL crash may
    # then re-send the last few hundred milliseconds' messages; a worker crash loses nothing).
    PUBLIC_BASE_URL: str | None = None
    SUBSCRIBE_RATE_LIMIT = "30 per minute"
    DELIVERY_BATCH_SIZE = 500
    DELIVERY_EXPANSION_CHUNK = 10_000
    DELIVERY_SYNCHRONOUS_COMMIT = False
    MAIL_RATE_LIMIT = 0

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> None:
        """Refuse to start with a configuration that cannot work at all."""
        if not config.get("SQLALCHEMY_DATABASE_URI"):
            raise ConfigError("DATABASE_URL is not set")
        if not config.get("SECRET_KEY") or not config.get("JWT_SECRET_KEY"):
            raise ConfigError("SECRET_KEY and JWT_SECRET_KEY must be set")
        # PostgreSQL reads a lock_timeout of 0 as no timeout at all: a request would wait for
        # a stuck one for ever.
        if not config["IDEMPOTENCY_WAIT"] >= 0.001:
            raise ConfigError("IDEMPOTENCY_WAIT must be at least 0.001 seconds")
        # A limit that does not parse would otherwise be a 500 on every request it counts.
        for key in RATE_LIMIT_SETTINGS:
            try:
                parse_many(str(config[key]))
            except ValueError as error:
                raise ConfigError(f"{key}: {error}") from None
        cls.validate_fan_out(config)

    @classmethod
    def validate_fan_out(cls, config: Mapping[str, Any]) -> None:
        base_url = config.get("PUBLIC_BASE_URL")
        if base_url is not None and not BASE_URL_PATTERN.fullmatch(base_url):
            raise ConfigError(
                f"PUBLIC_BASE_URL must be an http(s) URL without query or trailing slash, "
                f"e.g. https://blog.example.com (got {base_url!r})"
            )
        for key in ("DELIVERY_BATCH_SIZE", "DELIVERY_EXPANSION_CHUNK"):
            if config[key] < 1:
                raise ConfigError(f"{key} must be at least 1")
        if config["MAIL_RATE_LIMIT"] < 0:
            raise ConfigError("MAIL_RATE_LIMIT must be 0 (no limit) or more")


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    DEBUG = True
    LOG_LEVEL = "DEBUG"
    SQLALCHEMY_DATABASE_URI = "sqlite:///blog_dev.db"
    # Development-only keys: long enough for HS256, never accepted by ProductionConfig.
    SECRET_KEY = "dev-only-secret-key-not-for-production-use"  # noqa: S105 (not a production secret)
    JWT_SECRET_KEY = "dev-only-jwt-secret-key-not-for-production-use"  # noqa: S105 (not a production secret)
    # The tutorial's flow (register, post, see the e-mail) works without confirming first.
    EMAIL_CONFIRMATION_REQUIRED = False
    PUBLIC_BASE_URL = "http://127.0.0.1:5000"


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    SECRET_KEY = "testing-secret-key-0123456789abcdef"  # noqa: S105 (not a production secret)
    JWT_SECRET_KEY = "testing-jwt-secret-key-0123456789abcdef"  # noqa: S105 (not a production secret)
    # Cheapest argon2id parameters: tests exercise the code path, not the work factor.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_COST = 8
    ARGON2_PARALLELISM = 1
    RATELIMIT_STORAGE_URI = "memory://"
    CELERY_BROKER_URL = "memory://"
    LOGIN_RATE_LIMIT = "1000 per minute"
    REGISTER_RATE_LIMIT = "1000 per minute"
    POST_RATE_LIMIT = "1000 per minute"
    LOG_FILE = None
    LOGIN_USERNAME_CEILING = "1000 per minute"
    PASSWORD_CHANGE_RATE_LIMIT = "1000 per minute"  # noqa: S105 (a rate limit)
    EMAIL_CONFIRMATION_REQUIRED = False
    CONFIRM_EMAIL_RATE_LIMIT = "1000 per minute"
    CONFIRM_EMAIL_RESEND_RATE_LIMIT = "1000 per minute"
    CONFIRM_EMAIL_RECIPIENT_LIMIT = "1000 per minute"
    ANONYMOUS_RATE_LIMIT = "1000 per minute"
    TODO_RATE_LIMIT = "1000 per minute"
    REFRESH_RATE_LIMIT = "1000 per minute"
    PUBLIC_BASE_URL = "https://blog-api.test"
    SUBSCRIBE_RATE_LIMIT = "1000 per minute"


class ProductionConfig(Config):
    ENV_NAME = "production"

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> None:
        super().validate(config)
        secret = config["SECRET_KEY"]
        if secret.lower() in KNOWN_PLACEHOLDER_SECRETS or len(secret.encode()) < 16:
            raise ConfigError("SECRET_KEY is a placeholder or too short")
        jwt_secret = config["JWT_SECRET_KEY"]
        if jwt_secret.lower() in KNOWN_PLACEHOLDER_SECRETS:
            raise ConfigError("JWT_SECRET_KEY is a known placeholder")
        if len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET_KEY must be at least {MIN_JWT_SECRET_BYTES} bytes")
        for key in ("SECRET_KEY", "JWT_SECRET_KEY"):
            if "dev-only" in config[key]:
                raise ConfigError(f"{key} is the development key")
        cls.validate_secret_keys(config)
        if config.get("DEBUG"):
            raise ConfigError("DEBUG must be off in production")
        if not config.get("PUBLIC_BASE_URL"):
            raise ConfigError(
                "PUBLIC_BASE_URL is not set: the public address of this API, for the links "
                "in e-mails (e.g. https://blog.example.com)"
            )

    # Security: no key that can be guessed (secret_keys.py). SECRET_KEY keys confirmation
    # tokens, list cursors and Idempotency-Key fingerprints: guessing it forges those.
    @classmethod
    def validate_secret_keys(cls, config: Mapping[str, Any]) -> None:
        for key in ("SECRET_KEY", "JWT_SECRET_KEY"):
            weakness = guessable(config[key], PUBLISHED_SECRETS)
            if weakness:
                raise ConfigError(f"{key} {weakness}; {MAKE_A_KEY}")
        if config.get("TRUSTED_PROXIES", 0) < 0:
            raise ConfigError("TRUSTED_PROXIES must be 0 or more")


# Keys committed to this repository: production refuses every one of them.
PUBLISHED_SECRETS = KNOWN_PLACEHOLDER_SECRETS | {
    key
    for config in (DevelopmentConfig, TestingConfig)
    for key in (config.SECRET_KEY, config.JWT_SECRET_KEY)
    if key
}

CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_class(name: str | None) -> type[Config]:
    """The class for `name`, or for `FLASK_ENV` (default `development`) when `name` is None."""
    name = name or os.environ.get("FLASK_ENV") or "development"
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown FLASK_ENV {name!r}; expected one of: {', '.join(CONFIGS)}"
        ) from None


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given in `environ`, parsed; a malformed value is a startup error."""
    settings: dict[str, Any] = {}
    for variable, (key, parse) in ENVIRONMENT_VARIABLES.items():
        if variable in environ:
            try:
                settings[key] = parse(environ[variable])
            except ValueError as error:
                raise ConfigError(f"{variable}: {error}") from None
    return settings

"""S16: a production process with a weak or missing JWT secret, or with debug on, exits non-zero
and says why. Each case starts the real `flask` command line in a process of its own, in an empty
directory (no `.env` to fall back on). A process costs ~2 s, so the process-level cases are the
two kinds of refusal (a secret, debug); every weak secret value (`change-me`,
`your-256-bit-secret`, 31 bytes, ...) is refused by the same check, in-process, in
tests/test_config.py::test_production_refuses_a_weak_jwt_secret."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from blog_api.config import ENVIRONMENT_VARIABLES

pytestmark = pytest.mark.scenario("S16")

# Made at run time: committed keys are refused.
GOOD_SECRET_KEY = secrets.token_urlsafe(48)
GOOD_JWT_SECRET = secrets.token_urlsafe(48)


def start_production(
    directory: Path, *args: str, **settings: str | None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
    environ.update(
        FLASK_ENV="production",
        SECRET_KEY=GOOD_SECRET_KEY,
        JWT_SECRET_KEY=GOOD_JWT_SECRET,
        DATABASE_URL=f"sqlite:///{directory / 'blog.db'}",
        PUBLIC_BASE_URL="https://blog.example.com",
        INSTANCE_PATH=str(directory),
        LOG_FILE="",
    )
    for name, value in settings.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "blog_api", "routes"],
        cwd=directory,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"JWT_SECRET_KEY": None}, "SECRET_KEY and JWT_SECRET_KEY must be set", id="unset"
        ),
        pytest.param({"FLASK_DEBUG": "1"}, "DEBUG must be off in production", id="FLASK_DEBUG=1"),
    ],
)
def test_production_refuses_to_start(
    tmp_path: Path, settings: dict[str, str | None], message: str
) -> None:
    result = start_production(tmp_path, **settings)

    assert result.returncode != 0
    assert f"ConfigError: {message}" in result.stderr
    assert "/api/v1/posts" not in result.stdout


def test_production_starts_with_good_settings(tmp_path: Path) -> None:
    """The control: the refusals above come from the setting each case changes."""
    result = start_production(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "/api/v1/posts" in result.stdout


def test_short_hmac_keys_are_an_error_in_tests() -> None:
    """PyJWT warns about HMAC keys shorter than the digest; the test configuration turns every
    warning into an error, so a test run with such a key fails instead of passing quietly."""
    with pytest.raises(InsecureKeyLengthWarning):
        jwt.encode({"sub": "1"}, "k" * 31, algorithm="HS256")

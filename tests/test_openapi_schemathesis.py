"""schemathesis against both OpenAPI documents, in process (SPEC §4.1, §4.5).

Every operation of `/api/v1/openapi.json` and `/api/v2/openapi.json` is called with generated
valid and invalid input, once as a user and once as an admin, and every response must match the
documents: documented status, JSON body in the documented schema, no 500s, valid input accepted
and invalid input rejected.

This module has its own app on an in-memory SQLite database, built at import time: schemathesis
generates part of its cases (and fetches their tokens) while pytest collects the tests, before any
fixture runs. (Its fixture-based loader, `schemathesis.pytest.from_fixture`, does not work with
pytest 9.2, which removed the `Node._nodeid` attribute it sets.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask_migrate import upgrade
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import checks
from sqlalchemy.pool import StaticPool

from blog_api import create_app
from blog_api.extensions import db
from blog_api.models import User
from blog_api.services.tokens import issue_tokens
from blog_api.services.users import create_user, find_user_by_username, set_role
from support import PASSWORD


def build_app() -> Flask:
    """The app on a private, migrated in-memory database (one shared connection)."""
    app = create_app(
        "testing",
        SQLALCHEMY_DATABASE_URI="sqlite://",
        SQLALCHEMY_ENGINE_OPTIONS={"poolclass": StaticPool},
    )
    with app.app_context():
        upgrade()
    return app


APP = build_app()

# `format: email` as the API reads it (S50): an address on a public domain. Hypothesis's own
# e-mail strategy also draws reserved names (`x@host.test`), which the API refuses on purpose
# and the documents cannot list; with this one, bodies carrying an address stay checked for
# positive-data acceptance like every other body.
schemathesis.openapi.format(
    "email", st.from_regex(r"\A[a-z0-9]{1,20}@[a-z][a-z0-9]{0,20}\.(com|org|net)\Z")
)


def account(username: str, role: str) -> User:
    """The fuzzing account, as it should be: the fuzzer may demote or delete it along the way."""
    user = find_user_by_username(username) or create_user(username, PASSWORD, role=role)
    if user.role != role:
        set_role(user, role)
    return user


def fresh_token_auth(username: str, role: str) -> type:
    """A schemathesis auth provider giving every case a new access token of `username`, since an
    earlier case may have logged out (revoking its token) or changed the account."""

    class FreshToken:
        def get(self, case: Any, context: Any) -> str:
            with APP.app_context():
                return str(issue_tokens(account(username, role))["access_token"])

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return FreshToken


def load_schema(version: str, role: str) -> Any:
    schema = schemathesis.openapi.from_wsgi(f"/api/{version}/openapi.json", APP)
    schema.auth(refresh_interval=None)(fresh_token_auth(f"fuzz_{role}", role))
    return schema


@pytest.fixture(scope="module", autouse=True)
def close_database() -> Iterator[None]:
    yield
    with APP.app_context():
        db.session.remove()
        db.engine.dispose()


FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def call_and_validate(case: Any) -> None:
    # A pagination cursor (`after`) is opaque and signed: no generated value is a valid one,
    # and the documents cannot say that `after` excludes `offset`. Such a case must still get a
    # documented answer (a 400 in the error schema), but its rejection is the right outcome.
    # Likewise an e-mail confirmation token and an unsubscribe token: only an e-mail holds a
    # valid one. An Idempotency-Key is stateful: generated keys repeat with other bodies
    # (rightly `422`), and a key of spaces is empty once HTTP trims it (`400`). Subscribing to
    # yourself is `400` (SPEC §4.7), and the documents cannot say that the id is not yours.
    opaque_token = case.path in ("/api/v1/users/confirm-email", "/api/v1/unsubscribe")
    keyed = "Idempotency-Key" in (case.headers or {})
    self_subscription = case.path == "/api/v1/users/{user_id}/subscription"
    if "after" in (case.query or {}) or opaque_token or keyed or self_subscription:
        case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])
    else:
        case.call_and_validate()


@schemathesis.pytest.parametrize(v1=load_schema("v1", "user"), v2=load_schema("v2", "user"))
@FUZZ_SETTINGS
def test_api_conforms_to_its_openapi_documents_as_a_user(case: Any) -> None:
    call_and_validate(case)


# As an admin, fewer and only random cases: the deterministic boundary cases (the "explicit"
# phase) do not depend on the caller and already ran above; these reach the admins' success paths.
@schemathesis.pytest.parametrize(v1=load_schema("v1", "admin"), v2=load_schema("v2", "admin"))
@settings(FUZZ_SETTINGS, max_examples=10, phases=[Phase.generate, Phase.shrink])
def test_api_conforms_to_its_openapi_documents_as_an_admin(case: Any) -> None:
    call_and_validate(case)

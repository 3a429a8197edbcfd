"""The vocabulary of the security suite: tokens an attacker can forge, and the S29 check that a
request gets the same answer from `/api/v1` and `/api/v2`."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
from flask import Flask
from flask.testing import FlaskClient
from jwt.warnings import InsecureKeyLengthWarning

from support import PASSWORD, Account

VALID_POST = {"title": "A title", "content": "Some content"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/login", json={"username": username, "password": password})


def claims_of(app: Flask, token: str) -> dict[str, Any]:
    return jwt.decode(token, app.config["JWT_SECRET_KEY"], algorithms=["HS256"])


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def outcome(response: Any) -> tuple[Any, ...]:
    """What S29 compares across versions: the status, and the error with the fields it names,
    or the items of a collection. v2's documented additions (to-do `priority`, post `category`,
    and `priority` among the allowed sort values) are left out of the comparison."""
    body = response.get_json(silent=True)
    if isinstance(body, dict) and "error" in body:
        return response.status_code, body["error"], body["message"], sorted(body.get("errors", {}))
    if isinstance(body, dict) and "pagination" in body:
        (items,) = [value for key, value in body.items() if key != "pagination"]
        return response.status_code, body["pagination"], [item["id"] for item in items]
    return response.status_code, body


def on_both_versions(send: Callable[[str], Any]) -> Any:
    """S29: `send(version)` has the same outcome on v1 and v2; returns v1's answer."""
    v1, v2 = send("v1"), send("v2")
    assert outcome(v2) == outcome(v1), (v1.get_data(as_text=True), v2.get_data(as_text=True))
    return v1


def bad_access_token(
    kind: str, app: Flask, make_app: Callable[..., Flask], client: FlaskClient, alice: Account
) -> str:
    """One of the ways an access token can be unacceptable, for `alice` (S6-S9, S11, S12)."""
    if kind == "expired":
        short_lived = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=-1)).test_client()
        return str(login(short_lived, "alice").json["access_token"])
    if kind == "unsigned":
        return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{alice.access_token.split('.')[1]}."
    if kind == "forged":
        claims = claims_of(app, alice.access_token)
        return jwt.encode(claims, "another-key-" + "k" * 32, algorithm="HS256")
    if kind == "hs512":  # signed with the real key: only the algorithm is wrong
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the key is for HS256
            claims = claims_of(app, alice.access_token)
            return jwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS512")
    if kind == "rs256-header":
        _header, payload, signature = alice.access_token.split(".")
        return f"{b64url({'alg': 'RS256', 'typ': 'JWT'})}.{payload}.{signature}"
    if kind == "revoked":
        client.post("/api/v1/logout", headers=alice.headers)
        return alice.access_token
    if kind == "malformed":
        return "not-a-jwt"
    assert kind == "refresh"
    return alice.refresh_token

"""The committed OpenAPI documents (docs/openapi/) match what the app serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

DOCS = Path(__file__).resolve().parents[1] / "docs" / "openapi"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_committed_openapi_document_is_current(app: Flask, version: str) -> None:
    served = app.test_client().get(f"/api/{version}/openapi.json").json
    committed = json.loads((DOCS / f"{version}.json").read_text())
    assert served == committed, f"docs/openapi/{version}.json is stale: run `make openapi`"


def test_v2_document_shows_only_v2_differences(app: Flask) -> None:
    v1 = app.test_client().get("/api/v1/openapi.json").json
    v2 = app.test_client().get("/api/v2/openapi.json").json
    assert "priority" not in v1["components"]["schemas"]["Todo"]["properties"]
    assert "priority" in v2["components"]["schemas"]["TodoV2"]["properties"]
    assert "category" not in v1["components"]["schemas"]["Post"]["properties"]
    assert "category" in v2["components"]["schemas"]["PostV2"]["properties"]
    assert "/api/v2/todos/priority" in v2["paths"]
    assert "/api/v2/posts/recent" in v2["paths"]
    assert "/api/v1/login" in v1["paths"]
    assert v1["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

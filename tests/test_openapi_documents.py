"""The committed OpenAPI documents (docs/openapi/) match what the app serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def unbounded_arrays(document: dict[str, Any]) -> list[str]:
    """Where a response of `document` holds an array that may grow with the data: an array
    without `maxItems`, unless it is a paginated list's collection (an object property beside
    a `pagination` object), whose page size `limit` bounds it."""
    schemas = document["components"]["schemas"]
    found: list[str] = []

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def walk(schema: dict[str, Any], where: str, paginated: bool, seen: frozenset[str]) -> None:
        if schema.get("$ref") in seen:
            return
        seen = seen | {schema.get("$ref", "")}
        schema = resolve(schema)
        if schema.get("type") == "array":
            if not paginated and "maxItems" not in schema:
                found.append(where)
            walk(schema.get("items", {}), f"{where}[]", False, seen)
        properties = schema.get("properties", {})
        is_page = "pagination" in properties
        for name, child in properties.items():
            walk(child, f"{where}.{name}", is_page, seen)
        for keyword in ("allOf", "anyOf", "oneOf"):
            for child in schema.get(keyword, []):
                walk(child, where, paginated, seen)
        if isinstance(schema.get("additionalProperties"), dict):
            walk(schema["additionalProperties"], f"{where}.*", False, seen)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                response = resolve_response(document, response)
                for content in response.get("content", {}).values():
                    where = f"{method.upper()} {path} {status}"
                    walk(content.get("schema", {}), where, False, frozenset())
    return found


def resolve_response(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        return dict(document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]])
    return response


@pytest.mark.scenario("S41")
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_no_answer_holds_an_array_that_grows_with_the_data(app: Flask, version: str) -> None:
    """S41: every array in a response is a page of a paginated list or has a `maxItems`."""
    document = app.test_client().get(f"/api/{version}/openapi.json").json

    assert unbounded_arrays(document) == []


@pytest.mark.scenario("S41")
def test_the_bounded_arrays_check_finds_an_array_without_max_items() -> None:
    """The check of the test above fails on the profile as it was: every post embedded."""
    document = {
        "paths": {
            "/users/{id}": {"get": {"responses": {"200": {"$ref": "#/components/responses/U"}}}}
        },
        "components": {
            "responses": {
                "U": {"content": {"application/json": {"schema": {"$ref": "#/c/s/User"}}}}
            },
            "schemas": {
                "User": {
                    "type": "object",
                    "properties": {"posts": {"type": "array", "items": {"$ref": "#/c/s/Post"}}},
                },
                "Post": {"type": "object", "properties": {"id": {"type": "integer"}}},
                "Page": {
                    "type": "object",
                    "properties": {
                        "users": {"type": "array", "items": {"$ref": "#/c/s/User"}},
                        "pagination": {"type": "object"},
                    },
                },
            },
        },
    }
    document["paths"]["/users"] = {
        "get": {"responses": {"200": {"content": {"a/j": {"schema": {"$ref": "#/c/s/Page"}}}}}}
    }

    assert unbounded_arrays(document) == [
        "GET /users/{id} 200.posts",
        "GET /users 200.users[].posts",
    ]

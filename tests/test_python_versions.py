"""What the supported Pythons (3.11-3.13) spell differently does not reach the API: Python 3.13
renamed four HTTP statuses after RFC 9110 (422 "Unprocessable Content"), and the error bodies,
the OpenAPI documents and the Postman collection keep the names they have always had."""

from __future__ import annotations

import json
from pathlib import Path

from flask.testing import FlaskClient

from blog_api.errors import reason_phrase, status_name

DOCS = Path(__file__).resolve().parents[1] / "docs" / "openapi"


def test_renamed_statuses_keep_their_names_and_phrases_on_every_python() -> None:
    assert [reason_phrase(code) for code in (413, 414, 416, 422)] == [
        "Request Entity Too Large",
        "Request-URI Too Long",
        "Requested Range Not Satisfiable",
        "Unprocessable Entity",
    ]
    assert [status_name(code) for code in (413, 422)] == [
        "REQUEST_ENTITY_TOO_LARGE",
        "UNPROCESSABLE_ENTITY",
    ]
    assert (reason_phrase(409), status_name(409)) == ("Conflict", "CONFLICT")


def test_an_oversized_body_is_a_request_entity_too_large_error(client: FlaskClient) -> None:
    response = client.post("/api/v1/users", data=b"x" * (2 << 20), content_type="application/json")

    assert response.status_code == 413
    assert response.json["error"] == "Request Entity Too Large"


def test_the_served_openapi_documents_name_422_unprocessable_entity(client: FlaskClient) -> None:
    for version in ("v1", "v2"):
        served = client.get(f"/api/{version}/openapi.json").json
        committed = json.loads((DOCS / f"{version}.json").read_text(encoding="utf-8"))
        for document in (served, committed):
            responses = document["components"]["responses"]
            assert responses["UNPROCESSABLE_ENTITY"]["description"] == "Unprocessable Entity"
            assert "UNPROCESSABLE_CONTENT" not in responses

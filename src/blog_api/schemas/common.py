"""Schemas shared by every resource: messages and pagination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

MAX_LIMIT = 100
# An offset page costs a scan of every row before it; deeper pages are reached through
# `pagination.next`, whose cost does not depend on depth.
MAX_OFFSET = 10_000
MAX_CURSOR_CHARS = 1024
# The query parameters that choose a page; every other one is a filter the cursor is bound to.
PAGE_ARGUMENTS = ("limit", "offset", "after", "count")
OFFSET_TOO_DEEP = (
    f"Must be at most {MAX_OFFSET}: follow pagination.next (the `after` cursor) to read further."
)
AFTER_WITH_OFFSET = (
    "Give either `after` or `offset`, not both: the cursor says where the page starts."
)


@dataclass(frozen=True)
class Schemas:
    """The schemas of one resource in one API version, in this order: an item, a page of the
    list, the body that creates one, the body that updates one, the list's query."""

    item: type[Schema]
    listing: type[Schema]
    create: type[Schema]
    update: type[Schema]
    query: type[Schema]


class MessageSchema(Schema):
    message = fields.String(required=True)


class PaginationQuerySchema(Schema):
    limit = fields.Integer(
        load_default=20,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size, 1 to {MAX_LIMIT}"},
    )
    after = fields.String(
        validate=validate.Length(min=1, max=MAX_CURSOR_CHARS),
        metadata={
            "description": "Opaque cursor: the page after the one whose `pagination.next` "
            "carried it. Only valid with the same endpoint and filters; not with `offset`"
        },
    )
    offset = fields.Integer(
        validate=[
            validate.Range(min=0, error="Must be greater than or equal to {min}."),
            validate.Range(max=MAX_OFFSET, error=OFFSET_TOO_DEEP),
        ],
        metadata={
            "description": f"Number of items to skip (default 0, at most {MAX_OFFSET}); "
            "prefer following `pagination.next`"
        },
    )
    count = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also count every matching item (`pagination.total`); "
            "the count costs as much as the listing is long, so ask only when needed"
        },
    )

    @validates_schema
    def _after_or_offset(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if "after" in data and "offset" in data:
            raise ValidationError(AFTER_WITH_OFFSET, "offset")


class PaginationSchema(Schema):
    limit = fields.Integer(required=True)
    next = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "Root-relative URL of the next page (same filters and limit, with "
            'an `after` cursor), also sent as `Link: <url>; rel="next"`; null on the last page'
        },
    )
    offset = fields.Integer(metadata={"description": "Offset of this page; absent on cursor pages"})
    total = fields.Integer(
        metadata={"description": "Number of matching items; only with `count=true`"}
    )


# The OpenAPI description of a list response's headers.
LIST_HEADERS = {
    "Link": {
        "description": '`<url>; rel="next"`: the next page, as in `pagination.next`; '
        "absent on the last page",
        "schema": {"type": "string"},
    }
}


class ErrorSchema(Schema):
    """Every error response: the HTTP reason phrase, a message, and per-field errors."""

    error = fields.String(required=True, metadata={"example": "Bad Request"})
    message = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), metadata={"description": "Per-field messages"})

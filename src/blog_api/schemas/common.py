"""Schemas shared by every resource: messages and pagination."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

MAX_LIMIT = 100
# Offsets beyond this cannot point at a row and would overflow some databases' integers.
MAX_OFFSET = 2**31 - 1


class MessageSchema(Schema):
    message = fields.String(required=True)


class PaginationQuerySchema(Schema):
    limit = fields.Integer(
        load_default=20,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size, 1 to {MAX_LIMIT}"},
    )
    offset = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=MAX_OFFSET),
        metadata={"description": "Number of items to skip"},
    )


class PaginationSchema(Schema):
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class ErrorSchema(Schema):
    """Every error response: the HTTP reason phrase, a message, and per-field errors."""

    error = fields.String(required=True, metadata={"example": "Bad Request"})
    message = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), metadata={"description": "Per-field messages"})

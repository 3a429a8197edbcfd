"""Posts: request bodies and responses for v1 and v2."""

from __future__ import annotations

from marshmallow import Schema, fields


class PostSchema(Schema):
    id = fields.Integer(dump_only=True)
    title = fields.String(dump_only=True)
    content = fields.String(dump_only=True)
    category = fields.String(dump_only=True)
    word_count = fields.Integer(dump_only=True)
    user_id = fields.Integer(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)

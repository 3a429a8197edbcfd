"""To-dos: bodies, queries and responses. v1 has no `priority`; v2 adds it everywhere."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from blog_api.schemas.common import PaginationQuerySchema, PaginationSchema, Schemas
from blog_api.schemas.fields import MAX_INT32, StrictBoolean, Text, strict_int

V1_SORTS = ("id", "-id", "created_at", "-created_at", "title", "-title")
V2_SORTS = (*V1_SORTS, "priority", "-priority")
MAX_BATCH = 100


class TodoSchema(Schema):
    id = fields.Integer(dump_only=True)
    title = fields.String(dump_only=True)
    description = fields.String(dump_only=True, allow_none=True)
    completed = fields.Boolean(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    user_id = fields.Integer(dump_only=True)
    user_username = fields.String(dump_only=True)


class TodoV2Schema(TodoSchema):
    priority = fields.Integer(dump_only=True)


class TodoCreateSchema(Schema):
    MISSING_MESSAGE = "Missing title"

    title = Text(min=1, max=100, required=True)
    description = Text(max=255, allow_none=True, load_default=None)
    completed = StrictBoolean(load_default=False)


class TodoCreateV2Schema(TodoCreateSchema):
    priority = strict_int(load_default=0)


class TodoUpdateSchema(Schema):
    title = Text(min=1, max=100)
    description = Text(max=255, allow_none=True)
    completed = StrictBoolean()


class TodoUpdateV2Schema(TodoUpdateSchema):
    priority = strict_int()


class TodoQuerySchema(PaginationQuerySchema):
    completed = fields.Boolean()
    search = Text(max=100, metadata={"description": "Title or description contains (literal)"})
    title = Text(max=100, metadata={"description": "Title contains (literal)"})
    sort = fields.String(load_default="id", validate=validate.OneOf(V1_SORTS))
    user_id = fields.Integer(
        validate=validate.Range(min=1, max=MAX_INT32),
        metadata={"description": "Admins: only this user's to-dos"},
    )


class TodoQueryV2Schema(TodoQuerySchema):
    sort = fields.String(load_default="id", validate=validate.OneOf(V2_SORTS))
    priority = fields.Integer(validate=validate.Range(min=-MAX_INT32 - 1, max=MAX_INT32))


class TodoListSchema(Schema):
    todos = fields.List(fields.Nested(TodoSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class TodoListV2Schema(Schema):
    todos = fields.List(fields.Nested(TodoV2Schema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class TodoBatchDeleteSchema(Schema):
    MISSING_MESSAGE = "Missing ids"

    ids = fields.List(strict_int(), required=True, validate=validate.Length(min=1, max=MAX_BATCH))


class TodoBatchDeleteResultSchema(Schema):
    # Each lists some of the ids asked for, so neither is longer than the request's list.
    message = fields.String(required=True)
    deleted = fields.List(fields.Integer(), required=True, validate=validate.Length(max=MAX_BATCH))
    not_found = fields.List(
        fields.Integer(), required=True, validate=validate.Length(max=MAX_BATCH)
    )


# Each API version's to-do schemas (see `Schemas`).
V1 = Schemas(TodoSchema, TodoListSchema, TodoCreateSchema, TodoUpdateSchema, TodoQuerySchema)
V2 = Schemas(
    TodoV2Schema, TodoListV2Schema, TodoCreateV2Schema, TodoUpdateV2Schema, TodoQueryV2Schema
)

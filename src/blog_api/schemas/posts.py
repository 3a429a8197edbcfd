"""Posts: bodies, queries and responses. v2 adds `category`."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from blog_api.schemas.common import PaginationQuerySchema, PaginationSchema, Schemas
from blog_api.schemas.fields import MAX_INT32, Text

MAX_CONTENT_CHARS = 100_000
# `GET /api/v2/posts/recent`: this many of the newest posts.
RECENT_POSTS = 5


class PostSchema(Schema):
    id = fields.Integer(dump_only=True)
    title = fields.String(dump_only=True)
    content = fields.String(dump_only=True)
    word_count = fields.Integer(dump_only=True)
    user_id = fields.Integer(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)


class PostSummarySchema(Schema):
    """A post named in another resource (a user's profile): no content."""

    id = fields.Integer(dump_only=True)
    title = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class PostV2Schema(PostSchema):
    category = fields.String(dump_only=True)


class PostCreateSchema(Schema):
    MISSING_MESSAGE = "Missing title or content"

    title = Text(min=1, max=200, required=True)
    content = Text(min=1, max=MAX_CONTENT_CHARS, required=True)


class PostCreateV2Schema(PostCreateSchema):
    category = Text(min=1, max=50, load_default="general")


class PostUpdateSchema(Schema):
    title = Text(min=1, max=200)
    content = Text(min=1, max=MAX_CONTENT_CHARS)


class PostUpdateV2Schema(PostUpdateSchema):
    category = Text(min=1, max=50)


class PostQuerySchema(PaginationQuerySchema):
    user_id = fields.Integer(validate=validate.Range(min=1, max=MAX_INT32))


class PostQueryV2Schema(PostQuerySchema):
    category = Text(max=50)


class PostListSchema(Schema):
    posts = fields.List(fields.Nested(PostSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class PostListV2Schema(Schema):
    posts = fields.List(fields.Nested(PostV2Schema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class RecentPostsSchema(Schema):
    posts = fields.List(
        fields.Nested(PostV2Schema), required=True, validate=validate.Length(max=RECENT_POSTS)
    )


# Each API version's post schemas (see `Schemas`).
V1 = Schemas(PostSchema, PostListSchema, PostCreateSchema, PostUpdateSchema, PostQuerySchema)
V2 = Schemas(
    PostV2Schema, PostListV2Schema, PostCreateV2Schema, PostUpdateV2Schema, PostQueryV2Schema
)

"""v1 posts: title and content."""

from __future__ import annotations

from blog_api.api import jobs, posts
from blog_api.api.base import Blueprint, Schemas
from blog_api.schemas.posts import (
    PostCreateSchema,
    PostListSchema,
    PostQuerySchema,
    PostSchema,
    PostUpdateSchema,
)

blp = Blueprint("posts", __name__, url_prefix="/api/v1", description="Blog posts")
posts.register(
    blp,
    Schemas(
        item=PostSchema,
        listing=PostListSchema,
        create=PostCreateSchema,
        update=PostUpdateSchema,
        query=PostQuerySchema,
    ),
    api_version="v1",
)
jobs.register_post_jobs(blp)

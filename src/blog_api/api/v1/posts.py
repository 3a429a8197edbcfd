"""v1 posts: title and content."""

from __future__ import annotations

from blog_api.api import Blueprint
from blog_api.api.jobs import register_post_job_routes
from blog_api.api.posts import PostSchemas, register_post_routes
from blog_api.schemas.posts import (
    PostCreateSchema,
    PostListSchema,
    PostQuerySchema,
    PostSchema,
    PostUpdateSchema,
)

blp = Blueprint("posts", __name__, url_prefix="/api/v1", description="Blog posts")

register_post_routes(
    blp,
    PostSchemas(
        item=PostSchema,
        listing=PostListSchema,
        create=PostCreateSchema,
        update=PostUpdateSchema,
        query=PostQuerySchema,
    ),
    api_version="v1",
)
register_post_job_routes(blp)

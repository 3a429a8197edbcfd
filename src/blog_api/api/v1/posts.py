"""v1 posts: title and content."""

from __future__ import annotations

from blog_api.api import deliveries, jobs, posts
from blog_api.api.base import Blueprint
from blog_api.schemas.posts import (
    PostCreateSchema,
    PostListSchema,
    PostQuerySchema,
    PostSchema,
    PostUpdateSchema,
)

blp = Blueprint("posts", __name__, url_prefix="/api/v1", description="Blog posts")
SCHEMAS = posts.PostSchemas(
    item=PostSchema,
    listing=PostListSchema,
    create=PostCreateSchema,
    update=PostUpdateSchema,
    query=PostQuerySchema,
)


blp.route("/posts", schemas=SCHEMAS, api_version="v1")(posts.PostList)
blp.route("/posts/<id:post_id>", schemas=SCHEMAS)(posts.PostItem)
blp.route("/posts/all")(posts.AllPosts)
blp.route("/posts/<id:post_id>/jobs")(jobs.PostJobs)
blp.route("/posts/<id:post_id>/deliveries")(deliveries.PostDeliveries)
blp.route("/posts/<id:post_id>/deliveries/retry")(deliveries.PostDeliveriesRetry)

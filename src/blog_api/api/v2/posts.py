"""v2 posts: v1 plus `category` (body field, filter) and `GET /posts/recent`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blog_api.api import deliveries, jobs
from blog_api.api import posts as views
from blog_api.api.base import Blueprint
from blog_api.schemas.posts import (
    PostCreateV2Schema,
    PostListV2Schema,
    PostQueryV2Schema,
    PostUpdateV2Schema,
    PostV2Schema,
    RecentPostsSchema,
)
from blog_api.services import posts

blp = Blueprint("posts-v2", __name__, url_prefix="/api/v2", description="Blog posts, with category")


@blp.route("/posts/recent")
class RecentPosts(MethodView):
    @blp.response(200, RecentPostsSchema)
    def get(self) -> Any:
        """The 5 newest posts"""
        return {"posts": posts.recent_posts(5)}


SCHEMAS = views.PostSchemas(
    item=PostV2Schema,
    listing=PostListV2Schema,
    create=PostCreateV2Schema,
    update=PostUpdateV2Schema,
    query=PostQueryV2Schema,
)


blp.route("/posts", schemas=SCHEMAS, api_version="v2")(views.PostList)
blp.route("/posts/<id:post_id>", schemas=SCHEMAS)(views.PostItem)
blp.route("/posts/all")(views.AllPosts)
blp.route("/posts/<id:post_id>/jobs")(jobs.PostJobs)
blp.route("/posts/<id:post_id>/deliveries")(deliveries.PostDeliveries)
blp.route("/posts/<id:post_id>/deliveries/retry")(deliveries.PostDeliveriesRetry)

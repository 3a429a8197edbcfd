"""v2 posts: v1 plus `category` (body field, filter) and `GET /posts/recent`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blog_api.api import deliveries, jobs
from blog_api.api import posts as views
from blog_api.api.base import Blueprint
from blog_api.schemas import posts as posts_schemas
from blog_api.services import posts

blp = Blueprint("posts-v2", __name__, url_prefix="/api/v2", description="Blog posts, with category")


@blp.route("/posts/recent")
class RecentPosts(MethodView):
    @blp.public
    @blp.response(200, posts_schemas.RecentPostsSchema)
    def get(self) -> Any:
        """The 5 newest posts"""
        return {"posts": posts.recent_posts(posts_schemas.RECENT_POSTS)}


views.register(blp, posts_schemas.V2, api_version="v2")
jobs.register_post_jobs(blp)
deliveries.register_post_deliveries(blp)

"""v2 posts: v1 plus `category` (body field, filter) and `GET /posts/recent`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blog_api.api import jobs
from blog_api.api import posts as views
from blog_api.api.base import Blueprint, Schemas
from blog_api.schemas.posts import (
    RECENT_POSTS,
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
    @blp.public
    @blp.response(200, RecentPostsSchema)
    def get(self) -> Any:
        """The 5 newest posts"""
        return {"posts": posts.recent_posts(RECENT_POSTS)}


views.register(
    blp,
    Schemas(
        item=PostV2Schema,
        listing=PostListV2Schema,
        create=PostCreateV2Schema,
        update=PostUpdateV2Schema,
        query=PostQueryV2Schema,
    ),
    api_version="v2",
)
jobs.register_post_jobs(blp)

"""v1 posts: title and content."""

from __future__ import annotations

from blog_api.api import deliveries, jobs, posts
from blog_api.api.base import Blueprint
from blog_api.schemas import posts as posts_schemas

blp = Blueprint("posts", __name__, url_prefix="/api/v1", description="Blog posts")
posts.register(blp, posts_schemas.V1, api_version="v1")
jobs.register_post_jobs(blp)
deliveries.register_post_deliveries(blp)

"""API v2: to-dos with priority, posts with category (users and auth stay in v1)."""

from blog_api.api.v2 import posts, todos

BLUEPRINTS = [todos.blp, posts.blp]

"""API v1: users and auth, to-dos, posts, subscriptions."""

from blog_api.api import jobs
from blog_api.api.v1 import auth, posts, subscriptions, todos, users

BLUEPRINTS = [auth.blp, users.blp, todos.blp, posts.blp, jobs.blp, subscriptions.blp]

"""Post views, declared once for every API version: `register` routes them on a version's
blueprint with that version's schemas.

Reading is public. Writing needs a login; only the author or an admin may change or delete a
post (`403` with the tutorial's messages), and only an admin may delete every post at once.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_smorest import abort

from blog_api.api import limits
from blog_api.api.base import Blueprint, get_or_404
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.models import Post
from blog_api.schemas.common import MessageSchema, Schemas
from blog_api.services import delete_instance, idempotency, posts, update_fields


def get_own_post_or_403(post_id: int, action: str) -> Post:
    """The post, if the caller wrote it or is an admin; else `403 You can only <action> your own
    posts unless you are an admin` (`404` for no such post)."""
    post = get_or_404(Post, post_id)
    if not caller().may_act_for(post.user_id):
        abort(403, message=f"You can only {action} your own posts unless you are an admin")
    return post


# The OpenAPI description of the headers of a new post's 201.
CREATED_POST_HEADERS = {
    "Location": {"description": "The new post's URL", "schema": {"type": "string"}},
    "Link": {
        "description": '`</api/v<n>/posts/<id>/jobs>; rel="jobs"`: the post\'s background '
        "jobs (its notification e-mail, a v2 post's audit record), to follow them",
        "schema": {"type": "string"},
    },
}


def created_post(post: Post) -> tuple[Post, int, dict[str, str]]:
    """The answer to a new post (and what its Idempotency-Key stores): the post, at its URL,
    with a link to its jobs (in the version it was created in)."""
    jobs = url_for(f"{request.blueprint}.PostJobs", post_id=post.id)
    return (
        post,
        201,
        {
            "Location": url_for(f"{request.blueprint}.PostItem", post_id=post.id),
            "Link": f'<{jobs}>; rel="jobs"',
        },
    )


def register(blp: Blueprint, schemas: Schemas, *, api_version: str) -> None:
    """Route the post views on `blp`, one API version's blueprint, with its `schemas`."""

    @blp.route("/posts")
    class PostList(MethodView):
        """`/posts`: list (public) and write (login)."""

        @blp.public
        @blp.page(schemas.query, schemas.listing)
        def get(self, filters: dict[str, Any]) -> Any:
            """List posts (public), optionally by author"""
            statement, params = posts.post_query(filters)
            page = paginate(statement, filters, params)
            current_app.logger.debug("Fetched posts")
            return page.response("posts")

        @blp.login_required
        @limits.post_creation
        @blp.arguments(schemas.create)
        @blp.idempotent(created_post)
        @blp.response(201, schemas.item, headers=CREATED_POST_HEADERS)
        @blp.errors(429)
        def post(self, data: dict[str, Any], key: idempotency.Key | None) -> Any:
            """Write a post; returns at once, the author's notification is sent in the background"""
            author = caller()
            post = posts.create_post(author, data, api_version=api_version, key=key)
            current_app.logger.info("Post created: %s by %s", post.title, author.username)
            return created_post(post)

    @blp.route("/posts/<id:post_id>")
    class PostItem(MethodView):
        """`/posts/<id>`: read (public), change and delete (author or admin)."""

        @blp.public
        @blp.response(200, schemas.item)
        @blp.errors(404)
        def get(self, post_id: int) -> Any:
            """Get a post (public)"""
            post = posts.read_post(post_id)
            if post is None:
                abort(404, message="Post not found")
            return post

        @blp.login_required
        @blp.arguments(schemas.update)
        @blp.response(200, schemas.item)
        @blp.errors(403, 404)
        def put(self, changes: dict[str, Any], post_id: int) -> Any:
            """Update a post (author or admin; only the fields given)"""
            post = update_fields(get_own_post_or_403(post_id, "edit"), changes)
            current_app.logger.info("Post updated: %s by %s", post.title, caller().username)
            return post

        @blp.login_required
        @blp.response(200, MessageSchema)
        @blp.errors(403, 404)
        def delete(self, post_id: int) -> Any:
            """Delete a post (author or admin)"""
            post = get_own_post_or_403(post_id, "delete")
            delete_instance(post)
            current_app.logger.info("Post deleted: %s by %s", post.title, caller().username)
            return {"message": "Post deleted"}

    @blp.route("/posts/all")
    class AllPosts(MethodView):
        """`/posts/all`: the admin's delete-everything."""

        @blp.admin_required
        @blp.response(200, MessageSchema)
        def delete(self) -> Any:
            """Delete every post (admin)"""
            count = posts.delete_all_posts()
            current_app.logger.warning(
                "All posts deleted by admin %s (%d posts)", caller().username, count
            )
            return {"message": "All posts deleted"}

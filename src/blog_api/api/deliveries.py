"""A post's fan-out to its author's subscribers: its figures (author or admin) and an admin's
re-drive of its dead deliveries. Routed by each version's posts blueprint, as the post's jobs."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from blog_api.api.base import Blueprint, get_or_404
from blog_api.api.posts import get_own_post_or_403
from blog_api.auth import caller
from blog_api.errors import ConflictError
from blog_api.jobs import deliveries
from blog_api.models import Post
from blog_api.schemas.subscriptions import DeliveriesSchema

NOTHING_TO_RETRY = "The post has no dead deliveries (nor dead batch jobs) to retry"


def register_post_deliveries(blp: Blueprint) -> None:
    """Route `/posts/<id>/deliveries` and its re-drive on `blp`, one API version's posts
    blueprint."""

    @blp.route("/posts/<id:post_id>/deliveries")
    class PostDeliveries(MethodView):
        """`/posts/<id>/deliveries`."""

        @blp.login_required
        @blp.response(200, DeliveriesSchema)
        @blp.errors(403, 404)
        def get(self, post_id: int) -> Any:
            """The post's e-mails to its author's subscribers, in figures (author or admin)"""
            return deliveries.progress(get_own_post_or_403(post_id, "view the deliveries of").id)

    @blp.route("/posts/<id:post_id>/deliveries/retry")
    class PostDeliveriesRetry(MethodView):
        """`/posts/<id>/deliveries/retry`."""

        @blp.admin_required
        @blp.response(200, DeliveriesSchema)
        @blp.errors(404, 409)
        def post(self, post_id: int) -> Any:
            """Re-drive the post's dead deliveries with a fresh set of attempts (admin)

            Also makes pending again the batch jobs that ended dead because their worker was lost
            on every attempt. 409 when there is nothing dead.
            """
            post = get_or_404(Post, post_id)
            redriven = deliveries.retry_dead(post.id)
            if not (redriven.deliveries or redriven.batch_jobs):
                raise ConflictError(NOTHING_TO_RETRY)
            current_app.logger.info(
                "Post %s: %d dead deliveries and %d dead batch jobs re-driven by admin %s",
                post.id,
                redriven.deliveries,
                redriven.batch_jobs,
                caller().username,
            )
            return deliveries.progress(post.id)

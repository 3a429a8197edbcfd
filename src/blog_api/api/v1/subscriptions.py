"""Subscriptions: follow an author's new posts by e-mail, list and end your subscriptions, and
the one-click unsubscribe link every fan-out e-mail carries (RFC 8058)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_smorest import abort

from blog_api.api import limits
from blog_api.api.base import Blueprint, get_or_404
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.auth.unsubscribe import InvalidUnsubscribeToken
from blog_api.models import User
from blog_api.schemas.common import LIST_HEADERS, MessageSchema, PaginationQuerySchema
from blog_api.schemas.subscriptions import (
    SubscribeSchema,
    SubscriptionDetailSchema,
    SubscriptionListSchema,
    SubscriptionSchema,
    UnsubscribePreviewSchema,
    UnsubscribeQuerySchema,
)
from blog_api.services import subscriptions

blp = Blueprint(
    "subscriptions",
    __name__,
    url_prefix="/api/v1",
    description="Subscriptions: new posts of the authors you follow, by e-mail",
)

SUBSCRIPTION_NOT_FOUND = "Subscription not found"
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
ONE_CLICK_BODY = (
    "The body must be the form `List-Unsubscribe=One-Click` (RFC 8058) or the JSON object {}"
)
_ONE_CLICK_FORM = {
    "schema": {
        "type": "object",
        "properties": {ONE_CLICK_FIELD: {"type": "string", "enum": [ONE_CLICK_VALUE]}},
        "required": [ONE_CLICK_FIELD],
        "additionalProperties": False,
    }
}
ONE_CLICK_REQUEST_BODY = {
    "required": False,
    "description": "RFC 8058 one-click: what mail clients send. An empty body or {} too.",
    "content": {
        **dict.fromkeys(FORM_TYPES, _ONE_CLICK_FORM),
        "application/json": {"schema": {"type": "object", "additionalProperties": False}},
    },
}


def _no_longer_mailed(author: User | None) -> str:
    who = f"by {author.username}" if author else "by this author"
    return f"You will get no more e-mails about new posts {who}"


@blp.route("/users/<id:user_id>/subscription")
class UserSubscription(MethodView):
    @blp.login_required
    @limits.per_user(limits.subscribe_limit)
    @blp.arguments(SubscribeSchema)
    @blp.response(201, SubscriptionSchema)
    @blp.alt_response(200, schema=SubscriptionSchema, description="Subscribed already")
    @blp.errors(404, 409, 429)
    def post(self, _body: dict[str, Any], user_id: int) -> Any:
        """Subscribe to a user's new posts, e-mailed to your address

        400 for yourself; 409 when your account has no address or (when the server requires
        it) has not confirmed it; 200 with the same body when you are subscribed already.
        """
        subscriber = caller()
        author = get_or_404(User, user_id)
        if author.id == subscriber.id:
            abort(400, message="You cannot subscribe to yourself")
        try:
            subscription = subscriptions.subscribe(subscriber, author)
        except subscriptions.AuthorGone:
            abort(404, message="User not found")
        if not subscription.created:
            return subscription, 200
        current_app.logger.info("User %s subscribed to user %s", subscriber.id, author.id)
        location = url_for("subscriptions.MySubscription", author_id=author.id)
        return subscription, 201, {"Location": location}

    @blp.login_required
    @blp.response(200, MessageSchema)
    @blp.errors(404)
    def delete(self, user_id: int) -> Any:
        """End your subscription to a user's new posts"""
        subscriber = caller()
        if not subscriptions.unsubscribe(subscriber.id, user_id).existed:
            abort(404, message=SUBSCRIPTION_NOT_FOUND)
        current_app.logger.info("User %s unsubscribed from user %s", subscriber.id, user_id)
        return {"message": "Subscription deleted"}


@blp.route("/me/subscriptions")
class MySubscriptions(MethodView):
    @blp.login_required
    @blp.arguments(PaginationQuerySchema, location="query")
    @blp.response(200, SubscriptionListSchema, headers=LIST_HEADERS)
    def get(self, page: dict[str, Any]) -> Any:
        """List the authors you subscribe to, by author id"""
        return paginate(subscriptions.subscriptions_of(caller().id), page).response("subscriptions")


@blp.route("/me/subscriptions/<id:author_id>")
class MySubscription(MethodView):
    @blp.login_required
    @blp.response(200, SubscriptionDetailSchema)
    @blp.errors(404)
    def get(self, author_id: int) -> Any:
        """Your subscription to one author, with the one-click unsubscribe link of its e-mails"""
        subscription = subscriptions.subscription_of(caller().id, author_id)
        if subscription is None:
            abort(404, message=SUBSCRIPTION_NOT_FOUND)
        return subscription


@blp.route("/unsubscribe")
class Unsubscribe(MethodView):
    @blp.arguments(UnsubscribeQuerySchema, location="query")
    @blp.response(200, UnsubscribePreviewSchema)
    def get(self, query: dict[str, str]) -> Any:
        """What the unsubscribe link of an e-mail would do; changes nothing

        Mail scanners open links: only a POST to the same URL unsubscribes. 400 for a token
        that was not made by this server.
        """
        try:
            preview = subscriptions.preview_unsubscribe(query["token"])
        except InvalidUnsubscribeToken as error:
            abort(400, message=str(error), errors={"token": [str(error)]})
        if preview.author_username is None:
            message = "The author's account no longer exists: a POST to this URL changes nothing"
        elif preview.subscribed:
            message = (
                f"A POST to this URL ends your subscription to new posts by "
                f"{preview.author_username}"
            )
        else:
            message = (
                f"You are not subscribed to new posts by {preview.author_username}: a POST to "
                "this URL changes nothing"
            )
        return {**vars(preview), "message": message}

    @blp.arguments(UnsubscribeQuerySchema, location="query")
    @blp.doc(requestBody=ONE_CLICK_REQUEST_BODY)
    @blp.response(200, MessageSchema)
    def post(self, query: dict[str, str]) -> Any:
        """Unsubscribe with the link of an e-mail (RFC 8058 one-click), no login needed

        The token is the proof. 200 also when you had unsubscribed already; 400 for a token
        that was not made by this server, or for another body.
        """
        _check_one_click_body()
        try:
            author, done = subscriptions.unsubscribe_with_token(query["token"])
        except InvalidUnsubscribeToken as error:
            abort(400, message=str(error), errors={"token": [str(error)]})
        if done.existed:
            current_app.logger.info(
                "One-click unsubscribe from user %s", getattr(author, "id", "?")
            )
        return {"message": _no_longer_mailed(author)}


def _check_one_click_body() -> None:
    """The one body besides JSON that this API reads: RFC 8058's `List-Unsubscribe=One-Click`
    form, as mail clients send it. Also an empty body or `{}`; anything else is `400`."""
    if not request.get_data(cache=True):
        return
    if request.mimetype in FORM_TYPES:
        fields = request.form.to_dict(flat=False)
        if fields == {ONE_CLICK_FIELD: [ONE_CLICK_VALUE]} and not request.files:
            return
    elif request.is_json and request.get_json(silent=True) == {}:
        return
    abort(400, message=ONE_CLICK_BODY)

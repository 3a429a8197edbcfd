"""Subscriptions, the one-click unsubscribe, and a post's fan-out figures."""

from __future__ import annotations

from marshmallow import Schema, fields

from blog_api.schemas.common import PaginationSchema
from blog_api.schemas.fields import opaque_token


class SubscribeSchema(Schema):
    """No fields: the body may be empty or `{}`."""


class SubscriptionSchema(Schema):
    author_id = fields.Integer(dump_only=True)
    author_username = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(
        dump_only=True, metadata={"description": "When you subscribed"}
    )


class SubscriptionDetailSchema(SubscriptionSchema):
    unsubscribe_url = fields.String(
        dump_only=True,
        metadata={
            "description": "The one-click link of your e-mails for this subscription "
            "(POST it, no login needed)"
        },
    )


class SubscriptionListSchema(Schema):
    subscriptions = fields.List(fields.Nested(SubscriptionSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class UnsubscribeQuerySchema(Schema):
    MISSING_MESSAGE = "Missing token"

    token = opaque_token(1024, "The token of the link in a fan-out e-mail")


class UnsubscribePreviewSchema(Schema):
    message = fields.String(required=True)
    author_id = fields.Integer(required=True)
    author_username = fields.String(
        required=True, allow_none=True, metadata={"description": "null: the author was deleted"}
    )
    subscribed = fields.Boolean(
        required=True, metadata={"description": "Whether a POST to this link would unsubscribe"}
    )


def _count(description: str) -> fields.Integer:
    return fields.Integer(required=True, metadata={"description": description})


class DeliveriesSchema(Schema):
    """A post's fan-out to its author's subscribers. Counts of deliveries (one per subscriber
    with an address, a confirmed one when the server requires it); never an address."""

    total = _count("Every delivery of the post: the sum of the counts below")
    sent = _count("Accepted by the mail server")
    pending = _count("Waiting for their first attempt, or being sent now")
    failed = _count("Their last attempt failed for a reason that may pass; waiting for a retry")
    dead = _count(
        "Given up: refused for good by the mail server, or out of attempts (an admin may "
        "re-drive them)"
    )
    skipped = _count(
        "Not sent: the subscriber's account was deleted, or has no (confirmed) address"
    )
    cancelled = _count("Not sent: the subscriber unsubscribed first")
    started_at = fields.AwareDateTime(
        required=True,
        allow_none=True,
        metadata={"description": "When the fan-out began; null until a worker starts it"},
    )
    finished_at = fields.AwareDateTime(
        required=True,
        allow_none=True,
        metadata={
            "description": "When the last delivery finished (sent, dead, skipped or "
            "cancelled); null while any is pending or failed"
        },
    )

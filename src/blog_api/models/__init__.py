"""The database models; importing this package registers every table on the metadata."""

from blog_api.models.confirmations import EmailConfirmation
from blog_api.models.deliveries import Delivery, DeliveryStatus, DeliverySummary
from blog_api.models.idempotency import IdempotencyKey
from blog_api.models.jobs import ErrorCode, Job, JobKind, JobStatus
from blog_api.models.posts import Post
from blog_api.models.subscriptions import Subscription
from blog_api.models.todos import Todo
from blog_api.models.tokens import TokenBlocklist
from blog_api.models.users import ROLES, User
from blog_api.models.workers import WorkerHeartbeat

__all__ = [
    "ROLES",
    "Delivery",
    "DeliveryStatus",
    "DeliverySummary",
    "EmailConfirmation",
    "ErrorCode",
    "IdempotencyKey",
    "Job",
    "JobKind",
    "JobStatus",
    "Post",
    "Subscription",
    "Todo",
    "TokenBlocklist",
    "User",
    "WorkerHeartbeat",
]

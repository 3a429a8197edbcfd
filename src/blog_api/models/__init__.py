"""The database models; importing this package registers every table on the metadata."""

from blog_api.models.jobs import AUDIT_POST_CREATED, JOB_KINDS, JOB_STATUSES, NOTIFY_AUTHOR, Job
from blog_api.models.posts import Post
from blog_api.models.todos import Todo
from blog_api.models.tokens import TokenBlocklist
from blog_api.models.users import ROLES, User
from blog_api.models.workers import WorkerHeartbeat

__all__ = [
    "AUDIT_POST_CREATED",
    "JOB_KINDS",
    "JOB_STATUSES",
    "NOTIFY_AUTHOR",
    "ROLES",
    "Job",
    "Post",
    "Todo",
    "TokenBlocklist",
    "User",
    "WorkerHeartbeat",
]

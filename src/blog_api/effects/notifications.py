"""The author's e-mail that their post is published (job kind `notify_author`)."""

from __future__ import annotations

import logging
from email.message import Message

from flask import current_app
from sqlalchemy import bindparam, select

from blog_api.effects.mailer import header_safe, plain_message, send_email
from blog_api.extensions import db
from blog_api.jobs.checkpoints import Checkpoint, job_checkpoint
from blog_api.jobs.errors import JobSkipped
from blog_api.models import ErrorCode, Job, JobStatus, Post, User

log = logging.getLogger(__name__)

# Built once: building the statement cost about as much as running it.
POST_AND_AUTHOR = (
    select(Post, User).join(User, Post.user_id == User.id).where(Post.id == bindparam("post_id"))
)


def notify_author(job: Job) -> JobStatus:
    """E-mail the post's author (to a confirmed address when EMAIL_CONFIRMATION_REQUIRED)."""
    row = db.session.execute(POST_AND_AUTHOR, {"post_id": job.post_id}).first()
    if row is None:
        return JobStatus.SKIPPED
    post, author = row
    if not author.email:
        raise JobSkipped(f"user {author.id} has no e-mail address", ErrorCode.NO_ADDRESS)
    if not author.email_confirmed and current_app.config["EMAIL_CONFIRMATION_REQUIRED"]:
        raise JobSkipped(
            f"e-mail address of user {author.id} is not confirmed (EMAIL_CONFIRMATION_REQUIRED)",
            ErrorCode.ADDRESS_NOT_CONFIRMED,
        )
    message = build_post_notification(job.id, author.email, author.username, post.id, post.title)
    job_checkpoint.send(job, point=Checkpoint.BEFORE_SMTP_DATA)
    send_email(message)
    log.info("Email sent to user %s for post %r", author.id, post.title)
    job_checkpoint.send(job, point=Checkpoint.AFTER_SMTP_250_BEFORE_COMMIT)
    return JobStatus.DONE


def build_post_notification(
    job_id: str, recipient: str, username: str, post_id: int, title: str
) -> Message:
    """The e-mail that tells an author their post is published."""
    body = (
        f"Hello {username},\n\n"
        f"your post #{post_id} '{header_safe(title, 500)}' has been published on Blog API.\n"
    )
    subject = f"Your post '{header_safe(title)}' is published"
    return plain_message(recipient, username, subject, body, job_id, "notify", "X-Notification-Id")

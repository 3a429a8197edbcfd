"""Background jobs as the API shows them."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_dump, validate

from blog_api.models import ErrorCode, JobKind, JobStatus
from blog_api.models.jobs import ACTIVE_STATUSES, POST_JOB_KINDS
from blog_api.schemas.common import PaginationQuerySchema, PaginationSchema


class JobSchema(Schema):
    id = fields.String(dump_only=True)
    kind = fields.String(dump_only=True, metadata={"enum": list(JobKind)})
    # The job's subject: exactly one of the two is set.
    post_id = fields.Integer(dump_only=True, allow_none=True)
    confirmation_id = fields.Integer(
        dump_only=True,
        allow_none=True,
        metadata={"description": "The e-mail confirmation a `confirm_email` job sends"},
    )
    status = fields.String(dump_only=True, metadata={"enum": list(JobStatus)})
    attempts = fields.Integer(dump_only=True)
    max_attempts = fields.Integer(dump_only=True)
    last_error = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={
            "description": "Why the last attempt failed or was skipped: the full text for an "
            "admin; for a post's author, the reason code (as in `error_code`)"
        },
    )
    error_code = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"enum": list(ErrorCode), "description": "The reason of `last_error`, as a code"},
    )
    available_at = fields.AwareDateTime(
        dump_only=True,
        allow_none=True,
        metadata={
            "description": "When the relay publishes the job (again): a new job at once, a "
            "failed attempt after its backoff, a published one after JOB_REPUBLISH_AFTER in "
            "case its message was lost, a running one when its lease runs out. `null` once the "
            "job is finished (`done`, `skipped` or `dead`): no attempt is coming"
        },
    )
    lease_until = fields.AwareDateTime(dump_only=True, allow_none=True)
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)
    finished_at = fields.AwareDateTime(dump_only=True, allow_none=True)

    @post_dump
    def no_due_time_once_finished(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The row keeps `available_at` for the relay (a published job is due again after
        JOB_REPUBLISH_AFTER, in case its message was lost); a finished job shows none."""
        if data.get("status") not in ACTIVE_STATUSES:
            data["available_at"] = None
        return data


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class PostJobsSchema(Schema):
    jobs = fields.List(
        fields.Nested(JobSchema), required=True, validate=validate.Length(max=len(POST_JOB_KINDS))
    )


class JobQuerySchema(PaginationQuerySchema):
    status = fields.String(validate=validate.OneOf(list(JobStatus)))

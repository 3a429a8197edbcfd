"""Background jobs: a post's jobs (author or admin) and the admin's job queue.

Admins see each job's `last_error` in full. A post's author sees its code instead (`error_code`,
e.g. `smtp_transient`): the text can name mail servers, file paths and host names that only
operators need.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from blog_api.api.base import Blueprint, get_or_404
from blog_api.api.pagination import paginate
from blog_api.api.posts import get_own_post_or_403
from blog_api.auth import caller
from blog_api.jobs import outbox
from blog_api.models import Job
from blog_api.schemas.jobs import JobListSchema, JobQuerySchema, JobSchema, PostJobsSchema

blp = Blueprint("jobs", __name__, url_prefix="/api/v1", description="Background jobs (admin)")


def register_post_jobs(blp: Blueprint) -> None:
    """Route `/posts/<id>/jobs` on `blp`, one API version's posts blueprint."""

    @blp.route("/posts/<id:post_id>/jobs")
    class PostJobs(MethodView):
        """`/posts/<id>/jobs`: a post's background jobs."""

        @blp.login_required
        @blp.response(200, PostJobsSchema)
        @blp.errors(403, 404)
        def get(self, post_id: int) -> Any:
            """The post's background jobs with status, attempts and last error (author or admin)"""
            post = get_own_post_or_403(post_id, "view the jobs of")
            jobs = outbox.jobs_of_post(post.id)
            if caller().is_admin:
                return {"jobs": jobs}
            return {"jobs": [_as_the_author_sees_it(job) for job in jobs]}


# What JobSchema shows of a job.
SHOWN_FIELDS = tuple(JobSchema().fields)


def _as_the_author_sees_it(job: Job) -> dict[str, Any]:
    """The job's shown fields, with its error code in place of the error text."""
    return {**{name: getattr(job, name) for name in SHOWN_FIELDS}, "last_error": job.error_code}


@blp.route("/jobs")
class JobList(MethodView):
    @blp.admin_required
    @blp.page(JobQuerySchema, JobListSchema)
    def get(self, filters: dict[str, Any]) -> Any:
        """List background jobs, newest first, optionally by status (admin)"""
        return paginate(outbox.job_query(filters.get("status")), filters).response("jobs")


@blp.route("/jobs/<string(length=36):job_id>/retry")
class JobRetry(MethodView):
    @blp.admin_required
    @blp.response(200, JobSchema)
    @blp.errors(404, 409)
    def post(self, job_id: str) -> Any:
        """Retry a dead job with a fresh set of attempts (admin)"""
        job = outbox.retry_job(get_or_404(Job, job_id))
        current_app.logger.info("Job %s retried by admin %s", job.id, caller().username)
        return job

"""v2 to-dos: v1 plus `priority` (body field, filter, sort) and `GET /todos/priority`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blog_api.api import todos as views
from blog_api.api.base import Blueprint
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.schemas import todos as todos_schemas
from blog_api.schemas.common import PaginationQuerySchema
from blog_api.services import todos

blp = Blueprint(
    "todos-v2", __name__, url_prefix="/api/v2", description="Your to-dos, with priority"
)


@blp.route("/todos/priority")
class TodosByPriority(MethodView):
    @blp.login_required
    @blp.page(PaginationQuerySchema, todos_schemas.V2.listing)
    def get(self, page: dict[str, Any]) -> Any:
        """List your to-dos, highest priority first"""
        statement = todos.todo_query(caller(), {"sort": "-priority"})
        return paginate(statement, page).response("todos")


views.register(blp, todos_schemas.V2)

"""v2 to-dos: v1 plus `priority` (body field, filter, sort) and `GET /todos/priority`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from blog_api.api import todos as views
from blog_api.api.base import Blueprint, Schemas
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.schemas.common import LIST_HEADERS, PaginationQuerySchema
from blog_api.schemas.todos import (
    TodoCreateV2Schema,
    TodoListV2Schema,
    TodoQueryV2Schema,
    TodoUpdateV2Schema,
    TodoV2Schema,
)
from blog_api.services import todos

blp = Blueprint(
    "todos-v2", __name__, url_prefix="/api/v2", description="Your to-dos, with priority"
)


@blp.route("/todos/priority")
class TodosByPriority(MethodView):
    @blp.login_required
    @blp.arguments(PaginationQuerySchema, location="query")
    @blp.response(200, TodoListV2Schema, headers=LIST_HEADERS)
    def get(self, page: dict[str, Any]) -> Any:
        """List your to-dos, highest priority first"""
        statement = todos.todo_query(caller(), {"sort": "-priority"})
        return paginate(statement, page).response("todos")


views.register(
    blp,
    Schemas(
        item=TodoV2Schema,
        listing=TodoListV2Schema,
        create=TodoCreateV2Schema,
        update=TodoUpdateV2Schema,
        query=TodoQueryV2Schema,
    ),
)

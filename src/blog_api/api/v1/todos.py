"""v1 to-dos: title, description, completed."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import abort

from blog_api.api import todos as views
from blog_api.api.base import Blueprint, get_or_404
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.models import User
from blog_api.schemas import todos as todos_schemas
from blog_api.services import todos

blp = Blueprint("todos", __name__, url_prefix="/api/v1", description="Your to-dos")

views.register(blp, todos_schemas.V1)


@blp.route("/users/<id:user_id>/todos")
class UserTodos(MethodView):
    @blp.login_required
    @blp.page(todos_schemas.V1.query, todos_schemas.V1.listing)
    @blp.errors(403, 404)
    def get(self, filters: dict[str, Any], user_id: int) -> Any:
        """List one user's to-dos (that user or an admin)"""
        user = caller()
        if not user.may_act_for(user_id):
            abort(403, message="You can only view your own todos unless you are an admin")
        get_or_404(User, user_id)
        statement = todos.todo_query(user, {**filters, "user_id": user_id})
        return paginate(statement, filters).response("todos")

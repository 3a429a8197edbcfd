"""To-do views, declared once for every API version: `register` routes them on a version's
blueprint with that version's schemas.

A user sees and changes only their own to-dos (anything else is `404 Todo not found`);
an admin sees all of them and may filter with `?user_id=`.
"""

from __future__ import annotations

from typing import Any, cast

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_smorest import abort

from blog_api.api import limits
from blog_api.api.base import Blueprint
from blog_api.api.pagination import paginate
from blog_api.auth import caller
from blog_api.models import Todo
from blog_api.schemas.common import MessageSchema, Schemas
from blog_api.schemas.todos import TodoBatchDeleteResultSchema, TodoBatchDeleteSchema
from blog_api.services import delete_instance, idempotency, todos, update_fields


def get_todo_or_404(todo_id: int) -> Todo:
    todo = todos.find_todo(caller(), todo_id)
    if todo is None:
        abort(404, message="Todo not found")
    return cast(Todo, todo)


def created_todo(todo: Todo) -> tuple[Todo, int, dict[str, str]]:
    """The answer to a new to-do (and what its Idempotency-Key stores): the to-do, at its URL."""
    return todo, 201, {"Location": url_for(f"{request.blueprint}.TodoItem", todo_id=todo.id)}


def register(blp: Blueprint, schemas: Schemas) -> None:
    """Route the to-do views on `blp`, one API version's blueprint, with its `schemas`."""

    @blp.route("/todos")
    class TodoList(MethodView):
        """`/todos`: list, create and batch-delete your to-dos."""

        @blp.login_required
        @blp.page(schemas.query, schemas.listing)
        def get(self, filters: dict[str, Any]) -> Any:
            """List your to-dos (admins: everyone's), filtered, sorted and paginated"""
            page = paginate(todos.todo_query(caller(), filters), filters)
            current_app.logger.debug("Fetched todos")
            return page.response("todos")

        @blp.login_required
        @limits.todo_creation
        @blp.arguments(schemas.create)
        @blp.idempotent(created_todo)
        @blp.response(201, schemas.item)
        @blp.errors(429)
        def post(self, data: dict[str, Any], key: idempotency.Key | None) -> Any:
            """Create a to-do"""
            todo = todos.create_todo(caller(), data, key=key)
            current_app.logger.info("Todo created: %s by %s", todo.title, caller().username)
            return created_todo(todo)

        @blp.login_required
        @blp.arguments(TodoBatchDeleteSchema)
        @blp.response(200, TodoBatchDeleteResultSchema)
        def delete(self, data: dict[str, list[int]]) -> Any:
            """Delete several of your to-dos; reports which ids were deleted and which not found"""
            deleted, not_found = todos.delete_todos(caller(), data["ids"])
            current_app.logger.info("Todos deleted: %s by %s", deleted, caller().username)
            return {
                "message": f"{len(deleted)} todo(s) deleted",
                "deleted": deleted,
                "not_found": not_found,
            }

    @blp.route("/todos/<id:todo_id>")
    class TodoItem(MethodView):
        """`/todos/<id>`: one of your to-dos."""

        @blp.login_required
        @blp.response(200, schemas.item)
        @blp.errors(404)
        def get(self, todo_id: int) -> Any:
            """Get one of your to-dos"""
            return get_todo_or_404(todo_id)

        @blp.login_required
        @blp.arguments(schemas.update)
        @blp.response(200, schemas.item)
        @blp.errors(404)
        def put(self, changes: dict[str, Any], todo_id: int) -> Any:
            """Update one of your to-dos (only the fields given)"""
            todo = update_fields(get_todo_or_404(todo_id), changes)
            current_app.logger.info("Todo updated: %s by %s", todo.title, caller().username)
            return todo

        @blp.login_required
        @blp.response(200, MessageSchema)
        @blp.errors(404)
        def delete(self, todo_id: int) -> Any:
            """Delete one of your to-dos"""
            todo = get_todo_or_404(todo_id)
            delete_instance(todo)
            current_app.logger.info("Todo deleted: %s by %s", todo.title, caller().username)
            return {"message": "Todo deleted"}

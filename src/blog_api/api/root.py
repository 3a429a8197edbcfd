"""`GET /api`: the welcome message and the configured API version."""

from __future__ import annotations

from flask import Blueprint, current_app

blp = Blueprint("root", __name__)


@blp.get("/api")
def index() -> dict[str, str]:
    return {"message": "Welcome to Flask API!", "version": current_app.config["API_VERSION"]}

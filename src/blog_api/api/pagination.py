"""The one pagination helper: `limit`/`offset` in, items and a `pagination` object out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, func, select

from blog_api.extensions import db


def paginate(
    statement: Select[Any], args: Mapping[str, int]
) -> tuple[Sequence[Any], dict[str, int]]:
    """Run `statement` for one page; also count every row it would return."""
    limit, offset = args["limit"], args["offset"]
    total = db.session.scalar(select(func.count()).select_from(statement.order_by(None).subquery()))
    items = db.session.scalars(statement.limit(limit).offset(offset)).all()
    return items, {"total": total or 0, "limit": limit, "offset": offset}

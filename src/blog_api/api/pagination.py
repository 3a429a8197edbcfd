"""The one pagination helper: `limit`/`offset` in, items and a `pagination` object out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, func, select

from blog_api.extensions import db


def paginate(
    statement: Select[Any], args: Mapping[str, int]
) -> tuple[Sequence[Any], dict[str, int]]:
    """Run `statement` for one page; also count every row it would return.

    The count rides along as a window function, so a page costs one query; only a page past
    the end (no rows to carry it) needs a separate count.
    """
    limit, offset = args["limit"], args["offset"]
    counted = statement.add_columns(func.count().over().label("_total"))
    rows = db.session.execute(counted.limit(limit).offset(offset)).all()
    items = [row[0] for row in rows]
    if rows:
        total = rows[0][-1]
    elif offset:
        total = db.session.scalar(
            select(func.count()).select_from(statement.order_by(None).subquery())
        )
    else:
        total = 0
    return items, {"total": total or 0, "limit": limit, "offset": offset}

"""The one pagination helper: `limit`/`offset` in, items and a `pagination` object out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, bindparam, func, select

from blog_api.extensions import db


@lru_cache(maxsize=64)
def _count_and_page(statement: Select[Any]) -> tuple[Select[Any], Select[Any]]:
    """The COUNT of `statement`'s rows and one page of them, `limit` and `offset` bound.

    Built once per statement object: a caller that keeps its statements (with `bindparam` for
    the values that change) pays neither their construction nor their cache keys again.
    """
    count = select(func.count()).select_from(statement.order_by(None).subquery())
    page = statement.limit(bindparam("page_limit")).offset(bindparam("page_offset"))
    return count, page


def paginate(
    statement: Select[Any], args: Mapping[str, int], params: Mapping[str, Any] | None = None
) -> tuple[Sequence[Any], dict[str, int]]:
    """Run `statement` (with its bound `params`) for one page; also count every row it would
    return."""
    limit, offset = args["limit"], args["offset"]
    count, page = _count_and_page(statement)
    values = dict(params or {})
    total = db.session.scalar(count, values)
    items = db.session.scalars(page, {**values, "page_limit": limit, "page_offset": offset}).all()
    return items, {"total": total or 0, "limit": limit, "offset": offset}

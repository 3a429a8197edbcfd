"""The one pagination helper: a list query and its page arguments in, one page out.

Pages are keyset pages. The statement's ORDER BY (which must end with the primary key, so that
it is a total order) says which values place a row; the next page starts after the last row's
values, so its cost does not depend on how deep it is, and rows inserted or deleted between two
requests neither repeat nor skip rows. Those values travel in `after`, an opaque cursor bound
to the endpoint and filters it came from, and encrypted (SIV with HMAC-SHA256, keys derived
from SECRET_KEY for this purpose only): a page's sort values may be a private to-do's title, and
a cursor travels in URLs, `Link` headers and access logs, so it shows nothing of them, and any
change to it fails its synthetic IV, which is also its tag.

`offset` still works for clients that use it, up to `MAX_OFFSET` rows deep; the total is only
counted when asked for with `count=true`, as counting every matching row costs as much as the
table is large.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from sqlalchemy import ColumnElement, Select, and_, func, inspect, literal, or_, select, tuple_
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression
from werkzeug.exceptions import BadRequest

from blog_api.extensions import db
from blog_api.schemas.common import PAGE_ARGUMENTS

CURSOR_KEY_PURPOSE = b"blog_api pagination cursor"
CURSOR_MAC_PURPOSE = b"blog_api pagination cursor siv"
# The synthetic IV: the first 16 bytes of a cursor, an HMAC of what it encrypts (also its tag).
SIV_BYTES = 16
INVALID_CURSOR = (
    "Invalid cursor: pass `after` exactly as a previous page's `pagination.next` gave it"
)
FOREIGN_CURSOR = (
    "This cursor belongs to another listing: keep the filters and sort of the page it came from"
)


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY term: a column and its direction."""

    column: ColumnElement[Any]
    descending: bool

    def value_of(self, item: Any) -> Any:
        """The item's value for this key, as the ORM maps the column to an attribute."""
        attribute = inspect(type(item)).get_property_by_column(self.column).key
        return getattr(item, attribute)


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    pagination: dict[str, Any]

    def response(self, key: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The body (`{key: items, "pagination": ...}`) and the `Link` header to the next page."""
        next_url = self.pagination["next"]
        headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
        return {key: self.items, "pagination": self.pagination}, headers


def paginate(
    statement: Select[Any], args: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> Page:
    """One page of `statement` (with the values `params` binds to it) for the page arguments
    in `args` (`limit`, and `after` or `offset`, and `count`); the other arguments are the
    listing's filters, which the cursor is bound to."""
    values = dict(params or {})
    keys = sort_keys(statement)
    limit: int = args["limit"]
    filters = {name: value for name, value in args.items() if name not in PAGE_ARGUMENTS}
    listing = _listing_fingerprint(filters)
    pagination: dict[str, Any] = {"limit": limit}
    page_statement = statement
    if "after" in args:
        page_statement = page_statement.where(_after(keys, _decode(args["after"], keys, listing)))
    else:
        pagination["offset"] = args.get("offset", 0)
        page_statement = page_statement.offset(pagination["offset"])
    if args.get("count"):
        count = select(func.count()).select_from(statement.order_by(None).subquery())
        pagination["total"] = db.session.scalar(count, values) or 0
    # One row more than the page tells whether there is a next page without counting.
    rows = db.session.scalars(page_statement.limit(limit + 1), values).all()
    items = rows[:limit]
    pagination["next"] = None
    if len(rows) > limit:
        cursor = _encode([key.value_of(items[-1]) for key in keys], listing)
        pagination["next"] = _next_url(args, cursor)
    return Page(items, pagination)


def sort_keys(statement: Select[Any]) -> list[SortKey]:
    """The statement's ORDER BY as sort keys; it must be plain columns ending with the primary
    key, or the cursor could not say where a page ends."""
    keys: list[SortKey] = []
    # SQLAlchemy has no public accessor for a Select's ORDER BY.
    for clause in statement._order_by_clauses:
        descending = False
        if isinstance(clause, UnaryExpression):
            if clause.modifier not in (operators.asc_op, operators.desc_op):
                raise ValueError(f"cannot paginate by {clause}")
            descending = clause.modifier is operators.desc_op
            clause = clause.element
        if not any(key.column is clause for key in keys):
            keys.append(SortKey(clause, descending))
    if not keys or not getattr(keys[-1].column, "primary_key", False):
        raise ValueError("a paginated statement must be ordered by its primary key last")
    return keys


def _after(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows that come after `values` in the order of `keys`."""
    if len({key.descending for key in keys}) == 1:
        # One direction: a row-value comparison, which both databases answer with an index
        # range scan when an index matches the ORDER BY.
        columns = [key.column for key in keys]
        if len(columns) == 1:
            left, right = columns[0], values[0]
        else:
            bound = [
                literal(value, column.type) for column, value in zip(columns, values, strict=True)
            ]
            left, right = tuple_(*columns), tuple_(*bound)
        return left < right if keys[0].descending else left > right
    terms = []
    for position, key in enumerate(keys):
        equal = [keys[i].column == values[i] for i in range(position)]
        beyond = key.column < values[position] if key.descending else key.column > values[position]
        terms.append(and_(*equal, beyond))
    return or_(*terms)


@functools.lru_cache(maxsize=4)
def _keys_for(secret: bytes) -> tuple[bytes, bytes]:
    """The MAC key and the encryption key of cursors: keys of their own, derived from
    SECRET_KEY, so nothing else made with SECRET_KEY opens a cursor, and a cursor reveals
    nothing about the other uses of the secret."""
    mac_key = hmac.new(secret, CURSOR_MAC_PURPOSE, hashlib.sha256).digest()
    return mac_key, hmac.new(secret, CURSOR_KEY_PURPOSE, hashlib.sha256).digest()


def _keys() -> tuple[bytes, bytes]:
    return _keys_for(str(current_app.config["SECRET_KEY"]).encode())


def _xor_keystream(key: bytes, iv: bytes, data: bytes) -> bytes:
    """`data` XOR the keystream HMAC-SHA256(key, iv | counter), block after block (counter
    mode with HMAC as the pseudo-random function): encrypts and decrypts alike."""
    blocks = -(-len(data) // hashlib.sha256().digest_size)
    stream = b"".join(
        hmac.new(key, iv + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        for counter in range(blocks)
    )[: len(data)]
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
    return mixed.to_bytes(len(data), "big")


def _seal(plain: bytes) -> bytes:
    """`siv | ciphertext`: deterministic authenticated encryption, the SIV construction (RFC
    5297) with HMAC-SHA256 as its pseudo-random function. The IV is the MAC of the plaintext, so
    the same page always gets the same cursor (its `next` URL is stable) and only equal
    plaintexts share an IV; the standard library does it, with no cipher package to install."""
    mac_key, key = _keys()
    siv = hmac.new(mac_key, plain, hashlib.sha256).digest()[:SIV_BYTES]
    return siv + _xor_keystream(key, siv, plain)


def _unseal(sealed: bytes) -> bytes:
    """The plaintext of a sealed cursor; ValueError when it was not sealed by us (the IV does
    not match what the plaintext's MAC must be)."""
    mac_key, key = _keys()
    siv, body = sealed[:SIV_BYTES], sealed[SIV_BYTES:]
    plain = _xor_keystream(key, siv, body)
    expected = hmac.new(mac_key, plain, hashlib.sha256).digest()[:SIV_BYTES]
    if len(siv) != SIV_BYTES or not hmac.compare_digest(siv, expected):
        raise ValueError("not a cursor of ours")
    return plain


def _listing_fingerprint(filters: Mapping[str, Any]) -> str:
    """What a cursor is bound to: the endpoint, its path arguments and the filters."""
    listing = [request.endpoint, request.view_args or {}, dict(filters)]
    text = json.dumps(listing, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(values: Sequence[Any], listing: str) -> str:
    """`base64url(_seal(JSON {after, listing}))`, without padding."""
    encoded = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    # UTF-8 rather than \u escapes: a title of 100 emoji stays within MAX_CURSOR_CHARS.
    plain = json.dumps({"after": encoded, "listing": listing}, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(_seal(plain)).rstrip(b"=").decode("ascii")


def _decode(cursor: str, keys: Sequence[SortKey], listing: str) -> list[Any]:
    """The sort-key values a cursor carries; `400` if it was not made by us for this listing."""
    try:
        padded = cursor.encode("ascii") + b"=" * (-len(cursor) % 4)
        sealed = base64.b64decode(padded, altchars=b"-_", validate=True)
        payload = json.loads(_unseal(sealed))
    except (ValueError, binascii.Error):
        raise InvalidCursor(INVALID_CURSOR)
    if not isinstance(payload, dict) or payload.get("listing") != listing:
        raise InvalidCursor(FOREIGN_CURSOR)
    values = payload.get("after")
    if not isinstance(values, list) or len(values) != len(keys):
        raise InvalidCursor(INVALID_CURSOR)
    return [_typed(key, value) for key, value in zip(keys, values, strict=True)]


def _typed(key: SortKey, value: Any) -> Any:
    """`value` as the key's column type, so that the comparison binds like a stored value."""
    python_type = key.column.type.python_type
    if python_type is datetime and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidCursor(INVALID_CURSOR)
        if moment.tzinfo is not None:
            return moment
    elif python_type in (int, str) and type(value) is python_type:
        return value
    raise InvalidCursor(INVALID_CURSOR)


class InvalidCursor(BadRequest):
    """`400` in the shape of a query-parameter validation error on `after`."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.data = {"message": "Invalid query parameter(s): after", "errors": {"after": [reason]}}


def _next_url(args: Mapping[str, Any], cursor: str) -> str:
    """This request's path with `after=cursor` instead of `offset`, and the same filters and
    page size as the client wrote them. `count` is not carried: the total is asked for once,
    not on every page."""
    kept = [name for name in args if name in request.args and name not in ("offset", "count")]
    arguments = {name: request.args[name] for name in kept if name != "after"}
    return f"{request.script_root}{request.path}?{urlencode({**arguments, 'after': cursor})}"

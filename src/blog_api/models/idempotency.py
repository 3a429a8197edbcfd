"""Idempotency keys: one row per (scope, key) a client sent with a creating `POST`.

A row is written by the transaction of the request's effect (the post and its jobs, the to-do,
the user): claimed by its first statement, its answer (`response_status`, `response_body`,
`response_headers`) set right before its commit (services/idempotency.py). So a committed row
always has its answer, which a replay sends until `expires_at`; the answer is null only inside
the claiming transaction, where no other request can see it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime

ANONYMOUS_SCOPE = "anonymous"
MAX_KEY_LENGTH = 255


class IdempotencyKey(Model):
    __tablename__ = "idempotency_keys"
    # The retention prune deletes by expiry, oldest first, in batches.
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    # `user:<id>` for a logged-in caller, `anonymous` for registration: the primary key is
    # the unique constraint that decides between two requests racing with one key.
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    # The answer's headers (Location, Link) as a JSON list of [name, value] pairs.
    response_headers: Mapped[str | None] = mapped_column(Text)

"""Revoked JWTs, kept until they would have expired anyway.

`family` is the token's family (its `fam` claim, services/tokens.py). `family_revoked` marks a
refresh token that was presented again after it was spent: that revokes every token of its
family, and the row is then kept until the last of them would have expired.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime, utcnow


class TokenBlocklist(Model):
    __tablename__ = "token_blocklist"

    id: Mapped[int] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(String(36), unique=True)
    token_type: Mapped[str] = mapped_column(String(10))
    user_id: Mapped[int] = mapped_column(index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    family: Mapped[str | None] = mapped_column(String(36), index=True)
    family_revoked: Mapped[bool] = mapped_column(default=False, server_default=false())

"""E-mail confirmations: one row per confirmation e-mail a user was sent.

The row holds no token. The token is `<id>.<HMAC of id, nonce and address>` under a key derived
from SECRET_KEY (services/confirmations.py), computed by the worker when it sends the e-mail:
someone who can read the database still cannot confirm an address.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from blog_api.models.base import Model, UTCDateTime, utcnow

NONCE_LENGTH = 43


def new_nonce() -> str:
    """256 random bits, base64url."""
    return secrets.token_urlsafe(32)


class EmailConfirmation(Model):
    __tablename__ = "email_confirmations"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The address this confirmation confirms: the user's address when it was requested.
    email: Mapped[str] = mapped_column(String(254))
    nonce: Mapped[str] = mapped_column(String(NONCE_LENGTH), default=new_nonce)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

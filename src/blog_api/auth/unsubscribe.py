"""Unsubscribe tokens: the proof, carried by every fan-out e-mail's link, that its holder may end
one subscription without logging in (RFC 8058 one-click).

A token names one subscription, the pair (subscriber id, author id), and carries an HMAC-SHA256
of the pair under a key derived from SECRET_KEY for this purpose only (a MAC made here is never
valid as any other signature made with SECRET_KEY, and vice versa), truncated to 128 bits:
base64url of 4 + 4 + 16 bytes, 32 characters. It names the pair, not one row: a link from an
older e-mail still ends a subscription made again since. Nothing is stored; rotating SECRET_KEY
ends every link already sent (they answer `400`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from functools import cache

from flask import current_app

from blog_api.models.base import MAX_ID

KEY_PURPOSE = b"blog_api unsubscribe token v1"
UNSUBSCRIBE_PATH = "/api/v1/unsubscribe"
MAC_BYTES = 16
PAIR = struct.Struct(">II")
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
INVALID_UNSUBSCRIBE_TOKEN = "Invalid unsubscribe token: use the link of an e-mail exactly as sent"  # noqa: S105 (a message, not a secret)


class InvalidUnsubscribeToken(ValueError):
    """The token names no subscription of ours: `400`."""


@dataclass(frozen=True)
class SubscriptionPair:
    subscriber_id: int
    author_id: int


@cache
def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), KEY_PURPOSE, hashlib.sha256).digest()


def _mac(key: bytes, pair: bytes) -> bytes:
    return hmac.new(key, pair, hashlib.sha256).digest()[:MAC_BYTES]


class TokenSigner:
    """Makes the tokens and links of many e-mails with the key derived once (a fan-out batch).
    A link is `{PUBLIC_BASE_URL}/api/v1/unsubscribe?token=...`, never built from a request's
    Host."""

    def __init__(self) -> None:
        config = current_app.config
        self.key = _key(str(config["SECRET_KEY"]))
        self.link_prefix = f"{config['PUBLIC_BASE_URL']}{UNSUBSCRIBE_PATH}?token="

    def token(self, subscriber_id: int, author_id: int) -> str:
        pair = PAIR.pack(subscriber_id, author_id)
        return base64.urlsafe_b64encode(pair + _mac(self.key, pair)).decode()

    def link(self, subscriber_id: int, author_id: int) -> str:
        return self.link_prefix + self.token(subscriber_id, author_id)


def unsubscribe_token(subscriber_id: int, author_id: int) -> str:
    """The token that ends `subscriber_id`'s subscription to `author_id`."""
    return TokenSigner().token(subscriber_id, author_id)


def unsubscribe_link(subscriber_id: int, author_id: int) -> str:
    """The one-click link that ends `subscriber_id`'s subscription to `author_id`."""
    return TokenSigner().link(subscriber_id, author_id)


def read_unsubscribe_token(token: str) -> SubscriptionPair:
    """The subscription `token` names; `InvalidUnsubscribeToken` unless we made it."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise InvalidUnsubscribeToken(INVALID_UNSUBSCRIBE_TOKEN)
    try:
        raw = base64.urlsafe_b64decode(token)
    except (binascii.Error, ValueError):
        raise InvalidUnsubscribeToken(INVALID_UNSUBSCRIBE_TOKEN) from None
    pair, mac = raw[: PAIR.size], raw[PAIR.size :]
    expected = _mac(_key(str(current_app.config["SECRET_KEY"])), pair)
    if not hmac.compare_digest(mac, expected):
        raise InvalidUnsubscribeToken(INVALID_UNSUBSCRIBE_TOKEN)
    subscriber_id, author_id = PAIR.unpack(pair)
    if not (0 < subscriber_id <= MAX_ID and 0 < author_id <= MAX_ID):
        raise InvalidUnsubscribeToken(INVALID_UNSUBSCRIBE_TOKEN)
    return SubscriptionPair(subscriber_id, author_id)

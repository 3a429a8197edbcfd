"""Strict input fields: JSON types only, no NUL characters (PostgreSQL text cannot hold them),
patterns that match the whole value, e-mail addresses the mailer can send to."""

from __future__ import annotations

import re
from typing import Any

from email_validator import EmailNotValidError, validate_email
from marshmallow import ValidationError, fields, validate

MAX_INT32 = 2**31 - 1
MAX_MAIL_ADDRESS_LENGTH = 254  # RFC 5321's path limit less the angle brackets


class FullMatch(validate.Validator):
    """A regular expression that the whole value must match.

    marshmallow's `validate.Regexp` uses `re.match`, where `$` also matches before a final
    newline: `^[a-z]{3,50}$` admitted `"alice\n"`, a second account beside `alice`. Patterns
    stay written as `^...$` in the syntax Python and ECMA-262 share, because the OpenAPI
    documents publish them (apispec reads `regex`) as JSON Schema `pattern`, which is not
    anchored and where `$` without the `m` flag is the end of the value, as enforced here.
    """

    error: str

    def __init__(self, pattern: str, *, error: str) -> None:
        self.regex = re.compile(pattern)
        self.error = error

    def _repr_args(self) -> str:
        return f"regex={self.regex!r}"

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self.error)
        return value


# A pattern rather than custom code, so that the OpenAPI documents state the rule too.
NO_NUL = FullMatch(r"^[^\x00]*$", error="Must not contain NUL characters.")


class Text(fields.String):
    """A string of `min` to `max` characters without NUL."""

    def __init__(self, *, min: int = 0, max: int, **kwargs: Any) -> None:
        super().__init__(validate=[validate.Length(min=min, max=max), NO_NUL], **kwargs)


class StrictBoolean(fields.Boolean):
    """Only JSON `true` / `false`: `"yes"` or `1` is a type error, not a guess."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def strict_int(**kwargs: Any) -> fields.Integer:
    """A JSON integer (not a float, string or boolean) within the 32-bit range."""
    return fields.Integer(
        strict=True, validate=validate.Range(min=-MAX_INT32 - 1, max=MAX_INT32), **kwargs
    )


def opaque_token(max_length: int, description: str) -> fields.String:
    """A required token the API made (in an e-mail's link), read as an opaque string: its
    checks are the service's, which reads it."""
    return fields.String(
        required=True,
        validate=validate.Length(min=1, max=max_length),
        metadata={"description": description},
    )


NOT_ASCII = (
    "Only ASCII e-mail addresses are accepted: the mail server cannot send to an address "
    "with other characters (SMTPUTF8)."
)
ROUTING_CHARACTERS = (
    "'%' and '!' are not accepted before the @-sign: they relay mail through other hosts."
)


def check_mail_address(value: str) -> None:
    """An address the mailer can send to, on a public domain.

    email-validator's rules, stricter than RFC 5322 where an address is a way to reach
    somewhere else: no IP literal (`root@[127.0.0.1]`), no dotless or reserved domain
    (`root@localhost`, `.local`, `.test`), no quoted local part; and, ours, nothing but ASCII
    (what the mailer can send; anything else would end a dead job) and no `%` or `!`, the
    old source-routing forms (`a%evil.com@example.com`).
    """
    if len(value) > MAX_MAIL_ADDRESS_LENGTH:
        raise ValidationError(f"Longer than maximum length {MAX_MAIL_ADDRESS_LENGTH}.")
    if not value.isascii():
        raise ValidationError(NOT_ASCII)
    try:
        address = validate_email(
            value,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            globally_deliverable=True,
            check_deliverability=False,  # no DNS lookup while a request waits
        )
    except EmailNotValidError as error:
        raise ValidationError(str(error)) from None
    if any(character in address.local_part for character in "%!"):
        raise ValidationError(ROUTING_CHARACTERS)


class MailAddress(fields.String):
    """An e-mail address the mailer can deliver to (`check_mail_address`); the value as given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            validate=check_mail_address,
            metadata={
                "format": "email",
                "maxLength": MAX_MAIL_ADDRESS_LENGTH,
                "description": "ASCII, on a public domain name: no IP address, no quoted "
                "local part, no '%' or '!' before the @-sign",
            },
            **kwargs,
        )

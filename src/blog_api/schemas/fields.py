"""Strict input fields: JSON types only, no NUL characters (PostgreSQL text cannot hold them),
patterns that match the whole value."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, fields, validate

MAX_INT32 = 2**31 - 1


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

"""Strict input fields: JSON types only, no NUL characters (PostgreSQL text cannot hold them)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

MAX_INT32 = 2**31 - 1


# A pattern rather than custom code, so that the OpenAPI documents state the rule too.
NO_NUL = validate.Regexp(r"^[^\x00]*$", error="Must not contain NUL characters.")


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

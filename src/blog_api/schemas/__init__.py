"""Marshmallow schemas: what each endpoint accepts (validated, unknown fields refused) and what
it answers, per resource and API version."""

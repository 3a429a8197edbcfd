"""`flask users create-admin` and `flask tokens purge`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from marshmallow import ValidationError

from blog_api.errors import ConflictError
from blog_api.schemas.users import UserCreateSchema
from blog_api.services import tokens
from blog_api.services.users import create_user

users_cli = AppGroup("users", help="Manage user accounts.")
tokens_cli = AppGroup("tokens", help="Manage the token blocklist.")


@users_cli.command("create-admin")
@click.option("--username", prompt=True)
@click.option("--email", default=None, help="Optional e-mail address for notifications.")
@click.password_option(
    help="Prompted for (twice) when not given; or set ADMIN_PASSWORD.", envvar="ADMIN_PASSWORD"
)
def create_admin(username: str, email: str | None, password: str) -> None:
    """Create an administrator account (the first admin cannot register through the API)."""
    try:
        data = UserCreateSchema().load(
            {"username": username, "password": password, "email": email, "role": "admin"}
        )
        user = create_user(**data)
    except ValidationError as error:
        raise click.ClickException(f"invalid input: {error.messages}")
    except ConflictError as error:
        raise click.ClickException(str(error))
    click.echo(f"Admin created: {user.username} (id {user.id})")


@tokens_cli.command("purge")
def purge_tokens() -> None:
    """Delete blocklist entries of tokens that have expired anyway."""
    click.echo(f"Purged {tokens.purge_expired_tokens()} expired token(s)")


def register_cli(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)

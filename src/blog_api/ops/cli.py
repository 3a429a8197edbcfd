"""`flask users create-admin`, `flask users check-names` and `flask tokens purge`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from marshmallow import ValidationError

from blog_api.errors import ConflictError
from blog_api.schemas.users import USERNAME_RULE, VALID_USERNAME, UserCreateSchema
from blog_api.services import tokens
from blog_api.services.users import create_user, usernames

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


@users_cli.command("check-names")
def check_names() -> None:
    """List the usernames registration would refuse today; exit status 1 when there is any.

    Names stored before the whole name had to match the rule (`alice\\n`, a control character)
    look like another account's name in lists and logs: each is printed as its id and its
    Python repr, so that what cannot be seen is shown escaped.
    """
    refused = 0
    for user_id, username in usernames():
        try:
            VALID_USERNAME(username)
        except ValidationError:
            refused += 1
            click.echo(f"user {user_id}: {username!r}")
    if refused:
        raise click.ClickException(
            f"{refused} username(s) break the rule ({USERNAME_RULE}): rename them in the "
            "database or delete the accounts"
        )
    click.echo("Every username follows the rule")


@tokens_cli.command("purge")
def purge_tokens() -> None:
    """Delete blocklist entries of tokens that have expired anyway."""
    click.echo(f"Purged {tokens.purge_expired_tokens()} expired token(s)")


def register_cli(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)

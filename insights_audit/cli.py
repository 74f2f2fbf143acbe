"""The ``insights-audit`` command: the Flask CLI of the app, with db and tokens groups."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup

from insights_audit import migrations
from insights_audit.auth import KNOWN_ROLES, SCOPES
from insights_audit.config import Settings
from insights_audit.extensions import transaction
from insights_audit.tokens import create_token, list_tokens, revoke_token


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


@click.group("db", help="Database schema.")
def db_cli() -> None:
    pass


@db_cli.command("upgrade", help="Apply every pending migration (safe to run again).")
def db_upgrade() -> None:
    migrations.upgrade(_settings().database_url)
    click.echo(f"Database is at revision {migrations.head_revision()}.")


@click.group("tokens", help="API tokens.")
def tokens_cli() -> None:
    pass


@tokens_cli.command("create", help="Create a token; the secret is printed once, on the last line.")
@click.option("--org", required=True, help="Organisation (tenant) of the token.")
@click.option("--user", "user_id", required=True, help="User id the token acts as.")
@click.option("--email", default=None, help="E-mail address of that user.")
@click.option(
    "--role", "roles", multiple=True, required=True, type=click.Choice(sorted(KNOWN_ROLES))
)
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(sorted(SCOPES)))
@click.option("--name", default=None, help="A label to recognise the token by.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
def tokens_create(
    org: str,
    user_id: str,
    email: str | None,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    name: str | None,
    expires_in_days: int | None,
) -> None:
    if not org.strip() or not user_id.strip():
        raise click.BadParameter("must not be empty", param_hint="--org/--user")
    with transaction() as connection:
        token_id, secret = create_token(
            connection,
            org=org,
            user_id=user_id,
            user_email=email,
            roles=list(roles),
            scopes=list(scopes),
            name=name,
            expires_in_days=expires_in_days,
        )
    click.echo(f"Created token {token_id} for user {user_id} in org {org}. It is shown only once:")
    click.echo(secret)


@tokens_cli.command("list", help="One tab-separated line per token.")
@click.option("--org", default=None, help="Only the tokens of this organisation.")
def tokens_list(org: str | None) -> None:
    with transaction() as connection:
        listings = list_tokens(connection, org)
    for token in listings:
        fields = (
            str(token.id),
            token.name or "-",
            token.org,
            token.user_id,
            ",".join(token.roles),
            ",".join(token.scopes),
            token.state,
        )
        click.echo("\t".join(fields))


@tokens_cli.command("revoke", help="Revoke a token by the ID that `tokens list` shows.")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    with transaction() as connection:
        revoked = revoke_token(connection, token_id)
    if not revoked:
        raise click.ClickException(f"No active token with ID {token_id}.")
    click.echo(f"Revoked token {token_id}.")


def register_commands(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(tokens_cli)


def main() -> None:
    from insights_audit import create_app

    FlaskGroup(create_app=create_app, add_default_commands=False, load_dotenv=False)(
        prog_name="insights-audit"
    )

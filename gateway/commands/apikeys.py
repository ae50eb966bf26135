"""``verdict apikeys``: create and list API keys (stored hashed)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verdict.gateway.apikeys import ApiKeyError, ApiKeyStore
from verdict.gateway.commands.common import EXIT_USAGE, fail
from verdict.gateway.settings import load_settings

apikeys_app = typer.Typer(help="Create and list API keys.", no_args_is_help=True)


def _store():  # noqa: ANN202
    return ApiKeyStore(load_settings().apikeys_file)


@apikeys_app.command("create")
def create(
    scope: Annotated[list[str], typer.Option("--scope", help="score, explain, replay or admin (repeatable)")],
    name: Annotated[str, typer.Option(help="Who or what the key is for")] = "",
) -> None:
    """Create a key and print it once (only its SHA-256 is stored)."""
    try:
        key, token = _store().create(scope, name=name)
    except ApiKeyError as exc:
        fail(str(exc), EXIT_USAGE)
    typer.echo(token)
    typer.echo(f"key id {key.key_id}, scopes {', '.join(key.scopes)} — shown once, store it now", err=True)


@apikeys_app.command("list")
def list_keys() -> None:
    """List key ids, scopes and names (never the secrets)."""
    table = Table("key id", "scopes", "name", "created")
    for key in _store().list():
        table.add_row(key.key_id, ", ".join(key.scopes), key.name, key.created)
    Console().print(table)

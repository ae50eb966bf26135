"""What every command shares: the store option, error exits, JSON output.

Why: every command must honour ``VERDICT_HOME``/``VERDICT_STORE`` the same way
and fail with one clear line on stderr and a non-zero exit code, never a
traceback, when the user gave something wrong.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import msgspec
import typer

from verdict.audit.config import store_url
from verdict.audit.stores import StoreError, WormStore, open_store
from verdict.audit.stores.registry import url_forms

__all__ = ["StoreOption", "fail", "open_configured_store", "print_json"]

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help=f"Store URL ({url_forms()}); default $VERDICT_STORE or $VERDICT_HOME/store."),
]

EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_configured_store(url: str | None) -> WormStore:
    try:
        return open_store(store_url(url))
    except StoreError as exc:
        fail(str(exc), EXIT_USAGE)


def print_json(value: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")

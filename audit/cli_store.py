"""Opening the store from a command line: one resolution, one error message, for every command.

Why a module of its own: ``verdict audit``, ``verdict keys`` and ``verdict
trust`` all take ``--store``; each must resolve it the same way
(``--store``, then ``$VERDICT_STORE``, then the data directory's store) and
fail the same way (exit 2, naming the URL).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from verdict.audit.config import store_url
from verdict.audit.stores import StoreError, WormStore, open_store
from verdict.audit.stores.keys import InvalidKey
from verdict.audit.stores.registry import store_present, url_forms

__all__ = ["StoreOption", "open_for_cli"]

_err = Console(stderr=True, highlight=False, soft_wrap=True)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help=f"Store URL ({url_forms()}); default: $VERDICT_STORE or <data dir>/store."),
]


def open_for_cli(url: str | None, *, must_exist: bool = False) -> WormStore:
    """The store for ``--store`` (exit 2 with the reason when it cannot be opened)."""
    resolved = store_url(url)
    if must_exist and not store_present(resolved):
        _err.print(f"[red]error:[/] no store at {resolved} (nothing to verify; check --store or VERDICT_STORE)")
        raise typer.Exit(2)
    try:
        return open_store(resolved)
    except (StoreError, InvalidKey, ValueError) as exc:
        _err.print(f"[red]error:[/] cannot open store {resolved}: {exc}")
        raise typer.Exit(2) from None

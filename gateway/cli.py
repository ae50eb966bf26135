"""The ``verdict`` command line: one entry point for every part.

Why thin: each command parses arguments and calls plain functions in the
modules that tests call directly. Heavy imports (torch) happen inside the
commands that need them, so ``verdict audit verify`` runs without torch.
"""

from __future__ import annotations

import typer

from gateway.commands import demo, serve
from gateway.commands.apikeys import apikeys_app
from gateway.commands.models import models_app

app = typer.Typer(
    name="verdict",
    help="Verdict: audited, explained, replayable decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(apikeys_app, name="apikeys")
demo.register(app)
serve.register(app)


def _mount_audit() -> None:
    try:
        from audit.cli import audit_app, keys_app
        from audit.trust_cli import trust_app
    except ImportError:  # the audit CLI is optional until its package lands
        return
    app.add_typer(audit_app, name="audit")
    app.add_typer(keys_app, name="keys")
    app.add_typer(trust_app, name="trust")


_mount_audit()


def _mount_witness() -> None:
    try:
        from audit.witness_cli import witness_app
    except ImportError:  # the witness needs only the audit package; keep the CLI usable without it
        return
    app.add_typer(witness_app, name="witness")


_mount_witness()


def _mount_replay() -> None:
    try:
        from replay.cli import replay_app
    except ImportError:  # replay lands separately; the rest of the CLI works without it
        return
    app.add_typer(replay_app, name="replay")


_mount_replay()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

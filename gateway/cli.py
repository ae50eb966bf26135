"""The ``verdict`` command line: one entry point for every part.

Why thin: each command parses arguments and calls plain functions in the
modules that tests call directly. Heavy imports (torch) happen inside the
commands that need them, so ``verdict audit verify`` runs without torch.
"""

from __future__ import annotations

import typer

from verdict import __version__
from verdict.audit.cli import audit_app, keys_app
from verdict.audit.trust_cli import trust_app
from verdict.audit.witness_cli import witness_app
from verdict.gateway.commands import demo, serve
from verdict.gateway.commands.apikeys import apikeys_app
from verdict.gateway.commands.models import models_app
from verdict.gateway.commands.monitor import monitor_app
from verdict.gateway.commands.subjects import retention_app, subjects_app
from verdict.replay.cli import replay_app

app = typer.Typer(
    name="verdict",
    help="Verdict: audited, explained, replayable decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(apikeys_app, name="apikeys")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")
app.add_typer(witness_app, name="witness")
app.add_typer(replay_app, name="replay")
app.add_typer(subjects_app, name="subjects")
app.add_typer(retention_app, name="retention")
app.add_typer(monitor_app, name="monitor")
demo.register(app)
serve.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"verdict {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Verdict: audited, explained, replayable decisions."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()

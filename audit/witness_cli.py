"""``verdict witness ...``: run a tlog-witness for Verdict checkpoints, print its key.

Why in the audit package: a witness is run by a third party who should not
need the gateway (no torch, no models); ``python -m audit.witness_cli`` works
with the audit package alone, and the top-level CLI mounts the same app.

Exit codes: 0 done, 2 usage error (missing or unreadable key or logs file,
state directory in use).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["witness_app"]

witness_app = typer.Typer(
    help="Run a transparency-log witness (c2sp.org/tlog-witness) that cosigns Verdict checkpoints.",
    no_args_is_help=True,
    add_completion=False,
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

StateOption = Annotated[
    Path, typer.Option("--state", metavar="DIR", help="State directory (latest cosigned tree per log, evidence).")
]
KeyOption = Annotated[
    Path | None,
    typer.Option("--key", metavar="FILE", help="Witness Ed25519 key, PKCS#8 PEM (default: <state>/witness.pem)."),
]
NameOption = Annotated[
    str | None,
    typer.Option("--name", help="Witness key name, e.g. witness.example.org/w1 (default: witness-<hostname>)."),
]


def _default_name() -> str:
    return f"witness-{socket.gethostname()}"


@witness_app.command()
def serve(
    state: StateOption = Path("var/witness"),
    key: KeyOption = None,
    name: NameOption = None,
    logs: Annotated[
        Path | None,
        typer.Option(
            "--logs",
            metavar="FILE",
            help='Logs to witness: {"logs": [{"origin": ..., "vkeys": [...]}]} (default: <state>/logs.json).',
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7380,
) -> None:
    """Serve POST /add-checkpoint; the key is created on first start."""
    # lazy: the witness, litestar and uvicorn load for `verdict witness serve`, not for `verdict --help`
    from verdict.audit.witness import Witness, WitnessStateError
    from verdict.audit.witness_server import serve as serve_http

    logs_file = logs or state / "logs.json"
    if not logs_file.is_file():
        _err.print(f"[red]error:[/] no logs configuration at {escape(str(logs_file))} (use --logs FILE)")
        raise typer.Exit(2)
    try:
        witness = Witness.open(state, name=name or _default_name(), logs_file=logs_file, key_file=key)
    except (ValueError, WitnessStateError, OSError) as exc:
        _err.print(f"[red]error:[/] cannot start the witness: {escape(str(exc))}")
        raise typer.Exit(2) from None
    _out.print(f"witness vkey: {witness.vkey}", markup=False)
    _out.print(
        f"witnessing {len(witness.origins)} log(s) on http://{host}:{port}, state in {witness.state_dir}", markup=False
    )
    _out.file.flush()
    with witness:
        serve_http(witness, host, port)


@witness_app.command()
def vkey(
    state: StateOption = Path("var/witness"),
    key: KeyOption = None,
    name: NameOption = None,
) -> None:
    """Print the witness's verifier key (for a trust policy); creates nothing."""
    # lazy: `verdict --help` imports every command module; the witness loads when the command runs
    from verdict.audit.cosignature import encode_witness_vkey
    from verdict.audit.witness import load_key

    try:
        private_key = load_key(key or state / "witness.pem")
        line = encode_witness_vkey(name or _default_name(), private_key.public_key())
    except ValueError as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    _out.print(line, markup=False)


if __name__ == "__main__":
    witness_app()

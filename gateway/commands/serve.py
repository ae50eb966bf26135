"""``verdict serve``: the decision API on uvicorn, ready on an empty data directory."""

from __future__ import annotations

import contextlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from verdict.audit.stores import StoreError
from verdict.gateway.commands.common import EXIT_USAGE, fail
from verdict.gateway.registry import RegistryError
from verdict.gateway.settings import SettingsError, load_settings


def serve_command(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with a [gateway] table")] = None,
    no_bootstrap: Annotated[
        bool, typer.Option("--no-bootstrap", help="Do not train/register the reference model on an empty store")
    ] = False,
    chain_id: Annotated[
        str | None, typer.Option(help="This writer's chain id (default gateway-0 or the StatefulSet ordinal)")
    ] = None,
) -> None:
    """Serve audited, explained decisions over HTTP."""
    # lazy: uvicorn, litestar and torch stay out of `verdict --help`
    import uvicorn

    from verdict.gateway.app import create_app
    from verdict.gateway.service import build_services

    try:
        settings = load_settings(
            config, host=host, port=port, chain_id=chain_id, bootstrap=False if no_bootstrap else None
        )
    except SettingsError as exc:
        fail(str(exc), EXIT_USAGE)
    if not settings.audit and not _unsafe_allowed():
        fail(
            "audit=false is only allowed with VERDICT_UNSAFE_BENCHMARK=1: a decision without a durable record "
            "must never leave the gateway",
            EXIT_USAGE,
        )
    try:
        services = build_services(settings, say=lambda msg: typer.echo(msg, err=True))
    except StoreError as exc:
        fail(f"cannot start: {exc}")
    except Exception as exc:  # noqa: BLE001 - fail() exits: chain conflicts, key mismatches as one clear line, not a traceback
        fail(f"cannot start: {type(exc).__name__}: {exc}")
    _print_welcome(services, settings)
    uvicorn.run(
        create_app(services), host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=10
    )


def _unsafe_allowed() -> bool:
    return os.environ.get("VERDICT_UNSAFE_BENCHMARK") == "1"


def _print_welcome(services, settings) -> None:  # noqa: ANN001
    if services.apikeys.is_empty():
        _, token = services.apikeys.create(
            ["score", "explain", "replay", "admin"], name="dev (generated on first start)"
        )
        typer.echo(
            f"Generated a development API key with all scopes (shown once, store it now):\n  {token}\n", err=True
        )
    else:
        token = "<your API key>"
    sample = json.loads(
        (resources.files("verdict.gateway") / "data" / "sample-applicants.jsonl").read_text().splitlines()[0]
    )
    # The sample as the production version takes it (2.0.0 withholds the protected characteristics); without
    # one, the full sample still shows the request's shape.
    with contextlib.suppress(RegistryError, StoreError):
        inputs = {spec.name for spec in services.models.manifest("german-credit").inputs}
        sample = {name: value for name, value in sample.items() if name in inputs}
    body = json.dumps({"model": "german-credit", "request_id": "demo-0001", "attributes": sample})
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(
        f"Verdict is serving on {base} (store {settings.store}, chain {settings.chain_id}).\n"
        f"Try:\n  curl -s {base}/v1/decisions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'\n"
        f"  curl -s {base}/v1/decisions/demo-0001/explanation -H 'Authorization: Bearer {token}'\n"
        f"API schema: {base}/schema   Health: {base}/readyz   Metrics: {base}/metrics",
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)

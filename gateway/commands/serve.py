"""``verdict serve``: the decision API on uvicorn, ready on an empty data directory."""

from __future__ import annotations

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
    config: Annotated[Path | None, typer.Option(help="TOML file with a \\[gateway] table")] = None,
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
    if not settings.seal and not _unsafe_allowed():
        fail(
            "seal=false is only allowed with VERDICT_UNSAFE_BENCHMARK=1: personal data would be written in clear "
            "to write-once storage, where it can never be erased (docs/compliance.md)",
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
    base = f"http://{settings.host}:{settings.port}"
    example = _example(services)
    if example is None:
        tryout = (
            "No model is in production yet: `verdict models register DIR`, then "
            "`verdict models promote NAME:VERSION` (docs/bring-your-own-model.md).\n"
        )
    else:
        body = json.dumps({"model": example[0], "request_id": "demo-0001", "attributes": example[1]})
        tryout = (
            f"Try:\n  curl -s {base}/v1/decisions -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{body}'\n"
            f"  curl -s {base}/v1/decisions/demo-0001/explanation -H 'Authorization: Bearer {token}'\n"
        )
    typer.echo(
        f"Verdict is serving on {base} (store {settings.store}, chain {settings.chain_id}).\n"
        f"{tryout}API schema: {base}/schema   Health: {base}/readyz   Metrics: {base}/metrics",
        err=True,
    )


def _example(services) -> tuple[str, dict] | None:  # noqa: ANN001
    """A model in production and a request body it accepts, for the welcome message: the
    reference model with the shipped sample applicant (as its production version takes it:
    2.0.0 withholds the protected characteristics), else any production model with the
    first row of its pinned background (a real training row). None: nothing serves yet."""
    # lazy: the background decoder (numpy) only when the gateway starts
    from verdict.gateway.explanation import decode_background

    registry = services.models.registry
    names = sorted(registry.names(), key=lambda name: name != "german-credit")
    for name in names:
        try:
            manifest = services.models.manifest(name)
            if name == "german-credit":
                sample = json.loads(
                    (resources.files("verdict.gateway") / "data" / "sample-applicants.jsonl")
                    .read_text()
                    .splitlines()[0]
                )
            else:
                sample = decode_background(manifest, registry.background(manifest)).rows[0]
        except (RegistryError, StoreError, ValueError):  # ValueError: a background that does not decode
            continue
        inputs = {spec.name for spec in manifest.inputs}
        return name, {key: value for key, value in sample.items() if key in inputs}
    return None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)

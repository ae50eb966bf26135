"""``verdict serve``: the decision API on uvicorn, ready on an empty data directory."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from verdict.audit.stores import StoreError
from verdict.gateway.commands.common import EXIT_FAILURE, EXIT_USAGE, fail
from verdict.gateway.registry import RegistryError
from verdict.gateway.settings import SettingsError, load_settings


def serve_command(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="Also serve the Open Inference Protocol over gRPC on this port (default off)")
    ] = None,
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

    from verdict import __version__
    from verdict.gateway import tracing
    from verdict.gateway.app import create_app
    from verdict.gateway.log_setup import configure_logging
    from verdict.gateway.observability import ObservedHTTP
    from verdict.gateway.service import build_services

    try:
        settings = load_settings(
            config,
            host=host,
            port=port,
            grpc_port=grpc_port,
            chain_id=chain_id,
            bootstrap=False if no_bootstrap else None,
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
        log_format = configure_logging(settings.log_format, settings.log_level)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    say = _say(log_format)
    try:
        services = build_services(settings, say=say)
    except StoreError as exc:
        _cannot_start(log_format, f"cannot start: {exc}")
    except Exception as exc:  # noqa: BLE001 - exits: chain conflicts, key mismatches as one clear line, not a traceback
        _cannot_start(log_format, f"cannot start: {type(exc).__name__}: {exc}")
    _print_welcome(services, settings, say, development=_embedded_development(config, settings))
    tracing.configure(
        tracing.resolve_endpoint(settings.otlp_endpoint), service_version=__version__, instance_id=settings.chain_id
    )
    try:
        uvicorn.run(
            ObservedHTTP(create_app(services), on_shutdown=tracing.shutdown),
            host=settings.host,
            port=settings.port,
            log_config=None,  # every line through gateway.log_setup's handler
            log_level=settings.log_level,
            access_log=False,  # the gateway writes its own access lines (gateway.observability)
            timeout_graceful_shutdown=10,
        )
    finally:
        tracing.shutdown()  # (already done at the end of the lifespan, unless the server failed before it)


def _unsafe_allowed() -> bool:
    return os.environ.get("VERDICT_UNSAFE_BENCHMARK") == "1"


def _say(log_format: str) -> Callable[[str], None]:
    """Start-up messages: plain lines for a person at a terminal, log lines (logger
    ``verdict.serve``) when the logs are JSON, so that every line a log system reads parses."""
    if log_format != "json":
        return lambda message: typer.echo(message, err=True)
    log = logging.getLogger("verdict.serve")

    def say(message: str) -> None:
        log.log(logging.WARNING if message.startswith("warning:") else logging.INFO, "%s", message)

    return say


def _cannot_start(log_format: str, message: str) -> NoReturn:
    if log_format != "json":
        fail(message)
    logging.getLogger("verdict.serve").critical("%s", message, extra={"event": "startup_failed"})
    raise typer.Exit(EXIT_FAILURE)


def _embedded_development(config: Path | None, settings) -> bool:  # noqa: ANN001
    """The embedded development set-up (``make run``): no configuration file, the reference
    model bootstrapped, a store on the local filesystem. Only there is an API key made up
    and printed; a production configuration (a config file or VERDICT_CONFIG, an S3 store,
    ``--no-bootstrap``) gets its keys from ``verdict apikeys create``, never in a log."""
    configured = config is not None or bool(os.environ.get("VERDICT_CONFIG"))
    return not configured and settings.bootstrap and settings.store.startswith("file:")


def _print_welcome(services, settings, say: Callable[[str], None], *, development: bool) -> None:  # noqa: ANN001
    token = "<your API key>"
    notes = ""
    if services.apikeys.is_empty():
        if development:
            _, token = services.apikeys.create(
                ["score", "explain", "replay", "admin"], name="dev (generated on first start)"
            )
            notes = f"Generated a development API key with all scopes (shown once, store it now):\n  {token}\n\n"
        else:
            notes = (
                "No API key exists yet, and none is generated outside the embedded development set-up: create "
                "one with `verdict apikeys create --scope score --name <client>` (it prints the key once; "
                "docs/operations.md §5.2). New keys work without a restart.\n"
            )
    base = f"http://{settings.host}:{settings.port}"
    # The example request holds a sample row (for a model of one's own, a row of its training
    # data): shown to a developer at a terminal, never written to a production log.
    example = _example(services) if development else None
    if not development:
        tryout = f"Decisions: POST {base}/v1/decisions (docs/api.md).\n"
    elif example is None:
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
    if development:
        # For the person at the terminal (their one chance to copy a generated key): plain
        # lines, never log records (the log handler redacts keys; log systems keep lines).
        say = lambda message: typer.echo(message, err=True)  # noqa: E731
    say(
        f"{notes}Verdict is serving on {base} (store {settings.store}, chain {settings.chain_id}).\n"
        f"{tryout}API schema: {base}/schema   Health: {base}/readyz   Metrics: {base}/metrics"
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

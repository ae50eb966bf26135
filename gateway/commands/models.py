"""``verdict models``: train, register, list, show, promote, predict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from verdict.gateway.commands.common import EXIT_USAGE, StoreOption, fail, open_configured_store, print_json

if TYPE_CHECKING:
    from verdict.gateway.registry import Registry  # imported by the commands that use it: a fast CLI start

models_app = typer.Typer(help="Train, register, inspect and run models.", no_args_is_help=True)
_err = Console(stderr=True)


def _registry(store: str | None, *, recorded: bool = False) -> Registry:
    """The registry of the configured store; ``recorded``: with the event log that
    appends registrations and promotions to the registry chain (spec §3
    ``registry``), signed with this machine's key and certified by its root."""
    # lazy: torch stays out of `verdict --help`
    from verdict.gateway.registry import Registry

    opened = open_configured_store(store)
    if not recorded:
        return Registry(opened)
    # lazy: `verdict --help` imports every command module; the registry log (and the chain) loads when the command runs
    from verdict.gateway.registry_log import RegistryLog

    return Registry(opened, events=RegistryLog.local(opened, create_root=True, say=lambda msg: _err.print(msg)))


@models_app.command("train")
def train_command(
    recipe: Annotated[str, typer.Argument(help="german-credit or taiwan-default")],
    out: Annotated[Path, typer.Option("--out", help="Directory for model.pt2, background.json, manifest.json")],
    version: Annotated[str, typer.Option(help="Version recorded in the manifest")] = "1.0.0",
) -> None:
    """Train a reference model reproducibly from the real data set."""
    # lazy: torch and numpy stay out of `verdict --help`
    from verdict.gateway.datasets import DatasetError
    from verdict.gateway.training import RECIPES, train

    if recipe not in RECIPES:
        fail(f"unknown model recipe {recipe!r}; choose one of: {', '.join(RECIPES)}", EXIT_USAGE)
    try:
        with _err.status(f"training {recipe}...") as status:
            trained = train(recipe, out, version=version, progress=lambda msg: status.update(msg))
    except DatasetError as exc:
        fail(str(exc))
    m = trained.manifest
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in m.training.metrics.items())
    typer.echo(f"trained {m.ref} -> {out}\n  artifact sha256 {m.artifact_sha256}\n  {metrics}")


@models_app.command("register")
def register_command(
    path: Annotated[Path, typer.Argument(help="A trained model directory")], store: StoreOption = None
) -> None:
    """Register a trained model directory in the store (immutable once registered)."""
    # lazy: torch stays out of `verdict --help`
    from verdict.gateway.registry import RegistryError

    try:
        manifest, new = _registry(store, recorded=True).register(path)
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(
        f"{'registered' if new else 'already registered (identical)'} {manifest.ref} sha256 {manifest.artifact_sha256}"
    )


class _ModelRow(TypedDict):
    name: str
    versions: list[str]
    production: str | None


@models_app.command("list")
def list_command(store: StoreOption = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered models, their versions and production alias."""
    registry = _registry(store)
    rows: list[_ModelRow] = []
    for name in registry.names():
        promoted = registry.alias(name, "production")
        rows.append(
            {"name": name, "versions": registry.versions(name), "production": promoted.version if promoted else None}
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no models registered")
        return
    table = Table("model", "versions", "production")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["versions"]), row["production"] or "-")
    Console().print(table)


@models_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest itself")] = False,
) -> None:
    """Show a model version's manifest."""
    # lazy: torch stays out of `verdict --help`
    from verdict.gateway.registry import RegistryError, parse_ref

    try:
        manifest = _registry(store).manifest(*parse_ref(ref))
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print_json(manifest)
        return
    console = Console()
    console.print(f"[bold]{manifest.ref}[/bold]  {manifest.description}")
    console.print(f"artifact sha256 {manifest.artifact_sha256} ({manifest.artifact_bytes} bytes)")
    console.print(f"output: {manifest.output.name} — {manifest.output.description}")
    d = manifest.decision
    console.print(f"decision: {d.at_or_above} if score >= {d.threshold:.6g}, else {d.below} ({d.rationale})")
    console.print(f"replay tolerance: abs {manifest.tolerance.absolute:g}, rel {manifest.tolerance.relative:g}")
    console.print(
        f"training: {manifest.training.dataset.title}, seed {manifest.training.seed}, "
        f"commit {manifest.training.code_commit}, metrics {manifest.training.metrics}"
    )
    table = Table("attribute", "kind", "label", "allowed")
    for spec in manifest.inputs:
        allowed = (
            ", ".join(map(str, spec.categories or ()))
            if spec.kind == "category"
            else f"{spec.minimum}..{spec.maximum} {spec.unit or ''}"
        )
        table.add_row(spec.name, spec.kind, spec.label, allowed)
    console.print(table)


@models_app.command("promote")
def promote_command(ref: Annotated[str, typer.Argument(help="NAME:VERSION")], store: StoreOption = None) -> None:
    """Point the production alias at a version (recorded, append-only)."""
    # lazy: torch stays out of `verdict --help`
    from verdict.gateway.registry import RegistryError, parse_ref

    name, version = parse_ref(ref)
    if version is None:
        fail("promote needs NAME:VERSION", EXIT_USAGE)
    try:
        event = _registry(store, recorded=True).promote(name, version)
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(f"production alias of {name} -> {version} (promotion #{event.sequence} at {event.promoted_at})")


class _Prediction(msgspec.Struct):
    line: int
    score: float
    bucket: int


@models_app.command("predict")
def predict_command(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    input: Annotated[Path, typer.Option("--input", help="JSON Lines: one attribute object per line ('-' for stdin)")],
    store: StoreOption = None,
    bucket: Annotated[int | None, typer.Option(help="Force the execution bucket (rows per forward pass)")] = None,
) -> None:
    """Raw model outputs for JSON Lines input (a development tool, not a decision: nothing is audited)."""
    # lazy: torch and numpy stay out of `verdict --help`
    from verdict.gateway.registry import RegistryError, parse_ref
    from verdict.gateway.runtime import load_model
    from verdict.gateway.schema import InputValidationError, encode_rows, validate_attributes

    text = sys.stdin.read() if str(input) == "-" else _read(input)
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        fail(f"{input}: no input lines")
    try:
        model = load_model(_registry(store), *parse_ref(ref))
    except RegistryError as exc:
        fail(str(exc))
    rows, problems = [], []
    for n, line in lines:
        try:
            rows.append(validate_attributes(model.manifest.inputs, msgspec.json.decode(line), prefix=f"line {n}"))
        except msgspec.DecodeError as exc:
            problems.append(f"line {n}: not valid JSON ({exc})")
        except InputValidationError as exc:
            problems.extend(f"{e.field}: {e.message} (rule {e.rule}, value {e.value!r})" for e in exc.errors)
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        fail(f"{len(problems)} problem(s) in {input}; nothing was scored")
    scores, used = model.score_matrix(encode_rows(model.manifest.inputs, rows), bucket)
    encoder = msgspec.json.Encoder()
    for (n, _), score in zip(lines, scores, strict=True):
        # float(np.float32) is exact and msgspec prints the shortest text that round-trips.
        sys.stdout.write(encoder.encode(_Prediction(line=n, score=float(score), bucket=used)).decode() + "\n")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"input file {path} does not exist")
    except UnicodeDecodeError:
        fail(f"input file {path} is not UTF-8 text")

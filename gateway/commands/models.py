"""``verdict models``: train, register, list, show, predict (and, from their own
modules, package, validate, promote, revoke, status)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from verdict.gateway.commands.common import EXIT_USAGE, StoreOption, fail, print_json
from verdict.gateway.commands.lifecycle import (
    PROMOTION_POLICY_ENV,
    promote_command,
    revoke_command,
    status_command,
)
from verdict.gateway.commands.registry_access import open_registry

if TYPE_CHECKING:
    from verdict.gateway.registry import Registry

models_app = typer.Typer(
    help="Package, validate, register, promote, revoke, inspect and run models.", no_args_is_help=True
)
models_app.command("promote")(promote_command)
models_app.command("revoke")(revoke_command)
models_app.command("status")(status_command)
_err = Console(stderr=True)


@models_app.command("train")
def train_command(
    recipe: Annotated[str, typer.Argument(help="german-credit or taiwan-default")],
    out: Annotated[Path, typer.Option("--out", help="Directory for model.pt2, background.json, manifest.json")],
    version: Annotated[
        str | None, typer.Option(help="Version recorded in the manifest (default 1.0.0; 2.0.0 withholding)")
    ] = None,
    withhold_protected: Annotated[
        bool,
        typer.Option(
            "--withhold-protected",
            help="Leave the protected characteristics out of the model's inputs (sex, age, national origin or "
            "marital status) and package it through the bring-your-own-model path, validated",
        ),
    ] = False,
) -> None:
    """Train a reference model reproducibly from the real data set."""
    # lazy: torch and numpy stay out of `verdict --help`
    from verdict.gateway.datasets import DatasetError
    from verdict.gateway.packaging.errors import PackagingError
    from verdict.gateway.reference_packaging import PROTECTED, WITHHELD_VERSION, package_reference
    from verdict.gateway.training import RECIPES, train

    if recipe not in RECIPES:
        fail(f"unknown model recipe {recipe!r}; choose one of: {', '.join(RECIPES)}", EXIT_USAGE)
    try:
        with _err.status(f"training {recipe}...") as status:
            if withhold_protected:
                packaged = package_reference(
                    recipe, out, version=version or WITHHELD_VERSION, progress=lambda msg: status.update(msg)
                )
                m = packaged.manifest
            else:
                m = train(recipe, out, version=version or "1.0.0", progress=lambda msg: status.update(msg)).manifest
    except (DatasetError, PackagingError) as exc:
        fail(str(exc))
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in m.training.metrics.items())
    typer.echo(f"trained {m.ref} -> {out}\n  artifact sha256 {m.artifact_sha256}\n  {metrics}")
    if withhold_protected:
        typer.echo(f"  withheld from the inputs: {', '.join(PROTECTED[recipe])}")


@models_app.command("register")
def register_command(
    path: Annotated[Path, typer.Argument(help="A trained model directory")],
    store: StoreOption = None,
    promote_if_unset: Annotated[
        bool,
        typer.Option(
            "--promote-if-unset",
            help="Also promote this version if the model has no production version yet; never replaces one "
            f"(honours ${PROMOTION_POLICY_ENV})",
        ),
    ] = False,
    by: Annotated[str, typer.Option("--by", help="Who registers (and promotes) (recorded)")] = "cli",
) -> None:
    """Validate a model directory and register it in the store (immutable once registered).

    Nothing is written unless validation passes; the validation report is stored
    in the trail and named by the registration record. Registering never changes
    which version serves: promote it (`verdict models promote NAME:VERSION`).

    Registering an identical version again writes nothing and succeeds, so with
    ``--promote-if-unset`` this is the one idempotent start-up step of a container
    that is handed a model directory (a KServe runtime): the first start registers
    and promotes, a restart changes nothing, and a new version handed over later
    is registered but serves only once someone promotes it."""
    # lazy: the registry loads when the command runs
    from verdict.gateway.registry import RegistryError, ValidationFailed

    registry = open_registry(store, recorded=True)
    try:
        with _err.status(f"validating {path}...") as status:
            manifest, new = registry.register(
                path, by=by, progress=lambda msg: status.update(f"validating {path}: {msg}")
            )
    except ValidationFailed as exc:
        # lazy: the report renderer (and torch) only on this path
        from verdict.gateway.validation import render_text

        typer.echo(render_text(exc.report), err=True)  # type: ignore[arg-type]
        fail(str(exc))
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(
        f"{'registered' if new else 'already registered (identical)'} {manifest.ref} sha256 {manifest.artifact_sha256}"
    )
    if promote_if_unset:
        _promote_if_unset(registry, manifest.name, manifest.version, by)
    elif new:
        typer.echo(f"it serves nothing until promoted: verdict models promote {manifest.ref}")


def _promote_if_unset(registry: Registry, name: str, version: str, by: str) -> None:
    """Promote ``name:version`` unless the model already has a production version (which
    stays: replacing it is a decision for a person, `verdict models promote`)."""
    # lazy: the registry loads when the command runs
    from verdict.gateway.registry import RegistryError

    current = registry.alias(name, "production")
    if current is not None:
        note = "" if current.version == version else f"; to serve {version}: verdict models promote {name}:{version}"
        typer.echo(
            f"production version of {name} is {current.version} (promotion #{current.sequence}), left as it is{note}"
        )
        return
    try:
        event = registry.promote(name, version, by=by, require_status=os.environ.get(PROMOTION_POLICY_ENV) or None)
    except RegistryError as exc:
        fail(f"{name}:{version} is registered but was not promoted: {exc}")
    typer.echo(f"production alias of {name} -> {version} (promotion #{event.sequence} at {event.promoted_at})")


class _ModelRow(TypedDict):
    name: str
    versions: list[str]
    production: str | None
    revoked: list[str]


@models_app.command("list")
def list_command(store: StoreOption = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered models, their versions and production alias."""
    registry = open_registry(store)
    rows: list[_ModelRow] = []
    for name in registry.names():
        promoted = registry.alias(name, "production")
        versions = registry.versions(name)
        rows.append(
            {
                "name": name,
                "versions": versions,
                "production": promoted.version if promoted else None,
                "revoked": [v for v in versions if registry.revocation(name, v) is not None],
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no models registered")
        return
    table = Table("model", "versions", "production", "revoked")
    for row in rows:
        table.add_row(
            row["name"], ", ".join(row["versions"]), row["production"] or "-", ", ".join(row["revoked"]) or "-"
        )
    Console().print(table)


@models_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest itself")] = False,
) -> None:
    """Show a model version: manifest in words, model card, production alias, status history."""
    # lazy: the registry loads when the command runs
    from verdict.gateway.registry import RegistryError, parse_ref

    registry = open_registry(store)
    try:
        manifest = registry.manifest(*parse_ref(ref))
        history = registry.status_history(manifest.name, manifest.version)
        promoted = registry.alias(manifest.name, "production")
        report = registry.validation_report(manifest.name, manifest.version)
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
    serving = "the production version" if promoted and promoted.version == manifest.version else "not in production"
    console.print(f"output space: {manifest.output.space}; {serving}")
    if manifest.card is not None:
        card = manifest.card
        console.print(f"purpose: {card.purpose}\nowner: {card.owner}   risk tier: {card.risk_tier}")
        console.print(f"intended use: {card.intended_use}\nlimitations: {card.limitations}")
        if card.regulations:
            console.print(f"regulations: {'; '.join(card.regulations)}")
    table = Table("attribute", "kind", "label", "allowed", "protected")
    for spec in manifest.inputs:
        allowed = (
            ", ".join(map(str, spec.categories or ()))
            if spec.kind == "category"
            else f"{spec.minimum}..{spec.maximum} {spec.unit or ''}"
        )
        table.add_row(spec.name, spec.kind, spec.label, allowed, "yes" if spec.protected else "")
    console.print(table)
    for withheld in manifest.withheld:
        console.print(f"withheld from the model: {withheld.label} ({withheld.name}): {withheld.reason}")
    console.print(_validation_summary(report))
    if not history:
        console.print("status: none recorded")
    for event in history:
        console.print(
            f"status #{event.sequence} {event.at}: {event.status} by {event.by}"
            + (f" ({event.note})" if event.note else "")
        )


def _validation_summary(report: bytes | None) -> str:
    """One line about the validation report stored at registration (read as plain JSON:
    the report types live beside the validator, which imports torch)."""
    if report is None:
        return "validation report: none stored (registered before registration validated, or not recorded)"
    doc = msgspec.json.decode(report)
    checks = doc.get("checks", [])
    passed = sum(1 for check in checks if check.get("passed"))
    line = f"validation report: {passed} of {len(checks)} checks passed at {doc.get('validated_at', '?')}"
    protected = doc.get("protected_among_reasons") or {}
    if protected.get("adverse_rows"):
        line += (
            f"; protected attributes among the principal reasons of "
            f"{protected['adverse_rows_with_protected_reason']} of {protected['adverse_rows']} adverse held-out decisions"
        )
    return line


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
        model = load_model(open_registry(store), *parse_ref(ref))
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


from verdict.gateway.commands.package import package_command  # noqa: E402

models_app.command("package")(package_command)


from verdict.gateway.commands.validate import validate_command  # noqa: E402

models_app.command("validate")(validate_command)

"""``verdict models package SPEC.toml --out DIR``: package your own model.

Why a summary and not just "done": what was inferred decides what clients may
send and how the model is explained, so the user sees it before registering:
the schema (kinds, ranges, categories, protected and withheld attributes), the
held-out metrics, the explainer's background and budget, and the validator's
verdict, then the command to run next.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from verdict.gateway.commands.common import fail
from verdict.gateway.model_files import VALIDATION_HTML

if TYPE_CHECKING:
    from verdict.gateway.packaging.package import Packaged
    from verdict.gateway.schema import AttributeSpec
    from verdict.gateway.validation import ValidationReport

__all__ = ["package_command"]

_err = Console(stderr=True)


def package_command(
    spec: Annotated[Path, typer.Argument(help="The package spec (TOML); paths in it are relative to it")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the model directory")],
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists and is not empty")] = False,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip validation (registration validates again anyway)")
    ] = False,
) -> None:
    """Package your own model and its training data into a validated model directory."""
    # lazy: the spec reader (numpy) loads when the command runs, not for `verdict --help`
    from verdict.gateway.packaging.destination import check_destination
    from verdict.gateway.packaging.errors import PackagingError, ValidationFailed
    from verdict.gateway.packaging.spec import load_spec

    try:  # a bad spec or --out is refused before torch loads
        load_spec(spec)
        check_destination(out, force, spec.resolve().parent)
    except PackagingError as exc:
        fail(str(exc))
    # lazy: torch and pandas load only once the spec and --out are known to be good
    from verdict.gateway.packaging.package import package_spec_file

    try:
        with _err.status(f"packaging {spec}...") as status:
            packaged = package_spec_file(
                spec, out, force=force, validate=not no_validate, progress=lambda msg: status.update(msg)
            )
    except ValidationFailed as exc:
        _print_failed_checks(exc.report)
        fail(f"{exc}\nnothing was written to {out}")
    except PackagingError as exc:
        fail(f"{exc}\nnothing was written to {out}")
    _summary(packaged)


def _print_failed_checks(report: ValidationReport) -> None:
    """The validator's own text report (as `verdict models register` prints a refusal):
    the same PASS / FAIL / SKIPPED / NOT RUN words and [rule] marks as everywhere else."""
    # lazy: the validator's renderer (matplotlib for its HTML half) only when a package was refused
    from verdict.gateway.validation import render_text

    typer.echo(render_text(report), err=True)


def _plain(value: float | int | None) -> str:
    """A bound as `verdict models show` prints it from the manifest: 250000, not 250000.0."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _allowed(spec: AttributeSpec) -> str:
    if spec.kind == "category":
        categories = [str(c) for c in spec.categories or ()]
        return ", ".join(categories[:6]) + (f", ... ({len(categories)} in all)" if len(categories) > 6 else "")
    return f"{_plain(spec.minimum)}..{_plain(spec.maximum)}" + (f" {spec.unit}" if spec.unit else "")


def _summary(packaged: Packaged) -> None:
    m = packaged.manifest
    # no markup (labels, categories and reasons are the user's text) and no wrapping
    # inside a line (paths and the next command stay copyable)
    console = Console(soft_wrap=True, markup=False, highlight=False)
    console.print(f"packaged {m.ref} -> {packaged.directory}", style="bold")
    console.print(f"artifact sha256 {m.artifact_sha256} ({m.artifact_bytes} bytes)")
    console.print(f"output: {m.output.name} ({m.output.space}) — {m.output.description}")
    d = m.decision
    console.print(f"decision: {d.at_or_above} if score >= {d.threshold:.6g}, else {d.below}")
    table = Table(title="inputs (schema order)")
    table.add_column("attribute", min_width=max(len(s.name) for s in m.inputs), overflow="fold")  # names stay whole
    for header in ("kind", "label", "allowed", "protected"):
        table.add_column(header)
    for spec in m.inputs:
        table.add_row(
            *(Text(cell) for cell in (spec.name, spec.kind, spec.label, _allowed(spec))),
            "yes" if spec.protected else "",
        )
    console.print(table)
    for withheld in m.withheld:
        console.print(f"withheld: {withheld.name} ({withheld.label}) — {withheld.reason}")
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in m.training.metrics.items())
    console.print(f"held-out metrics: {metrics}")
    console.print(f"split: {m.training.split}")
    e = m.explainer
    budget: str = e.algorithm
    if e.algorithm == "permutation":
        budget += f", {e.permutations} permutation pairs"
    elif e.certification is not None:
        budget += f", {e.permutations}..{e.certification.max_pairs} antithetic pairs per background row"
    console.print(
        f"explainer: {e.background_rows} background rows (herded), {budget}, at most {e.max_evaluations} model rows "
        f"per explanation"
    )
    console.print(f"provenance: code {m.training.code_commit}, data sha256 {m.training.dataset.sha256}")
    report = packaged.report
    if report is None:
        console.print("validation: skipped (--no-validate); `verdict models register` validates before storing")
    else:
        statuses = Counter(check.status for check in report.checks)
        counted = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        console.print(f"validation: passed ({counted}); report in {packaged.directory / VALIDATION_HTML}")
    console.print(f"next: verdict models register {packaged.directory}")

"""``verdict models validate DIR``: would this model directory be registered?

Why a command of its own: registration validates anyway (and refuses), but a
model owner wants the whole list of problems, with the fixes, before asking,
and a report (validation.json / validation.html) to attach to the model's
review. Exit codes: 0 the model passes, 1 it is refused, 2 usage (no such
directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from verdict.gateway.commands.common import EXIT_FAILURE, EXIT_USAGE, fail

__all__ = ["validate_command"]

_STYLES = {"passed": "green", "failed": "bold red", "skipped": "yellow", "failed-dependency": "dim"}


def validate_command(
    directory: Annotated[Path, typer.Argument(help="A model directory (manifest.json, model.pt2, background.json)")],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON report here (default DIR/validation.json)")
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Write the HTML report here (default DIR/validation.html)")
    ] = None,
    no_fresh_processes: Annotated[
        bool, typer.Option("--no-fresh-processes", help="Skip scoring in two fresh processes (saves seconds)")
    ] = False,
) -> None:
    """Check that a model can be served deterministically; exit 1 if it would be refused."""
    if not directory.is_dir():
        fail(f"{directory} is not a directory", EXIT_USAGE)
    # lazy: torch, the runtime and matplotlib stay out of `verdict --help`
    from verdict.gateway.model_files import VALIDATION_FILE, VALIDATION_HTML
    from verdict.gateway.validation import STATUS_WORDS, encode_report, render_html, validate_directory

    err = Console(stderr=True)
    with err.status("validating...") as status:
        report = validate_directory(
            directory, fresh_processes=not no_fresh_processes, progress=lambda msg: status.update(msg)
        )
    console = Console()
    console.print(Text(f"{report.model}: ", style="bold") + _verdict(report.passed))
    table = Table("status", "check")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        detail = check.detail + (f" [{check.rule}]" if check.status == "failed" and check.rule else "")
        table.add_row(Text(STATUS_WORDS[check.status], style=_STYLES[check.status]), check.name, Text(detail))
    console.print(table)
    if report.reason_frequency and report.protected_among_reasons:
        named = [
            f"{f.label}{' (protected)' if f.protected else ''} {f.principal}"
            for f in report.reason_frequency
            if f.principal
        ]
        rows = report.protected_among_reasons.explained_rows
        console.print(Text(f"principal reasons over {rows} explained rows: " + ", ".join(named)))
    targets = (json_path or directory / VALIDATION_FILE, html_path or directory / VALIDATION_HTML)
    try:
        targets[0].write_bytes(encode_report(report))
        targets[1].write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write the report: {exc}")
    console.print(Text(f"report: {targets[0]}, {targets[1]}"))
    if not report.passed:
        raise typer.Exit(EXIT_FAILURE)


def _verdict(passed: bool) -> Text:
    if passed:
        return Text("PASSED: can be served deterministically", style="bold green")
    return Text("REFUSED: cannot be registered (see FAIL below)", style="bold red")

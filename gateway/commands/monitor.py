"""``verdict monitor report``: the monitoring figures of the audit trail, as an HTML report.

Why on the command line as well as in the console: a model-risk validator
attaches the report to a periodic review, often without access to a running
gateway; it reads the same trail (and the data keyring, where this machine has
it) and computes the same figures (gateway.monitoring). The summary and
cursors are kept under ``$VERDICT_HOME/monitor/``, so the next report only
reads what was recorded since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from verdict.gateway.commands.common import EXIT_FAILURE, StoreOption, fail, open_configured_store, print_json

__all__ = ["monitor_app"]

monitor_app = typer.Typer(
    help="Monitoring from the audit trail: outcomes, drift (PSI), principal reasons.", no_args_is_help=True
)
_err = Console(stderr=True)


@monitor_app.command("report")
def report_command(
    store: StoreOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model (NAME or NAME:VERSION)")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the HTML report")] = Path(
        "monitor-report.html"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of text")] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Fold the whole trail again (ignore the summary kept in VERDICT_HOME)")
    ] = False,
) -> None:
    """Fold the trail's new decisions into the monitoring summary and write the HTML report."""
    # lazy: torch (the engine scores training references) loads when the command runs, not for `verdict --help`
    from verdict.audit.config import data_dir
    from verdict.audit.key_wrapping import KekError
    from verdict.audit.personal_data import existing_personal_data
    from verdict.gateway.engine import Engine
    from verdict.gateway.monitoring import TrailMonitor
    from verdict.gateway.monitoring_report import render_report
    from verdict.gateway.registry import Registry

    opened = open_configured_store(store)
    try:
        personal = existing_personal_data()
    except (ValueError, KekError, OSError) as exc:
        _err.print(f"warning: cannot open the data keyring ({exc}); sealed decisions' attributes are not counted")
        personal = None
    monitor = TrailMonitor(
        opened, Engine(Registry(opened)), personal, state_dir=None if fresh else data_dir() / "monitor"
    )
    result = monitor.refresh()
    assert result is not None  # a blocking refresh always runs
    name, _, version = (model or "").partition(":")
    summary = monitor.summary(name or None, version or None)
    if model and not summary.models:
        _err.print(f"warning: no decisions of {model} in {opened.url}")
    try:
        output.write_text(render_report(summary), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc}", EXIT_FAILURE)
    if as_json:
        print_json(summary)
        return
    typer.echo(
        f"Read {result.records_read} new record(s) of {result.chains} chain(s); "
        f"{summary.decisions} decision(s) in the summary."
    )
    for m in summary.models:
        outcomes = ", ".join(f"{o.decision} {o.count} ({o.rate:.1%})" for o in m.outcomes)
        typer.echo(f"\n{m.model} {m.version}: {m.decisions} decisions ({outcomes})")
        if m.score is not None and m.score.psi is not None:
            typer.echo(f"  score PSI {m.score.psi:.3f} ({m.score.shift})")
        elif m.no_reference:
            typer.echo(f"  no training reference: {m.no_reference}")
        drifting = sorted((d for d in m.attributes if d.psi is not None), key=lambda d: -(d.psi or 0.0))[:3]
        if drifting:
            typer.echo("  largest attribute PSI: " + ", ".join(f"{d.attribute} {d.psi:.3f}" for d in drifting))
        top = [r for r in m.reasons if r.principal][:3]
        if top:
            typer.echo(
                "  most frequent principal reasons: "
                + ", ".join(f"{r.attribute} {r.rate:.1%}" for r in top if r.rate is not None)
            )
        if m.protected.attributes:
            typer.echo(
                f"  protected attribute among principal reasons: {m.protected.with_protected} of "
                f"{m.protected.explained} explained ({(m.protected.rate or 0.0):.1%})"
            )
        unavailable = m.attributes_erased + m.attributes_sealed + m.attributes_unreadable
        if unavailable:
            typer.echo(
                f"  attributes unavailable for {unavailable}: {m.attributes_erased} erased, "
                f"{m.attributes_sealed} sealed without a key here, {m.attributes_unreadable} unreadable"
            )
    for chain, problem in summary.problems.items():
        _err.print(f"warning: chain {chain}: {problem}")
    typer.echo(f"\nReport: {output}")

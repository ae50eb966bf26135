"""``verdict demo``: the main job on embedded defaults until the API exists.

Trains/registers the reference model on first use, then scores the shipped
sample applicants through the deterministic runtime and prints the result.
"""

from __future__ import annotations

from importlib import resources

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from verdict.gateway.commands.common import StoreOption, open_configured_store


def demo_command(store: StoreOption = None) -> None:
    """Bootstrap the reference model (first run) and score the sample applicants."""
    # lazy: torch stays out of `verdict --help`
    from verdict.gateway.bootstrap import ensure_reference_model
    from verdict.gateway.registry import Registry
    from verdict.gateway.runtime import load_model

    console = Console()
    registry = Registry(open_configured_store(store))
    manifest = ensure_reference_model(registry, say=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    model = load_model(registry, manifest.name, manifest.version)
    text = (resources.files("verdict.gateway") / "data" / "sample-applicants.jsonl").read_text()
    inputs = {spec.name for spec in manifest.inputs}  # 2.0.0 withholds the protected characteristics
    applicants = [
        {k: v for k, v in msgspec.json.decode(line).items() if k in inputs}
        for line in text.splitlines()
        if line.strip()
    ]
    scores, bucket = model.score_rows(applicants)
    table = Table(title=f"{manifest.ref} — {manifest.output.description} (bucket {bucket}, device {model.device})")
    for column in ("#", "duration", "amount", "purpose", "score", "decision"):
        table.add_column(column)
    purpose = manifest.attribute("purpose")
    for i, (row, score) in enumerate(zip(applicants, scores, strict=True), start=1):
        table.add_row(
            str(i),
            f"{row['duration_months']} months",
            f"{row['credit_amount']} DM",
            purpose.describe(row["purpose"]),
            f"{float(score):.4f}",
            model.decide(float(score)),
        )
    console.print(table)
    console.print(f"Store: {registry.store.url}\nNext: `verdict models show {manifest.name}` for the manifest.")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)

"""``verdict replay``: replay logged decisions and judge them against the registered tolerance.

Mounted by the main CLI as ``app.add_typer(replay_app, name="replay")``::

    verdict replay REQUEST_ID [REQUEST_ID ...]
    verdict replay --all | --since 2025-01-01 --until 2025-04-01 | --model german-credit:1.0.0 | --chain gateway-0
    verdict replay --resume <replay id> | --resume latest
    verdict replay --verify-report report.json

Exit codes: 0 every decision identical or within tolerance; 1 anything
out_of_tolerance or cannot_replay (or a report that does not verify);
2 usage errors (nothing selected, a tolerance that would widen the
manifest's, bad options); 130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from verdict.audit.config import store_url
from verdict.audit.layout import LayoutError, check_chain_id
from verdict.audit.stores import StoreError, open_store
from verdict.audit.trust_cli import UNANCHORED, TrustOption, UnanchoredOption, resolve_policy

__all__ = ["main", "replay_app", "replay_command"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_SHOW_FLAGGED = 20

replay_app = typer.Typer(
    name="replay",
    help="Replay logged decisions (reload the exact model, re-score, re-explain) and judge them against the registered tolerance.",
    context_settings={"allow_interspersed_args": True},
    subcommand_metavar="",
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@replay_app.callback(invoke_without_command=True)
def replay_command(
    request_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="REQUEST_ID", help="Request id(s) of logged decisions", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every decision in the trail")] = False,
    since: Annotated[
        str | None,
        typer.Option(help="Decisions decided at or after this time (2025-01-31 or ISO 8601, UTC if no zone)"),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Decisions decided before this time")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model: NAME or NAME:VERSION")] = None,
    chain: Annotated[str | None, typer.Option(help="Only decisions on this chain (e.g. gateway-0)")] = None,
    score_only: Annotated[
        bool,
        typer.Option("--score-only", help="Replay scores and decisions only, not explanations (said so in the report)"),
    ] = False,
    tighten_absolute: Annotated[
        float | None, typer.Option(help="Tighter absolute bound than the manifest's (never wider)")
    ] = None,
    tighten_relative: Annotated[
        float | None, typer.Option(help="Tighter relative bound than the manifest's (never wider)")
    ] = None,
    rebuild_env: Annotated[
        bool,
        typer.Option(
            "--rebuild-env", help="Replay inside a fresh virtualenv built from the recorded pins and project source"
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Worker processes (default: one per CPU for large replays, none for small)"),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Resume an interrupted replay by id ('latest' for the most recent)")
    ] = None,
    allow_pending: Annotated[
        bool,
        typer.Option(
            "--allow-pending", help="Also replay records not yet covered by a signed checkpoint (said so per decision)"
        ),
    ] = False,
    html: Annotated[
        Path | None, typer.Option(help="Write the examiner's HTML report here (default: in the replay's directory)")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the signed JSON report here (default: in the replay's directory)"),
    ] = None,
    purpose: Annotated[str | None, typer.Option(help="Why this replay is run (goes on the access records)")] = None,
    replay_chain: Annotated[
        str, typer.Option(help="Chain this replay is recorded on (one writer per chain)")
    ] = "replay-0",
    store: Annotated[
        str | None, typer.Option("--store", help="Store URL (default $VERDICT_STORE or $VERDICT_HOME/store)")
    ] = None,
    override_bucket: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65536,
            help="COUNTERFACTUAL: score at this bucket instead of the recorded one (sensitivity test; flagged in the report)",
        ),
    ] = None,
    override_explain_bucket: Annotated[
        int | None,
        typer.Option(min=1, max=65536, help="COUNTERFACTUAL: explain at this bucket instead of the recorded one"),
    ] = None,
    override_threads: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="COUNTERFACTUAL: run with this many threads instead of the recorded count"),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar")] = False,
    verify_report: Annotated[
        Path | None, typer.Option(help="Only check a signed JSON report against the store's published keys")
    ] = None,
    trust: TrustOption = None,
    unanchored: UnanchoredOption = False,
) -> None:
    """Replay logged decisions: prove the record, reload the exact model and
    environment settings, re-score and re-explain through the gateway's own code,
    and give each decision a verdict: identical, within_tolerance,
    out_of_tolerance or cannot_replay (with the reason)."""
    url = store_url(store)
    try:
        opened = open_store(url)
    except StoreError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if verify_report is not None:
        raise typer.Exit(_verify(opened, verify_report))

    # lazy: `verdict --help` imports every command module; the replay machinery loads when the command runs
    from verdict.audit.chain import ChainError
    from verdict.replay.batch import ReplayError, ReplayInterrupted, ReplayJob, run_replay
    from verdict.replay.report import default_actor
    from verdict.replay.rescore import ReplayOptions
    from verdict.replay.trail import Selection, SelectionError, parse_time_bound

    job = None
    if resume is None:
        try:
            name, version = _model_ref(model)
            selection = Selection(
                request_ids=list(request_ids or []),
                since=parse_time_bound(since, "--since"),
                until=parse_time_bound(until, "--until"),
                model=name,
                version=version,
                chain=chain,
                all=all_,
            ).check()
        except SelectionError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
        options = ReplayOptions(
            scope="score_only" if score_only else "full",
            tighten_absolute=tighten_absolute,
            tighten_relative=tighten_relative,
            override_score_bucket=override_bucket,
            override_explain_bucket=override_explain_bucket,
            override_threads=override_threads,
        )
        try:
            check_chain_id(replay_chain)
        except LayoutError as exc:
            raise _fail(f"--replay-chain: {exc}", EXIT_USAGE) from None
        if replay_chain.startswith("gateway-"):
            raise _fail(
                f"--replay-chain {replay_chain}: gateway chains belong to the gateway (one writer per chain)",
                EXIT_USAGE,
            )
        policy = resolve_policy(trust, unanchored)
        if policy is None:
            typer.echo(UNANCHORED + "the records replayed below were not checked against a trust root", err=True)
        job = ReplayJob(
            store_url=url,
            selection=selection,
            options=options,
            require_checkpoint=not allow_pending,
            actor=default_actor(),
            purpose=purpose,
            replay_chain=replay_chain,
            workers=workers,
            rebuild_env=rebuild_env,
            trust=policy,
        )
    elif request_ids or all_ or since or until or model or chain:
        raise _fail("--resume continues the replay as it was started; give no selection with it", EXIT_USAGE)

    progress, close = _progress(no_progress)
    try:
        outcome = run_replay(
            job,
            resume=resume,
            progress=progress,
            html_path=html,
            json_path=json_out,
            default_outputs=True,
        )
    except ReplayError as exc:
        close()
        raise _fail(str(exc), EXIT_USAGE) from None
    except ReplayInterrupted as exc:
        close()
        raise _fail(str(exc), EXIT_INTERRUPTED) from None
    except StoreError as exc:
        close()
        raise _fail(f"the store failed: {exc}", EXIT_FAILURE) from None
    except ChainError as exc:
        close()
        raise _fail(
            f"the replay could not be recorded on its chain: {exc} (another replay writing the same chain? "
            f"give each concurrent replay its own --replay-chain)",
            EXIT_FAILURE,
        ) from None
    close()
    _print_outcome(outcome)
    raise typer.Exit(outcome.exit_code)


def _model_ref(model: str | None) -> tuple[str | None, str | None]:
    # lazy: `verdict --help` imports every command module; the trail (and the chain) loads when the command runs
    from verdict.replay.trail import SelectionError

    if model is None:
        return None, None
    name, _, version = model.partition(":")
    if not name or (":" in model and not version) or ":" in version:
        raise SelectionError(f"--model {model!r} must be NAME or NAME:VERSION")
    return name, version or None


def _progress(disabled: bool):  # noqa: ANN202
    if disabled or not sys.stderr.isatty():

        def plain(phase: str, done: int, total: int) -> None:
            if phase.startswith("rebuild:"):
                typer.echo(phase, err=True)

        return plain, lambda: None

    bar = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    bar.start()
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase.startswith("rebuild:"):
            bar.console.print(f"[dim]{phase}[/dim]")
            return
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total or None)
        bar.update(tasks[phase], completed=done, total=total or None)

    return update, bar.stop


def _print_outcome(outcome) -> None:  # noqa: ANN001
    report = outcome.report
    s = report.summary
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    table = Table(title=f"Replay {report.replay_id}: {report.selection_text} ({report.scope})")
    for column in ("verdict", "decisions"):
        table.add_column(column)
    styles = {
        "identical": "",
        "within_tolerance": "cyan",
        "erased": "magenta",
        "out_of_tolerance": "bold red",
        "cannot_replay": "bold yellow",
    }
    for verdict, style in styles.items():
        table.add_row(verdict, str(getattr(s, verdict)), style=style if getattr(s, verdict) else "")
    console.print(table)
    flagged = [r for r in report.decisions if r.verdict in ("out_of_tolerance", "cannot_replay")]
    for r in flagged[:_SHOW_FLAGGED]:
        console.print(
            f"  {r.verdict}: {r.request_id}"
            + (f" [{r.reason}]" if r.reason else "")
            + (f" - {'; '.join(r.why)}" if r.why else ""),
            markup=False,
        )
    if len(flagged) > _SHOW_FLAGGED:
        console.print(
            f"  ... and {len(flagged) - _SHOW_FLAGGED} more flagged decision(s): see the report", markup=False
        )
    env = report.environment
    console.print(
        f"Environment: {env.mode}" + (f" (counterfactual overrides {env.overrides})" if env.overrides else ""),
        markup=False,
    )
    for entry in report.recorded_environments:
        console.print(
            f"  recorded {entry.sha256[:16]}...: " + ("; ".join(entry.summary[:3]) or entry.status), markup=False
        )
    if outcome.stored is not None:
        console.print(
            f"Signed report: {outcome.stored.object_key} (key {outcome.stored.key_id}); recorded on chain "
            f"{outcome.stored.replay_chain} with {outcome.stored.access_records} access record(s)",
            markup=False,
        )
    for label, path in (("HTML", getattr(outcome, "html_path", None)), ("JSON", getattr(outcome, "json_path", None))):
        if path:
            console.print(f"{label} report: {path}", markup=False)
    if not s.decisions:
        console.print("No logged decision matched the selection: nothing was replayed.", markup=False)
    console.print("PASSED" if s.passed else "NOT PASSED", style="bold green" if s.passed else "bold red")


def _verify(store, path: Path) -> int:  # noqa: ANN001
    # lazy: `verdict --help` imports every command module; the replay report loads when the command runs
    from verdict.replay.report import verify_signed_report

    try:
        data = path.read_bytes()
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_USAGE
    result = verify_signed_report(store, data)
    if result.ok:
        summary = (result.report or {}).get("summary", {})
        typer.echo(f"OK: report {(result.report or {}).get('replay_id')} signed by {result.key_id}; summary {summary}")
        return 0
    typer.echo(f"FAILED: {result.message}", err=True)
    return EXIT_FAILURE


def main() -> None:  # standalone: python -m replay.cli
    replay_app()


if __name__ == "__main__":
    main()

"""``verdict audit ...`` and ``verdict keys ...`` (mounted by the top-level CLI).

Exit codes: 0 verified / done, 1 verification failed (or the record was not
found or did not verify; for ``immutability-test``: a probe FAILED or the
evidence could not be filed), 2 usage error or store unreachable.

Imports nothing from gateway/ (no torch): an examiner verifies a trail with
the audit package alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from verdict.audit.cli_store import StoreOption
from verdict.audit.cli_store import open_for_cli as _open
from verdict.audit.config import store_url
from verdict.audit.kms import KmsEd25519Signer, KmsKeyError
from verdict.audit.personal_data import RetentionPolicy
from verdict.audit.records import is_sealed
from verdict.audit.signing import FileKeyStore, KeyStoreError, load_published_keys, publish_key
from verdict.audit.stores import StoreError
from verdict.audit.stores.keys import InvalidKey
from verdict.audit.stores.registry import store_present
from verdict.audit.trust import local_root
from verdict.audit.trust_cli import UNANCHORED, TrustOption, UnanchoredOption, resolve_policy

__all__ = ["audit_app", "keys_app"]

audit_app = typer.Typer(help="Verify and inspect the audit trail.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage audit signing keys.", no_args_is_help=True, add_completion=False)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

# --- verdict audit verify --------------------------------------------------------------------


@audit_app.command()
def verify(
    store: StoreOption = None,
    json_file: Annotated[
        str | None,
        typer.Option("--json", metavar="FILE|-", help="Also write the full report as JSON to FILE ('-' = stdout)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no notes; failures only.")] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Processes for signature checks (default: automatic).")
    ] = None,
    trust: TrustOption = None,
    unanchored: UnanchoredOption = False,
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="A checkpoint note held outside the store (repeatable): the chain "
            "must still hold it (no truncation, no rewrite).",
        ),
    ] = None,
    receipts: Annotated[
        str | None,
        typer.Option(
            "--receipts",
            metavar="FILE",
            help="Receipts held by a client (JSON lines, as the API returned them): "
            "each record must still be there, unchanged.",
        ),
    ] = None,
) -> None:
    """Verify the whole store: records, signatures, links, checkpoints, index, objects,
    against the trust root (certificates), witnesses, held checkpoints and receipts."""
    # lazy: `verdict --help` imports every command module; the verifier loads when the command runs
    from verdict.audit.completeness import parse_receipts
    from verdict.audit.verifier import verify_store

    target = _open(store, must_exist=True)
    policy = resolve_policy(trust, unanchored)
    held = [(path, _read_input(path, "checkpoint")) for path in checkpoint or []]
    held_receipts = []
    if receipts is not None:
        try:
            held_receipts = [
                (f"{receipts}:{r.chain_id}/{r.seq}", r) for r in parse_receipts(_read_input(receipts, "receipts"))
            ]
        except ValueError as exc:
            _err.print(f"[red]error:[/] {receipts}: {exc}")
            raise typer.Exit(2) from None
    human = _err if json_file == "-" else _out
    progress = None if quiet or not _err.is_terminal else _progress_bar()
    try:
        with progress if progress is not None else nullcontext():
            report = verify_store(
                target,
                progress=None if progress is None else _phase_tasks(progress),
                workers=workers,
                trust=policy,
                held_checkpoints=held,
                receipts=held_receipts,
                ask_witnesses=True,
            )
    except StoreError as exc:
        _err.print(f"[red]error:[/] store unreachable during verification: {exc}")
        raise typer.Exit(2) from None
    if json_file is not None:
        data = msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
        if json_file == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            Path(json_file).write_bytes(data)
    _print_report(report, human, quiet)
    if report.objects == 0:
        _err.print(f"warning: {target.url} holds no objects at all; is this the right store?")
    raise typer.Exit(0 if report.ok else 1)


def _read_input(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        _err.print(f"[red]error:[/] cannot read {what} file {path}: {exc.strerror}")
        raise typer.Exit(2) from None


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
    )


def _phase_tasks(progress: Progress) -> Callable[[str, int, int], None]:
    """A progress callback (phase, done, total) that shows one task per phase on ``progress``."""
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    return update


def _print_report(report, console: Console, quiet: bool) -> None:  # noqa: ANN001 - VerificationReport
    summary = (
        f"{len(report.chains)} chain(s), {report.records:,} records in {report.segments:,} segments, "
        f"{report.checkpoints:,} checkpoints, {report.index_entries:,} index entries, "
        f"{report.content_objects:,} content-addressed objects; {report.elapsed:.2f} s "
        f"({report.records_per_second:,.0f} records/s)"
    )
    mark = "" if report.anchored else UNANCHORED
    if report.anchored:
        summary += f"; anchored to root {', '.join(report.trust_roots)} ({report.certificates} certificates)"
        if report.witnessed:
            summary += "; witnessed " + ", ".join(f"{c} up to {n}" for c, n in sorted(report.witnessed.items()))
    if report.ok:
        console.print(f"{mark}[green]OK[/]: {summary}")
    else:
        first = report.first_failure
        console.print(f"{mark}[red]FAILED[/]: {report.failure_count} failure(s); {summary}")
        console.print(f"{mark}first failure: {_finding(first)}", markup=False)
        for finding in report.failures[1:20]:
            console.print(f"{mark}  {_finding(finding)}", markup=False)
        if report.failure_count > 20:
            console.print(f"{mark}  ... {report.failure_count - 20} more (use --json for all)")
    if not quiet:
        for note in report.notes[:20]:
            console.print(f"{mark}note: {_finding(note)}", markup=False)


def _finding(f) -> str:  # noqa: ANN001 - Finding
    where = []
    if f.chain_id is not None:
        where.append(f"chain {f.chain_id}")
    if f.seq is not None:
        where.append(f"seq {f.seq}")
    if f.key is not None:
        where.append(f.key)
    location = f" ({', '.join(where)})" if where else ""
    return f"[{f.reason}]{location}: {f.message}"


# --- verdict audit show ------------------------------------------------------------------------


@audit_app.command()
def show(
    request_id: Annotated[str, typer.Argument(help="The request id of a logged decision.")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verified record and proof as JSON.")] = False,
    trust: TrustOption = None,
    unanchored: UnanchoredOption = False,
) -> None:
    """Print a decision record after verifying its signature, certified key and inclusion proof."""
    # lazy: `verdict --help` imports every command module; the reader (and the chain) loads when the command runs
    from verdict.audit.reader import ReadError, read_decision

    target = _open(store, must_exist=True)
    policy = resolve_policy(trust, unanchored)
    try:
        verified = read_decision(target, request_id, trust=policy)
    except ReadError as exc:
        _err.print(
            f"[red]{'not found' if exc.reason == 'not_found' else 'verification failed'}[/] "
            + escape(f"[{exc.reason}]: {exc}")
        )
        raise typer.Exit(1) from None
    except StoreError as exc:
        _err.print(f"[red]error:[/] store unreachable: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(verified), indent=2) + b"\n")
        sys.stdout.flush()
        return
    if policy is None:
        _err.print(UNANCHORED.rstrip(": ") + ": the record below is only as genuine as the store is")
    body = verified.body
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("request id", body.request_id)
    table.add_row("decision", f"{body.decision} (score {body.score!r})")
    table.add_row("model", f"{body.model.name} {body.model.version} sha256:{body.model.sha256}")
    table.add_row("decided at", body.decided_at)
    table.add_row("chain / seq", f"{verified.chain_id} / {verified.seq}")
    table.add_row("record hash", verified.record_hash)
    anchored = "certified by the trust root" if policy is not None else "UNANCHORED: found in the store"
    table.add_row("signature", f"valid, key {verified.key_id} (valid at this seq; {anchored})")
    inc = verified.inclusion
    if inc is None:
        table.add_row("checkpoint", "[yellow]not yet covered by a checkpoint[/]")
    else:
        table.add_row(
            "checkpoint", f"{inc.checkpoint_key} (size {inc.tree_size}, signed by {', '.join(inc.signed_by)})"
        )
        table.add_row("root", inc.root)
        table.add_row("inclusion proof", "\n".join(inc.hashes) or "(empty: single-record tree)")
    _out.print(table)
    _out.print("reasons:")
    for reason in body.reasons:
        _out.print(
            f"  - {reason.text}" if reason.text is not None else f"  - {reason.label}: {reason.direction} (sealed)"
        )
    if is_sealed(body):
        _out.print(
            "personal data: sealed (docs/audit-format.md §3a); `verdict subjects export` or the "
            "explanation lookup opens it with the data keyring"
        )
    _out.print("record:")
    _out.print_json(msgspec.json.encode(verified.record).decode())
    if inc is not None:
        _out.print("checkpoint note:")
        _out.print(inc.checkpoint_note, markup=False, end="")


# --- verdict audit immutability-test ----------------------------------------------------------

_STATUS_STYLE = {"enforced": "green", "evident": "yellow", "FAILED": "bold red", "skipped": "magenta"}


@audit_app.command("immutability-test")
def immutability_test(
    store: StoreOption = None,
    json_file: Annotated[
        str | None,
        typer.Option("--json", metavar="FILE|-", help="Write the evidence document (and where it was filed) as JSON."),
    ] = None,
    junit_file: Annotated[
        str | None, typer.Option("--junit", metavar="FILE", help="Write JUnit XML: one testcase per probe.")
    ] = None,
    chain_id: Annotated[
        str, typer.Option("--chain-id", help="Chain the signed evidence record goes to (never a gateway chain).")
    ] = "immutability-0",
    kms_key_id: Annotated[
        str | None,
        typer.Option(
            "--kms-key-id",
            envvar="VERDICT_IMMUTABILITY_KMS_KEY_ID",
            help="Sign the evidence with this AWS KMS Ed25519 key (id, ARN or alias) instead of the local key.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary line and failures.")] = False,
    trust: TrustOption = None,
    unanchored: UnanchoredOption = False,
) -> None:
    """Try to break the trail (canaries and refused operations on real records), verify it, file signed evidence.

    Each probe reports enforced, evident (allowed, but the verifier detects it) or
    FAILED. Exit code 0: nothing FAILED and the evidence was filed; 1: a probe
    FAILED or the evidence could not be filed; 2: the store or key is unusable.
    """
    # lazy: `verdict --help` imports every command module; the immutability test loads when the command runs
    from verdict.audit.immutability import junit_xml, open_store_for_probing, run_immutability_test

    resolved = store_url(store)
    if not store_present(resolved):
        _err.print(f"[red]error:[/] no store at {resolved} (check --store or VERDICT_STORE)")
        raise typer.Exit(2)
    try:
        target = open_store_for_probing(resolved)
    except (StoreError, InvalidKey, ValueError) as exc:
        _err.print(f"[red]error:[/] cannot open store {resolved}: {exc}")
        raise typer.Exit(2) from None

    policy = resolve_policy(trust, unanchored)
    root = local_root()
    signer, keyring = _evidence_signer(kms_key_id)
    human = _err if json_file == "-" else _out

    def say(result) -> None:  # noqa: ANN001 - ProbeResult
        if quiet and result.status != "FAILED":
            return
        style = _STATUS_STYLE.get(result.status, "")
        human.print(f"[{style}]{result.status:>8}[/] {escape(result.name)}: {escape(result.detail)}")

    progress = None if quiet or not _err.is_terminal else _progress_bar()
    try:
        with progress if progress is not None else nullcontext():
            outcome = run_immutability_test(
                target,
                signer,
                keyring=keyring,
                chain_id=chain_id,
                say=say,
                progress=None if progress is None else _phase_tasks(progress),
                root=root,
                trust=policy,
                retention=RetentionPolicy.parse(os.environ.get("VERDICT_RETENTION", "")),
            )
    except ValueError as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except StoreError as exc:
        _err.print(f"[red]error:[/] store unreachable during the immutability test: {escape(str(exc))}")
        raise typer.Exit(2) from None
    if json_file is not None:
        data = outcome.to_json()
        if json_file == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            _write_file(json_file, data)
    if junit_file is not None:
        _write_file(junit_file, junit_xml(outcome))
    report = outcome.report
    counts = report.counts
    line = f"{counts['enforced']} enforced, {counts['evident']} evident, {counts['FAILED']} FAILED" + (
        f", {counts['skipped']} skipped" if counts["skipped"] else ""
    )
    if report.result == "passed":
        human.print(f"[green]PASSED[/]: {line} (run {report.run_id})")
    else:
        human.print(f"[red]FAILED[/]: {line}: {escape(', '.join(report.failed))} (run {report.run_id})")
    if outcome.filed is not None:
        receipt = outcome.filed.receipt
        human.print(
            f"evidence: {outcome.filed.object_key}, record {receipt.chain_id}/{receipt.seq} "
            f"{receipt.record_hash} signed by {receipt.key_id}",
            markup=False,
        )
    else:
        human.print(f"[red]evidence NOT filed:[/] {escape(outcome.filing_error or 'unknown reason')}")
    raise typer.Exit(outcome.exit_code)


def _evidence_signer(kms_key_id: str | None):  # noqa: ANN202 - (Signer, KeyRing | None)
    if kms_key_id:
        try:
            return KmsEd25519Signer(kms_key_id), None
        except KmsKeyError as exc:
            _err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
    signer, keystore, created = _init_file_key()
    if created:
        _err.print(f"created signing key {signer.key_id} in {keystore.directory} (mode 0600)")
    return signer, keystore


def _init_file_key():  # noqa: ANN202 - (Ed25519Signer, FileKeyStore, created)
    """The local signing key, created on first use; a clean exit 2 if the key store is unusable."""
    keystore = FileKeyStore.default()
    try:
        signer, created = keystore.init()
    except KeyStoreError as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    return signer, keystore, created


def _write_file(name: str, data: bytes) -> None:
    path = Path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        _err.print(f"[red]error:[/] cannot write {name}: {exc}")
        raise typer.Exit(2) from None


# --- verdict keys ------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(store: StoreOption = None) -> None:
    """Create the signing key (if there is none) and publish its public document."""
    signer, keystore, created = _init_file_key()
    target = _open(store)
    try:
        publish_key(target, signer.public_key_document)
    except StoreError as exc:
        _err.print(f"[red]error:[/] cannot publish the key: {exc}")
        raise typer.Exit(2) from None
    _out.print(f"{'created' if created else 'existing'} key {signer.key_id} in {keystore.directory}")
    _out.print(f"vkey: {signer.public_key_document.vkey}")


@keys_app.command("rotate")
def keys_rotate(
    chain: Annotated[
        list[str] | None, typer.Option("--chain", help="Chain(s) to rotate (repeatable). Default: gateway-0.")
    ] = None,
    store: StoreOption = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the key_rotation record).")] = None,
) -> None:
    """Create a new key, announce it on each chain (signed by the old key), make it current.

    Stop the chain's writer (the gateway) first: a running writer owns its chain
    and this command would be refused.
    """
    # lazy: `verdict --help` imports every command module; the chain writer loads when the command runs
    from verdict.audit.chain import ChainError, ChainWriter

    chains = chain or ["gateway-0"]
    keystore = FileKeyStore.default()
    root = local_root()  # certifies the new key on each chain (spec §5a); without it, `verdict trust certify`
    target = _open(store)
    try:
        old = keystore.current()
    except KeyStoreError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    new = keystore.create()
    failed = 0
    try:
        publish_key(target, new.public_key_document)
        for chain_id in chains:
            try:
                with ChainWriter.open(target, chain_id, old, create=False, keyring=keystore, root=root) as writer:
                    receipt = writer.rotate_key(new, reason=reason)
                _out.print(f"chain {chain_id}: key_rotation at seq {receipt.seq}, signed by {old.key_id}")
            except ChainError as exc:
                failed += 1
                _err.print(f"[red]chain {chain_id}:[/] {exc}")
    except StoreError as exc:
        _err.print(f"[red]error:[/] store unreachable: {exc}")
        raise typer.Exit(2) from None
    keystore.set_current(new.key_id)
    _out.print(f"current key is now {new.key_id} (was {old.key_id})")
    if failed:
        _err.print(
            "chains not rotated keep expecting the old key; a writer opened with the new key "
            "rotates them itself while the old key is in the key directory"
        )
        raise typer.Exit(1)


@keys_app.command("list")
def keys_list(store: StoreOption = None) -> None:
    """List local private keys and the public keys published in the store."""
    keystore = FileKeyStore.default()
    target = _open(store)
    try:
        published = load_published_keys(target)
    except StoreError as exc:
        _err.print(f"[red]error:[/] store unreachable: {exc}")
        raise typer.Exit(2) from None
    current = keystore.current_key_id()
    local = {doc.key_id: doc for doc in keystore.documents()}
    table = Table(box=box.SIMPLE)
    table.add_column("key id", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("current")
    table.add_column("private key here")
    table.add_column("published")
    for key_id in sorted(set(local) | set(published), key=lambda k: (local.get(k) or published[k]).created):
        doc = local.get(key_id) or published[key_id]
        table.add_row(
            key_id,
            doc.created,
            "*" if key_id == current else "",
            "yes" if key_id in local else "no",
            "yes" if key_id in published else "no",
        )
    _out.print(table)

"""``verdict subjects show|export|erase|hold|release`` and ``verdict retention sweep``.

Why on the command line as well as over HTTP: a data-protection officer answers
an access request or carries out an erasure from a ticket, often with the
gateway down for maintenance, and a retention sweep runs as a CronJob beside
the immutability test. Every command works on the configured store and the
data keyring (``VERDICT_KEYRING``), records what it did on the ``subjects``
chain (signed by this machine's key, certified by its root), and first
finishes any erasure an earlier process left half done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from verdict.audit.trust_cli import TrustOption, UnanchoredOption, resolve_policy
from verdict.gateway.commands.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    StoreOption,
    fail,
    open_configured_store,
    print_json,
)

if TYPE_CHECKING:
    from verdict.audit.stores import WormStore
    from verdict.gateway.subjects import SubjectRights

__all__ = ["retention_app", "subjects_app"]

subjects_app = typer.Typer(
    help="Data-subject rights: access (GDPR Art. 15), erasure (Art. 17), legal holds.", no_args_is_help=True
)
retention_app = typer.Typer(help="Retention: erase what is past its retention period.", no_args_is_help=True)
_err = Console(stderr=True)

SubjectArgument = Annotated[str, typer.Argument(help="The data subject's id, as clients send it in subject_id")]
BasisOption = Annotated[str, typer.Option("--basis", help="The legal basis or case reference (recorded)")]
ByOption = Annotated[str, typer.Option("--by", help="Who does it (recorded): a name or role")]


def _rights(store_url: str | None) -> tuple[WormStore, SubjectRights]:
    # lazy: `verdict --help` imports every command module; the keyring and chains load when a command runs
    from verdict.audit.key_wrapping import KekError
    from verdict.audit.personal_data import existing_personal_data, keyring_directory
    from verdict.gateway.registry_log import RegistryLog
    from verdict.gateway.service_errors import ServiceError
    from verdict.gateway.subjects import SUBJECTS_CHAIN, SubjectRights

    store = open_configured_store(store_url)
    try:
        personal = existing_personal_data()
    except (ValueError, KekError, OSError) as exc:
        fail(f"cannot open the data keyring: {exc}")
    if personal is None:
        fail(
            f"no data keyring at {keyring_directory()} (set VERDICT_KEYRING to the gateway's keyring directory)",
            EXIT_USAGE,
        )
    log = RegistryLog.local(store, create_root=True, say=lambda msg: _err.print(msg), chain_id=SUBJECTS_CHAIN)
    rights = SubjectRights(store, personal, log)
    try:
        finished = rights.recover()
    except ServiceError as exc:
        fail(f"could not finish an earlier erasure: {exc.detail}")
    for outcome in finished:
        _err.print(
            f"Finished an earlier erasure: record {outcome.where}, {len(outcome.body.key_refs)} key(s) destroyed"
        )
    return store, rights


def _service_call(call, *args):  # noqa: ANN001, ANN002, ANN202 - a thin error boundary for the commands
    # lazy: as in _rights
    from verdict.gateway.service_errors import ServiceError

    try:
        return call(*args)
    except ServiceError as exc:
        fail(exc.detail, EXIT_FAILURE)


@subjects_app.command("show")
def show_command(subject: SubjectArgument, store: StoreOption = None) -> None:
    """What the subject index holds about a subject: their decisions and any legal hold."""
    _, rights = _rights(store)
    found = _service_call(rights.file, subject)
    print_json({"request_ids": list(found.request_ids), "legal_hold": found.held, "keys": len(found.key_refs)})


@subjects_app.command("export")
def export_command(
    subject: SubjectArgument,
    out: Annotated[Path, typer.Option("--out", help="Directory to write decisions.json and letter.html into")],
    store: StoreOption = None,
    trust: TrustOption = None,
    unanchored: UnanchoredOption = False,
    controller: Annotated[str, typer.Option("--controller", help="Who the letter is from")] = "the lender",
) -> None:
    """Everything on file about a subject (GDPR Art. 15): each decision verified, with its
    plain-language explanation and receipt, as JSON and as a letter (HTML, and PDF where a
    PDF library is installed). Each disclosed decision gets an access record."""
    # lazy: as in _rights; the engine reads manifests for the adverse-action reasons
    import msgspec

    from verdict.gateway.engine import Engine
    from verdict.gateway.lookups import EventAccessLog, LookupService
    from verdict.gateway.registry import Registry
    from verdict.gateway.subject_letter import render_letter_html, render_letter_pdf

    policy = resolve_policy(trust, unanchored)
    opened, rights = _rights(store)
    lookups = LookupService(
        opened,
        EventAccessLog(rights.log),
        Engine(Registry(opened)),
        trust=policy,
        personal=rights.personal,
        subjects=rights,
    )
    view = _service_call(lookups.subject_decisions, subject, "cli")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)  # personal data: readable by this user only
    files = {
        "decisions.json": msgspec.json.format(msgspec.json.encode(view), indent=2) + b"\n",
        "letter.html": render_letter_html(view, controller=controller).encode("utf-8"),
    }
    pdf = render_letter_pdf(view, controller=controller)
    if pdf is not None:
        files["letter.pdf"] = pdf
    for name, data in files.items():
        _write_private(out / name, data)
    written = list(files)
    _err.print(f"{len(view.decisions)} decision(s) exported to {out}: {', '.join(written)}")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (an export holds personal data)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


@subjects_app.command("erase")
def erase_command(
    subject: SubjectArgument, basis: BasisOption, store: StoreOption = None, by: ByOption = "cli"
) -> None:
    """Erase a subject's personal data (GDPR Art. 17): a signed erasure record, then their
    data key is destroyed. The trail still verifies; lookups answer 410; replay says erased."""
    _, rights = _rights(store)
    done = _service_call(rights.erase, subject, basis, by)
    print_json(
        {
            "erased_decisions": done.body.request_ids,
            "key_refs": done.body.key_refs,
            "record": {
                "chain_id": done.record.chain_id,
                "seq": done.record.seq,
                "record_hash": done.record.record_hash,
            },
        }
    )


@subjects_app.command("hold")
def hold_command(subject: SubjectArgument, basis: BasisOption, store: StoreOption = None, by: ByOption = "cli") -> None:
    """Set a legal hold: erasure is refused and retention sweeps skip the subject until released."""
    _, rights = _rights(store)
    body = _service_call(rights.hold, subject, basis, by)
    print_json({"legal_hold": "set", "request_ids": body.request_ids})


@subjects_app.command("release")
def release_command(
    subject: SubjectArgument, basis: BasisOption, store: StoreOption = None, by: ByOption = "cli"
) -> None:
    """Release a legal hold."""
    _, rights = _rights(store)
    body = _service_call(lambda: rights.hold(subject, basis, by, release=True))
    print_json({"legal_hold": "released", "request_ids": body.request_ids})


@retention_app.command("sweep")
def sweep_command(
    store: StoreOption = None,
    by: ByOption = "retention sweep",
    now: Annotated[
        str | None, typer.Option("--now", help="Sweep as of this RFC 3339 time (default: now)", hidden=True)
    ] = None,
) -> None:
    """Crypto-shred every subject whose decisions are all past retention and not on hold
    (one signed erasure record each). Run it daily beside the immutability test."""
    _, rights = _rights(store)
    done = _service_call(lambda: rights.sweep(by, now=now))
    print_json(
        {
            "erased_keys": len(done),
            "erased_decisions": sum(len(d.body.request_ids) for d in done),
            "records": [d.where for d in done],
        }
    )

"""``verdict trust ...``, and how every verifying command finds its trust policy.

Why one resolver: ``audit verify``, ``audit show`` and ``replay`` must agree
on what they trust. The order is explicit (``--trust FILE``, then
``$VERDICT_TRUST_POLICY``, then the root this machine holds) and running
without any policy needs ``--unanchored``, which every line of output then
repeats (spec §5b).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from verdict.audit.cli_store import StoreOption, open_for_cli
from verdict.audit.config import data_dir
from verdict.audit.signing import load_published_keys
from verdict.audit.trust import (
    RootKey,
    TrustError,
    TrustPolicy,
    WitnessEntry,
    configured_root,
    load_policy,
    local_root_path,
)

__all__ = ["UNANCHORED", "TrustOption", "UnanchoredOption", "resolve_policy", "trust_app"]

trust_app = typer.Typer(
    help="The trust root: export the policy examiners verify with; certify chains.",
    no_args_is_help=True,
    add_completion=False,
)
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

UNANCHORED = "UNANCHORED (no trust policy: any store writer could have produced this): "

TrustOption = Annotated[
    str | None,
    typer.Option(
        "--trust",
        metavar="FILE",
        help="Trust policy (verdict trust export); default: $VERDICT_TRUST_POLICY, "
        "else the root this machine holds ($VERDICT_TRUST_ROOT or the data directory's).",
    ),
]
UnanchoredOption = Annotated[
    bool,
    typer.Option(
        "--unanchored",
        help="Verify without a trust policy; every line of output says that a store "
        "writer could have forged the result.",
    ),
]


def resolve_policy(trust: str | None, unanchored: bool) -> TrustPolicy | None:
    """The policy to verify with, or None when explicitly unanchored; exits 2 if there is none."""
    if unanchored:
        if trust:
            _err.print("[red]error:[/] --trust and --unanchored exclude each other")
            raise typer.Exit(2)
        return None
    source = trust or os.environ.get("VERDICT_TRUST_POLICY")
    try:
        if source:
            return load_policy(source)
        root = configured_root()
        if root is not None:
            return root.policy()
    except TrustError as exc:
        _err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    _err.print(
        "[red]error:[/] no trust policy: pass --trust FILE (the file `verdict trust export` wrote on the machine "
        "that holds the root) or set VERDICT_TRUST_POLICY; --unanchored verifies without one, and then nothing "
        "proves that the keys in the store are genuine"
    )
    raise typer.Exit(2)


def _root(path: str | None) -> RootKey:
    try:
        root = RootKey.load(Path(path)) if path else configured_root()
        if root is None:
            raise TrustError("bad_root_key", f"no root key here ({local_root_path(data_dir())}, $VERDICT_TRUST_ROOT)")
        return root
    except TrustError as exc:
        _err.print(f"[red]error:[/] {exc.message} (the gateway creates the embedded default's root on first start)")
        raise typer.Exit(2) from None


RootOption = Annotated[
    str | None, typer.Option("--root", metavar="FILE", help="Root private key (default: <data dir>/trust/root.pem).")
]


@trust_app.command("export")
def export(
    out: Annotated[
        str | None, typer.Option("--out", "-o", metavar="FILE", help="Where to write the policy (default: stdout).")
    ] = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            "--witness",
            metavar="VKEY[@URL]",
            help="A witness's verifier key (verdict witness vkey), optionally with the URL it serves on (repeatable).",
        ),
    ] = None,
    quorum: Annotated[int, typer.Option("--quorum", min=0, help="Cosignatures needed for a witnessed checkpoint.")] = 0,
    root: RootOption = None,
) -> None:
    """Write the trust policy (root public key, witnesses) for an examiner to keep."""
    entries = []
    for item in witness or []:
        vkey, _, url = item.partition("@")
        entries.append(WitnessEntry(name=vkey.split("+", 1)[0], vkey=vkey, url=url or None))
    try:
        policy = _root(root).policy().with_witnesses(entries, quorum)
    except TrustError as exc:
        _err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    data = policy.encode()
    if out is None:
        typer.echo(data.decode(), nl=False)
    else:
        Path(out).write_bytes(data)
        _err.print(f"wrote the trust policy of root {policy.roots[0].key_id} to {out}")


@trust_app.command("certify")
def certify(
    chain: Annotated[str, typer.Option("--chain", help="The chain to certify.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="Pre-issue: the key id (published in the store) a writer without the root will bring in."
        ),
    ] = None,
    from_seq: Annotated[int, typer.Option("--from-seq", min=0, help="With --key: the first record it signs.")] = 0,
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="With --key and --from-seq 0: the chain's origin (default verdict/<chain>)."),
    ] = None,
    store: StoreOption = None,
    root: RootOption = None,
) -> None:
    """Certify a chain's keys with the root.

    Without --key: an existing chain as it stands (a trail written before it had
    a root). The whole chain is verified first, unanchored; a chain with any
    failure is refused, since certifying it would vouch for a forgery.
    With --key: one certificate issued ahead, for a writer that does not hold
    the root (production: the root is in KMS, the gateway cannot sign with it).
    """
    root_key = _root(root)
    target = open_for_cli(store)
    if key is not None:
        doc = load_published_keys(target).get(key)
        if doc is None:
            _err.print(f"[red]error:[/] key {key} is not published in {target.url} (verdict keys init publishes it)")
            raise typer.Exit(2)
        cert_origin = origin or f"verdict/{chain}"
        written = root_key.certify(target, chain, doc, from_seq, cert_origin)
        _out.print(f"certified {key} on chain {chain} from seq {from_seq}: {written}")
        return
    _certify_existing(target, chain, root_key)


def _certify_existing(target, chain: str, root_key: RootKey) -> None:  # noqa: ANN001 - WormStore
    # lazy: `verdict --help` imports every command module; the verifier loads when the command runs
    from verdict.audit.verifier import verify_store

    report = verify_store(target)
    failures = [f for f in report.failures if f.chain_id in (chain, None)]
    summary = next((c for c in report.chains if c.chain_id == chain), None)
    if summary is None:
        _err.print(f"[red]error:[/] no chain {chain!r} in {target.url}")
        raise typer.Exit(1)
    if failures:
        _err.print(
            f"[red]refused:[/] chain {chain} does not verify ({failures[0].reason}: {failures[0].message}); "
            "certifying it would vouch for it"
        )
        raise typer.Exit(1)
    for from_seq, doc, origin in _timeline(target, chain):
        written = root_key.certify(target, chain, doc, from_seq, origin)
        _out.print(f"certified {doc.key_id} on chain {chain} from seq {from_seq}: {written}")


def _timeline(target, chain: str):  # noqa: ANN001, ANN202 - WormStore; list of (from_seq, KeyDocument, origin)
    # lazy: `verdict --help` imports every command module; the chain loads when the command runs
    from verdict.audit.chain import ChainError, scan_timeline

    try:
        return scan_timeline(target, chain)
    except ChainError as exc:
        _err.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from None

"""``verdict models promote|revoke|status``: what serves, and what a version's standing is.

Why separate from registration: these commands change no model bytes; they
append signed events (an alias object, a status object, each named by a
registry record, spec §3 ``registry``) that decide routing and record model
risk management's verdicts over time. None of them imports torch: an
operator revoking a bad version in an incident should not wait for it.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from verdict.gateway.commands.common import EXIT_USAGE, StoreOption, fail, print_json
from verdict.gateway.commands.registry_access import open_registry

__all__ = ["promote_command", "revoke_command", "status_command"]

PROMOTION_POLICY_ENV = "VERDICT_PROMOTION_REQUIRES"
"""When set (e.g. ``validated``), a version is promoted only with that validation status."""

RefArgument = Annotated[str, typer.Argument(help="NAME:VERSION")]
ByOption = Annotated[str, typer.Option("--by", help="Who did it (recorded): a name, not 'cli'")]


def _name_version(ref: str, command: str) -> tuple[str, str]:
    # lazy: the registry module loads when a command runs
    from verdict.gateway.registry import RegistryError, parse_ref

    try:
        name, version = parse_ref(ref)
    except RegistryError as exc:
        fail(str(exc), EXIT_USAGE)
    if version is None:
        fail(f"{command} needs NAME:VERSION", EXIT_USAGE)
    return name, version


def promote_command(
    ref: RefArgument,
    store: StoreOption = None,
    acknowledge_protected: Annotated[
        str | None,
        typer.Option(
            "--acknowledge-protected",
            help="Justification for serving a version whose inputs include protected attributes (recorded)",
        ),
    ] = None,
    require_status: Annotated[
        str | None,
        typer.Option(
            "--require-status",
            help=f"Refuse unless the version has this validation status (default ${PROMOTION_POLICY_ENV})",
        ),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who promotes (recorded)")] = "cli",
) -> None:
    """Point the production alias at a version (recorded, append-only)."""
    # lazy: the registry module loads when a command runs
    from verdict.gateway.registry import RegistryError

    name, version = _name_version(ref, "promote")
    policy = require_status or os.environ.get(PROMOTION_POLICY_ENV) or None
    try:
        event = open_registry(store, recorded=True).promote(
            name, version, by=by, justification=acknowledge_protected, require_status=policy
        )
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(f"production alias of {name} -> {version} (promotion #{event.sequence} at {event.promoted_at})")


def revoke_command(
    ref: RefArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why it must never serve again (recorded)")],
    by: ByOption,
    store: StoreOption = None,
) -> None:
    """Stop a version from serving, for good (a signed, append-only event; it stays replayable)."""
    # lazy: the registry module loads when a command runs
    from verdict.gateway.registry import REVOKED, RegistryError

    name, version = _name_version(ref, "revoke")
    if not reason.strip():
        fail("--reason must say why", EXIT_USAGE)
    registry = open_registry(store, recorded=True)
    try:
        event = registry.set_status(name, version, REVOKED, by=by, note=reason)
        promoted = registry.alias(name, "production")
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(f"revoked {name}:{version} (status event #{event.sequence} at {event.at}); it no longer serves")
    if promoted is not None and promoted.version == version:
        typer.echo(
            f"warning: {name}:{version} is the production version: requests naming no version are refused "
            f"until you promote another (verdict models promote {name}:VERSION)",
            err=True,
        )


def status_command(
    ref: RefArgument,
    status: Annotated[
        str | None,
        typer.Argument(help="New validation status: under_review, validated, validated_with_conditions, rejected"),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who decided (recorded); required to set a status")] = None,
    note: Annotated[str, typer.Option("--note", help="Conditions, findings, a ticket (recorded)")] = "",
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record a version's validation status (append-only), or show its status history."""
    # lazy: the registry module loads when a command runs
    from verdict.gateway.registry import REVOKED, VALIDATION_STATUSES, RegistryError

    name, version = _name_version(ref, "status")
    if status is not None:
        if status == REVOKED:
            fail("use `verdict models revoke` to revoke a version", EXIT_USAGE)
        if status not in VALIDATION_STATUSES:
            fail(f"unknown status {status!r}: use one of {', '.join(VALIDATION_STATUSES)}", EXIT_USAGE)
        if not by:
            fail("setting a status needs --by NAME", EXIT_USAGE)
    registry = open_registry(store, recorded=status is not None)
    try:
        if status is not None:
            event = registry.set_status(name, version, status, by=by or "", note=note)
            typer.echo(f"{name}:{version} is now {status} (status event #{event.sequence} at {event.at})")
            return
        registry.manifest_bytes(name, version)  # must exist
        history = registry.status_history(name, version)
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print_json(history)
        return
    if not history:
        typer.echo(f"{name}:{version}: no status recorded")
    for event in history:
        typer.echo(
            f"#{event.sequence} {event.at} {event.status} by {event.by}" + (f": {event.note}" if event.note else "")
        )

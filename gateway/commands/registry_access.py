"""The registry a ``verdict models`` command works on.

Why a module of its own: every model command opens the configured store's
registry the same way, and the commands that change it (register, promote,
revoke, status) record what they did on the registry chain, signed with this
machine's key and certified by its root (spec §3 ``registry``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from verdict.gateway.commands.common import open_configured_store

if TYPE_CHECKING:
    from verdict.gateway.registry import Registry

__all__ = ["open_registry"]

_err = Console(stderr=True)


def open_registry(store: str | None, *, recorded: bool = False) -> Registry:
    """The registry of the configured store; ``recorded``: with the event log that
    appends registrations, promotions and status changes to the registry chain."""
    # lazy: the registry (msgspec models, the store) loads when a command runs, not for `verdict --help`
    from verdict.gateway.registry import Registry

    opened = open_configured_store(store)
    if not recorded:
        return Registry(opened)
    # lazy: `verdict --help` imports every command module; the registry log (and the chain) loads when the command runs
    from verdict.gateway.registry_log import RegistryLog

    return Registry(opened, events=RegistryLog.local(opened, create_root=True, say=lambda msg: _err.print(msg)))

"""First-run setup of the embedded defaults: the reference model.

Why automatic: a new user's first command must produce a working, audited
service without reading a manual. If the German credit reference model is not
registered in the configured store, it is trained from the vendored data
(seconds), registered and promoted to production. An operator who manages
models explicitly turns this off (``--no-bootstrap``).

Both steps are recorded on the registry chain (docs/audit-format.md §3
``registry``): with the registry's own event log if it has one, else with
this machine's signing key and trust root (the embedded default's root is
created here if the gateway has not made it yet; it would a moment later).
Nothing is recorded when nothing is written (a restart).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from verdict.audit.config import data_dir
from verdict.gateway.manifest import Manifest
from verdict.gateway.registry import Registry
from verdict.gateway.registry_log import RegistryLog
from verdict.gateway.training import train

__all__ = ["REFERENCE_MODEL", "REFERENCE_VERSION", "ensure_reference_model"]

REFERENCE_MODEL = "german-credit"
REFERENCE_VERSION = "1.0.0"


def ensure_reference_model(
    registry: Registry, say: Callable[[str], None] = print, events: RegistryLog | None = None
) -> Manifest:
    """Return the production manifest of the reference model, creating it if absent.

    ``events``: where the registration and promotion are recorded; default:
    the registry's own log, else :meth:`RegistryLog.local` (opened only if
    something is written)."""
    if (
        REFERENCE_VERSION in registry.versions(REFERENCE_MODEL)
        and registry.alias(REFERENCE_MODEL, "production") is not None
    ):
        return registry.manifest(REFERENCE_MODEL)
    if events is None and registry.events is None:
        events = RegistryLog.local(registry.store, create_root=True, say=say)
    if events is not None:
        registry = Registry(registry.store, events=events)
    if REFERENCE_VERSION not in registry.versions(REFERENCE_MODEL):
        out = Path(data_dir()) / "models" / REFERENCE_MODEL / REFERENCE_VERSION
        say(f"First run: training the {REFERENCE_MODEL} reference model from the vendored data into {out}")
        trained = train(REFERENCE_MODEL, out, version=REFERENCE_VERSION, progress=say)
        registry.register(trained.directory, by="bootstrap")
        say(f"Registered {trained.manifest.ref} (sha256 {trained.manifest.artifact_sha256[:16]}...)")
    if registry.alias(REFERENCE_MODEL, "production") is None:
        registry.promote(REFERENCE_MODEL, REFERENCE_VERSION, by="bootstrap")
        say(f"Promoted {REFERENCE_MODEL}:{REFERENCE_VERSION} to production")
    return registry.manifest(REFERENCE_MODEL)

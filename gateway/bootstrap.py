"""First-run setup of the embedded defaults: the reference model.

Why automatic: a new user's first command must produce a working, audited
service without reading a manual. If the German credit reference model has no
production version in the configured store, version 2.0.0 (trained from the
vendored data with its protected characteristics withheld, packaged and
validated through the bring-your-own-model path: gateway.reference_packaging)
is registered and promoted to production. An operator who manages models
explicitly turns this off (``--no-bootstrap``).

A store whose reference model is already in production (1.0.0, from before
2.0.0 existed) keeps serving it: 2.0.0 is registered beside it and the
operator is told how to promote it, because registering never changes which
version serves (docs/models.md, "Which version serves").

Both steps are recorded on the registry chain (docs/audit-format.md §3
``registry``): with the registry's own event log if it has one, else with
this machine's signing key and trust root (the embedded default's root is
created here if the gateway has not made it yet; it would a moment later).
Nothing is recorded when nothing is written (a restart).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from verdict.audit.config import data_dir
from verdict.gateway.manifest import Manifest
from verdict.gateway.reference_packaging import package_reference
from verdict.gateway.registry import Registry
from verdict.gateway.registry_log import RegistryLog

__all__ = ["REFERENCE_MODEL", "REFERENCE_VERSION", "ensure_reference_model"]

REFERENCE_MODEL = "german-credit"
REFERENCE_VERSION = "2.0.0"


def ensure_reference_model(
    registry: Registry, say: Callable[[str], None] = print, events: RegistryLog | None = None
) -> Manifest:
    """Return the production manifest of the reference model, creating it if absent.

    ``events``: where the registration and promotion are recorded; default:
    the registry's own log, else :meth:`RegistryLog.local` (opened only if
    something is written)."""
    promoted = registry.alias(REFERENCE_MODEL, "production")
    if REFERENCE_VERSION in registry.versions(REFERENCE_MODEL) and promoted is not None:
        return registry.manifest(REFERENCE_MODEL)
    if events is None and registry.events is None:
        events = RegistryLog.local(registry.store, create_root=True, say=say)
    if events is not None:
        registry = Registry(registry.store, events=events)
    if REFERENCE_VERSION not in registry.versions(REFERENCE_MODEL):
        out = Path(data_dir()) / "models" / REFERENCE_MODEL / REFERENCE_VERSION
        say(
            f"First run: training the {REFERENCE_MODEL} reference model {REFERENCE_VERSION} from the vendored data "
            f"(protected characteristics withheld), packaging and validating it into {out}"
        )
        packaged = package_reference(
            REFERENCE_MODEL, out, version=REFERENCE_VERSION, force=True, progress=lambda msg: _phase(msg, say)
        )
        checks = packaged.report.checks if packaged.report else []
        say(f"Validated: {sum(c.passed for c in checks)} of {len(checks)} checks passed")
        registry.register(packaged.directory, by="bootstrap")
        say(f"Registered {packaged.manifest.ref} (sha256 {packaged.manifest.artifact_sha256[:16]}...)")
    if promoted is None:
        registry.promote(REFERENCE_MODEL, REFERENCE_VERSION, by="bootstrap")
        say(f"Promoted {REFERENCE_MODEL}:{REFERENCE_VERSION} to production")
    elif promoted.version != REFERENCE_VERSION:
        say(
            f"{REFERENCE_MODEL}:{promoted.version} stays in production; {REFERENCE_VERSION} (protected characteristics "
            f"withheld) is registered beside it: `verdict models promote {REFERENCE_MODEL}:{REFERENCE_VERSION}`"
        )
    return registry.manifest(REFERENCE_MODEL)


_CHECK_PASSED = re.compile(r"[a-z_]+: (passed|skipped)")


def _phase(message: str, say: Callable[[str], None]) -> None:
    """A first start says what it is doing, not each of the validator's passing checks
    (one summary line follows; a check that fails is still said)."""
    if not _CHECK_PASSED.fullmatch(message):
        say(message)

"""First-run setup of the embedded defaults: the reference model.

Why automatic: a new user's first command must produce a working, audited
service without reading a manual. If the German credit reference model is not
registered in the configured store, it is trained from the vendored data
(seconds), registered and promoted to production. An operator who manages
models explicitly turns this off (``--no-bootstrap``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from audit.config import data_dir
from gateway.manifest import Manifest
from gateway.registry import Registry

__all__ = ["REFERENCE_MODEL", "REFERENCE_VERSION", "ensure_reference_model"]

REFERENCE_MODEL = "german-credit"
REFERENCE_VERSION = "1.0.0"


def ensure_reference_model(registry: Registry, say: Callable[[str], None] = print) -> Manifest:
    """Return the production manifest of the reference model, creating it if absent."""
    if REFERENCE_VERSION not in registry.versions(REFERENCE_MODEL):
        from gateway.training import train  # torch training only on first run

        out = Path(data_dir()) / "models" / REFERENCE_MODEL / REFERENCE_VERSION
        say(f"First run: training the {REFERENCE_MODEL} reference model from the vendored data into {out}")
        trained = train(REFERENCE_MODEL, out, version=REFERENCE_VERSION, progress=say)
        registry.register(trained.directory)
        say(f"Registered {trained.manifest.ref} (sha256 {trained.manifest.artifact_sha256[:16]}...)")
    if registry.alias(REFERENCE_MODEL, "production") is None:
        registry.promote(REFERENCE_MODEL, REFERENCE_VERSION, by="bootstrap")
        say(f"Promoted {REFERENCE_MODEL}:{REFERENCE_VERSION} to production")
    return registry.manifest(REFERENCE_MODEL)

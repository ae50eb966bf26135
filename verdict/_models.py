"""The model registry, and the reference model a new user starts from.

Why the registry records what it does: registrations and promotions are
write-once objects in the store *and* signed records on the store's
``registry`` chain, certified by ``home``'s trust root, so the verifier can
tell a promotion the registry made from an alias object someone wrote by
hand. Importing this module imports torch (for the reference model's trainer).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from verdict._errors import StoreUnavailable, VerdictError
from verdict._store import Store, open_store
from verdict._trust import resolve_home, signing_identity
from verdict._types import ModelVersion, Promotion
from verdict.audit.stores import StoreError
from verdict.gateway.registry import Registry, RegistryError
from verdict.gateway.registry_log import RegistryLog
from verdict.gateway.training import train

__all__ = ["ModelRegistry", "sample_applicants", "train_reference_model"]

REFERENCE_MODEL = "german-credit"


def train_reference_model(out_dir: str | os.PathLike[str], *, version: str = "1.0.0") -> Path:
    """Train the German credit reference model from the data shipped in the package
    (about 800 rows, a few seconds on one CPU thread) into ``out_dir``; returns the
    model directory (``model.pt2``, ``background.json``, ``manifest.json``), ready
    for :meth:`ModelRegistry.register`.

    Reproducible to the byte: the same code, data and seed give the same
    artifact sha256 on the same platform, so a validator can retrain and compare."""
    return train(REFERENCE_MODEL, Path(out_dir), version=version).directory


def sample_applicants() -> list[dict[str, Any]]:
    """The sample applicants shipped with the package (attributes of the reference model)."""
    text = (resources.files("verdict.gateway") / "data" / "sample-applicants.jsonl").read_text()
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]


class ModelRegistry:
    """Register model versions (content-addressed, immutable) and promote them to production.

    ``store``: a :class:`Store` or a location for :func:`open_store`.
    ``home``: where the signing key and trust root that sign the registry
    chain live (created on first use; default: the CLI's data directory).
    """

    def __init__(self, store: Store | str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        signer, keys, root = signing_identity(resolve_home(home))
        worm = self.store._worm
        self._registry = Registry(
            worm, events=RegistryLog(worm, signer, keyring=keys, root=root, created_by="verdict python api")
        )

    def register(self, directory: str | os.PathLike[str], *, by: str = "python-api") -> ModelVersion:
        """Validate and register a model directory (:func:`verdict.package` or
        :func:`train_reference_model` output); a directory that fails validation is
        refused and nothing is written. Registering identical bytes again is a no-op,
        different bytes under the same name and version are refused. Registering
        never changes which version serves: :meth:`promote` does."""
        try:
            manifest, new = self._registry.register(Path(directory), by=by)
        except RegistryError as exc:
            raise VerdictError(str(exc)) from None
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from None
        return ModelVersion(
            name=manifest.name, version=manifest.version, artifact_sha256=manifest.artifact_sha256, newly_registered=new
        )

    def promote(
        self,
        name: str,
        version: str,
        *,
        by: str = "python-api",
        acknowledge_protected: str | None = None,
        require_status: str | None = None,
    ) -> Promotion:
        """Make ``name:version`` the production version (an appended event; the history stays).
        Decisions that name no version use it from then on; registering alone never does.

        A version whose inputs include a protected attribute is promoted only with
        ``acknowledge_protected`` (a justification, recorded); ``require_status``
        (e.g. ``"validated"``) refuses unless that is its current validation status.
        A revoked version is refused."""
        try:
            event = self._registry.promote(
                name, version, by=by, justification=acknowledge_protected, require_status=require_status
            )
        except RegistryError as exc:
            raise VerdictError(str(exc)) from None
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from None
        return _promotion(event)

    def revoke(self, name: str, version: str, *, reason: str, by: str) -> None:
        """Stop ``name:version`` from serving, for good (a signed, append-only event).
        Its decisions stay replayable."""
        self._status(name, version, "revoked", by=by, note=reason)

    def set_status(self, name: str, version: str, status: str, *, by: str, note: str = "") -> None:
        """Record a validation status (``under_review``, ``validated``,
        ``validated_with_conditions``, ``rejected``): an append-only, signed event."""
        self._status(name, version, status, by=by, note=note)

    def status_history(self, name: str, version: str) -> list[dict[str, Any]]:
        """The version's status events, oldest first (status, at, by, note)."""
        return [msgspec.structs.asdict(e) for e in self._registry.status_history(name, version)]

    def _status(self, name: str, version: str, status: str, *, by: str, note: str) -> None:
        try:
            self._registry.set_status(name, version, status, by=by, note=note)
        except RegistryError as exc:
            raise VerdictError(str(exc)) from None
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from None

    def production(self, name: str) -> str | None:
        """The version ``name``'s production alias points at, or None."""
        event = self._registry.alias(name, "production")
        return event.version if event is not None else None

    def versions(self, name: str) -> list[str]:
        """The registered versions of ``name``, sorted."""
        return self._registry.versions(name)


def _promotion(event: Any) -> Promotion:
    return Promotion(
        name=event.name,
        version=event.version,
        alias=event.alias,
        sequence=event.sequence,
        promoted_at=event.promoted_at,
        promoted_by=event.promoted_by,
    )

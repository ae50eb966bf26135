"""Loaded models and their explainers, shared by the request path.

Why a cache: loading an artifact (sha256 check, torch.export load) takes
about a second; it happens once per model version per process. The
production alias is re-read at most every few seconds, so a promotion takes
effect without a restart while a request does not pay a store read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from verdict.gateway.manifest import Manifest
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import LoadedModel, load_model

__all__ = ["LoadedVersion", "ModelCache"]

ALIAS_TTL_S = 5.0


@dataclass(frozen=True)
class LoadedVersion:
    model: LoadedModel
    explainer: object  # gateway.explanation.Explainer
    manifest_sha256: str | None = None
    """SHA-256 of the stored manifest object, pinned on every decision (audit-format §3)."""


class ModelCache:
    def __init__(self, registry: Registry, device: str | None = None) -> None:
        self.registry = registry
        self._device = device
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._aliases: dict[str, tuple[float, str]] = {}
        self._loaded: dict[tuple[str, str], LoadedVersion] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str, version: str | None) -> str:
        if version is not None:
            return version
        cached = self._aliases.get(name)
        if cached and time.monotonic() - cached[0] < ALIAS_TTL_S:
            return cached[1]
        resolved = self.registry.resolve_default_version(name)
        self._aliases[name] = (time.monotonic(), resolved)
        return resolved

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        version = self.resolve(name, version)
        key = (name, version)
        if key not in self._manifests:
            self._manifests[key] = self.registry.manifest(name, version)
        return self._manifests[key]

    def loaded(self, name: str, version: str) -> LoadedVersion:
        key = (name, version)
        with self._lock:
            if key not in self._loaded:
                from verdict.gateway.explanation import Explainer

                model = load_model(self.registry, name, version, device=self._device)
                explainer = Explainer(model, self.registry.background(model.manifest))
                # Hashed once per loaded version; the object is write-once, so it is the
                # manifest the model was just loaded from.
                manifest_sha256 = self.registry.manifest_sha256(name, version)
                self._loaded[key] = LoadedVersion(model, explainer, manifest_sha256)
            return self._loaded[key]

    def loaded_versions(self) -> list[tuple[str, str]]:
        return sorted(self._loaded)

    def device(self) -> str:
        """The device models run on (the one the environment manifest records)."""
        for loaded in self._loaded.values():
            return str(loaded.model.device)
        from verdict.gateway.determinism import select_device

        return str(select_device(self._device))

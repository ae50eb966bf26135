"""Model registry: content-addressed artifacts and immutable manifests kept in
the same write-once store as the audit trail.

Why the audit store: a replay in seven years must find the exact bytes a
decision was made with, under the same retention and tamper evidence as the
decision itself. Blobs are addressed by sha256 (``models/blobs/sha256/<hex>``)
and every read is re-hashed, so a swapped or corrupted blob is refused rather
than served. A name+version is registered once; re-registering identical bytes
is a no-op, different bytes are refused. The ``production`` alias is an
append-only series of promotion events, so the history of what served when is
itself preserved.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from audit.canonical import canonical_bytes
from audit.stores import ObjectExists, ObjectMissing, WormStore
from gateway.manifest import Manifest, ManifestError, decode_manifest, encode_manifest
from gateway.training import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE

__all__ = ["Promotion", "Registry", "RegistryError", "TamperedBlob", "UnknownModel", "parse_ref"]

_REF = re.compile(r"(?P<name>[^:\s]+)(?::(?P<version>[^:\s]+))?")


class RegistryError(RuntimeError):
    """A registry operation was refused; the message says why."""


class UnknownModel(RegistryError):
    """No such model name or version."""


class TamperedBlob(RegistryError):
    """A stored blob does not hash to its address: refuse to use it."""


class Promotion(msgspec.Struct, frozen=True):
    name: str
    alias: str
    version: str
    sequence: int
    promoted_at: str
    promoted_by: str


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:VERSION``."""
    match = _REF.fullmatch(ref)
    if not match:
        raise RegistryError(f"model reference {ref!r} must be NAME or NAME:VERSION")
    return match["name"], match["version"]


def blob_key(sha256: str) -> str:
    return f"models/blobs/sha256/{sha256}"


def manifest_key(name: str, version: str) -> str:
    return f"models/manifests/{name}/{version}.json"


def alias_prefix(name: str, alias: str) -> str:
    return f"models/aliases/{name}/{alias}/"


class Registry:
    def __init__(self, store: WormStore) -> None:
        self.store = store

    # -- registration -------------------------------------------------
    def register(self, directory: Path) -> tuple[Manifest, bool]:
        """Register a trained model directory; returns (manifest, newly_registered)."""
        directory = Path(directory)
        try:
            manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
            artifact = (directory / ARTIFACT_FILE).read_bytes()
            background = (directory / BACKGROUND_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise RegistryError(f"{directory} is not a trained model directory: missing {Path(exc.filename).name}") from None
        except ManifestError as exc:
            raise RegistryError(f"{directory / MANIFEST_FILE}: {exc}") from None
        _require_hash(artifact, manifest.artifact_sha256, f"{directory / ARTIFACT_FILE}")
        _require_hash(background, manifest.explainer.background_sha256, f"{directory / BACKGROUND_FILE}")
        if len(artifact) != manifest.artifact_bytes:
            raise RegistryError(f"{directory / ARTIFACT_FILE} is {len(artifact)} bytes, manifest says {manifest.artifact_bytes}")
        manifest_bytes = encode_manifest(manifest)
        key = manifest_key(manifest.name, manifest.version)
        if self.store.exists(key):
            return self._already_registered(key, manifest, manifest_bytes), False
        self._put_blob(artifact, manifest.artifact_sha256)
        self._put_blob(background, manifest.explainer.background_sha256)
        try:
            self.store.put_once(key, manifest_bytes)
        except ObjectExists:
            return self._already_registered(key, manifest, manifest_bytes), False
        return manifest, True

    def _already_registered(self, key: str, manifest: Manifest, manifest_bytes: bytes) -> Manifest:
        if self.store.get(key) != manifest_bytes:
            raise RegistryError(
                f"{manifest.ref} is already registered with different content; versions are immutable, "
                f"register the new model under a new version"
            )
        return manifest

    def _put_blob(self, data: bytes, sha256: str) -> None:
        try:
            self.store.put_once(blob_key(sha256), data)
        except ObjectExists:
            self._get_blob(sha256)  # same address must mean same bytes: verify, never trust

    def _get_blob(self, sha256: str) -> bytes:
        try:
            data = self.store.get(blob_key(sha256))
        except ObjectMissing:
            raise RegistryError(f"blob sha256:{sha256} is missing from the store {self.store.url}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise TamperedBlob(
                f"blob {blob_key(sha256)} in {self.store.url} hashes to {actual}: it has been altered or "
                f"corrupted; refusing to load it"
            )
        return data

    # -- reading -------------------------------------------------------
    def names(self) -> list[str]:
        return sorted({key.split("/")[2] for key in self.store.list_keys("models/manifests/")})

    def versions(self, name: str) -> list[str]:
        prefix = f"models/manifests/{name}/"
        return sorted(key[len(prefix) : -len(".json")] for key in self.store.list_keys(prefix))

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        """A version's manifest; without a version, the production alias (or the only version)."""
        if version is None:
            version = self.resolve_default_version(name)
        try:
            data = self.store.get(manifest_key(name, version))
        except ObjectMissing:
            known = self.versions(name)
            if not known:
                raise _no_such_model(name) from None
            raise UnknownModel(f"model {name!r} has no version {version!r} (known: {', '.join(known)})") from None
        return decode_manifest(data)

    def resolve_default_version(self, name: str) -> str:
        promoted = self.alias(name, "production")
        if promoted is not None:
            return promoted.version
        known = self.versions(name)
        if len(known) == 1:
            return known[0]
        if not known:
            raise _no_such_model(name)
        raise UnknownModel(f"model {name!r} has no production version; name one of {', '.join(known)} or promote one")

    def artifact(self, manifest: Manifest) -> bytes:
        return self._get_blob(manifest.artifact_sha256)

    def background(self, manifest: Manifest) -> bytes:
        return self._get_blob(manifest.explainer.background_sha256)

    # -- aliases -------------------------------------------------------
    def alias(self, name: str, alias: str) -> Promotion | None:
        keys = list(self.store.list_keys(alias_prefix(name, alias)))
        if not keys:
            return None
        return msgspec.json.decode(self.store.get(keys[-1]), type=Promotion)

    def promote(self, name: str, version: str, alias: str = "production", by: str = "cli") -> Promotion:
        self.manifest(name, version)  # must exist
        for _ in range(5):
            current = list(self.store.list_keys(alias_prefix(name, alias)))
            sequence = len(current)
            event = Promotion(
                name=name, alias=alias, version=version, sequence=sequence,
                promoted_at=datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                promoted_by=by,
            )
            try:
                self.store.put_once(f"{alias_prefix(name, alias)}{sequence:08d}.json", canonical_bytes(event))
                return event
            except ObjectExists:
                continue  # a concurrent promotion took this slot; take the next
        raise RegistryError(f"could not promote {name}:{version}: alias {alias!r} kept changing under us")


def _no_such_model(name: str) -> UnknownModel:
    """Names only the model asked for: this text reaches API callers, who must not
    learn which other models (other teams', other tenants') are registered."""
    return UnknownModel(f"no model named {name!r} is registered")


def _require_hash(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RegistryError(f"{what} hashes to {actual}, the manifest says {expected}")

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

Bound into the trail (docs/audit-format.md §3 ``registry``): with an event log
(:class:`gateway.registry_log.RegistryLog`), every registration and promotion
is also appended as a signed ``registry`` record naming the objects written
by hash, after they are durable. A store writer who adds an alias object by
hand then leaves an alias that no record names, which the verifier reports.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from verdict.audit.canonical import canonical_bytes
from verdict.audit.records import ModelVersion, RecordError, RegistryBody, decode_body, utc_now
from verdict.audit.stores import ObjectExists, ObjectMissing, WormStore
from verdict.gateway.manifest import Manifest, ManifestError, decode_manifest, encode_manifest
from verdict.gateway.registry_log import ADOPTED_BY, ADOPTED_REASON, RegistryLogError
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE

if TYPE_CHECKING:
    from verdict.gateway.registry_log import RegistryLog

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


ALIASES_PREFIX = "models/aliases/"
MANIFESTS_PREFIX = "models/manifests/"


class Registry:
    """``events``: where registrations and promotions are recorded as signed
    ``registry`` records (None: not recorded, as before the registry chain)."""

    def __init__(self, store: WormStore, events: RegistryLog | None = None) -> None:
        self.store = store
        self.events = events

    # -- registration -------------------------------------------------
    def register(self, directory: Path, by: str = "cli") -> tuple[Manifest, bool]:
        """Register a trained model directory; returns (manifest, newly_registered).

        A new registration is recorded in the event log (if any) after the
        blobs and the manifest are durable; an identical one already there
        writes and records nothing."""
        directory = Path(directory)
        try:
            manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
            artifact = (directory / ARTIFACT_FILE).read_bytes()
            background = (directory / BACKGROUND_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise RegistryError(
                f"{directory} is not a trained model directory: missing {Path(exc.filename).name}"
            ) from None
        except ManifestError as exc:
            raise RegistryError(f"{directory / MANIFEST_FILE}: {exc}") from None
        _require_hash(artifact, manifest.artifact_sha256, f"{directory / ARTIFACT_FILE}")
        _require_hash(background, manifest.explainer.background_sha256, f"{directory / BACKGROUND_FILE}")
        if len(artifact) != manifest.artifact_bytes:
            raise RegistryError(
                f"{directory / ARTIFACT_FILE} is {len(artifact)} bytes, manifest says {manifest.artifact_bytes}"
            )
        manifest_bytes = encode_manifest(manifest)
        key = manifest_key(manifest.name, manifest.version)
        if self.store.exists(key):
            return self._already_registered(key, manifest, manifest_bytes), False
        self._check_events()
        self._put_blob(artifact, manifest.artifact_sha256)
        self._put_blob(background, manifest.explainer.background_sha256)
        try:
            self.store.put_once(key, manifest_bytes)
        except ObjectExists:
            return self._already_registered(key, manifest, manifest_bytes), False
        self._record(_registration(manifest, manifest_bytes, by=by, at=utc_now()), f"registered {manifest.ref}")
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
        return decode_manifest(self.manifest_bytes(name, version))

    def manifest_bytes(self, name: str, version: str) -> bytes:
        """The stored manifest object of a version, exactly as stored."""
        try:
            return self.store.get(manifest_key(name, version))
        except ObjectMissing:
            known = self.versions(name)
            if not known:
                raise _no_such_model(name) from None
            raise UnknownModel(f"model {name!r} has no version {version!r} (known: {', '.join(known)})") from None

    def manifest_sha256(self, name: str, version: str) -> str:
        """SHA-256 of the stored manifest object: what a decision pins (``manifest_sha256``)."""
        return hashlib.sha256(self.manifest_bytes(name, version)).hexdigest()

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
        """Append a promotion event to the alias; recorded in the event log (if
        any) once the alias object is durable."""
        manifest_bytes = self.manifest_bytes(name, version)  # must exist
        decode_manifest(manifest_bytes)
        self._check_events()
        for _ in range(5):
            current = list(self.store.list_keys(alias_prefix(name, alias)))
            sequence = len(current)
            event = Promotion(
                name=name,
                alias=alias,
                version=version,
                sequence=sequence,
                promoted_at=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                promoted_by=by,
            )
            key = f"{alias_prefix(name, alias)}{sequence:08d}.json"
            data = canonical_bytes(event)
            try:
                self.store.put_once(key, data)
            except ObjectExists:
                continue  # a concurrent promotion took this slot; take the next
            self._record(_promotion(event, key, data, manifest_bytes), f"promoted {name}:{version} to {alias} ({key})")
            return event
        raise RegistryError(f"could not promote {name}:{version}: alias {alias!r} kept changing under us")

    # -- the registry chain (docs/audit-format.md §3 ``registry``) ----------
    def _check_events(self) -> None:
        """Refuse before writing anything if the event log could not record it."""
        if self.events is None:
            return

        try:
            self.events.check()
        except RegistryLogError as exc:
            raise RegistryError(f"nothing was written: {exc}") from exc

    def _record(self, body: RegistryBody, what: str) -> None:
        if self.events is None:
            return

        try:
            self.events.record([body], adopt=lambda: self.adoption_records(exclude=[body]))
        except RegistryLogError as exc:
            unrecorded = body.alias_key or manifest_key(body.model.name, body.model.version)
            raise RegistryError(
                f"{what}, but its registry record could not be appended ({exc}); {unrecorded} is in the store "
                f"without a record (the verifier reports it)"
            ) from exc

    def adoption_records(self, exclude: Sequence[RegistryBody] = ()) -> list[RegistryBody]:
        """Records of the registry objects already in the store, for a registry chain
        that is being created (spec §3 "Adoption"): a registration per manifest and a
        promotion per alias object, except those ``exclude`` records itself. Objects
        that cannot be read as a manifest or a promotion are left out (the verifier
        reports such an alias object as unrecorded)."""
        skip = {manifest_key(b.model.name, b.model.version) for b in exclude if b.event == "registration"}
        skip |= {b.alias_key for b in exclude if b.alias_key}
        now = utc_now()
        out: list[RegistryBody] = []
        manifests: dict[tuple[str, str], bytes] = {}
        for key in sorted(self.store.list_keys(MANIFESTS_PREFIX)):
            try:
                data = self.store.get(key)
                manifest = decode_manifest(data)
            except (ObjectMissing, ManifestError):
                continue
            if key != manifest_key(manifest.name, manifest.version):
                continue
            manifests[(manifest.name, manifest.version)] = data
            if key not in skip:
                body = _valid(
                    msgspec.structs.replace(_registration(manifest, data, by=ADOPTED_BY, at=now), reason=ADOPTED_REASON)
                )
                if body is not None:
                    out.append(body)
        for key in sorted(self.store.list_keys(ALIASES_PREFIX)):
            if key in skip:
                continue
            try:
                data = self.store.get(key)
                event = msgspec.json.decode(data, type=Promotion)
                body = _valid(
                    msgspec.structs.replace(
                        _promotion(event, key, data, manifests[(event.name, event.version)]), reason=ADOPTED_REASON
                    )
                )
            except (ObjectMissing, msgspec.MsgspecError, KeyError, ValueError):
                continue
            if body is not None:
                out.append(body)
        return out


def _valid(body: RegistryBody) -> RegistryBody | None:
    """``body`` if it satisfies the record schema (constructors do not check
    patterns such as the time format; decoding does), else None."""
    try:
        return decode_body(msgspec.json.encode(body))  # type: ignore[return-value]
    except RecordError:
        return None


def _registration(manifest: Manifest, manifest_bytes: bytes, *, by: str, at: str) -> RegistryBody:
    return RegistryBody(
        event="registration",
        model=ModelVersion(name=manifest.name, version=manifest.version),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        artifact_sha256=manifest.artifact_sha256,
        background_sha256=manifest.explainer.background_sha256,
        by=by,
        at=at,
    )


def _promotion(event: Promotion, key: str, data: bytes, manifest_bytes: bytes) -> RegistryBody:
    return RegistryBody(
        event="promotion",
        model=ModelVersion(name=event.name, version=event.version),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        alias=event.alias,
        alias_key=key,
        alias_sha256=hashlib.sha256(data).hexdigest(),
        by=event.promoted_by,
        at=event.promoted_at,
    )


def _no_such_model(name: str) -> UnknownModel:
    """Names only the model asked for: this text reaches API callers, who must not
    learn which other models (other teams', other tenants') are registered."""
    return UnknownModel(f"no model named {name!r} is registered")


def _require_hash(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RegistryError(f"{what} hashes to {actual}, the manifest says {expected}")

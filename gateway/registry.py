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

Routing (docs/models.md "Which version serves"): a request that names no
version is served by the ``production`` alias and nothing else, so registering
a version never changes what serves; a model's first version serves unpinned
requests once it is promoted. Status events (``models/status/<name>/<version>/``,
append-only like aliases) record a version's validation status over time and
its revocation: a revoked version never serves again and stays replayable.

Registration validates first (gateway.validation: dry run, nothing written on
failure) and stores the validation report as evidence, named by the
registration record (``validation_sha256``).

Bound into the trail (docs/audit-format.md §3 ``registry``): with an event log
(:class:`gateway.registry_log.RegistryLog`), every registration and promotion
is also appended as a signed ``registry`` record naming the objects written
by hash, after they are durable. A store writer who adds an alias object by
hand then leaves an alias that no record names, which the verifier reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgspec

from verdict.audit.canonical import canonical_bytes
from verdict.audit.layout import evidence_key, segments_prefix
from verdict.audit.records import (
    STATUS_RE,
    ModelVersion,
    RecordError,
    RegistryBody,
    decode_body,
    decode_record,
    iter_lines,
    split_line,
    utc_now,
)
from verdict.audit.stores import ObjectExists, ObjectMissing, WormStore
from verdict.gateway.manifest import Manifest, ManifestError, decode_manifest, encode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE
from verdict.gateway.registry_log import ADOPTED_BY, ADOPTED_REASON, REGISTRY_CHAIN, RegistryLogError

if TYPE_CHECKING:
    from verdict.gateway.registry_log import RegistryLog

__all__ = [
    "REVOKED",
    "SERVING_STATUSES",
    "VALIDATION_STATUSES",
    "NoProductionVersion",
    "Promotion",
    "Registry",
    "RegistryError",
    "StatusEvent",
    "TamperedBlob",
    "UnknownModel",
    "ValidationFailed",
    "VersionRevoked",
    "parse_ref",
]

REVOKED = "revoked"
SERVING_STATUSES = frozenset({REVOKED})
"""Statuses with a serving effect (spec §3 "Status vocabulary"); ``revoked`` is terminal."""
VALIDATION_STATUSES = ("under_review", "validated", "validated_with_conditions", "rejected")
"""A version's model-risk validation status (SR 26-2), latest event wins."""

_REF = re.compile(r"(?P<name>[^:\s]+)(?::(?P<version>[^:\s]+))?")


class RegistryError(RuntimeError):
    """A registry operation was refused; the message says why."""


class UnknownModel(RegistryError):
    """No such model name or version."""


class TamperedBlob(RegistryError):
    """A stored blob does not hash to its address: refuse to use it."""


class NoProductionVersion(UnknownModel):
    """The model exists but no version is promoted: name a version or promote one."""


class ValidationFailed(RegistryError):
    """Registration refused: the model directory failed validation (nothing was written).
    ``report``: the validation report (gateway.validation.ValidationReport)."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One status change of a version, as stored at ``models/status/<name>/<version>/<n:08d>.json``."""

    name: str
    version: str
    status: str
    sequence: int
    at: str
    by: str
    note: str = ""


class VersionRevoked(RegistryError):
    """The version was revoked: it never serves again (it stays replayable)."""

    def __init__(self, event: StatusEvent) -> None:
        self.event = event
        super().__init__(
            f"model {event.name}:{event.version} was revoked by {event.by} at {event.at}"
            + (f": {event.note}" if event.note else "")
        )


_Event = TypeVar("_Event", bound=msgspec.Struct)


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


def status_prefix(name: str, version: str) -> str:
    return f"models/status/{name}/{version}/"


ALIASES_PREFIX = "models/aliases/"
MANIFESTS_PREFIX = "models/manifests/"


class Registry:
    """``events``: where registrations and promotions are recorded as signed
    ``registry`` records (None: not recorded, as before the registry chain)."""

    def __init__(self, store: WormStore, events: RegistryLog | None = None) -> None:
        self.store = store
        self.events = events

    # -- registration -------------------------------------------------
    def register(
        self, directory: Path, by: str = "cli", *, progress: Callable[[str], None] | None = None
    ) -> tuple[Manifest, bool]:
        """Register a model directory; returns (manifest, newly_registered).

        The directory is validated first (gateway.validation); a refused one raises
        :class:`ValidationFailed` and nothing is written. The report is stored as an
        evidence object and named by the registration record. A new registration is
        recorded in the event log (if any) after the blobs, the report and the manifest
        are durable; an identical one already there writes and records nothing."""
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
        report = _validated(directory, progress)
        self._put_blob(artifact, manifest.artifact_sha256)
        self._put_blob(background, manifest.explainer.background_sha256)
        validation_sha256 = hashlib.sha256(report).hexdigest()
        with contextlib.suppress(ObjectExists):  # content-addressed: the same report bytes
            self.store.put_once(evidence_key(validation_sha256), report)
        try:
            self.store.put_once(key, manifest_bytes)
        except ObjectExists:
            return self._already_registered(key, manifest, manifest_bytes), False
        body = msgspec.structs.replace(
            _registration(manifest, manifest_bytes, by=by, at=utc_now()), validation_sha256=validation_sha256
        )
        self._record(body, f"registered {manifest.ref}")
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
        """The version that serves requests naming no version: the production alias,
        and nothing else (registering never changes routing). Raises
        :class:`NoProductionVersion` before a first promotion and
        :class:`VersionRevoked` when the alias points at a revoked version."""
        promoted = self.alias(name, "production")
        if promoted is None:
            known = self.versions(name)
            if not known:
                raise _no_such_model(name)
            raise NoProductionVersion(
                f"model {name!r} has no production version: name a version ({', '.join(known)}) "
                f"or promote one (verdict models promote {name}:VERSION)"
            )
        revoked = self.revocation(name, promoted.version)
        if revoked is not None:
            raise VersionRevoked(revoked)
        return promoted.version

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

    def alias_history(self, name: str, alias: str = "production") -> list[Promotion]:
        """Every promotion event of an alias, oldest first (the last is :meth:`alias`). An
        object that is not a promotion of this alias is skipped, as in :meth:`status_history`
        (the verifier reports alias objects that no record names)."""
        found = self._events(alias_prefix(name, alias), Promotion)
        return [event for event in found if (event.name, event.alias) == (name, alias)]

    def promote(
        self,
        name: str,
        version: str,
        alias: str = "production",
        by: str = "cli",
        *,
        justification: str | None = None,
        require_status: str | None = None,
    ) -> Promotion:
        """Append a promotion event to the alias; recorded in the event log (if
        any) once the alias object is durable.

        Refused for a revoked version; for a version whose inputs include a
        ``protected`` attribute unless ``justification`` is given (it goes on the
        promotion record as its ``reason``); and, with ``require_status`` (a
        promotion policy, e.g. ``"validated"``), unless that is the version's
        current validation status."""
        manifest_bytes = self.manifest_bytes(name, version)  # must exist
        manifest = decode_manifest(manifest_bytes)
        revoked = self.revocation(name, version)
        if revoked is not None:
            raise RegistryError(f"cannot promote: {VersionRevoked(revoked)}")
        protected = [spec.name for spec in manifest.inputs if spec.protected]
        if protected and not (justification and justification.strip()):
            raise RegistryError(
                f"cannot promote {name}:{version}: its inputs include protected attribute(s) "
                f'{", ".join(protected)}; promote with a recorded justification (--acknowledge-protected "...") '
                f"or package a version that withholds them"
            )
        if require_status is not None:
            current = self.validation_status(name, version)
            if current is None or current.status != require_status:
                raise RegistryError(
                    f"cannot promote {name}:{version}: the promotion policy requires validation status "
                    f"{require_status!r}, the version's is {current.status if current else 'none recorded'!r} "
                    f"(verdict models status {name}:{version} {require_status} --by NAME)"
                )
        self._check_events()
        prefix = alias_prefix(name, alias)
        written = self._put_next(
            prefix,
            lambda sequence: Promotion(
                name=name,
                alias=alias,
                version=version,
                sequence=sequence,
                promoted_at=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                promoted_by=by,
            ),
        )
        if written is None:
            raise RegistryError(f"could not promote {name}:{version}: alias {alias!r} kept changing under us")
        key, data, event = written
        body = _promotion(event, key, data, manifest_bytes)
        if justification:
            body = msgspec.structs.replace(body, reason=f"protected attributes acknowledged: {justification}")
        self._record(body, f"promoted {name}:{version} to {alias} ({key})")
        return event

    def _put_next(self, prefix: str, make: Callable[[int], _Event]) -> tuple[str, bytes, _Event] | None:
        """Write ``make(n)`` as the next numbered object ``<prefix><n:08d>.json`` of an
        append-only series (aliases, status events); a concurrent writer taking the slot
        means the next one. None if the series kept changing under us."""
        for _ in range(5):
            sequence = len(list(self.store.list_keys(prefix)))
            event = make(sequence)
            key = f"{prefix}{sequence:08d}.json"
            data = canonical_bytes(event)
            try:
                self.store.put_once(key, data)
            except ObjectExists:
                continue
            return key, data, event
        return None

    def validation_report(self, name: str, version: str) -> bytes | None:
        """The validation report the registry stored when it registered the version (the
        evidence its registration record names, re-hashed), or None: registered before
        validation existed, or without a registry chain. Signed by reference: the
        registration record that names its sha256 is."""
        for key in sorted(self.store.list_keys(segments_prefix(REGISTRY_CHAIN))):
            for line in iter_lines(self.store.get(key)):
                try:
                    body = decode_record(split_line(line)[0]).body
                except RecordError:
                    continue  # the verifier reports a bad segment; here it names no report
                if (
                    isinstance(body, RegistryBody)
                    and body.event == "registration"
                    and (body.model.name, body.model.version) == (name, version)
                    and body.validation_sha256 is not None
                ):
                    data = self.store.get(evidence_key(body.validation_sha256))
                    if hashlib.sha256(data).hexdigest() != body.validation_sha256:
                        raise TamperedBlob(f"the validation report of {name}:{version} has been altered in the store")
                    return data
        return None

    # -- status events (spec §3 "Status vocabulary") ------------------------
    def status_history(self, name: str, version: str) -> list[StatusEvent]:
        """Every status event of a version, oldest first (an unreadable object is skipped:
        the verifier reports objects that no record names)."""
        found = self._events(status_prefix(name, version), StatusEvent)
        return [event for event in found if (event.name, event.version) == (name, version)]

    def _events(self, prefix: str, kind: type[_Event]) -> list[_Event]:
        """The readable events under ``prefix``, in key (= time) order."""
        out = []
        for key in sorted(self.store.list_keys(prefix)):
            try:
                out.append(msgspec.json.decode(self.store.get(key), type=kind))
            except (ObjectMissing, msgspec.MsgspecError):
                continue
        return out

    def revocation(self, name: str, version: str) -> StatusEvent | None:
        """The version's revocation event, or None while it may serve."""
        for event in self.status_history(name, version):
            if event.status == REVOKED:
                return event
        return None

    def validation_status(self, name: str, version: str) -> StatusEvent | None:
        """The version's latest validation-status event (None: none recorded)."""
        found = [e for e in self.status_history(name, version) if e.status in VALIDATION_STATUSES]
        return found[-1] if found else None

    def set_status(self, name: str, version: str, status: str, *, by: str, note: str = "") -> StatusEvent:
        """Append a status event (``revoked`` or a validation status) and record it."""
        manifest_bytes = self.manifest_bytes(name, version)  # must exist
        if status not in SERVING_STATUSES and status not in VALIDATION_STATUSES:
            raise RegistryError(
                f"unknown status {status!r}: use one of {', '.join((*VALIDATION_STATUSES, *sorted(SERVING_STATUSES)))}"
            )
        if not STATUS_RE.fullmatch(status):  # pragma: no cover - the vocabulary is all valid words
            raise RegistryError(f"status {status!r} must match {STATUS_RE.pattern}")
        if not by.strip():
            raise RegistryError("a status change needs who made it (--by NAME)")
        if status == REVOKED and self.revocation(name, version) is not None:
            raise RegistryError(f"{name}:{version} is already revoked; revocation is final")
        self._check_events()
        written = self._put_next(
            status_prefix(name, version),
            lambda sequence: StatusEvent(
                name=name, version=version, status=status, sequence=sequence, at=utc_now(), by=by, note=note
            ),
        )
        if written is None:
            raise RegistryError(f"could not record the status of {name}:{version}: it kept changing under us")
        key, data, event = written
        body = RegistryBody(
            event="status",
            model=ModelVersion(name=name, version=version),
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            status=status,
            status_key=key,
            status_sha256=hashlib.sha256(data).hexdigest(),
            reason=note or None,
            by=by,
            at=event.at,
        )
        self._record(body, f"set {name}:{version} to {status} ({key})")
        return event

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


def _validated(directory: Path, progress: Callable[[str], None] | None) -> bytes:
    """Validate ``directory`` (raises ValidationFailed) and return the report's canonical bytes."""
    # lazy: validation imports torch; `verdict models list/show/promote` must start without it
    from verdict.gateway.validation import encode_report, validate_directory

    report = validate_directory(directory, progress=progress)
    if not report.passed:
        failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
        raise ValidationFailed(f"{directory} refused, nothing was registered: " + "; ".join(failed), report)
    return encode_report(report)


def _no_such_model(name: str) -> UnknownModel:
    """Names only the model asked for: this text reaches API callers, who must not
    learn which other models (other teams', other tenants') are registered."""
    return UnknownModel(f"no model named {name!r} is registered")


def _require_hash(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RegistryError(f"{what} hashes to {actual}, the manifest says {expected}")

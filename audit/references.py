"""The objects records name, held to the records (docs/audit-format.md §10 step 6a).

A decision names its model artifact, its environment manifest and (since the
registry was bound into the trail) the hash of its model manifest; an evidence
record names its document; a ``registry`` record names the manifest, blobs and
alias object the registry wrote. Signatures cover these names and hashes, not
the objects: this module checks that each object is there and has the bytes
the records say, and that every alias object under ``models/aliases/`` is
named by a promotion record and every status object under ``models/status/``
by a status record (so an alias or a "validated" status a store writer added
by hand, which the gateway or a promotion policy would act on, is reported).

Speed: the verifier's workers hand over the names per record; here they are
collected in dicts keyed by what they name, so each distinct object is looked
up (and, where its key is not its own hash, read and hashed) once, however
many records name it. An object whose key ends in ``sha256/<hex>`` with the
expected hex is not read again: step 6 re-hashes every such object.

Stores written before the registry chain existed have decisions whose
objects may be elsewhere and alias objects without records: until a store
holds a registry chain, those are one note (``registry_unbound``; none for a
trail kept without any registry objects), never failures. Objects that are
present are always checked, and evidence and registry records are always held
to their objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from verdict.audit import layout
from verdict.audit.records import RecordError, RegistryBody, decode_record, iter_lines, split_line
from verdict.audit.stores.base import WormStore

__all__ = [
    "ALIASES_PREFIX",
    "REFERENCE_REASONS",
    "REGISTRY_CHAIN",
    "STATUS_PREFIX",
    "References",
    "decision_refs",
]

REGISTRY_CHAIN = "registry"
"""The default registry chain id (a chain of another id counts once it holds a registry record)."""
ALIASES_PREFIX = "models/aliases/"
STATUS_PREFIX = "models/status/"
_REGISTRY_PREFIXES = ("models/", "environments/")
REFERENCE_REASONS = {
    "missing_object": "an object a record names (model blob, environment manifest, model manifest, evidence document, alias object) is not in the store",
    "object_mismatch": "an object a record names does not hash to the SHA-256 the record gives for it",
    "unrecorded_alias": "an alias object under models/aliases/ is named by no promotion record of a registry chain",
    "unrecorded_status": "a status object under models/status/ is named by no status record of a registry chain",
}
REFERENCE_NOTES = {
    "registry_unbound": "a store without a registry chain: objects its decisions name that are missing, alias objects without a record",
}

DecisionRefs = tuple  # (model name, version, model sha256, environment sha256, manifest sha256 or None)
Where = tuple  # (chain_id, seq, segment key) of the first record naming an object
FailFn = Callable[..., None]  # fail(reason, message, *, chain_id, seq, key)

_interned: dict[DecisionRefs, DecisionRefs] = {}


def decision_refs(
    name: str, version: str, model_sha256: str, environment_sha256: str, manifest_sha256: str | None
) -> DecisionRefs:
    """The names a decision holds, as one shared tuple per distinct value: a
    worker's result then pickles each repeated tuple as a back-reference."""
    refs = (name, version, model_sha256, environment_sha256, manifest_sha256)
    found = _interned.get(refs)
    if found is None:
        if len(_interned) >= 4096:
            _interned.clear()
        found = _interned[refs] = refs
    return found


def blob_key(sha256: str) -> str:
    return f"models/blobs/sha256/{sha256}"


def environment_key(sha256: str) -> str:
    return f"environments/sha256/{sha256}"


def manifest_key(name: str, version: str) -> str:
    return f"models/manifests/{name}/{version}.json"


@dataclass
class _Expected:
    what: str
    where: Where
    records: int = 0
    gated: bool = False
    """True: missing counts as a failure only on a store with a registry chain."""


@dataclass
class References:
    """What the records of all chains name; fed by the chain checks, checked at the end."""

    decisions: dict[DecisionRefs, list] = field(default_factory=dict)  # refs -> [where, count]
    evidence: dict[tuple[str, str], list] = field(default_factory=dict)  # (object key, sha256) -> [where, count]
    registry: list[tuple[Where, RegistryBody]] = field(default_factory=list)
    registry_chains: set[str] = field(default_factory=set)
    checked: int = 0
    """Distinct (object, hash) pairs checked."""

    # -- collection (once per record: keep it cheap)

    def decision(self, chain_id: str, seq: int, key: str, refs: DecisionRefs) -> None:
        seen = self.decisions.get(refs)
        if seen is None:
            self.decisions[refs] = [(chain_id, seq, key), 1]
        else:
            seen[1] += 1

    def evidence_record(self, chain_id: str, seq: int, key: str, named: tuple[str, str]) -> None:
        seen = self.evidence.get(named)
        if seen is None:
            self.evidence[named] = [(chain_id, seq, key), 1]
        else:
            seen[1] += 1

    def registry_record(self, chain_id: str, seq: int, key: str, body: RegistryBody) -> None:
        self.registry.append(((chain_id, seq, key), body))
        self.registry_chains.add(chain_id)

    # -- the check

    def check(
        self,
        store: WormStore,
        listed: set[str],
        read_many: Callable[[list[str]], Iterable[tuple[str, bytes]]],
        fail: FailFn,
        note: FailFn,
    ) -> None:
        """Step 6a over everything collected: ``listed`` the keys the store listed,
        ``read_many`` reads objects in order (a missing one as b"")."""
        exists = store.exists
        bound = bool(self.registry_chains)
        registry_objects = False  # anything of a model registry in the store at all
        registry_chain_prefixes = (
            f"{layout.CHAINS_PREFIX}{REGISTRY_CHAIN}/",
            f"{layout.CERTIFICATES_PREFIX}{REGISTRY_CHAIN}/",
        )
        for k in listed:
            if not registry_objects and k.startswith(_REGISTRY_PREFIXES):
                registry_objects = True
            elif not bound and k.startswith(registry_chain_prefixes):
                bound = True
            if bound and registry_objects:
                break
        expected: dict[tuple[str, str | None], _Expected] = {}

        def expect(object_key: str, sha256: str | None, what: str, where: Where, records: int, gated: bool) -> None:
            item = expected.get((object_key, sha256))
            if item is None:
                expected[(object_key, sha256)] = _Expected(what, where, records, gated)
            else:
                item.records += records
                item.gated = item.gated and gated

        for (name, version, model_sha, env_sha, manifest_sha), (where, count) in self.decisions.items():
            expect(blob_key(model_sha), model_sha, "model artifact", where, count, True)
            expect(environment_key(env_sha), env_sha, "environment manifest", where, count, True)
            if manifest_sha is not None:
                expect(manifest_key(name, version), manifest_sha, f"manifest of {name}:{version}", where, count, True)
        for (object_key, evidence_sha256), (where, count) in self.evidence.items():
            expect(object_key, evidence_sha256, "evidence document", where, count, False)
        recorded_event_objects: set[str] = set()
        for where, body in self.registry:
            name, version = body.model.name, body.model.version
            expect(manifest_key(name, version), body.manifest_sha256, f"manifest of {name}:{version}", where, 1, False)
            if body.artifact_sha256 is not None:
                expect(blob_key(body.artifact_sha256), body.artifact_sha256, "model artifact", where, 1, False)
            if body.background_sha256 is not None:
                expect(
                    blob_key(body.background_sha256), body.background_sha256, "explainer background", where, 1, False
                )
            if body.validation_sha256 is not None:
                expect(
                    layout.evidence_key(body.validation_sha256),
                    body.validation_sha256,
                    "validation report",
                    where,
                    1,
                    False,
                )
            if body.alias_key is not None and body.alias_sha256 is not None:
                expect(body.alias_key, body.alias_sha256, f"{body.alias} alias object", where, 1, False)
                recorded_event_objects.add(body.alias_key)
            if body.status_key is not None and body.status_sha256 is not None:
                expect(body.status_key, body.status_sha256, f"{body.status} status object", where, 1, False)
                recorded_event_objects.add(body.status_key)
        self.checked = len(expected)

        unbound: list[str] = []
        to_read: dict[str, list[tuple[str, _Expected]]] = {}
        for (object_key, sha256), item in sorted(expected.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            chain_id, seq, _segment = item.where
            named = f"named by {item.records} record(s), first {chain_id}/{seq}"
            if object_key not in listed:
                if exists(object_key):
                    note(
                        "written_during_verification",
                        f"{object_key} ({item.what}) appeared after the store was listed (live writer); {named}",
                        chain_id=chain_id,
                        seq=seq,
                        key=object_key,
                    )
                elif item.gated and not bound:
                    unbound.append(object_key)
                else:
                    fail(
                        "missing_object",
                        f"{object_key} ({item.what}) is not in the store; {named}",
                        chain_id=chain_id,
                        seq=seq,
                        key=object_key,
                    )
                continue
            if sha256 is None or layout.content_address(object_key) == sha256:
                continue  # present; a content-addressed object was re-hashed in step 6
            to_read.setdefault(object_key, []).append((sha256, item))
        for object_key, data in read_many(sorted(to_read)):
            actual = hashlib.sha256(data).hexdigest()
            for sha256, item in to_read[object_key]:
                if actual != sha256:
                    chain_id, seq, _segment = item.where
                    fail(
                        "object_mismatch",
                        f"{object_key} ({item.what}) hashes to {actual}, but {item.records} "
                        f"record(s) give {sha256} (first {chain_id}/{seq}): it was altered after it was recorded",
                        chain_id=chain_id,
                        seq=seq,
                        key=object_key,
                    )

        unrecorded = sorted(
            k for k in listed if k.startswith((ALIASES_PREFIX, STATUS_PREFIX)) and k not in recorded_event_objects
        )
        if bound and unrecorded:
            late = _recorded_since_listing(store, listed, self.registry_chains | {REGISTRY_CHAIN}, read_many)
            for object_key in unrecorded:
                if object_key in late:
                    note(
                        "written_during_verification",
                        f"{object_key}: its promotion record was appended after the store was listed (live writer)",
                        key=object_key,
                    )
                    continue
                status = object_key.startswith(STATUS_PREFIX)
                fail(
                    "unrecorded_status" if status else "unrecorded_alias",
                    f"{object_key} is named by no {'status' if status else 'promotion'} record of a registry chain: "
                    "the registry did not record it (written by hand, or its record failed)",
                    key=object_key,
                )
        elif unrecorded:
            unbound.extend(unrecorded)
        if unbound and registry_objects:  # a trail kept without any registry: nothing to say about it
            note(
                "registry_unbound",
                f"this store has no registry chain (written before registry records existed): "
                f"{len(unbound)} object(s) named by decisions are missing or alias objects have no promotion "
                f"record, e.g. {', '.join(_first(unbound, 3))}; not held against the trail",
            )


def _recorded_since_listing(
    store: WormStore,
    listed: set[str],
    chains: set[str],
    read_many: Callable[[list[str]], Iterable[tuple[str, bytes]]],
) -> set[str]:
    """On a live store: alias and status keys named by registry records in segments written after
    the listing (asked only when an alias object has no record). Only records count:
    an unsigned lease saying "a writer is busy" would let a store writer turn the
    failure into a note."""
    late_segments = [k for c in sorted(chains) for k in store.list_keys(layout.segments_prefix(c)) if k not in listed]
    aliases: set[str] = set()
    for _key, data in read_many(late_segments):
        try:
            for line in iter_lines(data):
                body = decode_record(split_line(line)[0]).body
                if isinstance(body, RegistryBody):
                    aliases.update(k for k in (body.alias_key, body.status_key) if k is not None)
        except RecordError:
            continue  # a bad segment is not evidence of a record
    return aliases


def _first(items: Iterable[str], n: int) -> Iterator[str]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item

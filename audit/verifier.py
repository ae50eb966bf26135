"""Streaming verifier of a whole audit store (docs/audit-format.md, "Verification").

It needs no secret and no service: only the store. For every chain it checks
each segment line (frame, schema, canonical bytes), the record hash, the
signature with the key valid at that sequence number, the link to the
previous record, contiguous sequence numbers from a genesis record, the
segment names; every checkpoint (signature, origin, root recomputed from the
records, consistency with the previous checkpoint, no checkpoint beyond the
end of the chain, the mandatory ones present); the request index in both
directions, each entry exactly canonical and pinning its segment's version; every
content-addressed object; and, on versioned backends, that no key has a
second version or a delete marker.

Failures carry a stable reason code (``REASONS``), the chain, sequence number
and store key where known, and a message; the first one is the answer to
"what is the first bad record and why".

Speed: Ed25519 verification dominates (~65-80 us a record with libsodium), so segments are
checked in a pool of worker processes when the store is large enough to repay
starting them; the sequential checks (links, sequence, key validity, Merkle
roots) stay in this process and are cheap.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import layout, merkle
from verdict.audit.canonical import CanonicalEncodingError
from verdict.audit.checkpoint import CheckpointError, open_checkpoint, parse_body
from verdict.audit.completeness import HeldReceipt, check_all, witnesses_of
from verdict.audit.index import (
    DuplicateMemberError,
    IndexEntry,
    IndexEntryError,
    NonCanonicalEntryError,
    decode_stored_entry,
)
from verdict.audit.records import (
    GENESIS_PREV_HASH,
    DecisionBody,
    EvidenceBody,
    GenesisBody,
    KeyDocument,
    KeyRotationBody,
    RecordError,
    RegistryBody,
    decode_record,
    iter_lines,
    record_bytes,
    split_line,
)
from verdict.audit.references import REFERENCE_NOTES, REFERENCE_REASONS, References, decision_refs
from verdict.audit.signing import (
    KeyDocumentError,
    check_key_document,
    decode_key_document,
    encode_key_document,
    verify_record_signature,
)
from verdict.audit.stores.base import ObjectMissing, ObjectVersion, WormStore
from verdict.audit.stores.registry import reads_are_local
from verdict.audit.trust import ChainAnchors, TrustError, TrustPolicy, load_anchors
from verdict.audit.walk import REPAIR_SEGMENTS, KeyTimeline

__all__ = ["REASONS", "ChainSummary", "Failure", "Finding", "VerificationReport", "verify_store"]

REASONS = {
    "parse_error": "a segment line or object is not well-formed",
    "bad_record": "a record does not match the verdict.audit/v1 schema",
    "not_canonical": "stored bytes differ from the canonical encoding of what they contain",
    "hash_mismatch": "a record's bytes no longer match the hash its signature and successor commit to",
    "bad_signature": "a record signature does not verify",
    "unknown_key": "a record is signed by a key id that is not published in the store",
    "key_not_valid_at_seq": "a published key signed a record outside its validity on the chain",
    "bad_key_document": "a published key document is malformed or inconsistent",
    "key_document_mismatch": "a key document in the chain differs from the published one",
    "broken_link": "prev_hash does not equal the previous record's hash",
    "seq_gap": "sequence numbers skip (a record or segment is missing)",
    "seq_overlap": "a sequence number appears twice (overlapping segments)",
    "seq_out_of_order": "records are out of order within a segment (swapped)",
    "segment_key_mismatch": "a segment's name is not the sequence number of its first record",
    "chain_mismatch": "a record names another chain than the one it is stored in",
    "bad_genesis": "the chain does not start with its genesis record, or has a second one",
    "bad_checkpoint": "a checkpoint is malformed, misnamed or for another origin",
    "bad_checkpoint_signature": "a checkpoint is not signed by the chain's key for that size",
    "checkpoint_root_mismatch": "a checkpoint's root differs from the root recomputed from the records",
    "checkpoint_inconsistent": "a checkpoint is not an append-only extension of the previous one",
    "chain_truncated": "a checkpoint covers more records than the chain holds",
    "checkpoint_missing": "a mandatory checkpoint (size 1, or right after a key rotation) is missing",
    "index_mismatch": "an index entry disagrees with the record it points at",
    "bad_index_entry": "an index entry is not JSON or does not match the entry schema (members, types)",
    "index_duplicate_member": "an index entry names a member twice",
    "index_not_canonical": "an index entry's bytes are not the canonical encoding of the entry",
    "index_version_mismatch": "an index entry's segment_version is not the segment's version (null on unversioned stores)",
    "index_missing": "a decision record has no index entry and no other record owns its request id",
    "content_hash_mismatch": "a content-addressed object does not hash to its name",
    "extra_version": "a key holds more than one object version (overwritten)",
    "delete_marker": "a key has a delete marker (deleted)",
    "unexpected_object": "an object in the audit layout that the format does not define",
    "bad_certificate": "a certificate is malformed, misnamed or its root signature does not verify",
    "untrusted_root": "a certificate is signed by a root that is not in the trust policy",
    "uncertified_chain": "a chain's genesis key or origin has no valid certificate at from_seq 0",
    "uncertified_key": "a key brought in by a key_rotation has no valid certificate for that chain and seq",
    "bad_cosignature": "a cosignature line by a policy witness does not verify",
    "below_witnessed_size": "the chain holds fewer records than a witnessed checkpoint (truncated)",
    "witnessed_root_mismatch": "the chain's root at a witnessed size differs (rewritten)",
    "bad_held_checkpoint": "a held checkpoint is malformed or not signed by the chain's certified key",
    "below_held_checkpoint": "the chain holds fewer records than a held checkpoint (truncated)",
    "held_checkpoint_mismatch": "the chain's root at a held checkpoint's size differs (rewritten)",
    "bad_receipt": "a receipt is malformed or its signature is not by the certified key at its seq",
    "receipt_missing": "the chain no longer holds the record a receipt names (truncated)",
    "receipt_mismatch": "the record at a receipt's seq has another hash (rewritten)",
    **REFERENCE_REASONS,  # missing_object, object_mismatch, unrecorded_alias (audit.references, §10 step 6a)
}
"""Stable failure reason codes (part of the format; tools may match on them)."""

NOTES = {
    "not_yet_checkpointed": "records after the last checkpoint (normal for a live chain)",
    "no_checkpoint": "a chain without any checkpoint yet",
    "superseded_duplicate": "a decision whose request id is owned by another record",
    "written_during_verification": "an object written by a live writer after the store was listed",
    "index_pending": "a decision at the uncheckpointed tail whose index entry is not written yet",
    "canary_objects": "throwaway objects of the immutability test under canary/ (not part of the trail)",
    "unused_certificate": "a valid certificate that no record relies on",
    "witness_unreachable": "a witness of the trust policy could not be asked what it cosigned",
    **REFERENCE_NOTES,
}
CANARY_PREFIX = "canary/"  # the immutability test's throwaway chains: tampered on purpose, never verified

_MAX_FAILURES = 1000
_PARALLEL_MIN_BYTES = 4 << 20  # below this, starting worker processes costs more than it saves
_CONSISTENCY_DIRECT_MAX = 4096
_READ_THREADS = 8
_TASK_BYTES = 128 << 10  # a worker task: about one 64-record segment, or many small ones


class Finding(msgspec.Struct, frozen=True, omit_defaults=True):
    reason: str
    message: str
    chain_id: str | None = None
    seq: int | None = None
    key: str | None = None


Failure = Finding


class ChainSummary(msgspec.Struct, frozen=True):
    chain_id: str
    records: int
    segments: int
    checkpoints: int
    last_checkpoint_size: int
    head_hash: str | None
    keys: list[str]


class VerificationReport(msgspec.Struct):
    ok: bool
    store: str
    records: int = 0
    segments: int = 0
    checkpoints: int = 0
    index_entries: int = 0
    content_objects: int = 0
    key_documents: int = 0
    objects: int = 0
    chains: list[ChainSummary] = []
    first_failure: Finding | None = None
    failures: list[Finding] = []
    failure_count: int = 0
    notes: list[Finding] = []
    elapsed: float = 0.0
    records_per_second: float = 0.0
    workers: int = 1
    anchored: bool = False
    """True when verified under a trust policy (spec §5b); False: any store writer could have forged it."""
    trust_roots: list[str] = []
    certificates: int = 0
    witnessed: dict[str, int] = {}
    """chain id -> the largest checkpoint size cosigned by a quorum of the policy's witnesses."""


ProgressFn = Callable[[str, int, int], None]
"""progress(phase, done, total): phase is "segments", "index" or "objects"."""


# --- per-segment scan (runs in worker processes) ----------------------------------------

# One tuple per line: (seq, chain_id, prev_hash, key_id, record_hash, kind,
# sig_state, problem, extra). sig_state: 1 valid, 0 invalid, -1 key not published.
# problem: (reason, message) when the line could not be checked. extra: genesis
# -> GenesisBody, key_rotation -> KeyDocument, decision -> (request_id, request_sha256,
# names of its objects: audit.references.decision_refs), evidence -> (object_key, sha256),
# registry -> RegistryBody.
_Scan = tuple

_worker_keys: dict[str, bytes] = {}


def _init_worker(raw_keys: dict[str, bytes]) -> None:
    global _worker_keys
    _worker_keys = raw_keys


def _scan_segments_in_worker(segments: list[bytes]) -> list[list[_Scan] | tuple[str, str]]:
    return [_scan_segment(data, _worker_keys) for data in segments]


def _scan_segment(data: bytes, keys: dict[str, bytes]) -> list[_Scan] | tuple[str, str]:
    try:
        lines = iter_lines(data)
    except RecordError as exc:
        return ("parse_error", str(exc))
    return [_scan_line(n, line, keys) for n, line in enumerate(lines, start=1)]


def _scan_line(line_no: int, line: bytes, keys: dict[str, bytes]) -> _Scan:
    try:
        raw, signature = split_line(line)
    except RecordError as exc:
        reason = "not_canonical" if _is_json_object(line) else "parse_error"
        return (None, None, None, None, None, None, 0, (reason, f"line {line_no}: {exc}"), None)
    digest = hashlib.sha256(raw).digest()
    try:
        record = decode_record(raw)
    except RecordError as exc:
        reason = "bad_record" if _is_json_object(raw) else "parse_error"
        return (None, None, None, None, digest, None, 0, (reason, f"line {line_no}: {exc}"), None)
    problem = None
    try:
        canonical = record_bytes(record) == raw
    except CanonicalEncodingError as exc:
        canonical = False
        problem = ("not_canonical", f"line {line_no}: record has no canonical form: {exc}")
    if not canonical and problem is None:
        problem = ("not_canonical", f"line {line_no}: record bytes are not in canonical form")
    key = keys.get(record.key_id)
    if key is None:
        sig_state = -1
    else:
        sig_state = 1 if verify_record_signature(key, digest, signature) else 0
    body = record.body
    kind = type(body).__struct_config__.tag
    if isinstance(body, DecisionBody):
        extra: Any = (
            body.request_id,
            body.request_sha256,
            decision_refs(
                body.model.name, body.model.version, body.model.sha256, body.environment_sha256, body.manifest_sha256
            ),
        )
    elif isinstance(body, EvidenceBody):
        extra = (body.object_key, body.sha256)
    elif isinstance(body, RegistryBody | GenesisBody):
        extra = body
    elif isinstance(body, KeyRotationBody):
        extra = body.new_key
    else:
        extra = None
    return (record.seq, record.chain_id, record.prev_hash, record.key_id, digest, kind, sig_state, problem, extra)


def _key_number(key: str) -> int:
    """The number a segment or cosigned-checkpoint key ends in; the listing admits only such keys."""
    number = layout.number_from_key(key)
    if number is None:
        raise ValueError(f"{key} does not end in a segment or checkpoint number")
    return number


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(msgspec.json.decode(data), dict)
    except msgspec.DecodeError:
        return False


# --- Merkle subtree cache (fast consistency proofs for long chains) ---------------------


def _consistency_proof(tree: merkle.MerkleTree, old_size: int, new_size: int) -> list[bytes]:
    # Small trees: the reference generator in audit.merkle (so that path runs too);
    # long chains: the cached tree, which gives the same proof in O(log^2 n).
    if new_size <= _CONSISTENCY_DIRECT_MAX:
        return merkle.consistency_proof(tree.leaves(new_size), old_size)
    return tree.consistency_proof(old_size, new_size)


# --- the verifier ------------------------------------------------------------------------


class _Verifier:
    def __init__(
        self,
        store: WormStore,
        progress: ProgressFn | None,
        workers: int | None,
        trust: TrustPolicy | None = None,
        held: Sequence[tuple[str, bytes]] = (),
        receipts: Sequence[tuple[str, HeldReceipt]] = (),
        ask_witnesses: bool = False,
    ) -> None:
        self.store = store
        self.ask_witnesses = ask_witnesses
        self.trust = trust
        self.held = list(held)
        self.receipts = list(receipts)
        self.certificate_keys: dict[str, list[str]] = {}  # chain id -> certificate objects
        self.anchors: dict[str, ChainAnchors] = {}
        self.checkers: dict[str, _ChainChecker] = {}
        self.cosigned: dict[str, list[str]] = {}
        self.progress = progress
        self.requested_workers = workers
        self.report = VerificationReport(ok=False, store=store.url)
        self.failures: list[Finding] = []
        self.failure_count = 0
        self.notes: list[Finding] = []
        self.published: dict[str, KeyDocument] = {}
        self.public_keys: dict[str, Ed25519PublicKey] = {}
        self.raw_keys: dict[str, bytes] = {}  # what the signature checks take
        # (chain_id, seq) -> [record_hash hex, request_id, request_sha256, segment_key, indexed?]
        self.decisions: dict[tuple[str, int], list[Any]] = {}
        self.index_owner: dict[str, IndexEntry] = {}
        self.unreadable_index: set[str] = set()  # index keys already failed as unreadable
        self.segment_versions: dict[str, str | None] = {}
        self.sizes: dict[str, int | None] = {}
        self.listed: set[str] = set()
        self.index_pending_from: dict[str, int] = {}
        self.references = References()  # objects the records name (§10 step 6a)

    # -- reporting

    def fail(
        self, reason: str, message: str, *, chain_id: str | None = None, seq: int | None = None, key: str | None = None
    ) -> None:
        assert reason in REASONS, reason
        self.failure_count += 1
        if len(self.failures) < _MAX_FAILURES:
            self.failures.append(Finding(reason, message, chain_id, seq, key))

    def note(
        self, reason: str, message: str, *, chain_id: str | None = None, seq: int | None = None, key: str | None = None
    ) -> None:
        if len(self.notes) < _MAX_FAILURES:
            self.notes.append(Finding(reason, message, chain_id, seq, key))

    def tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    # -- main

    def run(self) -> VerificationReport:
        started = time.perf_counter()
        versions = list(self.store.list_versions(""))
        canaries = {v.key for v in versions if v.key.startswith(CANARY_PREFIX)}
        if canaries:
            self.note(
                "canary_objects",
                f"{len(canaries)} throwaway objects of the immutability test under {CANARY_PREFIX} (not part of the trail)",
            )
        live = self.check_versions(v for v in versions if not v.key.startswith(CANARY_PREFIX))
        self.listed = set(live)
        self.report.objects = len(live)
        chains: dict[str, tuple[list[str], list[str]]] = {}
        index_keys: list[str] = []
        content_keys: list[str] = []
        key_docs: list[str] = []
        for key in live:
            if key.startswith(layout.CHAINS_PREFIX):
                parts = key.split("/")
                if (
                    len(parts) == 4
                    and parts[2] in ("segments", "checkpoints")
                    and layout.number_from_key(key) is not None
                ):
                    segs, cps = chains.setdefault(parts[1], ([], []))
                    (segs if parts[2] == "segments" else cps).append(key)
                elif len(parts) == 4 and parts[2] == "leases" and layout.number_from_key(key) is not None:
                    pass  # the writer's lease (audit-format §9a): coordination, not evidence
                elif len(parts) == 4 and parts[2] == "cosigned" and layout.number_from_key(key) is not None:
                    self.cosigned.setdefault(parts[1], []).append(key)
                else:
                    self.fail("unexpected_object", f"{key} is not a segment or checkpoint", key=key)
            elif key.startswith("trust/"):
                named = layout.parse_certificate_key(key)
                if named is None:
                    self.fail("unexpected_object", f"{key} is not a certificate name", key=key)
                else:
                    self.certificate_keys.setdefault(named[0], []).append(key)
            elif key.startswith(layout.INDEX_PREFIX):
                index_keys.append(key)
            elif key.startswith(layout.KEYS_PREFIX):
                key_docs.append(key)
            if layout.content_address(key) is not None:
                content_keys.append(key)
        self.load_keys(key_docs)
        self.load_certificates()
        self.verify_chains(chains)
        self.verify_index(index_keys)
        self.verify_content(content_keys)
        self.references.check(self.store, self.listed, self.prefetch, self.fail, self.note)
        self.verify_completeness()
        self.report.elapsed = round(time.perf_counter() - started, 6)
        if self.report.elapsed > 0:
            self.report.records_per_second = round(self.report.records / self.report.elapsed, 1)
        self.report.failures = self.failures
        self.report.failure_count = self.failure_count
        self.report.first_failure = self.failures[0] if self.failures else None
        self.report.notes = self.notes
        self.report.ok = self.failure_count == 0
        return self.report

    # -- versions (S3: overwritten or deleted keys)

    def check_versions(self, versions: Iterable[ObjectVersion]) -> list[str]:
        by_key: dict[str, list[ObjectVersion]] = {}
        for v in versions:
            by_key.setdefault(v.key, []).append(v)
        live: list[str] = []
        for key in sorted(by_key):
            kept = [v for v in by_key[key] if not v.is_delete_marker]
            markers = [v for v in by_key[key] if v.is_delete_marker]
            if markers:
                self.fail(
                    "delete_marker",
                    f"{key} has {len(markers)} delete marker(s): the object was deleted "
                    f"(versions {', '.join(str(v.version) for v in markers)})",
                    key=key,
                )
            if len(kept) > 1:
                self.fail(
                    "extra_version",
                    f"{key} has {len(kept)} versions ({', '.join(str(v.version) for v in kept)}): it was overwritten",
                    key=key,
                )
            latest = [v for v in by_key[key] if v.is_latest] or by_key[key][-1:]
            if not latest[0].is_delete_marker:
                live.append(key)
                self.segment_versions[key] = latest[0].version
                self.sizes[key] = latest[0].size
        return live

    # -- published keys

    def load_keys(self, keys: list[str]) -> None:
        for key in keys:
            key_id = layout.key_id_from_store_key(key)
            if key_id is None:
                self.fail("unexpected_object", f"{key} is not a key document name", key=key)
                continue
            try:
                data = self.store.get(key)
                doc = decode_key_document(data)
                if doc.key_id != key_id:
                    raise KeyDocumentError(f"holds the document of {doc.key_id}")
                public_key = check_key_document(doc)
                if encode_key_document(doc) != data:
                    raise KeyDocumentError("document is not in canonical form")
            except (KeyDocumentError, ObjectMissing) as exc:
                self.fail("bad_key_document", f"{key}: {exc}", key=key)
                continue
            self.published[key_id] = doc
            self.public_keys[key_id] = public_key
            self.raw_keys[key_id] = public_key.public_bytes_raw()
        self.report.key_documents = len(self.published)

    # -- trust (spec §5a, §8a)

    def load_certificates(self) -> None:
        if self.trust is None:
            return  # report.anchored stays False; the caller must say what that means
        self.report.anchored = True
        self.report.trust_roots = [root.key_id for root in self.trust.roots]
        for chain_id, keys in sorted(self.certificate_keys.items()):
            anchors = load_anchors(self.store, chain_id, self.trust, items=self.prefetch(sorted(keys)))
            for reason, key, message in anchors.problems:
                self.fail(reason, message, chain_id=chain_id, key=key)
            self.anchors[chain_id] = anchors
            self.report.certificates += len(keys) - len(anchors.problems)

    def anchors_of(self, chain_id: str) -> ChainAnchors | None:
        if self.trust is None:
            return None
        return self.anchors.setdefault(chain_id, ChainAnchors(chain_id))

    def verify_completeness(self) -> None:
        """Cosigned checkpoints, witnesses' and held checkpoints, receipts (spec §8a)."""
        facts: dict[str, Any] = dict(self.checkers)
        origins: dict[str, str] = {c.origin: cid for cid, c in self.checkers.items() if c.origin}
        for chain_id, anchors in self.anchors.items():
            for cert in anchors.unused():
                if chain_id not in self.checkers:
                    facts.setdefault(chain_id, _CertifiedOnly(chain_id, anchors))
                    origins.setdefault(cert.origin, chain_id)
                self.note(
                    "unused_certificate",
                    f"{cert.key.key_id} certified from seq {cert.from_seq} is used by no record",
                    chain_id=chain_id,
                    key=layout.certificate_key(chain_id, cert.from_seq, cert.key.key_id),
                )
        held = list(self.held)
        if self.ask_witnesses:
            held.extend(self.witnessed_by_witnesses(origins))
        for chain_id, keys in sorted(self.cosigned.items()):
            checker = self.checkers.get(chain_id)
            for key in sorted(keys):
                note = self.read(key)
                size = _key_number(key)
                plain = checker.checkpoints.get(size) if checker is not None else None
                if plain is not None and not note.startswith(plain[1]):
                    self.fail(
                        "bad_cosignature",
                        f"{key} is not checkpoint {size} with cosignatures added",
                        chain_id=chain_id,
                        key=key,
                    )
                    continue
                # Without its plain checkpoint (deleted with the tail) the cosigned note still
                # carries the log's signature: it is checked against the chain like a held one.
                witnesses, problem = witnesses_of(note, self.trust)
                if problem is not None:
                    self.fail(problem[0], f"{key}: {problem[1]}", chain_id=chain_id, key=key)
                if self.trust is not None and self.trust.witness_quorum and len(witnesses) >= self.trust.witness_quorum:
                    self.report.witnessed[chain_id] = max(self.report.witnessed.get(chain_id, 0), size)
                if plain is None or (
                    self.trust is not None and self.trust.witness_quorum and len(witnesses) >= self.trust.witness_quorum
                ):
                    held.append((key, note))
        for reason, message, about in check_all(facts, origins, held, self.receipts, self.trust):
            self.fail(reason, message, chain_id=about)

    def witnessed_by_witnesses(self, origins: dict[str, str]) -> list[tuple[str, bytes]]:
        """Each policy witness's latest cosigned checkpoint of each chain (spec §8a); an
        unreachable witness is a note: the store's own cosigned objects still count."""
        # lazy: an HTTP client only for a trust policy whose witnesses have URLs
        from verdict.audit.witness_client import WitnessClient, WitnessClientError

        found: list[tuple[str, bytes]] = []
        for entry in self.trust.witnesses if self.trust is not None else ():
            if not entry.url:
                continue
            client = WitnessClient(entry.url, entry.name, entry.vkey)
            for origin, chain_id in sorted(origins.items()):
                try:
                    note = client.fetch_latest(origin)
                except WitnessClientError as exc:
                    self.note("witness_unreachable", f"witness {entry.name}: {exc}", chain_id=chain_id)
                    break
                if note is not None:
                    found.append((f"witness {entry.name}", note))
        return found

    # -- chains

    def worker_count(self, total_bytes: int) -> int:
        if self.requested_workers is not None:
            return max(1, self.requested_workers)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return cpus if cpus > 1 and total_bytes >= _PARALLEL_MIN_BYTES else 1

    def verify_chains(self, chains: dict[str, tuple[list[str], list[str]]]) -> None:
        all_segments = [(chain_id, key) for chain_id in sorted(chains) for key in sorted(chains[chain_id][0])]
        sizes = self.segment_sizes([key for _, key in all_segments])
        workers = self.worker_count(sum(sizes.values()))
        self.report.workers = workers
        scans = self.scan_segments(all_segments, workers)
        total = len(all_segments)
        done = 0
        for chain_id in sorted(chains):
            seg_keys, cp_keys = chains[chain_id]
            checker = _ChainChecker(self, chain_id, sorted(cp_keys))
            self.checkers[chain_id] = checker
            for key in sorted(seg_keys):
                _, scan = next(scans)
                checker.segment(key, scan)
                done += 1
                self.tick("segments", done, total)
            self.report.chains.append(checker.finish())
            self.report.segments += len(seg_keys)
            self.report.checkpoints += len(cp_keys)

    def segment_sizes(self, keys: list[str]) -> dict[str, int]:
        return {key: self.sizes.get(key) or 0 for key in keys}

    def scan_segments(
        self, segments: list[tuple[str, str]], workers: int
    ) -> Iterator[tuple[str, list[_Scan] | tuple[str, str]]]:
        keys = [key for _, key in segments]
        if workers <= 1:
            for key, data in self.prefetch(keys):
                yield key, _scan_segment(data, self.raw_keys)
            return
        context = multiprocessing.get_context("fork")  # no re-import of __main__; workers only hash and verify
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(self.raw_keys,)
        ) as pool:
            submitted = (
                (chunk_keys, pool.submit(_scan_segments_in_worker, chunk))
                for chunk_keys, chunk in _task_chunks(self.prefetch(keys))
            )
            for chunk_keys, scans in _in_order(submitted, workers * 4):
                yield from zip(chunk_keys, scans, strict=True)  # one scan per segment of the chunk

    def prefetch(self, keys: list[str]) -> Iterator[tuple[str, bytes]]:
        """(key, bytes) in order, read by a few threads ahead (S3 latency); a missing
        object reads as b"" (the checks then name what is missing)."""
        if len(keys) <= 1 or reads_are_local(self.store.url):
            for key in keys:  # local files: reading ahead in threads only adds GIL contention
                yield key, self.read(key)
            return
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="audit-verify-read") as pool:
            yield from _in_order(((key, pool.submit(self.read, key)) for key in keys), _READ_THREADS * 4)

    def read(self, key: str) -> bytes:
        try:
            return self.store.get(key)
        except ObjectMissing:
            return b""

    # -- index

    def verify_index(self, keys: list[str]) -> None:
        total = len(keys)
        for done, (key, data) in enumerate(self.prefetch(keys), start=1):
            self.check_index_entry(key, data)
            if done % 256 == 0 or done == total:
                self.tick("index", done, total)
        self.report.index_entries = total
        for (chain_id, seq), info in self.decisions.items():
            if info[4]:
                continue
            owner = self.index_owner.get(info[1])
            if owner is not None:
                self.note(
                    "superseded_duplicate",
                    f"this decision for request {info[1]!r} was never delivered: the index names "
                    f"{owner.chain_id}/{owner.seq} (record {owner.record_hash[:16]}...) as the decision answered "
                    f"(a retry that raced on another writer process; one process never signs both)",
                    chain_id=chain_id,
                    seq=seq,
                )
            elif seq >= self.index_pending_from.get(chain_id, seq + 1):
                self.note(
                    "index_pending",
                    f"decision for request {info[1]!r} at the uncheckpointed tail has no index entry yet "
                    "(a writer's second round in flight, or repaired when the crashed writer restarts)",
                    chain_id=chain_id,
                    seq=seq,
                )
            elif layout.index_key(info[1]) in self.unreadable_index:
                continue  # its entry exists but could not be read: reported once, as that entry's failure
            elif layout.index_key(info[1]) not in self.listed and self.store.exists(layout.index_key(info[1])):
                self.note(
                    "written_during_verification",
                    f"the index entry of request {info[1]!r} appeared after the store was listed (live writer)",
                    chain_id=chain_id,
                    seq=seq,
                )
            else:
                self.fail(
                    "index_missing",
                    f"decision for request {info[1]!r} has no index entry ({layout.index_key(info[1])})",
                    chain_id=chain_id,
                    seq=seq,
                    key=info[3],
                )

    def check_index_entry(self, key: str, data: bytes) -> None:
        entry = self.read_index_entry(key, data)
        if entry is None:
            return
        if layout.index_key(entry.request_id) != key:
            self.fail("index_mismatch", f"{key} holds the entry of request {entry.request_id!r}", key=key)
            return
        info = self.decisions.get((entry.chain_id, entry.seq))
        where = f"{entry.chain_id}/{entry.seq}"
        if info is None and entry.segment_key not in self.listed and self.store.exists(entry.segment_key):
            self.note(
                "written_during_verification",
                f"{key} points at {entry.segment_key}, which appeared after the store was listed (live writer)",
                chain_id=entry.chain_id,
                seq=entry.seq,
                key=key,
            )
            return
        if info is None:
            self.fail(
                "index_mismatch",
                f"{key} (request {entry.request_id!r}) points at {where}, which is not a decision record",
                chain_id=entry.chain_id,
                seq=entry.seq,
                key=key,
            )
            return
        problems = []
        if info[0] != entry.record_hash:
            problems.append(f"record_hash {entry.record_hash} != {info[0]}")
        if info[1] != entry.request_id:
            problems.append(f"request_id {entry.request_id!r} != {info[1]!r}")
        if info[2] != entry.request_sha256:
            problems.append("request_sha256 differs")
        if info[3] != entry.segment_key:
            problems.append(f"segment_key {entry.segment_key} != {info[3]}")
        if problems:
            self.fail(
                "index_mismatch",
                f"{key} (request {entry.request_id!r}) disagrees with record {where}: {'; '.join(problems)}",
                chain_id=entry.chain_id,
                seq=entry.seq,
                key=key,
            )
            return
        self.check_segment_version(key, entry)
        info[4] = True
        self.index_owner[entry.request_id] = entry

    def read_index_entry(self, key: str, data: bytes) -> IndexEntry | None:
        """Strict read (§7); a format failure is reported with its own reason. An
        entry that could still be read is returned, so where it points is checked
        too and its decision is not reported a second time as unindexed."""
        try:
            return decode_stored_entry(data)
        except IndexEntryError as exc:
            self.fail(_index_format_reason(exc), f"{key}: {exc}", key=key)
            if exc.entry is None:
                self.unreadable_index.add(key)
            return exc.entry

    def check_segment_version(self, key: str, entry: IndexEntry) -> None:
        """The entry pins the version the segment was listed with: its S3 VersionId
        on versioned stores, null (None) on unversioned ones such as the filesystem."""
        listed = self.segment_versions.get(entry.segment_key)
        if entry.segment_version != listed:
            expected = "null (unversioned store)" if listed is None else repr(listed)
            self.fail(
                "index_version_mismatch",
                f"{key} (request {entry.request_id!r}) has segment_version {entry.segment_version!r}; "
                f"{entry.segment_key} is at version {expected}",
                chain_id=entry.chain_id,
                seq=entry.seq,
                key=key,
            )

    # -- content-addressed objects

    def verify_content(self, keys: list[str]) -> None:
        total = len(keys)
        for done, (key, data) in enumerate(self.prefetch(keys), start=1):
            want = layout.content_address(key)
            digest = hashlib.sha256(data)
            if digest.hexdigest() != want:
                self.fail("content_hash_mismatch", f"{key} hashes to {digest.hexdigest()}", key=key)
            self.tick("objects", done, total)
        self.report.content_objects = total


class _ChainChecker:
    """Sequential checks of one chain, fed segment by segment in order."""

    def __init__(self, v: _Verifier, chain_id: str, checkpoint_keys: list[str]) -> None:
        self.v = v
        self.chain_id = chain_id
        self.expected = 0  # next sequence number
        self.prev_hash: str | None = None  # hex hash of the previous record
        self.tree = merkle.MerkleTree()
        self.acc = merkle.MerkleAccumulator()
        self.records = 0
        self.segments = 0
        self.timeline = KeyTimeline()  # the chain's origin and keys, by audit.walk's rules
        self.genesis_seen = False
        self.suspect: tuple[int, str, str] | None = None  # (seq, hash, key) with a bad signature
        self.link_explained = False  # the next broken link is the suspect's alteration
        self.segment_firsts: list[int] = []
        self.checkpoints: dict[int, tuple[str, bytes]] = {}  # size -> (key, note)
        self.checkpoint_keys = set(checkpoint_keys)  # listed, whether or not they parse
        self.roots: dict[int, bytes] = {}
        self.anchors = v.anchors_of(chain_id)
        for key in checkpoint_keys:
            self.load_checkpoint(key)

    def fail(self, reason: str, message: str, *, seq: int | None = None, key: str | None = None) -> None:
        self.v.fail(reason, message, chain_id=self.chain_id, seq=seq, key=key)

    def load_checkpoint(self, key: str) -> None:
        note = self.v.read(key)
        split = note.rfind(b"\n\n")
        try:
            if split < 0:
                raise CheckpointError("no blank line between text and signatures")
            cp = parse_body(note[: split + 1])
        except CheckpointError as exc:
            self.fail("bad_checkpoint", f"{key}: {exc}", key=key)
            return
        if layout.number_from_key(key) != cp.size:
            self.fail("bad_checkpoint", f"{key} holds a checkpoint of size {cp.size}", key=key)
            return
        self.checkpoints[cp.size] = (key, note)

    # -- records

    def segment(self, key: str, scan: list[_Scan] | tuple[str, str]) -> None:
        self.segments += 1
        if isinstance(scan, tuple):
            self.fail(scan[0], f"{key}: {scan[1]}", key=key)
            return
        first = _key_number(key)
        self.segment_firsts.append(first)
        seqs = [s[0] for s in scan if s[0] is not None]
        if seqs and seqs[0] != first:
            self.fail("segment_key_mismatch", f"{key} starts with record {seqs[0]}", seq=seqs[0], key=key)
        out_of_order = bool(seqs) and sorted(seqs) == list(range(seqs[0], seqs[0] + len(seqs))) and seqs != sorted(seqs)
        for item in scan:
            self.record(key, item, out_of_order)

    def record(self, key: str, item: _Scan, out_of_order: bool) -> None:
        seq, chain_id, prev_hash, key_id, digest, kind, sig_state, problem, extra = item
        if seq is None:
            assert problem is not None
            self.fail(problem[0], f"{key}: {problem[1]}", seq=self.expected, key=key)
            if digest is not None:
                self.add_leaf(digest)
            return
        self.records += 1
        self.v.report.records += 1
        record_hash = digest.hex()
        # sequence
        if seq != self.expected:
            if out_of_order:
                self.fail(
                    "seq_out_of_order",
                    f"record {seq} is stored where record {self.expected} belongs (records swapped)",
                    seq=seq,
                    key=key,
                )
            elif seq > self.expected:
                missing = (
                    f"record {self.expected}" if seq == self.expected + 1 else f"records {self.expected}..{seq - 1}"
                )
                self.fail("seq_gap", f"{missing} missing: found record {seq} next", seq=self.expected, key=key)
            else:
                self.fail("seq_overlap", f"record {seq} appears again (expected {self.expected})", seq=seq, key=key)
            self.resolve_suspect(None)
        else:
            self.resolve_suspect(prev_hash)
            if seq == 0:
                if prev_hash != GENESIS_PREV_HASH:
                    self.fail("broken_link", "genesis record's prev_hash is not 64 zeros", seq=seq, key=key)
            elif self.prev_hash is not None and prev_hash != self.prev_hash and not self.link_explained:
                self.fail(
                    "broken_link",
                    f"record {seq}: prev_hash {prev_hash} != hash of record {seq - 1} ({self.prev_hash})",
                    seq=seq,
                    key=key,
                )
        self.link_explained = False
        if problem is not None:
            self.fail(problem[0], f"{key}: record {seq}: {problem[1]}", seq=seq, key=key)
        if chain_id != self.chain_id:
            self.fail("chain_mismatch", f"record {seq} names chain {chain_id!r}", seq=seq, key=key)
        # genesis and keys
        if kind == "genesis":
            self.genesis(seq, key_id, extra, key)
        elif seq == 0:
            self.fail("bad_genesis", f"record 0 is a {kind} record, not genesis", seq=seq, key=key)
        self.check_key(seq, key_id, record_hash, sig_state, key)
        if kind == "key_rotation":
            self.rotation(seq, extra, key)
        elif kind == "decision":
            request_id, request_sha256, refs = extra
            self.v.decisions[(self.chain_id, seq)] = [record_hash, request_id, request_sha256, key, False]
            self.v.references.decision(self.chain_id, seq, key, refs)
        elif kind == "evidence":
            self.v.references.evidence_record(self.chain_id, seq, key, extra)
        elif kind == "registry":
            self.v.references.registry_record(self.chain_id, seq, key, extra)
        self.add_leaf(digest)
        self.prev_hash = record_hash
        self.expected = seq + 1

    def add_leaf(self, digest: bytes) -> None:
        leaf = merkle.leaf_hash(digest)
        self.acc.append(leaf)
        self.tree.append(leaf)
        if self.acc.size in self.checkpoints:
            self.roots[self.acc.size] = self.acc.root()

    def genesis(self, seq: int, key_id: str, body: GenesisBody, key: str) -> None:
        if seq != 0 or self.genesis_seen:
            self.fail("bad_genesis", f"record {seq} is a second genesis record", seq=seq, key=key)
            return
        self.genesis_seen = True
        if body.chain_id != self.chain_id:
            self.fail("bad_genesis", f"genesis names chain {body.chain_id!r}", seq=seq, key=key)
        if body.public_key.key_id != key_id:
            self.fail(
                "bad_genesis",
                f"genesis announces key {body.public_key.key_id} but is signed by {key_id}",
                seq=seq,
                key=key,
            )
        self.compare_document(seq, body.public_key, key)
        self.anchor(0, body.public_key, body.origin, seq, key)
        self.timeline.genesis(body)

    def rotation(self, seq: int, doc: KeyDocument, key: str) -> None:
        self.compare_document(seq, doc, key)
        self.anchor(seq + 1, doc, None, seq, key)
        self.timeline.rotation(seq, doc)

    @property
    def origin(self) -> str | None:
        return self.timeline.origin

    def anchor(self, from_seq: int, doc: KeyDocument, origin: str | None, seq: int, key: str) -> None:
        """The root must have certified this key on this chain from ``from_seq`` (§5a)."""
        if self.anchors is None:
            return
        try:
            self.anchors.check_key(from_seq, doc, origin)
        except TrustError as exc:
            self.fail(exc.reason, exc.message, seq=seq, key=key)

    # -- audit.completeness.ChainLeaves (what held checkpoints and receipts are checked against)

    @property
    def size(self) -> int:
        return self.tree.size

    def root_at(self, size: int) -> bytes:
        return self.tree.subtree_root(0, size)

    def leaf_at(self, seq: int) -> bytes:
        return bytes(self.tree.levels[0][seq * 32 : seq * 32 + 32])

    def signing_key(self, size: int) -> tuple[str, Ed25519PublicKey] | None:
        if self.anchors is not None and size > self.tree.size:
            # Beyond the records that are left (a truncated chain), the chain cannot say which key
            # signed: the root's certificates can, including one for a rotation that was cut off.
            return _CertifiedOnly(self.chain_id, self.anchors).signing_key(size)
        if self.anchors is not None:
            return self.timeline.signer(size, self.anchors)
        key_id = self.key_at(size)
        if key_id is None:
            return None
        public_key = self.v.public_keys.get(key_id)
        return (key_id, public_key) if public_key is not None else None

    def compare_document(self, seq: int, doc: KeyDocument, key: str) -> None:
        published = self.v.published.get(doc.key_id)
        if published is None:
            self.fail(
                "unknown_key", f"record {seq} announces key {doc.key_id}, which is not published", seq=seq, key=key
            )
        elif published != doc:
            self.fail(
                "key_document_mismatch",
                f"record {seq}: the document of {doc.key_id} differs from the published one",
                seq=seq,
                key=key,
            )

    def check_key(self, seq: int, key_id: str, record_hash: str, sig_state: int, key: str) -> None:
        if sig_state == -1:
            self.fail("unknown_key", f"record {seq} is signed by {key_id}, which is not published", seq=seq, key=key)
            return
        expected = self.key_at(seq)
        if expected is not None and key_id != expected:
            self.fail(
                "key_not_valid_at_seq",
                f"record {seq} is signed by {key_id}; the chain's key at seq {seq} is {expected}",
                seq=seq,
                key=key,
            )
        if sig_state == 0:
            # Altered record or forged signature? Decided by the next record's prev_hash.
            self.suspect = (seq, record_hash, key)

    def resolve_suspect(self, next_prev_hash: str | None) -> None:
        if self.suspect is None:
            return
        seq, record_hash, key = self.suspect
        self.suspect = None
        if next_prev_hash is not None and next_prev_hash != record_hash:
            self.fail(
                "hash_mismatch",
                f"record {seq} was altered: its bytes match neither its signature nor record {seq + 1}'s prev_hash",
                seq=seq,
                key=key,
            )
            self.link_explained = True
        else:
            self.fail(
                "bad_signature", f"record {seq}: signature does not verify with {self.key_at(seq)}", seq=seq, key=key
            )

    def key_at(self, size: int) -> str | None:
        """The key that signs record ``size`` (= the chain's key after ``size`` records)."""
        return self.timeline.key_at(size)

    # -- end of chain: checkpoints

    def finish(self) -> ChainSummary:
        self.resolve_suspect(None)
        if not self.genesis_seen and self.records:
            self.fail("bad_genesis", "chain has no genesis record", seq=0)
        size = self.acc.size
        verified: list[tuple[int, bytes]] = []
        for cp_size in sorted(self.checkpoints):
            key, note = self.checkpoints[cp_size]
            if cp_size > size and self.appeared_later(layout.segment_key(self.chain_id, size)):
                self.v.note(
                    "written_during_verification",
                    f"checkpoint {cp_size} covers records written after the store was listed (live writer)",
                    chain_id=self.chain_id,
                    key=key,
                )
                continue
            if cp_size > size:
                self.fail(
                    "chain_truncated",
                    f"chain truncated: checkpoint at size {cp_size} but only {size} records",
                    seq=size,
                    key=key,
                )
            root = self.open(cp_size, key, note)
            if root is None:
                continue
            if cp_size <= size and root != self.roots.get(cp_size):
                self.fail(
                    "checkpoint_root_mismatch",
                    f"checkpoint {cp_size} has root {root.hex()}, the records give {self.roots.get(cp_size, b'').hex()}",
                    seq=cp_size - 1 if cp_size else None,
                    key=key,
                )
            verified.append((cp_size, root))
        for (size1, root1), (size2, root2) in pairwise(verified):
            if size2 > size:
                break
            try:
                proof = _consistency_proof(self.tree, size1, size2)
                merkle.verify_consistency(size1, size2, proof, root1, root2)
            except merkle.ProofError as exc:
                # With the proof built from the stored records, a failure means one of the
                # two roots disagrees with them. If the newer checkpoint matches the records,
                # two validly signed tree heads contradict each other: the chain was rewritten
                # after the older one was signed (a fork). If the newer one does not match,
                # that is already reported as its checkpoint_root_mismatch.
                if root2 == self.roots.get(size2):
                    self.fail(
                        "checkpoint_inconsistent",
                        f"checkpoint {size2} does not extend checkpoint {size1}: records before size {size1} "
                        f"were rewritten after checkpoint {size1} was signed ({exc})",
                        seq=size1,
                        key=self.checkpoints[size2][0],
                    )
        self.check_mandatory_checkpoints(size)
        last = max(self.checkpoints, default=0)
        # The writer writes index entries after its segment and before the checkpoint
        # covering it; a crash can cut off at most the last REPAIR_SEGMENTS segments'
        # entries, which its recovery re-writes. Missing entries there, past the last
        # checkpoint, are pending, not missing.
        tail = self.segment_firsts[-REPAIR_SEGMENTS:]
        self.v.index_pending_from[self.chain_id] = max(tail[0] if tail else 0, min(last, size))
        if not self.checkpoints and size:
            self.v.note("no_checkpoint", f"{size} records, no checkpoint yet", chain_id=self.chain_id)
        elif size > last:
            self.v.note(
                "not_yet_checkpointed",
                f"records {last}..{size - 1} are not yet in a checkpoint",
                chain_id=self.chain_id,
                seq=last,
            )
        return ChainSummary(
            chain_id=self.chain_id,
            records=self.records,
            segments=self.segments,
            checkpoints=len(self.checkpoints),
            last_checkpoint_size=last,
            head_hash=self.prev_hash,
            keys=[k for _, k in self.timeline.ids()],
        )

    def mandatory_checkpoints(self) -> dict[int, str]:
        """Sizes every writer version checkpoints before it appends anything else
        (§8): 1 after genesis, r + 1 after the key_rotation record at seq r."""
        if not self.genesis_seen:
            return {}
        sizes = {1: "after the genesis record"}
        for first, _ in self.timeline.entries[1:]:  # (r + 1, new key) per rotation at seq r
            sizes[first] = f"after the key_rotation record at seq {first - 1}"
        return sizes

    def check_mandatory_checkpoints(self, size: int) -> None:
        """A mandatory checkpoint may be absent only while no record follows it (a
        crash before it was written; recovery writes it before appending)."""
        for cp_size, why in self.mandatory_checkpoints().items():
            key = layout.checkpoint_key(self.chain_id, cp_size)
            if cp_size >= size or key in self.checkpoint_keys:
                continue
            if self.appeared_later(key):
                self.v.note(
                    "written_during_verification",
                    f"checkpoint {cp_size} appeared after the store was listed (live writer)",
                    chain_id=self.chain_id,
                    key=key,
                )
                continue
            self.fail(
                "checkpoint_missing",
                f"mandatory checkpoint {cp_size} ({why}) is missing, but the chain holds {size} records",
                seq=cp_size - 1,
                key=key,
            )

    def appeared_later(self, key: str) -> bool:
        return key not in self.v.listed and self.v.store.exists(key)

    def open(self, cp_size: int, key: str, note: bytes) -> bytes | None:
        signer = self.signing_key(cp_size)
        if signer is None:
            self.fail("bad_checkpoint_signature", f"{key}: no trusted key is valid for size {cp_size}", key=key)
            return None
        key_id, public_key = signer
        try:
            verified = open_checkpoint(note, {key_id: public_key})
        except CheckpointError as exc:
            self.fail("bad_checkpoint_signature", f"{key}: {exc} (expected a signature by {key_id})", key=key)
            return None
        if verified.checkpoint.origin != self.origin:
            self.fail(
                "bad_checkpoint",
                f"{key}: origin {verified.checkpoint.origin!r}, the chain's is {self.origin!r}",
                key=key,
            )
            return None
        return verified.checkpoint.root


def _index_format_reason(exc: IndexEntryError) -> str:
    if isinstance(exc, DuplicateMemberError):
        return "index_duplicate_member"
    if isinstance(exc, NonCanonicalEntryError):
        return "index_not_canonical"
    return "bad_index_entry"


def _task_chunks(segments: Iterable[tuple[str, bytes]]) -> Iterator[tuple[list[str], list[bytes]]]:
    """Consecutive segments grouped into worker tasks of about _TASK_BYTES, so a
    chain of one-record segments does not cost one process round trip a record."""
    keys: list[str] = []
    blobs: list[bytes] = []
    size = 0
    for key, data in segments:
        keys.append(key)
        blobs.append(data)
        size += len(data)
        if size >= _TASK_BYTES:
            yield keys, blobs
            keys, blobs, size = [], [], 0
    if keys:
        yield keys, blobs


def _in_order(submitted: Iterator[tuple[Any, Future[Any]]], depth: int) -> Iterator[tuple[Any, Any]]:
    """Results of submitted work in submission order, keeping at most ``depth``
    in flight: work runs ahead of the consumer without holding the whole store."""
    window: deque[tuple[Any, Future[Any]]] = deque()
    for item in submitted:
        window.append(item)
        if len(window) >= depth:
            key, future = window.popleft()
            yield key, future.result()
    while window:
        key, future = window.popleft()
        yield key, future.result()


class _CertifiedOnly:
    """ChainFacts of a chain the root certified but whose records are all gone."""

    def __init__(self, chain_id: str, anchors: ChainAnchors) -> None:
        self.chain_id = chain_id
        self.anchors = anchors
        first = anchors.certificate_at(0)
        self.origin = first.origin if first is not None else None
        self.size = 0

    def root_at(self, size: int) -> bytes:
        return merkle.EMPTY_ROOT

    def leaf_at(self, seq: int) -> bytes:
        """A chain whose records are all gone has no leaf at any seq (size is 0, so
        check_receipt reports receipt_missing before it would ask)."""
        raise IndexError(f"chain {self.chain_id} holds no records, so no record {seq}")

    def signing_key(self, size: int) -> tuple[str, Ed25519PublicKey] | None:
        cert = self.anchors.latest_at(size)
        if cert is None:
            return None
        return cert.key.key_id, Ed25519PublicKey.from_public_bytes(
            self.anchors.public_key(cert.from_seq, cert.key.key_id)
        )


def verify_store(
    store: WormStore,
    *,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    trust: TrustPolicy | None = None,
    held_checkpoints: Sequence[tuple[str, bytes]] = (),
    receipts: Sequence[tuple[str, HeldReceipt]] = (),
    ask_witnesses: bool = False,
) -> VerificationReport:
    """Verify every chain, checkpoint, index entry and content-addressed object in
    ``store``. ``workers``: processes for signature checks (None: automatic).

    ``trust``: the trust policy (spec §5b). Without one the report is
    *unanchored* (``report.anchored`` False): keys are
    then trusted because they are in the store, which a store writer controls;
    callers must say so (the CLI refuses unless asked for ``--unanchored``).
    ``held_checkpoints`` and ``receipts``: statements kept outside the store,
    as ``(where, note or receipt)`` (spec §8a). ``ask_witnesses``: also ask
    each policy witness with a ``url`` for the latest checkpoint it cosigned.
    """
    return _Verifier(store, progress, workers, trust, held_checkpoints, receipts, ask_witnesses).run()

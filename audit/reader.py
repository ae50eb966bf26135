"""Fetch one decision by request id and prove it: signature, key validity,
chain position and inclusion in the latest signed checkpoint.

Used for GDPR / adverse-action lookups, replay, and ``verdict audit show``.
Every failure raises :class:`ReadError` with a stable ``reason`` code (the
verifier's codes, see audit.verifier.REASONS, plus ``not_found`` and
``not_checkpointed``).

Cost: the inclusion proof is computed from the chain's record hashes up to the
checkpoint, so a lookup reads the chain's segments once (hashing only, no
signature checks) -- O(chain length). A Merkle tile cache would make it
O(log n); not needed at the current scale.
"""

from __future__ import annotations

import base64
import hashlib

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import layout, merkle
from verdict.audit.canonical import CanonicalEncodingError
from verdict.audit.chain import Receipt
from verdict.audit.chain_leaves import ChainLeaves, LeafCache, LeafReadError
from verdict.audit.checkpoint import CheckpointError
from verdict.audit.index import IndexEntry, RequestIndex
from verdict.audit.records import (
    DecisionBody,
    Record,
    RecordError,
    decode_record,
    iter_lines,
    record_bytes,
    split_line,
)
from verdict.audit.signing import KeyDocumentError, check_key_document, decode_key_document, verify_record_signature
from verdict.audit.stores.base import ObjectMissing, WormStore
from verdict.audit.trust import ChainAnchors, TrustError, TrustPolicy, load_anchors
from verdict.audit.walk import open_chain_checkpoint

__all__ = ["InclusionProof", "ReadError", "VerifiedDecision", "read_decision"]


class ReadError(Exception):
    """The decision cannot be shown as verified; ``reason`` says why (stable code)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class InclusionProof(msgspec.Struct, frozen=True):
    """RFC 6962 inclusion of leaf ``leaf_index`` in the tree of a signed checkpoint."""

    leaf_index: int
    tree_size: int
    root: str
    """hex"""
    hashes: list[str]
    """hex, leaf side first"""
    checkpoint_key: str
    checkpoint_note: str
    """The signed note, verbatim."""
    signed_by: list[str]


class VerifiedDecision(msgspec.Struct, frozen=True):
    record: Record
    record_hash: str
    signature: str
    """base64"""
    key_id: str
    chain_id: str
    seq: int
    segment_key: str
    segment_version: str | None
    index_entry: IndexEntry
    inclusion: InclusionProof | None
    """None when no checkpoint covers the record yet (it is signed and chained,
    but not yet in a signed tree head)."""

    @property
    def body(self) -> DecisionBody:
        assert isinstance(self.record.body, DecisionBody)
        return self.record.body

    def receipt(self) -> Receipt:
        """The receipt the writer returned for this record (for idempotent replies)."""
        return Receipt(
            chain_id=self.chain_id,
            seq=self.seq,
            record_hash=self.record_hash,
            signature=self.signature,
            key_id=self.key_id,
            segment_key=self.segment_key,
            segment_version=self.segment_version,
        )


def read_decision(
    store: WormStore,
    request_id: str,
    *,
    require_checkpoint: bool = False,
    prove: bool = True,
    trust: TrustPolicy | None = None,
    leaves: LeafCache | None = None,
) -> VerifiedDecision:
    """Return the verified decision for ``request_id`` or raise ReadError.

    Always checked: index entry, record hash, canonical form, that it is the
    named decision, and its signature with the published key. With ``prove``
    (default) also the key's validity at that seq and an inclusion proof in the
    latest checkpoint, which reads the chain (O(chain length) hashing); the
    gateway's idempotent replay of a receipt can pass ``prove=False``.

    With ``trust`` (spec §5b) keys come from the root's certificates, never
    from the store: the signing key must be certified for the chain from a
    seq at or before the record's, and with ``prove`` the whole key timeline
    up to the checkpoint must be anchored (``uncertified_chain``,
    ``uncertified_key``). Without it the published key is used (unanchored).

    ``leaves``: a reader's kept leaf hashes (audit.chain_leaves), so that repeated
    lookups read only the segments written since the last one.
    """
    entry = RequestIndex(store).get(request_id)
    if entry is None:
        raise ReadError("not_found", f"no decision with request id {request_id!r} in {store.url}")
    try:
        segment = store.get(entry.segment_key, entry.segment_version)
    except ObjectMissing:
        raise ReadError("index_mismatch", f"index entry points at {entry.segment_key}, which is missing") from None
    first = layout.number_from_key(entry.segment_key)
    raw, signature = _line_at(segment, entry, first)
    digest = hashlib.sha256(raw).digest()
    if digest.hex() != entry.record_hash:
        raise ReadError(
            "hash_mismatch",
            f"record {entry.chain_id}/{entry.seq} hashes to {digest.hex()}, the index says {entry.record_hash}",
        )
    try:
        record = decode_record(raw)
    except RecordError as exc:
        raise ReadError("bad_record", f"record {entry.chain_id}/{entry.seq}: {exc}") from None
    try:
        canonical = record_bytes(record) == raw
    except CanonicalEncodingError:
        canonical = False
    if not canonical:
        raise ReadError("not_canonical", f"record {entry.chain_id}/{entry.seq} is not in canonical form")
    body = record.body
    if (
        not isinstance(body, DecisionBody)
        or body.request_id != request_id
        or record.seq != entry.seq
        or record.chain_id != entry.chain_id
        or body.request_sha256 != entry.request_sha256
    ):
        raise ReadError("index_mismatch", f"record {entry.chain_id}/{entry.seq} is not the decision the index names")
    anchors = load_anchors(store, entry.chain_id, trust) if trust is not None else None
    if anchors is not None:
        public_key = _certified_key(anchors, record.key_id, entry.seq)
    else:
        public_key = _published_key(store, record.key_id)
    if not verify_record_signature(public_key, digest, signature):
        raise ReadError(
            "bad_signature", f"record {entry.chain_id}/{entry.seq}: signature does not verify with {record.key_id}"
        )
    view = _ChainView(store, entry.chain_id, anchors, leaves)
    inclusion = view.prove(entry.seq, digest, record.key_id) if prove else None
    if inclusion is None and require_checkpoint:
        raise ReadError("not_checkpointed", f"record {entry.chain_id}/{entry.seq} is not yet covered by a checkpoint")
    return VerifiedDecision(
        record=record,
        record_hash=digest.hex(),
        signature=base64.b64encode(signature).decode("ascii"),
        key_id=record.key_id,
        chain_id=entry.chain_id,
        seq=entry.seq,
        segment_key=entry.segment_key,
        segment_version=entry.segment_version,
        index_entry=entry,
        inclusion=inclusion,
    )


def _line_at(segment: bytes, entry: IndexEntry, first: int | None) -> tuple[bytes, bytes]:
    try:
        lines = iter_lines(segment)
    except RecordError as exc:
        raise ReadError("parse_error", f"{entry.segment_key}: {exc}") from None
    position = entry.seq - (first if first is not None else -1)
    if first is None or not 0 <= position < len(lines):
        raise ReadError("index_mismatch", f"{entry.segment_key} does not hold record {entry.seq}")
    try:
        return split_line(lines[position])
    except RecordError as exc:
        raise ReadError("parse_error", f"{entry.segment_key} line {position + 1}: {exc}") from None


def _certified_key(anchors: ChainAnchors, key_id: str, seq: int) -> Ed25519PublicKey:
    """The root-certified public key of ``key_id`` on the chain, valid from a seq at or before ``seq``."""
    cert = anchors.for_key(key_id, seq)
    if cert is None:
        reason = "uncertified_chain" if anchors.certificate_at(0) is None else "uncertified_key"
        raise ReadError(
            reason,
            f"record {anchors.chain_id}/{seq} is signed by {key_id}, which the trust root has "
            "not certified for this chain at that seq",
        )
    return Ed25519PublicKey.from_public_bytes(anchors.public_key(cert.from_seq, key_id))


def _published_key(store: WormStore, key_id: str):  # noqa: ANN202 - Ed25519PublicKey
    try:
        doc = decode_key_document(store.get(layout.public_key_key(key_id)))
        if doc.key_id != key_id:
            raise KeyDocumentError(f"document names {doc.key_id}")
        return check_key_document(doc)
    except ObjectMissing:
        raise ReadError("unknown_key", f"signing key {key_id} is not published in {store.url}") from None
    except KeyDocumentError as exc:
        raise ReadError("bad_key_document", f"published key {key_id}: {exc}") from None


class _ChainView:
    """The leaf hashes and key history of a chain, read up to its latest checkpoint (kept
    between calls when the caller passes a :class:`~verdict.audit.chain_leaves.LeafCache`)."""

    def __init__(
        self, store: WormStore, chain_id: str, anchors: ChainAnchors | None = None, cache: LeafCache | None = None
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.anchors = anchors
        self.leaves = cache.chain(chain_id) if cache is not None else ChainLeaves(store, chain_id)

    def prove(self, seq: int, record_hash: bytes, key_id: str) -> InclusionProof | None:
        with self.leaves.lock:
            return self._prove(seq, record_hash, key_id)

    def _prove(self, seq: int, record_hash: bytes, key_id: str) -> InclusionProof | None:
        checkpoints = sorted(self.store.list_keys(layout.checkpoints_prefix(self.chain_id)))
        sizes = [(n, k) for k in checkpoints if (n := layout.number_from_key(k)) is not None]
        size, cp_key = max(sizes, default=(0, ""))
        try:
            self.leaves.read(max(size, seq + 1))
        except LeafReadError as exc:
            raise ReadError("parse_error", str(exc)) from None
        tree, timeline = self.leaves.tree, self.leaves.timeline
        if self.anchors is not None:
            try:
                timeline.check_anchored(self.anchors)
            except TrustError as exc:
                raise ReadError(exc.reason, exc.message) from None
        if tree.size <= seq or tree.leaf(seq) != merkle.leaf_hash(record_hash):
            raise ReadError("hash_mismatch", f"chain {self.chain_id} does not hold this record at seq {seq}")
        if timeline.key_at(seq) != key_id:
            raise ReadError(
                "key_not_valid_at_seq",
                f"record {self.chain_id}/{seq} is signed by {key_id}, not the chain's key at that seq",
            )
        if size <= seq:
            return None
        if tree.size < size:
            raise ReadError(
                "chain_truncated", f"checkpoint {cp_key} covers {size} records, the chain holds {tree.size}"
            )
        note = self.store.get(cp_key)
        try:
            verified = open_chain_checkpoint(
                note, size, timeline, self.anchors, lambda key_id: _published_key(self.store, key_id)
            )
        except CheckpointError as exc:
            raise ReadError("bad_checkpoint_signature", f"{cp_key}: {exc}") from None
        if verified.checkpoint.size != size:
            raise ReadError("bad_checkpoint", f"{cp_key} holds a checkpoint of size {verified.checkpoint.size}")
        proof = tree.inclusion_proof(seq, size)
        try:
            merkle.verify_inclusion(merkle.leaf_hash(record_hash), seq, size, proof, verified.checkpoint.root)
        except merkle.ProofError as exc:
            raise ReadError(
                "checkpoint_root_mismatch", f"record {self.chain_id}/{seq} is not in checkpoint {size}: {exc}"
            ) from None
        return InclusionProof(
            leaf_index=seq,
            tree_size=size,
            root=verified.checkpoint.root.hex(),
            hashes=[h.hex() for h in proof],
            checkpoint_key=cp_key,
            checkpoint_note=note.decode("utf-8"),
            signed_by=list(verified.signed_by),
        )

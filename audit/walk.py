"""Walking a chain from genesis: the key timeline and the checkpoint it signs (spec §5, §8).

Why one module: four readers walk chains (the writer's recovery, the
verifier, the reader behind lookups, and replay's batch scan). Each used to
carry its own copy of "which key signs record s", "where does the origin come
from", "which key must have signed a checkpoint of size n" and, now, "is that
key certified by the trust root". Those rules live here once; the readers
differ only in what else they check and how fast they must be.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit.checkpoint import VerifiedCheckpoint, open_checkpoint
from verdict.audit.records import GenesisBody, KeyDocument, KeyRotationBody, decode_body, decode_header
from verdict.audit.signing import check_key_document
from verdict.audit.trust import ChainAnchors, key_valid_at

__all__ = ["REPAIR_SEGMENTS", "KeyTimeline", "open_chain_checkpoint"]

KeySource = Callable[[str], Ed25519PublicKey]
"""Unanchored readers' source of a key by id (the published document)."""

_ROTATION_MARK = b'"kind":"key_rotation"'

REPAIR_SEGMENTS = 8
"""How many trailing segments of a chain may lack index entries after a crash.

Why one constant for two readers: the writer writes a segment's index entries
after the segment and before the checkpoint covering it, in rounds that run
beside the next commits. A crash can cut off the rounds still in flight, so the
writer's recovery (audit.chain) re-writes the index entries of the last
REPAIR_SEGMENTS segments, and the verifier counts entries missing there (past
the last checkpoint) as pending, not missing. The writer keeps at most half as
many rounds in flight (audit.chain._MAX_ROUNDS_IN_FLIGHT), the other half is a
margin; were the two numbers kept apart, a verifier could call a recoverable
tail tampered, or recovery leave a gap the verifier excuses."""


class KeyTimeline:
    """The keys a chain has used, as read from its genesis and key_rotation records.

    The key that signs record ``s`` is the chain's key after its first ``s``
    records: the genesis key, then after a rotation record at ``r`` the
    announced key for every ``s > r``; a replaced key is never valid again.
    """

    def __init__(self) -> None:
        self.origin: str | None = None
        self.entries: list[tuple[int, KeyDocument]] = []
        """(first seq, key document), in order."""
        self.retired: dict[str, int] = {}
        """key id -> the seq of the rotation record that retired it."""

    # -- feeding

    def genesis(self, body: GenesisBody) -> None:
        self.origin = body.origin
        self.entries.append((0, body.public_key))

    def rotation(self, seq: int, new_key: KeyDocument) -> None:
        """The key_rotation record at ``seq`` (signed by the old key) brings ``new_key`` in from ``seq + 1``."""
        if self.current is not None:
            self.retired[self.current] = seq
        self.entries.append((seq + 1, new_key))

    def feed(self, seq: int, raw: bytes) -> None:
        """Any record's canonical bytes: only genesis and rotations are decoded (cheap for long chains).

        Canonical JSON escapes every quote inside a string, so the byte pattern
        of a rotation occurs only as the real member."""
        if seq != 0 and _ROTATION_MARK not in raw:
            return
        header = decode_header(raw)
        body = decode_body(header.body)
        if seq == 0 and isinstance(body, GenesisBody) and header.seq == 0:
            self.genesis(body)
        elif isinstance(body, KeyRotationBody):
            self.rotation(header.seq, body.new_key)

    # -- asking

    @property
    def current(self) -> str | None:
        return self.entries[-1][1].key_id if self.entries else None

    def ids(self) -> list[tuple[int, str]]:
        return [(first, doc.key_id) for first, doc in self.entries]

    def key_at(self, seq: int) -> str | None:
        """The key id that signs record ``seq`` (and a checkpoint of size ``seq``)."""
        return key_valid_at(self.ids(), seq)

    def first_of(self, key_id: str) -> int | None:
        return next((first for first, doc in reversed(self.entries) if doc.key_id == key_id), None)

    def document(self, key_id: str) -> KeyDocument:
        return next(doc for _, doc in reversed(self.entries) if doc.key_id == key_id)

    def check_anchored(self, anchors: ChainAnchors) -> None:
        """Every key of the timeline certified by the root, the origin too (spec §5a); TrustError if not."""
        anchors.check_timeline(self.entries, self.origin)

    def signer(
        self, size: int, anchors: ChainAnchors | None = None, published: KeySource | None = None
    ) -> tuple[str, Ed25519PublicKey] | None:
        """(key id, public key) that must sign a checkpoint of ``size`` / record ``size``.

        Anchored: the certified key (None if it has no certificate). Else the
        published key (``published``) or, without one, the chain's own document.
        """
        key_id = self.key_at(size)
        if key_id is None:
            return None
        if anchors is not None:
            cert = anchors.for_key(key_id, size)
            if cert is None:
                return None
            return key_id, Ed25519PublicKey.from_public_bytes(anchors.public_key(cert.from_seq, key_id))
        if published is not None:
            return key_id, published(key_id)
        return key_id, check_key_document(self.document(key_id))


def open_chain_checkpoint(
    note: bytes,
    size: int,
    timeline: KeyTimeline,
    anchors: ChainAnchors | None = None,
    published: KeySource | None = None,
) -> VerifiedCheckpoint:
    """A checkpoint of ``size`` verified against the key the chain had after ``size`` records and
    its genesis origin (CheckpointError if not)."""
    signer = timeline.signer(size, anchors, published)
    return open_checkpoint(note, {signer[0]: signer[1]} if signer else {}, origin=timeline.origin)

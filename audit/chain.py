"""The chain writer: group commit of signed records into write-once segments.

One writer owns one chain (``chains/<chain_id>/``). Each call to
:meth:`ChainWriter.append_batch` turns a batch of bodies into records (seq,
prev_hash, time, key_id), signs each, and makes the batch durable in **one**
write-once object, the segment ``segments/<first_seq:020d>``. Only then does
it write, in a second round, the request-index entries of the batch's
decisions (pinning the segment's version) and, when one is due, a signed
checkpoint. Receipts are returned after both rounds.

Why segments: a single put is atomic on every backend, so a batch cut off by a
crash is all-or-nothing; a batch costs one durable write instead of one per
record; and because a segment is named by its first sequence number, two
writers that believe they own the same chain collide on the same key
(``O_EXCL`` / ``If-None-Match: *``) instead of forking it. A writer only ever
writes segment ``head + 1`` where ``head`` is the last seq it knows; every
segment starts right after the previous one ends, so a writer that knows a
stale head writes to a key that already exists. On ObjectExists the writer
stops for good (:class:`ChainConflict`): it never re-reads and retries
silently, because another process is writing this chain.

Why the checkpoint is written in the second round: ``put_many_once`` attempts
every object of a round even if one key exists, so a checkpoint written next to
a segment that lost a race would sign a tree that is not in the store. Written
after the segment round succeeded, a checkpoint only ever covers our own,
durable records.

Recovery (:meth:`ChainWriter.open`) is specified in docs/audit-format.md.

One writer per chain is enforced before that: open takes the chain's lease
(:mod:`audit.lease`, docs/audit-format.md §9a) before recovery writes
anything, so a second writer refuses to start (:class:`LeaseHeld`, naming the
holder) instead of cutting the first one off. The write-once segment keys stay
the last line of defence (a writer whose lease lapsed mid-append collides).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import logging
import threading
import time as _time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import layout
from verdict.audit.chain_errors import (
    ChainBehindHeld,
    ChainConflict,
    ChainCorrupt,
    ChainError,
    ChainNotAnchored,
    KeyMismatch,
    LeaseHeld,
    LeaseLost,
)
from verdict.audit.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from verdict.audit.completeness import check_held_checkpoint, note_checkpoint
from verdict.audit.index import IndexConflict, IndexEntry, RequestIndex, encode_entry
from verdict.audit.lease import DEFAULT_LEASE, ChainLease, LeaseOptions
from verdict.audit.lease import acquire as acquire_lease
from verdict.audit.merkle import MerkleAccumulator, leaf_hash
from verdict.audit.records import (
    GENESIS_PREV_HASH,
    AccessBody,
    Body,
    DecisionBody,
    ErasureBody,
    EvidenceBody,
    GenesisBody,
    KeyDocument,
    KeyRotationBody,
    LegalHoldBody,
    Record,
    RecordError,
    RegistryBody,
    body_kind,
    decode_body,
    decode_header,
    decode_record,
    encode_line,
    iter_lines,
    new_record,
    record_bytes,
    split_line,
    utc_now,
)
from verdict.audit.signing import (
    RECORD_SIGNATURE_DOMAIN,
    Signer,
    check_key_document,
    checkpoint_signer,
    publish_key,
    verify_record_signature,
)
from verdict.audit.stores.base import DeferredNaming, ObjectExists, ObjectMissing, WormStore
from verdict.audit.trust import RootKey, TrustError, TrustPolicy, load_anchors
from verdict.audit.walk import REPAIR_SEGMENTS, KeyTimeline, open_chain_checkpoint

__all__ = [
    "ChainBehindHeld",
    "ChainConflict",
    "ChainCorrupt",
    "ChainError",
    "ChainNotAnchored",
    "ChainWriter",
    "KeyMismatch",
    "KeyRing",
    "LeaseHeld",
    "LeaseLost",
    "LeaseOptions",
    "Receipt",
    "default_origin",
    "scan_timeline",
]

_log = logging.getLogger("verdict.audit.chain")

_MAX_ROUNDS_IN_FLIGHT = REPAIR_SEGMENTS // 2
"""Index rounds of at most this many committed batches run at once (callers
block before committing another), which bounds what a crash can cut off:
recovery re-checks twice as many trailing segments (walk.REPAIR_SEGMENTS)."""


class Receipt(msgspec.Struct, frozen=True):
    """Proof for the caller that a record is durable: where it is and what was signed."""

    chain_id: str
    seq: int
    record_hash: str
    """Lower-case hex SHA-256 of the record's canonical bytes."""
    signature: str
    """Standard base64 of the 64-byte Ed25519 signature."""
    key_id: str
    segment_key: str
    segment_version: str | None


@runtime_checkable
class KeyRing(Protocol):
    """Something that can hand out a signer by key id (e.g. audit.signing.FileKeyStore)."""

    def load(self, key_id: str) -> Signer: ...


def default_origin(chain_id: str) -> str:
    return f"verdict/{chain_id}"


@dataclass
class _Prepared:
    """A signed batch ready to be written, and the writer state after it."""

    first_seq: int
    segment_key: str
    data: bytes
    records: list[Record]
    hashes: list[bytes]
    signatures: list[bytes]
    next_signer: Signer | None = None


@dataclass
class _ScanState:
    """What recovery learns by reading a chain from the start."""

    size: int = 0
    head_hash: bytes = bytes(32)
    acc: MerkleAccumulator = field(default_factory=MerkleAccumulator)
    keys: KeyTimeline = field(default_factory=KeyTimeline)
    """The chain's origin and key history (spec §5), by the one walker's rules."""
    roots: dict[int, bytes] = field(default_factory=dict)
    roots_at: dict[int, bytes] = field(default_factory=dict)
    chain_id: str = ""

    @property
    def origin(self) -> str | None:
        return self.keys.origin

    # -- audit.completeness.ChainFacts (what a held checkpoint is checked against at open)

    def root_at(self, size: int) -> bytes:
        return self.roots_at[size]

    def signing_key(self, size: int) -> tuple[str, Ed25519PublicKey] | None:
        return self.keys.signer(size)


class ChainWriter:
    """Appends records to one chain. Thread-safe.

    Segment writes are serialized (one batch at a time gets a sequence range
    and is made durable); the second round (index entries, checkpoint) of a
    batch runs outside that lock, so a caller with several threads overlaps
    one batch's index writes with the next batch's signing and segment write.
    Use :meth:`open`, not the constructor.
    """

    def __init__(
        self,
        store: WormStore,
        chain_id: str,
        signer: Signer,
        state: _ScanState,
        *,
        checkpoint_every: int,
        checkpoint_interval: float,
        clock: Callable[[], str],
        lease: ChainLease | None = None,
        trust: _Trust | None = None,
        on_checkpoint: Callable[[int, bytes], None] | None = None,
        on_leaves: Callable[[int, list[bytes]], None] | None = None,
    ) -> None:
        self.store = store
        self._lease = lease
        self._trust = trust
        self._on_checkpoint = on_checkpoint
        self._on_leaves = on_leaves
        self.chain_id = chain_id
        self._signer = signer
        self._size = state.size
        self._head_hash = state.head_hash
        self._acc = state.acc
        self._origin = state.origin or default_origin(chain_id)
        self._keys = state.keys
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._last_checkpoint_size = max(state.roots, default=0)
        self._last_checkpoint_time = _time.monotonic()
        self._checkpoint_retry = False
        self._lock = threading.RLock()  # the commit lock: sequence numbers and head
        self._round2 = threading.Condition()  # pending index entries, rounds in flight
        self._rounds_in_flight = 0
        self._pending_index: list[IndexEntry] = []
        # A ChainError of its own, or whatever ended the lease's renewals (ChainLease.lost).
        self._failed: Exception | None = None
        self._in_doubt: _Prepared | None = None
        self._closed = False
        self._index = RequestIndex(store)
        # Where the store allows it, a segment's name is made durable by the
        # index round's barrier instead of one of its own (see _commit).
        self._deferred = store if isinstance(store, DeferredNaming) and not store.versioned else None

    # --- opening and recovery ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        store: WormStore,
        chain_id: str,
        signer: Signer,
        *,
        keyring: KeyRing | None = None,
        create: bool = True,
        origin: str | None = None,
        created_by: str = "verdict",
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        clock: Callable[[], str] = utc_now,
        lease: LeaseOptions | None = DEFAULT_LEASE,
        root: RootKey | None = None,
        policy: TrustPolicy | None = None,
        held_checkpoints: Sequence[bytes] = (),
        on_checkpoint: Callable[[int, bytes], None] | None = None,
        on_leaves: Callable[[int, list[bytes]], None] | None = None,
    ) -> ChainWriter:
        """Open (or create) ``chain_id`` for appending, recovering from any crash.

        Reads the whole chain once (links, sequence, key history, Merkle state),
        verifies every signature of the last segment, re-writes index entries a
        crash cut off and writes a checkpoint if the tail is not covered by one.
        An empty chain gets a genesis record signed by ``signer``.

        If the chain expects another key than ``signer`` (it was created or
        last rotated with another one), and ``keyring`` can load that key, a
        key_rotation record to ``signer`` is appended first; otherwise
        :class:`KeyMismatch` is raised. A key the chain has retired is refused.

        First of all the chain's lease is taken (``lease``: TTL and renewal,
        :mod:`audit.lease`); :class:`LeaseHeld` if another live writer holds
        it. ``lease=None`` opens without one (only for fixed test vectors and
        tools that must not write anything but records).

        Trust (spec §5a): with ``root``, the writer certifies its key on a new
        chain (before genesis) and each key it rotates to (before the rotation
        record). With a ``policy`` (the root's own when only ``root`` is given)
        an existing chain must be anchored, else :class:`ChainNotAnchored`: a
        writer never extends a chain its verifiers would reject; without
        ``root`` the certificates must have been issued beforehand
        (``verdict trust certify``).

        ``held_checkpoints``: checkpoint notes of this chain kept outside the
        store (the gateway's own latest, the witnesses' latest, spec §8a). A
        chain whose head is behind one, or whose root at its size differs, is
        refused (:class:`ChainBehindHeld`): continuing it would reuse sequence
        numbers that receipts already name. ``on_checkpoint(size, note)`` is
        called after each checkpoint is durable (to keep it, to witness it);
        it must not block, and what it raises is logged, never propagated.
        ``on_leaves(first_seq, leaf_hashes)`` gets each durable batch's RFC
        6962 leaf hashes, under the commit lock (it must only keep them: a
        witness submitter proves consistency from them without re-reading the
        chain).
        """
        if policy is None and root is not None:
            policy = root.policy()
        layout.check_chain_id(chain_id)
        if checkpoint_every < 1 or checkpoint_interval <= 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_interval > 0")
        check_key_document(signer.public_key_document)
        if not create and not isinstance(store, DeferredNaming) and not _has_segments(store, chain_id):
            # No lease object for a chain that does not exist (a DeferredNaming
            # store may still hold a staged genesis segment that recovery puts back).
            raise ChainError(f"chain {chain_id!r} does not exist in {store.url}")
        held = acquire_lease(store, chain_id, created_by=created_by, options=lease) if lease is not None else None
        if held is not None:
            held.start()  # renew from now on: reading a long chain may take longer than the TTL
        try:
            writer = cls._open_locked(
                store,
                chain_id,
                signer,
                held,
                keyring=keyring,
                create=create,
                origin=origin,
                created_by=created_by,
                checkpoint_every=checkpoint_every,
                checkpoint_interval=checkpoint_interval,
                clock=clock,
                trust=_Trust(root, policy) if policy is not None else None,
                held=held_checkpoints,
                on_checkpoint=on_checkpoint,
                on_leaves=on_leaves,
            )
        except BaseException:
            if held is not None:
                held.release()
            raise
        if held is not None:
            held.set_owner(writer)
        return writer

    @classmethod
    def _open_locked(
        cls,
        store: WormStore,
        chain_id: str,
        signer: Signer,
        lease_held: ChainLease | None,
        *,
        keyring: KeyRing | None,
        create: bool,
        origin: str | None,
        created_by: str,
        checkpoint_every: int,
        checkpoint_interval: float,
        clock: Callable[[], str],
        trust: _Trust | None,
        held: Sequence[bytes] = (),
        on_checkpoint: Callable[[int, bytes], None] | None = None,
        on_leaves: Callable[[int, list[bytes]], None] | None = None,
    ) -> ChainWriter:
        """Recovery, with the lease (if any) held."""
        held_sizes = {size for size in map(_note_size, held) if size is not None}
        state = _scan_chain(store, chain_id, held_sizes)
        if lease_held is not None:
            _check_lease(lease_held)  # still ours after the (possibly long) read, before the first write
        state = _roll_forward_unconfirmed(store, chain_id, state, held_sizes)
        _check_held(chain_id, state, held)
        make_writer = functools.partial(
            cls,
            checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
            clock=clock,
            lease=lease_held,
            trust=trust,
            on_checkpoint=on_checkpoint,
            on_leaves=on_leaves,
        )
        if state.size == 0:
            if not create:
                raise ChainError(f"chain {chain_id!r} does not exist in {store.url}")
            state.keys.origin = origin or default_origin(chain_id)
            writer = make_writer(store, chain_id, signer, state)
            writer._certify(signer.public_key_document, 0)
            publish_key(store, signer.public_key_document)
            writer._write_genesis(created_by)
            return writer
        if origin is not None and origin != state.origin:
            raise ChainError(f"chain {chain_id!r} has origin {state.origin!r}, not {origin!r}")
        if trust is not None:
            _check_anchored(store, chain_id, state, trust.policy)
        writer_signer = signer
        rotate_to: Signer | None = None
        current = state.keys.current
        if current != signer.key_id:
            if signer.key_id in state.keys.retired:
                raise KeyMismatch(
                    f"key {signer.key_id} was retired on chain {chain_id!r} at seq {state.keys.retired[signer.key_id]}; "
                    f"the chain expects {current}"
                )
            old = _load_from(keyring, current)
            if old is None:
                raise KeyMismatch(
                    f"chain {chain_id!r} expects signing key {current}, got {signer.key_id}; "
                    f"run `verdict keys rotate --chain {chain_id}` with the old key available"
                )
            writer_signer, rotate_to = old, signer
        writer = make_writer(store, chain_id, writer_signer, state)
        with writer._lock:
            writer._repair_index()
            writer._round_two([], writer._take_checkpoint(force=True))
        if rotate_to is not None:
            writer.rotate_key(rotate_to, reason="signer changed at open")
        else:
            publish_key(store, signer.public_key_document)
        return writer

    def _certify(self, key: KeyDocument, from_seq: int) -> None:
        """Before a key signs anything on this chain: its certificate (spec §5a).

        With the root at hand the writer issues it; otherwise one issued
        beforehand must be there, or nothing is written (fail closed).
        """
        if self._trust is None:
            return
        if self._trust.root is not None:
            self._trust.root.certify(self.store, self.chain_id, key, from_seq, self._origin)
            return
        anchors = load_anchors(self.store, self.chain_id, self._trust.policy)
        try:
            anchors.check_key(from_seq, key, self._origin)
        except TrustError as exc:
            raise ChainNotAnchored(
                f"{exc.message}; the root's holder must first run `verdict trust certify --chain {self.chain_id} "
                f"--key {key.key_id} --from-seq {from_seq}`"
            ) from None

    def _write_genesis(self, created_by: str) -> None:
        body = GenesisBody(
            chain_id=self.chain_id,
            public_key=self._signer.public_key_document,
            origin=self._origin,
            created_by=created_by,
        )
        with self._lock:
            prepared = self._prepare([body])
            self._commit(prepared)
            self._round_two([], self._take_checkpoint(force=True))

    # --- properties ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of durable records (= the next sequence number)."""
        return self._size

    @property
    def head_hash(self) -> str:
        return self._head_hash.hex()

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    @property
    def last_checkpoint_size(self) -> int:
        return self._last_checkpoint_size

    @property
    def lease(self) -> ChainLease | None:
        """The chain lease this writer holds (None if opened with ``lease=None``)."""
        return self._lease

    # --- appending ----------------------------------------------------------------------------

    def append(self, body: DecisionBody | AccessBody | EvidenceBody | RegistryBody) -> Receipt | IndexConflict:
        return self.append_batch([body])[0]

    def append_batch(
        self, bodies: Sequence[DecisionBody | AccessBody | EvidenceBody | RegistryBody | ErasureBody | LegalHoldBody]
    ) -> list[Receipt | IndexConflict]:
        """Durably append ``bodies`` as consecutive records; one result per body.

        For a decision whose request id is already in the index (claimed by
        another record, on this chain or another), the result is an
        :class:`IndexConflict` naming the existing entry; the new record is
        still in the chain, as a superseded duplicate.

        Raises :class:`ChainConflict` if another writer owns the chain, and
        StoreError subclasses if the store failed: no receipt was issued then;
        a segment whose write failed is "in doubt" and resolved by the next
        call (rolled forward if it landed), index entries whose write failed
        are retried by the next call.
        """
        for body in bodies:
            if not isinstance(body, (DecisionBody, AccessBody, EvidenceBody, RegistryBody, ErasureBody, LegalHoldBody)):
                raise TypeError(
                    "append_batch takes decision, access, evidence, registry, erasure or legal hold bodies, "
                    f"not {type(body).__name__}"
                )
        if not bodies:
            return []
        with self._lock:
            self._check_usable()
            with self._round2:
                self._round2.wait_for(lambda: self._rounds_in_flight < _MAX_ROUNDS_IN_FLIGHT)
            prepared = self._prepare(list(bodies))
            self._prestage_index(prepared)
            version = self._commit(prepared)
            entries = self._index_entries(prepared, version)
            checkpoint_item = self._take_checkpoint(force=False)
            with self._round2:
                self._rounds_in_flight += 1  # counted before the commit lock is released
        outcome = self._round_two(entries, checkpoint_item, counted=True)
        results: list[Receipt | IndexConflict] = []
        for receipt in self._receipts(prepared, version):
            got = outcome.get(receipt.seq)
            results.append(got if isinstance(got, IndexConflict) else receipt)
        return results

    def rotate_key(self, new_signer: Signer, *, reason: str | None = None) -> Receipt:
        """Publish ``new_signer``'s key, append a key_rotation record signed by the
        current key, then sign everything after it with ``new_signer``."""
        check_key_document(new_signer.public_key_document)
        with self._lock:
            self._check_usable()
            if new_signer.key_id == self._signer.key_id:
                raise KeyMismatch(f"chain {self.chain_id!r} is already signed by {new_signer.key_id}")
            if any(doc.key_id == new_signer.key_id for _, doc in self._keys.entries):
                raise KeyMismatch(
                    f"key {new_signer.key_id} was already used on chain {self.chain_id!r}; use a fresh key"
                )
            self._certify(new_signer.public_key_document, self._size + 1)
            publish_key(self.store, new_signer.public_key_document)
            body = KeyRotationBody(new_key=new_signer.public_key_document, reason=reason)
            prepared = self._prepare([body])
            prepared.next_signer = new_signer
            version = self._commit(prepared)
            self._round_two([], self._take_checkpoint(force=True))
            return self._receipts(prepared, version)[0]

    def maybe_checkpoint(self) -> str | None:
        """Write a checkpoint if one is due (N records or T seconds since the last).
        Call it from a timer so an idle chain still gets its tail checkpointed."""
        return self._checkpoint_now(force=False)

    def checkpoint(self) -> str | None:
        """Write a checkpoint of the current head now (None if already checkpointed)."""
        return self._checkpoint_now(force=True)

    def _checkpoint_now(self, *, force: bool) -> str | None:
        with self._lock:
            self._check_usable()
            item = self._take_checkpoint(force=force)
        self._round_two([], item)
        return item[0] if item else None

    def close(self) -> None:
        """Finish rounds in flight, write a final checkpoint and release the
        lease (clean shutdown: the next writer can start at once)."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None and self._lease is not None and self._lease.lost is not None:
                    self._failed = self._lease.lost  # another writer took over: write nothing more
                if self._failed is None:
                    if self._in_doubt is not None:
                        self._resolve_in_doubt()
                    self._round_two([], self._take_checkpoint(force=True))
                with self._round2:
                    self._round2.wait_for(lambda: self._rounds_in_flight == 0)
            finally:
                self._closed = True
                if self._lease is not None:
                    self._lease.release()

    def __enter__(self) -> ChainWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- round 1: the segment (under the commit lock) -----------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ChainError(f"writer for chain {self.chain_id!r} is closed")
        if self._failed is not None:
            raise self._failed
        if self._lease is not None:
            try:
                _check_lease(self._lease)
            except LeaseLost as exc:
                self._failed = exc
                raise
        if self._in_doubt is not None:
            self._resolve_in_doubt()
        if self._pending_index:
            # Index entries of an earlier failed round go first: recovery only
            # re-checks the last few segments, so they must not fall behind.
            self._round_two([], None)

    def _prepare(self, bodies: list[Body]) -> _Prepared:
        first = self._size
        prev = self._head_hash.hex() if first else GENESIS_PREV_HASH
        now = self._clock()
        key_id = self._signer.key_id
        lines: list[bytes] = []
        records: list[Record] = []
        hashes: list[bytes] = []
        signatures: list[bytes] = []
        sign = self._signer.sign
        for offset, body in enumerate(bodies):
            record = new_record(
                chain_id=self.chain_id, seq=first + offset, prev_hash=prev, time=now, key_id=key_id, body=body
            )
            data = record_bytes(record)
            digest = hashlib.sha256(data).digest()
            signature = sign(RECORD_SIGNATURE_DOMAIN + digest)
            lines.append(encode_line(data, signature))
            records.append(record)
            hashes.append(digest)
            signatures.append(signature)
            prev = digest.hex()
        return _Prepared(
            first_seq=first,
            segment_key=layout.segment_key(self.chain_id, first),
            data=b"".join(lines),
            records=records,
            hashes=hashes,
            signatures=signatures,
        )

    def _prestage_index(self, prepared: _Prepared) -> None:
        """Let the store write the index entries' data with the segment's
        (on an unversioned store they are known already: no VersionId to pin);
        they are still published only after the segment is durable."""
        if self.store.versioned:
            return
        entries = self._index_entries(prepared, None)
        self.store.prestage([(RequestIndex.key(e.request_id), encode_entry(e)) for e in entries])

    def _commit(self, prepared: _Prepared) -> str | None:
        """Write the segment; on success advance the head. Returns the segment's version.

        On a DeferredNaming store the segment's data is durable here but its
        name only after the batch's second round (whose barrier every round
        has, see _claim): nothing is receipted before. A crash in between
        leaves a staged copy that recovery puts again (_roll_forward_unconfirmed),
        so index entries made durable by that barrier never point at a lost segment."""
        publish = self._deferred.publish_once if self._deferred is not None else self.store.put_once
        try:
            ref = publish(prepared.segment_key, prepared.data)
        except ObjectExists:
            self._failed = ChainConflict(
                f"another writer owns chain {self.chain_id!r}: segment {prepared.segment_key} already exists "
                f"(this writer's head was seq {prepared.first_seq - 1}); stop this writer and use one writer per chain"
            )
            raise self._failed from None
        except BaseException:
            self._in_doubt = prepared  # it may or may not have landed
            raise
        self._apply(prepared)
        return ref.version

    def _apply(self, prepared: _Prepared) -> None:
        leaves = [leaf_hash(digest) for digest in prepared.hashes]
        for record, leaf in zip(prepared.records, leaves, strict=True):
            self._acc.append(leaf)
            if isinstance(record.body, GenesisBody):
                self._keys.genesis(record.body)
            elif isinstance(record.body, KeyRotationBody):
                self._keys.rotation(record.seq, record.body.new_key)
        self._size = prepared.first_seq + len(prepared.records)
        self._head_hash = prepared.hashes[-1]
        if prepared.next_signer is not None:
            self._signer = prepared.next_signer
        if self._on_leaves is not None:
            self._on_leaves(prepared.first_seq, leaves)

    def _resolve_in_doubt(self) -> None:
        """After a failed segment write: did it land? Roll forward or forget it."""
        prepared = self._in_doubt
        assert prepared is not None
        try:
            existing = self.store.get(prepared.segment_key)
        except ObjectMissing:
            self._in_doubt = None
            return
        if existing != prepared.data:
            self._failed = ChainConflict(
                f"another writer owns chain {self.chain_id!r}: {prepared.segment_key} holds another writer's records"
            )
            raise self._failed
        self._in_doubt = None
        self._apply(prepared)
        # Nobody got receipts for this batch, but its decisions must be indexed.
        entries = self._index_entries(prepared, _latest_version(self.store, prepared.segment_key))
        with self._round2:
            self._pending_index.extend(entries)

    def _receipts(self, prepared: _Prepared, version: str | None) -> list[Receipt]:
        key_id = prepared.records[0].key_id
        return [
            Receipt(
                chain_id=self.chain_id,
                seq=record.seq,
                record_hash=digest.hex(),
                signature=_b64(signature),
                key_id=key_id,
                segment_key=prepared.segment_key,
                segment_version=version,
            )
            for record, digest, signature in zip(prepared.records, prepared.hashes, prepared.signatures, strict=True)
        ]

    def _index_entries(self, prepared: _Prepared, version: str | None) -> list[IndexEntry]:
        return [
            IndexEntry(
                request_id=record.body.request_id,
                chain_id=self.chain_id,
                seq=record.seq,
                record_hash=digest.hex(),
                segment_key=prepared.segment_key,
                segment_version=version,
                request_sha256=record.body.request_sha256,
            )
            for record, digest in zip(prepared.records, prepared.hashes, strict=True)
            if isinstance(record.body, DecisionBody)
        ]

    def _checkpoint_due(self) -> bool:
        pending = self._size - self._last_checkpoint_size
        if pending <= 0:
            return False
        if pending >= self._checkpoint_every:
            return True
        return _time.monotonic() - self._last_checkpoint_time >= self._checkpoint_interval

    def _take_checkpoint(self, *, force: bool) -> tuple[str, bytes] | None:
        """Under the commit lock: sign a checkpoint of the head if one is due."""
        if self._size == 0:
            return None
        if not (
            self._checkpoint_retry or (force and self._size > self._last_checkpoint_size) or self._checkpoint_due()
        ):
            return None
        cp = Checkpoint(origin=self._origin, size=self._size, root=self._acc.root())
        note = sign_checkpoint(cp, [checkpoint_signer(self._signer)])
        self._last_checkpoint_size = self._size
        self._last_checkpoint_time = _time.monotonic()
        self._checkpoint_retry = False
        return layout.checkpoint_key(self.chain_id, self._size), note

    # --- round 2: index entries and checkpoint ---------------------------------------------

    def _round_two(
        self, entries: list[IndexEntry], checkpoint_item: tuple[str, bytes] | None, *, counted: bool = False
    ) -> dict[int, IndexEntry | IndexConflict]:
        """Write index entries (plus any left from a failed round) and the checkpoint
        in one durable round; per seq, the entry now indexed or an IndexConflict."""
        with self._round2:
            entries = self._pending_index + entries
            self._pending_index = []
            if not counted:
                self._rounds_in_flight += 1
        try:
            return self._claim(entries, checkpoint_item)
        except BaseException:
            with self._round2:
                self._pending_index = entries + self._pending_index
                if checkpoint_item is not None:
                    self._checkpoint_retry = True
            raise
        finally:
            with self._round2:
                self._rounds_in_flight -= 1
                self._round2.notify_all()

    def _claim(
        self, entries: list[IndexEntry], checkpoint_item: tuple[str, bytes] | None
    ) -> dict[int, IndexEntry | IndexConflict]:
        # A request id twice in one round: the first record claims it, the others
        # are superseded duplicates of it.
        first_by_request: dict[str, IndexEntry] = {}
        unique: list[IndexEntry] = []
        outcome: dict[int, IndexEntry | IndexConflict] = {}
        for entry in entries:
            owner = first_by_request.get(entry.request_id)
            if owner is None:
                first_by_request[entry.request_id] = entry
                unique.append(entry)
            else:
                outcome[entry.seq] = IndexConflict(entry.request_id, owner, entry)
        # One put_many_once: the store runs the puts of a round concurrently
        # where that helps (S3) and makes them durable together (filesystem).
        claimed = self._index.claim(unique)
        if checkpoint_item is not None:
            # After the index entries: a checkpoint covers only fully indexed records.
            self._put_checkpoint(*checkpoint_item)
        elif not unique and self._deferred is not None:
            self._deferred.barrier()  # no put in this round: the segment's name still needs one
        for entry, result in zip(unique, claimed, strict=True):
            outcome[entry.seq] = result
        return outcome

    def _put_checkpoint(self, key: str, note: bytes) -> None:
        try:
            self.store.put_once(key, note)
        except ObjectExists:
            if self.store.get(key) != note:
                self._failed = ChainCorrupt(f"{key} already holds a different checkpoint; the chain was forked")
                raise self._failed from None
        if self._on_checkpoint is not None:
            try:
                self._on_checkpoint(layout.number_from_key(key) or 0, note)
            except Exception:  # noqa: BLE001 - keeping/witnessing a checkpoint never fails an append
                _log.exception("checkpoint %s: the on_checkpoint hook failed", key)

    def _repair_index(self) -> None:
        """Re-write index entries of the last segments that a crash may have cut off."""
        keys = sorted(self.store.list_keys(layout.segments_prefix(self.chain_id)))[-REPAIR_SEGMENTS:]
        entries: list[IndexEntry] = []
        for key in keys:
            version = _latest_version(self.store, key)
            for raw, _signature in _segment_records(self.store.get(key)):
                header = decode_header(raw)
                if body_kind(header.body) != "decision":
                    continue
                body = decode_body(header.body)
                assert isinstance(body, DecisionBody)
                entries.append(
                    IndexEntry(
                        request_id=body.request_id,
                        chain_id=self.chain_id,
                        seq=header.seq,
                        record_hash=hashlib.sha256(raw).hexdigest(),
                        segment_key=key,
                        segment_version=version,
                        request_sha256=body.request_sha256,
                    )
                )
        outcome = self._claim(entries, None)
        for entry in entries:
            result = outcome[entry.seq]
            if isinstance(result, IndexConflict):
                existing = result.existing
                if (existing.chain_id, existing.seq) == (entry.chain_id, entry.seq):
                    self._failed = ChainCorrupt(
                        f"index entry for request {entry.request_id!r} points at {entry.chain_id}/{entry.seq} "
                        f"but disagrees with the record ({existing} != {entry})"
                    )
                    raise self._failed
                # else: a superseded duplicate; another record owns the request id.


# --- helpers ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class _Trust:
    root: RootKey | None
    policy: TrustPolicy


def _check_anchored(store: WormStore, chain_id: str, state: _ScanState, policy: TrustPolicy) -> None:
    anchors = load_anchors(store, chain_id, policy)
    try:
        state.keys.check_anchored(anchors)
    except TrustError as exc:
        raise ChainNotAnchored(
            f"{exc.message}. Verify the chain (`verdict audit verify --unanchored`) and, if it is genuine, "
            f"have the root's holder certify it (`verdict trust certify --chain {chain_id}`)"
        ) from None


def _note_size(note: bytes) -> int | None:
    cp = note_checkpoint(note)
    return cp.size if cp is not None else None


def _check_held(chain_id: str, state: _ScanState, held: Sequence[bytes]) -> None:
    """Refuse a chain behind (or other than) a checkpoint kept outside the store (spec §8a)."""
    state.chain_id = chain_id
    for note in held:
        size = _note_size(note)
        if size is not None and size > state.size:
            problems = [
                (
                    "below_held_checkpoint",
                    f"the store holds {state.size} records, but checkpoint {size} of "
                    "this chain was signed and kept outside the store",
                )
            ]
        else:
            problems = check_held_checkpoint(state, note, witnessed=False, where="held checkpoint")
        if problems:
            raise ChainBehindHeld(
                f"chain {chain_id!r} refused: {problems[0][1]} ({problems[0][0]}). The chain was truncated or "
                "rewritten after that checkpoint; investigate with `verdict audit verify --checkpoint FILE` "
                "before anything is appended"
            )


def _has_segments(store: WormStore, chain_id: str) -> bool:
    return next(iter(store.list_keys(layout.segments_prefix(chain_id))), None) is not None


def _check_lease(lease: ChainLease) -> None:
    """Raise LeaseLost if another writer took the lease; renew it now if it ran
    out (StoreError if the store cannot take the renewal: try again later)."""
    try:
        lease.check()
    except LeaseHeld as exc:  # cannot happen once acquired; keep the contract simple for callers
        raise LeaseLost(str(exc)) from None


def _load_from(keyring: KeyRing | None, key_id: str | None) -> Signer | None:
    if keyring is None or key_id is None:
        return None
    try:
        return keyring.load(key_id)
    except Exception:  # noqa: BLE001 - a missing/unusable key just means "not available"
        return None


def _latest_version(store: WormStore, key: str) -> str | None:
    latest = [v for v in store.list_versions(key) if v.key == key and v.is_latest and not v.is_delete_marker]
    return latest[0].version if latest else None


def _segment_records(data: bytes) -> Iterable[tuple[bytes, bytes]]:
    for line in iter_lines(data):
        yield split_line(line)


def _scan_chain(store: WormStore, chain_id: str, at_sizes: Iterable[int] = ()) -> _ScanState:
    """Read a chain from genesis: check sequence, links, key history and the last
    checkpoint's root; verify every signature of the last segment (what a crash
    could have touched). Raises ChainCorrupt on any inconsistency. The roots at
    ``at_sizes`` (held checkpoints' sizes) are kept in ``state.roots_at``."""
    state = _ScanState()
    wanted = set(at_sizes)
    seg_keys = list(store.list_keys(layout.segments_prefix(chain_id)))
    checkpoints: dict[int, str] = {}
    for key in store.list_keys(layout.checkpoints_prefix(chain_id)):
        size = layout.number_from_key(key)
        if size is None:
            raise ChainCorrupt(f"unexpected object {key} in chain {chain_id!r}")
        checkpoints[size] = key
    last_cp = max(checkpoints, default=0)
    last_cp_root: bytes | None = None
    where = ""
    try:
        for n, key in enumerate(seg_keys):
            where = key
            first = layout.number_from_key(key)
            if first != state.size:
                raise ChainCorrupt(f"segment {key} should start at seq {state.size}")
            is_tail = n == len(seg_keys) - 1
            for raw, signature in _segment_records(store.get(key)):
                _scan_record(state, chain_id, raw, signature, verify=is_tail)
                if state.size == last_cp:
                    last_cp_root = state.acc.root()
                if state.size in wanted:
                    state.roots_at[state.size] = state.acc.root()
    except (RecordError, CheckpointError, ValueError) as exc:
        raise ChainCorrupt(f"chain {chain_id!r} does not verify at {where}: {exc}") from None
    if last_cp > state.size:
        raise ChainCorrupt(f"chain {chain_id!r} truncated: checkpoint at size {last_cp} but only {state.size} records")
    if last_cp:
        try:
            verified = open_chain_checkpoint(store.get(checkpoints[last_cp]), last_cp, state.keys)
        except CheckpointError as exc:
            raise ChainCorrupt(f"checkpoint {checkpoints[last_cp]} does not verify: {exc}") from None
        if verified.checkpoint.size != last_cp or verified.checkpoint.root != last_cp_root:
            raise ChainCorrupt(f"checkpoint {checkpoints[last_cp]} does not match the chain's records")
        state.roots[last_cp] = verified.checkpoint.root
    return state


def scan_timeline(store: WormStore, chain_id: str) -> list[tuple[int, KeyDocument, str]]:
    """(first seq, key document, origin) of every key the chain has used, read as recovery reads it."""
    try:
        state = _scan_chain(store, chain_id)
    except ChainCorrupt as exc:
        raise ChainError(str(exc)) from None
    return [(first, doc, state.origin or default_origin(chain_id)) for first, doc in state.keys.entries]


def _roll_forward_unconfirmed(
    store: WormStore, chain_id: str, state: _ScanState, at_sizes: Iterable[int] = ()
) -> _ScanState:
    """Recovery for DeferredNaming stores: a segment whose name a crash lost
    after its data was durable is put again if it continues the chain exactly
    (next sequence number, links, signatures); its index entries may already
    be durable. Any other staged copy is discarded: nothing points at it.
    Staging left by writers proved dead (pre-staged index entries of a killed
    process) is removed first."""
    if not isinstance(store, DeferredNaming) or store.versioned:
        return state
    store.discard_orphans()
    for key, data in store.unconfirmed(layout.segments_prefix(chain_id)):
        if key == layout.segment_key(chain_id, state.size) and _continues(state, chain_id, data):
            with contextlib.suppress(ObjectExists):  # another process put it first; the rescan reads whatever is there
                store.put_once(key, data)
            state = _scan_chain(store, chain_id, at_sizes)
        store.discard_unconfirmed(key)
    return state


def _continues(state: _ScanState, chain_id: str, data: bytes) -> bool:
    probe = copy.deepcopy(state)
    try:
        records = list(_segment_records(data))
        for raw, signature in records:
            _scan_record(probe, chain_id, raw, signature, verify=True)
    except (RecordError, CheckpointError, ValueError):
        return False
    return bool(records)


def _scan_record(state: _ScanState, chain_id: str, raw: bytes, signature: bytes, *, verify: bool) -> None:
    header = decode_header(raw)
    seq = state.size
    if header.seq != seq:
        raise RecordError(f"record seq {header.seq} where {seq} was expected")
    if header.chain_id != chain_id:
        raise RecordError(f"record {seq} names chain {header.chain_id!r}")
    expected_prev = state.head_hash.hex() if seq else GENESIS_PREV_HASH
    if header.prev_hash != expected_prev:
        raise RecordError(f"record {seq}: prev_hash does not link to record {seq - 1}")
    kind = body_kind(header.body)
    if seq == 0:
        genesis = decode_body(header.body)
        if not isinstance(genesis, GenesisBody) or genesis.chain_id != chain_id:
            raise RecordError("record 0 is not this chain's genesis record")
        state.keys.genesis(genesis)
    elif kind == "genesis":
        raise RecordError(f"record {seq} is a second genesis record")
    elif kind == "key_rotation":
        rotation = decode_body(header.body)
        assert isinstance(rotation, KeyRotationBody)
        state.keys.rotation(seq, rotation.new_key)  # valid from seq + 1; this record is the old key's
    expected = state.keys.key_at(seq)
    if header.key_id != expected:
        raise RecordError(f"record {seq} is signed by {header.key_id}, the chain's key at that point is {expected}")
    if verify:
        decode_record(raw)
        signer = state.keys.signer(seq)
        if signer is None or not verify_record_signature(signer[1], hashlib.sha256(raw).digest(), signature):
            raise RecordError(f"record {seq}: signature does not verify")
    digest = hashlib.sha256(raw).digest()
    state.acc.append(leaf_hash(digest))
    state.head_hash = digest
    state.size = seq + 1

"""Finding and proving the decisions a replay is asked for.

One request id: :func:`audit.reader.read_decision`, the same check a GDPR
lookup makes (hash, signature, chain position, inclusion in the latest signed
checkpoint). A set of decisions (time range, model, chain, everything):
:func:`scan`, which reads each chain once and applies the same checks to
every selected decision -- calling ``read_decision`` per decision would read
the whole chain once per decision (it is O(chain length)), which makes a
quarter's replay quadratic.

The chain rules themselves (which key signs which record, which key must
sign a checkpoint, what the trust root certified) come from
:mod:`audit.walk` and :mod:`audit.trust`, as they do for ``read_decision``;
what differs is only that the chain is read once for many decisions. The
reason codes are ``read_decision``'s, so a decision is replayable in a batch
exactly when its lookup would succeed; ``tests/replay`` checks the two agree
on intact and tampered trails.
Every decision that fails a check is returned with its reason (it becomes a
``cannot_replay`` verdict), never dropped.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import layout, merkle
from verdict.audit.chain_leaves import chain_ids
from verdict.audit.checkpoint import CheckpointError
from verdict.audit.index import IndexEntry, RequestIndex
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.records import (
    DecisionBody,
    RecordError,
    body_kind,
    decode_body,
    decode_header,
    decode_record,
    format_time,
    iter_lines,
    record_bytes,
    split_line,
)
from verdict.audit.signing import KeyDocumentError, check_key_document, decode_key_document, verify_record_signature
from verdict.audit.stores import ObjectMissing, StoreError, WormStore
from verdict.audit.trust import ChainAnchors, TrustError, TrustPolicy, load_anchors
from verdict.audit.walk import KeyTimeline, open_chain_checkpoint

__all__ = ["Selection", "SelectionError", "Target", "parse_time_bound", "resolve", "scan"]

_READ_THREADS = 8
_LOOKUPS_UP_TO = 16
"""Up to this many request ids are looked up one by one with read_decision."""

NOT_CHECKPOINTED_ADVICE = (
    "a running gateway checkpoints its chain within checkpoint_interval_s (60 s by default) of "
    "its newest record, traffic or not, and at shutdown: retry in a minute, or replay it on its "
    'signature and chain position alone with --allow-pending (API: "require_checkpoint": false)'
)
"""What to do about a record not yet covered by a checkpoint (said wherever one is refused)."""


class SelectionError(ValueError):
    """The selection is empty or malformed (a usage error)."""


class Selection(msgspec.Struct, frozen=True, omit_defaults=True):
    """Which decisions to replay. Request ids are looked up one by one; the
    other fields filter a scan of the trail (all given filters must match)."""

    request_ids: list[str] = []
    since: str | None = None
    """decided_at >= since (RFC 3339 UTC, e.g. 2025-01-01T00:00:00.000000Z)"""
    until: str | None = None
    """decided_at < until"""
    model: str | None = None
    version: str | None = None
    chain: str | None = None
    all: bool = False

    def is_scan(self) -> bool:
        return not self.request_ids

    def check(self) -> Selection:
        if self.request_ids and (self.all or self.since or self.until or self.model or self.chain):
            raise SelectionError("give request ids or a filter (--since/--until/--model/--chain/--all), not both")
        if not self.request_ids and not (self.all or self.since or self.until or self.model or self.chain):
            raise SelectionError("nothing selected: give a REQUEST_ID, or --all, --since/--until, --model or --chain")
        if self.version and not self.model:
            raise SelectionError("a model version needs a model name (--model NAME:VERSION)")
        if self.since and self.until and self.since >= self.until:
            raise SelectionError(f"--since {self.since} is not before --until {self.until}")
        if self.chain is not None:
            try:
                layout.check_chain_id(self.chain)
            except layout.LayoutError as exc:
                raise SelectionError(f"--chain: {exc}") from None
        return self

    def describe(self) -> str:
        if self.request_ids:
            return ", ".join(self.request_ids[:5]) + (
                f" and {len(self.request_ids) - 5} more" if len(self.request_ids) > 5 else ""
            )
        parts = []
        if self.model:
            parts.append(f"model {self.model}" + (f":{self.version}" if self.version else ""))
        if self.chain:
            parts.append(f"chain {self.chain}")
        if self.since:
            parts.append(f"decided at or after {self.since}")
        if self.until:
            parts.append(f"decided before {self.until}")
        return "all decisions" + (" with " + ", ".join(parts) if parts else "")


def parse_time_bound(text: str | None, option: str) -> str | None:
    """``2025-01-31`` or any ISO 8601 time with a zone (naive times are UTC) -> record time format."""
    if text is None or text == "":
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise SelectionError(
            f"{option} {text!r} is not a date or ISO 8601 time (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return format_time(moment)


class Target(msgspec.Struct, omit_defaults=True):
    """A decision the replay was asked for: its verified record, or why it is not one."""

    request_id: str
    chain_id: str | None = None
    seq: int | None = None
    record_hash: str | None = None
    record: bytes = b""
    """The record's canonical bytes (verified) -- what workers re-score from."""
    verification: str | None = None
    problem: tuple[str, str] | None = None
    """(reason code, message) when the record could not be proven."""
    decided_at: str | None = None
    model: str | None = None
    body: DecisionBody | None = None
    """The decoded decision (kept to avoid decoding it again; workers get ``record``)."""
    opened: bytes = b""
    """A sealed decision opened with the data keyring (spec §3a): the clear decision body's
    canonical JSON, re-scored instead of the record's sealed body; empty for a plain one."""


def resolve(
    store: WormStore,
    selection: Selection,
    *,
    require_checkpoint: bool = True,
    progress: Callable[[int, int], None] | None = None,
    trust: TrustPolicy | None = None,
) -> tuple[list[Target], list[str]]:
    """The verified targets of a selection, in trail order, and notes (e.g. duplicates skipped).

    ``trust``: the trust policy (spec §5b); keys then come from the root's
    certificates and an unanchored chain's decisions are not replayed."""
    selection.check()
    if len(selection.request_ids) > _LOOKUPS_UP_TO:
        # Many ids: one pass over the chains beats one chain read per id (read_decision is O(chain)).
        wanted = set(selection.request_ids)
        targets, notes = scan(
            store,
            selection,
            require_checkpoint=require_checkpoint,
            progress=progress,
            want=lambda body: body.request_id in wanted,
            trust=trust,
        )
        found = {t.request_id for t in targets}
        by_id = {t.request_id: t for t in targets}
        missing = [
            Target(request_id=r, problem=("not_found", f"no decision with request id {r!r} in {store.url}"))
            for r in dict.fromkeys(selection.request_ids)
            if r not in found
        ]
        ordered = [by_id[r] for r in dict.fromkeys(selection.request_ids) if r in by_id]
        return ordered + missing, notes
    if selection.request_ids:
        targets = []
        for n, request_id in enumerate(dict.fromkeys(selection.request_ids), start=1):
            targets.append(_lookup(store, request_id, require_checkpoint, trust))
            if progress:
                progress(n, len(selection.request_ids))
        return targets, []
    return scan(store, selection, require_checkpoint=require_checkpoint, progress=progress, trust=trust)


def _lookup(store: WormStore, request_id: str, require_checkpoint: bool, trust: TrustPolicy | None) -> Target:
    try:
        verified = read_decision(store, request_id, require_checkpoint=require_checkpoint, trust=trust)
    except ReadError as exc:
        advice = f": {NOT_CHECKPOINTED_ADVICE}" if exc.reason == "not_checkpointed" else ""
        return Target(request_id=request_id, problem=(exc.reason, f"{exc}{advice}"))
    except (StoreError, ValueError) as exc:
        return Target(request_id=request_id, problem=("store_error", f"{type(exc).__name__}: {exc}"))
    inclusion = verified.inclusion
    if inclusion is not None:
        how = (
            f"signature ({verified.key_id}) and RFC 6962 inclusion proof of leaf {inclusion.leaf_index} in "
            f"signed checkpoint {inclusion.tree_size} (root {inclusion.root[:16]}...)"
        )
    else:
        how = f"signature ({verified.key_id}) and chain position; not yet covered by a checkpoint"
    body = verified.body
    return Target(
        request_id=request_id,
        chain_id=verified.chain_id,
        seq=verified.seq,
        record_hash=verified.record_hash,
        record=record_bytes(verified.record),
        verification=how,
        decided_at=body.decided_at,
        model=f"{body.model.name}:{body.model.version}",
        body=body,
    )


# --- the batch scan ----------------------------------------------------------------------------


def _wanted(selection: Selection) -> Callable[[DecisionBody], bool]:
    def want(body: DecisionBody) -> bool:
        if selection.model is not None and body.model.name != selection.model:
            return False
        if selection.version is not None and body.model.version != selection.version:
            return False
        if selection.since is not None and body.decided_at < selection.since:
            return False
        return selection.until is None or body.decided_at < selection.until

    return want


def scan(
    store: WormStore,
    selection: Selection,
    *,
    require_checkpoint: bool = True,
    progress: Callable[[int, int], None] | None = None,
    want: Callable[[DecisionBody], bool] | None = None,
    trust: TrustPolicy | None = None,
) -> tuple[list[Target], list[str]]:
    """Read each selected chain once and prove every selected decision in it."""
    chains = [selection.chain] if selection.chain else chain_ids(store)
    want = want or _wanted(selection)
    keys = _KeyCache(store)
    targets: list[Target] = []
    notes: list[str] = []
    for chain_id in chains:
        anchors = load_anchors(store, chain_id, trust) if trust is not None else None
        _ChainScan(store, chain_id, keys, require_checkpoint, anchors).run(want, targets, notes, progress)
    return targets, notes


class _KeyCache:
    """Published public keys by id, each checked once (as read_decision does)."""

    def __init__(self, store: WormStore) -> None:
        self.store = store
        self._keys: dict[str, Ed25519PublicKey | ReadError] = {}

    def get(self, key_id: str) -> Ed25519PublicKey:
        """The published key ``key_id``, checked; ReadError (remembered) if it is missing or bad."""
        if key_id not in self._keys:
            try:
                doc = decode_key_document(self.store.get(layout.public_key_key(key_id)))
                if doc.key_id != key_id:
                    raise KeyDocumentError(f"document names {doc.key_id}")
                self._keys[key_id] = check_key_document(doc)
            except ObjectMissing:
                self._keys[key_id] = ReadError(
                    "unknown_key", f"signing key {key_id} is not published in {self.store.url}"
                )
            except (KeyDocumentError, layout.LayoutError) as exc:
                self._keys[key_id] = ReadError("bad_key_document", f"published key {key_id}: {exc}")
        found = self._keys[key_id]
        if isinstance(found, ReadError):
            raise found
        return found


_Checkpoint = tuple[int, str, bytes | None, tuple[str, str] | None]
"""A chain's latest checkpoint: (size, store key, verified root or None, problem or None)."""


class _Candidate(msgspec.Struct):
    position: int
    raw: bytes
    signature: bytes
    body: DecisionBody
    segment_key: str


class _ChainScan:
    def __init__(
        self,
        store: WormStore,
        chain_id: str,
        keys: _KeyCache,
        require_checkpoint: bool,
        anchors: ChainAnchors | None = None,
    ) -> None:
        self.store, self.chain_id, self.keys, self.require_checkpoint = store, chain_id, keys, require_checkpoint
        self.anchors = anchors

    def _key(self, key_id: str, seq: int) -> Ed25519PublicKey:
        """The certified key under a trust policy (spec §5a), else the published one; ReadError if neither."""
        if self.anchors is None:
            return self.keys.get(key_id)
        cert = self.anchors.for_key(key_id, seq)
        if cert is None:
            raise ReadError("uncertified_key", f"{key_id} is not certified for chain {self.chain_id} at seq {seq}")
        return Ed25519PublicKey.from_public_bytes(self.anchors.public_key(cert.from_seq, key_id))

    def run(
        self,
        want: Callable[[DecisionBody], bool],
        targets: list[Target],
        notes: list[str],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        leaves: list[bytes] = []
        timeline = KeyTimeline()
        candidates: list[_Candidate] = []
        chain_problem: tuple[str, str] | None = None
        seg_keys = list(self.store.list_keys(layout.segments_prefix(self.chain_id)))
        for n, (key, data) in enumerate(_prefetch(self.store, seg_keys), start=1):
            if progress:
                progress(n, len(seg_keys))
            if chain_problem is not None:
                continue
            try:
                for line in iter_lines(data):
                    raw, signature = split_line(line)
                    position = len(leaves)
                    leaves.append(merkle.leaf_hash(hashlib.sha256(raw).digest()))
                    timeline.feed(position, raw)  # decodes only genesis and key rotations
                    # Canonical JSON escapes every quote inside a string, so this byte pattern
                    # only occurs as the real member: other records need no decoding here
                    # (replay chains hold many access records).
                    if b'"kind":"decision"' not in raw:
                        continue
                    header = decode_header(raw)
                    if body_kind(header.body) == "decision":
                        body = decode_body(header.body)
                        if isinstance(body, DecisionBody) and want(body):
                            candidates.append(_Candidate(position, raw, signature, body, key))
            except RecordError as exc:
                # read_decision reads the chain to prove inclusion and fails the same way.
                chain_problem = ("parse_error", f"{key}: {exc}")
            except ObjectMissing:
                chain_problem = ("parse_error", f"{key} disappeared while reading")
        if chain_problem is None and self.anchors is not None:
            try:
                timeline.check_anchored(self.anchors)
            except TrustError as exc:
                chain_problem = (exc.reason, exc.message)
        if chain_problem is not None:
            for c in candidates:
                targets.append(self._target(c, problem=chain_problem))
            return
        if not candidates:
            return  # nothing selected here (e.g. a replay chain): no checkpoint to check
        checkpoint = self._checkpoint(leaves, timeline)
        entries = self._index_entries([c.body.request_id for c in candidates])
        for c, entry in zip(candidates, entries, strict=True):  # one index lookup per candidate
            if isinstance(entry, IndexEntry) and (entry.chain_id, entry.seq) != (self.chain_id, c.position):
                notes.append(
                    f"{self.chain_id}/{c.position}: request {c.body.request_id!r} is a superseded duplicate "
                    f"(the index names {entry.chain_id}/{entry.seq}); replayed there, not here"
                )
                continue
            targets.append(self._prove(c, entry, leaves, timeline, checkpoint))

    # -- pieces

    def _index_entries(self, request_ids: list[str]) -> list[IndexEntry | tuple[str, str] | None]:
        index = RequestIndex(self.store)

        def get(request_id: str) -> IndexEntry | tuple[str, str] | None:
            try:
                return index.get(request_id)
            except ValueError as exc:  # a malformed index entry
                return ("index_mismatch", str(exc))
            except StoreError as exc:
                return ("store_error", str(exc))

        if len(request_ids) < 16:
            return [get(r) for r in request_ids]
        parts = [request_ids[i::_READ_THREADS] for i in range(_READ_THREADS)]
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="replay-index") as pool:
            done = list(pool.map(lambda part: [get(r) for r in part], parts))
        out: list[IndexEntry | tuple[str, str] | None] = [None] * len(request_ids)
        for i, part in enumerate(done):
            out[i::_READ_THREADS] = part
        return out

    def _checkpoint(self, leaves: list[bytes], timeline: KeyTimeline) -> _Checkpoint:
        """(size, key, root, problem) of the latest checkpoint, verified against the records."""
        numbered = (
            (layout.number_from_key(k), k) for k in self.store.list_keys(layout.checkpoints_prefix(self.chain_id))
        )
        sizes = [(n, k) for n, k in numbered if n is not None]
        size, cp_key = max(sizes, default=(0, ""))
        if size == 0:
            return 0, "", None, None
        if len(leaves) < size:
            return (
                size,
                cp_key,
                None,
                ("chain_truncated", f"checkpoint {cp_key} covers {size} records, the chain holds {len(leaves)}"),
            )
        try:
            verified = open_chain_checkpoint(self.store.get(cp_key), size, timeline, self.anchors, self.keys.get)
        except ReadError as exc:
            return size, cp_key, None, (exc.reason, str(exc))
        except CheckpointError as exc:
            return size, cp_key, None, ("bad_checkpoint_signature", f"{cp_key}: {exc}")
        if verified.checkpoint.size != size:
            return (
                size,
                cp_key,
                None,
                ("bad_checkpoint", f"{cp_key} holds a checkpoint of size {verified.checkpoint.size}"),
            )
        root = merkle.root_from_leaf_hashes(leaves[:size])
        if root != verified.checkpoint.root:
            return (
                size,
                cp_key,
                None,
                (
                    "checkpoint_root_mismatch",
                    f"chain {self.chain_id}: the records give root {root.hex()[:16]}..., signed checkpoint {size} says "
                    f"{verified.checkpoint.root.hex()[:16]}... (a record under the checkpoint was altered)",
                ),
            )
        return size, cp_key, root, None

    def _target(self, c: _Candidate, problem: tuple[str, str] | None = None, how: str | None = None) -> Target:
        return Target(
            request_id=c.body.request_id,
            chain_id=self.chain_id,
            seq=c.position,
            record_hash=hashlib.sha256(c.raw).hexdigest(),
            record=b"" if problem else c.raw,
            verification=how,
            problem=problem,
            decided_at=c.body.decided_at,
            model=f"{c.body.model.name}:{c.body.model.version}",
            body=None if problem else c.body,
        )

    def _prove(self, c: _Candidate, entry, leaves, timeline, checkpoint) -> Target:  # noqa: ANN001
        where = f"{self.chain_id}/{c.position}"
        if entry is None:
            return self._target(
                c, ("index_missing", f"record {where}: request {c.body.request_id!r} has no index entry")
            )
        if isinstance(entry, tuple):
            return self._target(c, entry)
        digest = hashlib.sha256(c.raw).digest()
        if entry.record_hash != digest.hex():
            return self._target(
                c, ("hash_mismatch", f"record {where} hashes to {digest.hex()}, the index says {entry.record_hash}")
            )
        try:
            record = decode_record(c.raw)
        except RecordError as exc:
            return self._target(c, ("bad_record", f"record {where}: {exc}"))
        # The canonical-form check (re-encoding, ~0.4 ms a record) runs where the
        # record is re-scored (replay.rescore, in the worker processes).
        if (
            record.seq != c.position
            or record.chain_id != self.chain_id
            or entry.seq != c.position
            or entry.chain_id != self.chain_id
            or entry.request_sha256 != c.body.request_sha256
            or entry.segment_key != c.segment_key
        ):
            return self._target(c, ("index_mismatch", f"record {where} is not the decision the index names"))
        try:
            public_key = self._key(record.key_id, c.position)
        except ReadError as exc:
            return self._target(c, (exc.reason, str(exc)))
        if not verify_record_signature(public_key, digest, c.signature):
            return self._target(c, ("bad_signature", f"record {where}: signature does not verify with {record.key_id}"))
        if timeline.key_at(c.position) != record.key_id:
            return self._target(
                c,
                (
                    "key_not_valid_at_seq",
                    f"record {where} is signed by {record.key_id}, not the chain's key at that seq",
                ),
            )
        size, _cp_key, root, problem = checkpoint
        if c.position >= size:
            if self.require_checkpoint:
                return self._target(
                    c,
                    (
                        "not_checkpointed",
                        f"record {where} is not yet covered by a signed checkpoint "
                        f"(size {size}): {NOT_CHECKPOINTED_ADVICE}",
                    ),
                )
            return self._target(
                c, how=f"signature ({record.key_id}) and chain position; not yet covered by a checkpoint"
            )
        if problem is not None:
            return self._target(c, problem)
        return self._target(
            c,
            how=(
                f"signature ({record.key_id}) and inclusion in signed checkpoint {size} "
                f"(root {root.hex()[:16]}... recomputed from the chain's records)"
            ),
        )


def _prefetch(store: WormStore, keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) in order, a few reads ahead (object stores have latency)."""
    if len(keys) <= 2:
        for key in keys:
            yield key, store.get(key)
        return
    with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="replay-read") as pool:
        futures = [(key, pool.submit(store.get, key)) for key in keys[: _READ_THREADS * 4]]
        next_i = len(futures)
        while futures:
            key, future = futures.pop(0)
            if next_i < len(keys):
                futures.append((keys[next_i], pool.submit(store.get, keys[next_i])))
                next_i += 1
            try:
                yield key, future.result()
            except ObjectMissing:
                yield key, b""

"""The request index: ``request_id -> (chain, seq, record hash, segment version)``.

One write-once object per request id, at ``index/requests/<sha256(request_id)>``
(the hash keeps arbitrary request ids within the store's key alphabet). Every
gateway replica writes into the same index, so a request id is *claimed*
exactly once across all replicas: the first put wins, a later one gets
ObjectExists and learns the owner (:class:`IndexConflict`), which is how the
gateway answers a retried request idempotently (same payload) or with 409
(different payload).

Entries are written after the segment holding their record is durable, so
they can pin the segment's version (S3 VersionId); the chain writer's
recovery re-writes any entry a crash cut off.
"""

from __future__ import annotations

import json
from typing import Annotated

import msgspec

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.records import Hex64
from verdict.audit.stores.base import ObjectExists, ObjectMissing, WormStore

__all__ = [
    "DuplicateMemberError",
    "IndexConflict",
    "IndexEntry",
    "IndexEntryError",
    "NonCanonicalEntryError",
    "RequestIndex",
    "decode_entry",
    "decode_stored_entry",
    "encode_entry",
]


class IndexEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a decision record lives. Every field is always encoded
    (``segment_version`` is ``null`` on unversioned stores)."""

    request_id: str
    chain_id: str
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    record_hash: Hex64
    segment_key: str
    segment_version: str | None
    request_sha256: Hex64


class IndexConflict(msgspec.Struct, frozen=True):
    """Returned instead of a Receipt when the request id was already claimed by
    another record (another replica, or an earlier record of this chain). The
    new record is durable in the chain (a superseded duplicate); the index keeps
    pointing at ``existing``."""

    request_id: str
    existing: IndexEntry
    duplicate: IndexEntry | None = None
    """Where the superseded duplicate was written (its segment holds it all the same)."""


class IndexEntryError(ValueError):
    """An index object is malformed (not JSON, or not the schema of an entry).

    ``entry`` is the entry as far as it could be read (None if it could not),
    so a verifier can still check where a malformed-but-readable entry points."""

    def __init__(self, message: str, entry: IndexEntry | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class DuplicateMemberError(IndexEntryError):
    """An index object names a member twice. JSON decoders silently keep one of
    the values (msgspec and Python's json the last, others the first), so two
    readers could disagree on where the entry points: rejected, not resolved."""


class NonCanonicalEntryError(IndexEntryError):
    """A well-formed entry whose bytes are not its canonical encoding (§2), so
    the same entry could be stored in more than one byte form."""


_decoder = msgspec.json.Decoder(IndexEntry)
_sorted = msgspec.json.Encoder(order="sorted")


def encode_entry(entry: IndexEntry) -> bytes:
    """Canonical JSON (RFC 8785) of an entry.

    An entry holds only strings, one small integer and null, so msgspec's
    sorted output is already RFC 8785 (same string escaping, keys are ASCII,
    no floats); audit.canonical would take its slow path for the ``null`` on
    every filesystem entry. Checked against canonical_bytes and the rfc8785
    package in tests/audit/test_index.py.
    """
    if not 0 <= entry.seq <= 2**53 - 1:
        return canonical_bytes(entry)  # raises for the out-of-range seq
    return _sorted.encode(entry)


def decode_entry(data: bytes) -> IndexEntry:
    """Schema check only (unknown members and wrong types are errors): the
    gateway's read path, which trusts the writer's canonical bytes."""
    try:
        return _decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise IndexEntryError(f"not an index entry: {exc}") from None


def decode_stored_entry(data: bytes) -> IndexEntry:
    """The verifier's strict read (§7): no duplicate member, the schema, and
    exactly the canonical bytes of what was read. Raises DuplicateMemberError,
    IndexEntryError, or NonCanonicalEntryError carrying the decoded entry (its
    pointer can still be checked)."""
    _reject_duplicate_members(data)
    entry = decode_entry(data)
    canonical = encode_entry(entry)  # the schema keeps seq within I-JSON: never the slow path's error
    if canonical != data:
        raise NonCanonicalEntryError(
            f"index entry bytes are not canonical JSON (RFC 8785); expected {canonical.decode('utf-8', 'replace')}",
            entry,
        )
    return entry


def _reject_duplicate_members(data: bytes) -> None:
    """Duplicates must be found before msgspec decodes: it keeps the last value silently."""

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        names = [name for name, _ in items]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise DuplicateMemberError(f"index entry has duplicate member(s) {', '.join(map(repr, repeated))}")
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except DuplicateMemberError:
        raise
    except (ValueError, RecursionError):
        pass  # not JSON at all: decode_entry reports it with the schema error


class RequestIndex:
    """Read side of the index (the chain writer does the writes)."""

    def __init__(self, store: WormStore) -> None:
        self.store = store

    @staticmethod
    def key(request_id: str) -> str:
        return layout.index_key(request_id)

    def get(self, request_id: str) -> IndexEntry | None:
        try:
            data = self.store.get(self.key(request_id))
        except ObjectMissing:
            return None
        entry = decode_entry(data)
        if entry.request_id != request_id:
            raise IndexEntryError(f"{self.key(request_id)} holds the entry of request {entry.request_id!r}")
        return entry

    def claim(self, entries: list[IndexEntry]) -> list[IndexEntry | IndexConflict]:
        """Write entries once (one durable round); per entry, the entry itself if it
        is now in the index (written now or identical already) or an IndexConflict."""
        items = [(self.key(e.request_id), encode_entry(e)) for e in entries]
        if not items:
            return []
        try:
            self.store.put_many_once(items)
            return list(entries)
        except ObjectExists:
            pass  # some keys were taken; the others of the round are durable
        results: list[IndexEntry | IndexConflict] = []
        for entry, (key, data) in zip(entries, items, strict=True):
            try:
                existing_data = self.store.get(key)
            except ObjectMissing:
                # Not written by the failed round (backends may stop early): write it alone.
                try:
                    self.store.put_once(key, data)
                    results.append(entry)
                    continue
                except ObjectExists:
                    existing_data = self.store.get(key)
            if existing_data == data:
                results.append(entry)
            else:
                results.append(IndexConflict(entry.request_id, decode_entry(existing_data), entry))
        return results

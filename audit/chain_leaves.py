"""A chain's Merkle leaves and key timeline, read once and extended as the chain grows.

Why: proving one record's inclusion in the latest checkpoint needs every leaf hash of
the chain up to that checkpoint. Read afresh per lookup, that is the whole chain per
page an examiner opens (seconds at 100,000 records). Segments are write-once, so a
reader that keeps what it has read, as a :class:`~verdict.audit.merkle.MerkleTree`,
only reads the segments written since, and each proof costs O(log^2 n) hashes.

Why this stays sound: a proof from kept leaves still checks the record read *now*
against them (its hash must equal the kept leaf at its seq) and the kept leaves
against the checkpoint's signed root; an intruder who rewrites a segment after it was
read makes the rewritten records fail that first check (``hash_mismatch``), so a
lookup can never show an altered record as verified. What a kept view does not do is
re-detect a rewrite of *other* records on every lookup: that is the verifier's job
(``verdict audit verify``, the immutability test), which always reads the store.
"""

from __future__ import annotations

import hashlib
import sys
import threading

from verdict.audit import layout
from verdict.audit.merkle import MerkleTree, leaf_hash
from verdict.audit.records import RecordError, iter_lines, split_line
from verdict.audit.stores.base import WormStore
from verdict.audit.walk import KeyTimeline

__all__ = ["ChainLeaves", "LeafCache", "LeafReadError", "chain_ids"]


def chain_ids(store: WormStore) -> list[str]:
    """Every chain with at least one segment (one listing of the store's chains)."""
    found: set[str] = set()
    for key in store.list_keys(layout.CHAINS_PREFIX):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "segments":
            found.add(parts[1])
    return sorted(found)


class LeafReadError(ValueError):
    """A segment that does not parse: ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ChainLeaves:
    """Leaf hashes (a MerkleTree) and key timeline of one chain, as far as read so far."""

    def __init__(self, store: WormStore, chain_id: str) -> None:
        self.store, self.chain_id = store, chain_id
        self.tree = MerkleTree()
        self.timeline = KeyTimeline()
        self.lock = threading.Lock()

    def read(self, upto: int) -> None:
        """Read whole segments until at least ``upto`` records are held (or the chain ends).
        Call with ``lock`` held when the object is shared."""
        if self.tree.size >= upto:
            return
        for key in self.store.list_keys(layout.segments_prefix(self.chain_id)):
            first = layout.number_from_key(key)
            if first is None or first >= upto:
                break
            if first < self.tree.size:
                continue  # read before
            try:
                for line in iter_lines(self.store.get(key)):
                    raw, _ = split_line(line)
                    self.timeline.feed(self.tree.size, raw)
                    self.tree.append(leaf_hash(hashlib.sha256(raw).digest()))
            except BaseException as exc:
                self._forget()  # never keep half a segment: the next call starts again from the genesis
                if isinstance(exc, RecordError):
                    raise LeafReadError(key, str(exc)) from None
                raise

    def _forget(self) -> None:
        self.tree, self.timeline = MerkleTree(), KeyTimeline()


class LeafCache:
    """One :class:`ChainLeaves` per chain of one store, kept for the life of a reader
    (a lookup service): about 64 bytes per record."""

    def __init__(self, store: WormStore) -> None:
        self.store = store
        self._chains: dict[str, ChainLeaves] = {}
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Read every chain now (at a gateway's start, in the background), so that the
        first lookup after a start does not read a whole chain while someone waits."""
        for chain_id in chain_ids(self.store):
            leaves = self.chain(chain_id)
            with leaves.lock:
                leaves.read(sys.maxsize)

    def chain(self, chain_id: str) -> ChainLeaves:
        with self._lock:
            found = self._chains.get(chain_id)
            if found is None:
                found = self._chains[chain_id] = ChainLeaves(self.store, chain_id)
            return found

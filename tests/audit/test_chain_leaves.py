"""Kept leaves (audit.chain_leaves): lookups prove inclusion without re-reading the chain,
and never show an altered record as verified."""

from __future__ import annotations

import pytest

from tests.audit.helpers import decisions, overwrite, signer, store_path
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.chain_leaves import LeafCache
from verdict.audit.index import RequestIndex
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.stores import FilesystemStore


class CountingStore(FilesystemStore):
    """The real filesystem store, counting the segment objects it hands out."""

    segment_reads = 0

    def get(self, key, version=None):
        if "/segments/" in key:
            self.segment_reads += 1
        return super().get(key, version)


@pytest.fixture
def trail(tmp_path):
    store = CountingStore(tmp_path / "store")
    writer = ChainWriter.open(store, "gateway-0", signer(), checkpoint_every=4)
    for i in range(6):
        writer.append_batch(decisions(f"kept-{i}", 2))
    return store, writer


def test_kept_leaves_give_the_same_proofs_and_read_only_new_segments(trail):
    store, writer = trail
    cache = LeafCache(store)
    fresh = read_decision(store, "kept-0-1").inclusion
    store.segment_reads = 0
    first = read_decision(store, "kept-0-1", leaves=cache).inclusion
    assert first == fresh and first is not None
    chain_reads = store.segment_reads - 1  # the record's own segment
    assert chain_reads == len(list(store.list_keys(layout.segments_prefix("gateway-0"))))
    store.segment_reads = 0
    for request_id in ("kept-3-0", "kept-5-1", "kept-1-1"):
        assert read_decision(store, request_id, leaves=cache).inclusion == read_decision(store, request_id).inclusion
    store.segment_reads = 0
    read_decision(store, "kept-2-0", leaves=cache)
    assert store.segment_reads == 1  # only the record itself: the chain was kept
    writer.append_batch(decisions("later", 4))
    writer.checkpoint()
    store.segment_reads = 0
    later = read_decision(store, "later-3", leaves=cache).inclusion
    assert later == read_decision(store, "later-3").inclusion and later is not None
    assert later.tree_size == writer.size
    writer.close()


def test_a_record_altered_after_its_chain_was_kept_still_fails(trail, tmp_path):
    store, writer = trail
    writer.close()
    cache = LeafCache(store)
    assert read_decision(store, "kept-4-0", leaves=cache).inclusion is not None
    entry = RequestIndex(store).get("kept-2-1")
    path = store_path(tmp_path / "store", entry.segment_key)
    lines = path.read_bytes().split(b"\n")
    target = next(i for i, line in enumerate(lines) if b'"kept-2-1"' in line)
    lines[target] = lines[target].replace(b'"decision":"approve"', b'"decision":"decline"')
    overwrite(path, b"\n".join(lines))
    with pytest.raises(ReadError) as failed:
        read_decision(store, "kept-2-1", leaves=cache)
    assert failed.value.reason == "hash_mismatch"

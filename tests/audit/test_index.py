"""The request index, and reading one decision back with its proofs (audit.reader)."""

from __future__ import annotations

import hashlib
import json

import msgspec
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.audit.helpers import decision, decisions, overwrite, signer
from verdict.audit import layout, merkle
from verdict.audit.canonical import canonical_bytes
from verdict.audit.chain import ChainWriter
from verdict.audit.checkpoint import open_checkpoint
from verdict.audit.index import IndexConflict, IndexEntry, RequestIndex, decode_entry, encode_entry
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.signing import check_key_document
from verdict.audit.stores import FilesystemStore


@pytest.fixture
def store(tmp_path):
    return FilesystemStore(tmp_path / "store")


def _entry(request_id="r-1", seq=5):
    return IndexEntry(
        request_id=request_id,
        chain_id="gateway-0",
        seq=seq,
        record_hash="c" * 64,
        segment_key=layout.segment_key("gateway-0", 1),
        segment_version=None,
        request_sha256="d" * 64,
    )


def test_entry_encoding_is_canonical_with_explicit_null_version():
    data = encode_entry(_entry())
    assert data == (
        b'{"chain_id":"gateway-0","record_hash":"'
        + b"c" * 64
        + b'","request_id":"r-1","request_sha256":"'
        + b"d" * 64
        + b'","segment_key":"chains/gateway-0/segments/00000000000000000001","segment_version":null,"seq":5}'
    )
    assert decode_entry(data) == _entry()


@settings(max_examples=300, deadline=None)
@given(
    request_id=st.text(max_size=30),
    chain_id=st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
    seq=st.integers(0, 2**53 - 1),
    version=st.none() | st.text(max_size=20),
)
def test_entry_encoding_is_rfc8785(request_id, chain_id, seq, version):
    entry = IndexEntry(
        request_id, chain_id, seq, "e3" * 32, f"chains/{chain_id}/segments/{seq:020d}", version, "0" * 64
    )
    data = encode_entry(entry)
    assert data == canonical_bytes(entry) == rfc8785.dumps(msgspec.to_builtins(entry))
    assert decode_entry(data) == entry


def test_index_key_is_sha256_of_request_id():
    assert RequestIndex.key("req/ü 1") == "index/requests/" + hashlib.sha256("req/ü 1".encode()).hexdigest()


def test_get_and_claim(store):
    index = RequestIndex(store)
    assert index.get("r-1") is None
    assert index.claim([_entry("r-1"), _entry("r-2", 6)]) == [_entry("r-1"), _entry("r-2", 6)]
    assert index.get("r-1") == _entry("r-1")
    # same entry again: fine (idempotent repair); a different one: conflict naming the owner
    result = index.claim([_entry("r-1"), _entry("r-2", 99), _entry("r-3", 7)])
    assert result[0] == _entry("r-1")
    assert result[1] == IndexConflict("r-2", _entry("r-2", 6), _entry("r-2", 99))  # the owner, and the duplicate
    assert result[2] == _entry("r-3", 7)
    assert index.get("r-3") == _entry("r-3", 7)


def test_get_refuses_an_entry_stored_under_another_request_id(store):
    store.put_once(RequestIndex.key("a"), encode_entry(_entry("b")))
    with pytest.raises(ValueError, match="holds the entry of request 'b'"):
        RequestIndex(store).get("a")


# --- reader -----------------------------------------------------------------------------------


def test_read_decision_verifies_and_proves_inclusion(store):
    s = signer()
    with ChainWriter.open(store, "gateway-0", s, checkpoint_every=10) as writer:
        receipts = writer.append_batch(decisions("r", 30))
    verified = read_decision(store, "r-17", require_checkpoint=True)
    assert verified.seq == receipts[17].seq and verified.record_hash == receipts[17].record_hash
    assert verified.body.request_id == "r-17" and verified.key_id == s.key_id
    inc = verified.inclusion
    assert inc is not None and inc.tree_size == 31 and inc.leaf_index == verified.seq
    # an independent check of the proof against the signed checkpoint
    cp = open_checkpoint(inc.checkpoint_note.encode(), {s.key_id: check_key_document(s.public_key_document)})
    assert cp.checkpoint.root.hex() == inc.root
    merkle.verify_inclusion(
        merkle.leaf_hash(bytes.fromhex(verified.record_hash)),
        inc.leaf_index,
        inc.tree_size,
        [bytes.fromhex(h) for h in inc.hashes],
        cp.checkpoint.root,
    )
    json.loads(msgspec.json.encode(verified))  # serialisable for `audit show --json`
    assert verified.receipt() == receipts[17]
    quick = read_decision(store, "r-17", prove=False)
    assert quick.inclusion is None and quick.receipt() == receipts[17]


def test_read_decision_not_yet_checkpointed(store):
    writer = ChainWriter.open(store, "gateway-0", signer(), checkpoint_every=1000)
    writer.append(decision("fresh"))
    assert read_decision(store, "fresh").inclusion is None
    with pytest.raises(ReadError) as err:
        read_decision(store, "fresh", require_checkpoint=True)
    assert err.value.reason == "not_checkpointed"
    writer.close()
    assert read_decision(store, "fresh", require_checkpoint=True).inclusion is not None


def test_read_decision_errors(store, tmp_path):
    with ChainWriter.open(store, "gateway-0", signer()) as writer:
        writer.append_batch(decisions("r", 4))
    with pytest.raises(ReadError) as err:
        read_decision(store, "unknown")
    assert err.value.reason == "not_found"
    # tamper with a record: the hash no longer matches the index entry
    path = tmp_path / "store" / layout.segment_key("gateway-0", 1)
    overwrite(path, path.read_bytes().replace(b'"score":0.02', b'"score":0.03'))
    with pytest.raises(ReadError) as err:
        read_decision(store, "r-2")
    assert err.value.reason == "hash_mismatch"
    # and any record of the tree changed elsewhere breaks the inclusion proof
    with pytest.raises(ReadError) as err:
        read_decision(store, "r-0")
    assert err.value.reason == "checkpoint_root_mismatch"

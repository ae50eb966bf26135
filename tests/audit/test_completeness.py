"""Completeness (spec §8a): checkpoints and receipts held outside the store, and
witness cosignatures, prove that a chain was not cut off or rewritten. Real
chains, real keys, real cosignatures (tlog-cosignature/v1)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit.helpers import decision, signer
from verdict.audit import layout
from verdict.audit.chain import ChainBehindHeld, ChainWriter
from verdict.audit.completeness import HeldReceipt, parse_receipts
from verdict.audit.cosignature import cosign, encode_witness_vkey
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import RootKey, WitnessEntry
from verdict.audit.verifier import verify_store

CHAIN = "gw-0"


def reasons(report) -> set[str]:
    return {f.reason for f in report.failures}


def _remove(store: FilesystemStore, key: str) -> None:
    path = store.root / key
    path.parent.chmod(0o755)
    path.unlink()


def _truncate(store: FilesystemStore, keep: int) -> None:
    """What a store writer without keys does: drop segments, checkpoints and cosigned notes past ``keep`` records."""
    for prefix in (layout.segments_prefix(CHAIN),):
        for key in list(store.list_keys(prefix)):
            if layout.number_from_key(key) >= keep:
                _remove(store, key)
    for prefix in (layout.checkpoints_prefix(CHAIN), layout.cosigned_prefix(CHAIN)):
        for key in list(store.list_keys(prefix)):
            if layout.number_from_key(key) > keep:
                _remove(store, key)
    for key in list(store.list_keys(layout.INDEX_PREFIX)):
        _remove(store, key)  # simplest: every index entry goes (index_missing for what remains)


@pytest.fixture
def trail(tmp_path):
    """A certified chain of 1 + 4 batches of 3 decisions, a checkpoint after each batch; receipts kept."""
    store = FilesystemStore(tmp_path / "store")
    root = RootKey(signer(90))
    kept: list[bytes] = []
    receipts = []
    with ChainWriter.open(
        store, CHAIN, signer(1), root=root, lease=None, on_checkpoint=lambda size, note: kept.append(note)
    ) as writer:
        for batch in range(4):
            receipts += writer.append_batch([decision(f"d-{batch}-{i}") for i in range(3)])
            writer.checkpoint()
    held = [HeldReceipt(r.chain_id, r.seq, r.record_hash, r.signature, r.key_id) for r in receipts]
    return store, root, kept, held


def test_pristine_trail_with_held_checkpoints_and_receipts_verifies(trail):
    store, root, kept, held = trail
    report = verify_store(
        store, trust=root.policy(), held_checkpoints=[("cp", n) for n in kept], receipts=[("r", r) for r in held]
    )
    assert report.ok, report.failures
    assert [layout.number_from_key(k) for k in store.list_keys(layout.checkpoints_prefix(CHAIN))] == [1, 4, 7, 10, 13]


def test_truncation_is_caught_by_a_held_checkpoint_and_by_receipts(trail):
    store, root, kept, held = trail
    _truncate(store, keep=7)
    plain = verify_store(store, trust=root.policy())
    assert "below_held_checkpoint" not in reasons(plain) and "chain_truncated" not in reasons(plain)
    report = verify_store(
        store, trust=root.policy(), held_checkpoints=[("kept", kept[-1])], receipts=[(f"r{r.seq}", r) for r in held]
    )
    assert {"below_held_checkpoint", "receipt_missing"} <= reasons(report)
    missing = sorted(
        int(f.message.split("; record ")[1].split(" ")[0]) for f in report.failures if f.reason == "receipt_missing"
    )
    assert missing == list(range(7, 13))


def test_wipe_to_nothing_is_caught_by_a_held_checkpoint(trail):
    store, root, kept, held = trail
    _truncate(store, keep=0)
    report = verify_store(store, trust=root.policy(), held_checkpoints=[("kept", kept[-1])], receipts=[("r", held[0])])
    assert {"below_held_checkpoint", "receipt_missing"} <= reasons(report)


def test_rewrite_with_the_chain_key_is_caught_by_held_checkpoint_and_receipt(trail):
    """The gateway host's own key rewrites history after records 0..3 (the row 'rewrite its chain')."""
    store, root, kept, held = trail
    _truncate(store, keep=4)
    for key in list(store.list_keys(layout.checkpoints_prefix(CHAIN))):
        if layout.number_from_key(key) == 4:
            _remove(store, key)  # the rewriter's recovery would re-checkpoint at 4 anyway
    with ChainWriter.open(store, CHAIN, signer(1), lease=None) as writer:  # the key, no trust: rewrite freely
        writer.append_batch([decision(f"other-{i}", score=0.99) for i in range(9)])
    report = verify_store(
        store, trust=root.policy(), held_checkpoints=[("kept", kept[-1])], receipts=[(f"r{r.seq}", r) for r in held]
    )
    assert {"held_checkpoint_mismatch", "receipt_mismatch"} <= reasons(report)
    assert "receipt_missing" not in reasons(report)


def test_a_forged_receipt_or_held_checkpoint_is_itself_rejected(trail):
    store, root, kept, held = trail
    forged = HeldReceipt(held[0].chain_id, held[0].seq, "00" * 32, held[0].signature, held[0].key_id)
    other = HeldReceipt(
        held[0].chain_id,
        held[0].seq,
        held[0].record_hash,
        base64.b64encode(signer(5).sign(b"x")).decode(),
        held[0].key_id,
    )
    bad_note = kept[-1].replace(b"\n13\n", b"\n12\n")
    report = verify_store(
        store, trust=root.policy(), receipts=[("a", forged), ("b", other)], held_checkpoints=[("n", bad_note)]
    )
    assert [f.reason for f in report.failures] == ["bad_held_checkpoint", "bad_receipt", "bad_receipt"]


def test_receipts_file_accepts_receipts_and_whole_decision_responses(trail):
    _, _, _, held = trail
    r = held[0]
    line = json.dumps(
        {
            "chain_id": r.chain_id,
            "seq": r.seq,
            "record_hash": r.record_hash,
            "signature": r.signature,
            "key_id": r.key_id,
        },
        separators=(",", ":"),
    )
    data = (line + "\n\n" + '{"decision":"approve","receipt":' + line + "}\n").encode()
    assert parse_receipts(data) == [r, r]
    with pytest.raises(ValueError, match="line 1"):
        parse_receipts(b'{"seq": 1}\n')


def _witness(name: str) -> tuple[str, Ed25519PrivateKey, WitnessEntry]:
    key = Ed25519PrivateKey.generate()
    return name, key, WitnessEntry(name=name, vkey=encode_witness_vkey(name, key.public_key()))


def test_cosigned_checkpoints_set_the_witnessed_size_and_truncation_below_fails(trail):
    store, root, kept, _ = trail
    witnesses = [_witness("w1"), _witness("w2")]
    policy = root.policy().with_witnesses([w[2] for w in witnesses], quorum=2)
    note = kept[-2]  # checkpoint 10
    cosigned = note + "".join(cosign(note, name, key, 1_700_000_000) for name, key, _ in witnesses).encode()
    store.put_once(layout.cosigned_key(CHAIN, 10), cosigned)
    report = verify_store(store, trust=policy)
    assert report.ok, report.failures
    assert report.witnessed == {CHAIN: 10}
    # two cosignatures are not a quorum of three
    third = _witness("w3")[2]
    assert (
        verify_store(store, trust=root.policy().with_witnesses([w[2] for w in witnesses] + [third], 3)).witnessed == {}
    )
    _truncate(store, keep=7)
    store.put_once(layout.cosigned_key(CHAIN, 10), cosigned)  # a copy kept by whoever restores it, or the witness's
    assert "below_witnessed_size" in reasons(verify_store(store, trust=policy))


def test_a_bad_cosignature_by_a_policy_witness_fails(trail):
    store, root, kept, _ = trail
    name, key, entry = _witness("w1")
    note = kept[-1]
    line = cosign(note, name, key, 1_700_000_000)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    bad = line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    store.put_once(layout.cosigned_key(CHAIN, 13), note + bad.encode())
    report = verify_store(store, trust=root.policy().with_witnesses([entry], quorum=1))
    assert reasons(report) == {"bad_cosignature"}


def test_writer_refuses_a_chain_behind_its_held_checkpoint(trail):
    store, root, kept, _ = trail
    _truncate(store, keep=7)
    with pytest.raises(ChainBehindHeld, match="below_held_checkpoint"):
        ChainWriter.open(store, CHAIN, signer(1), root=root, lease=None, held_checkpoints=[kept[-1]])
    assert max(layout.number_from_key(k) for k in store.list_keys(layout.segments_prefix(CHAIN))) < 7  # nothing written


def test_writer_refuses_a_wiped_chain(trail):
    store, root, kept, _ = trail
    _truncate(store, keep=0)
    with pytest.raises(ChainBehindHeld):
        ChainWriter.open(store, CHAIN, signer(1), root=root, lease=None, held_checkpoints=[kept[-1]])
    assert not list(store.list_keys(layout.segments_prefix(CHAIN)))  # no new genesis over the cut


def test_writer_refuses_a_rewritten_chain(trail):
    store, root, kept, _ = trail
    _truncate(store, keep=4)
    for key in list(store.list_keys(layout.checkpoints_prefix(CHAIN))):
        if layout.number_from_key(key) == 4:
            _remove(store, key)
    with ChainWriter.open(store, CHAIN, signer(1), lease=None) as writer:
        writer.append_batch([decision(f"other-{i}") for i in range(9)])
    with pytest.raises(ChainBehindHeld, match="held_checkpoint_mismatch"):
        ChainWriter.open(store, CHAIN, signer(1), root=root, lease=None, held_checkpoints=[kept[-1]])

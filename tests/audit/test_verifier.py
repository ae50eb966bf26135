"""The verifier: a clean store verifies; every kind of tampering is detected
with its own reason code, naming the first bad record."""

from __future__ import annotations

import base64
import hashlib
import json

import msgspec
import pytest

from tests.audit.helpers import decision, decisions, overwrite, signer
from verdict.audit import layout, merkle
from verdict.audit.chain import ChainWriter
from verdict.audit.checkpoint import Checkpoint, sign_checkpoint
from verdict.audit.index import decode_entry, encode_entry
from verdict.audit.records import (
    Record,
    decode_record,
    encode_line,
    iter_lines,
    record_bytes,
    split_line,
    utc_now,
)
from verdict.audit.signing import RECORD_SIGNATURE_DOMAIN, checkpoint_signer
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import REASONS, verify_store

CHAIN = "gateway-0"


@pytest.fixture
def trail(tmp_path):
    """A chain of 41 records (genesis + 4 batches of 10), checkpoints at 11, 21, 31, 41."""
    root = tmp_path / "store"
    store = FilesystemStore(root)
    with ChainWriter.open(store, CHAIN, signer(), checkpoint_every=10) as writer:
        for b in range(4):
            writer.append_batch(decisions(f"b{b}", 10))
    blob = b"model bytes"
    store.put_once(f"models/blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
    return store, root


def seg(root, first):
    return root / layout.segment_key(CHAIN, first)


def lines_of(path):
    return iter_lines(path.read_bytes())


def write_lines(path, lines):
    overwrite(path, b"".join(line + b"\n" for line in lines))


def reasons(report):
    return [f.reason for f in report.failures]


def test_clean_store_verifies(trail):
    store, _ = trail
    events = []
    report = verify_store(store, progress=lambda phase, done, total: events.append((phase, done, total)))
    assert report.ok and report.failures == [] and report.first_failure is None
    assert (report.records, report.segments, report.checkpoints, report.index_entries) == (41, 5, 5, 40)
    assert report.content_objects == 1 and report.key_documents == 1
    assert report.chains[0].last_checkpoint_size == 41
    assert ("segments", 5, 5) in events and ("index", 40, 40) in events
    json.loads(msgspec.json.encode(report))


def test_parallel_workers_give_the_same_answer(trail):
    store, root = trail
    path = seg(root, 11)
    lines = lines_of(path)
    lines[3] = lines[3].replace(b'"decision":"approve"', b'"decision":"decline"')
    write_lines(path, lines)
    one = verify_store(store, workers=1)
    two = verify_store(store, workers=2)
    assert two.workers == 2
    assert reasons(one) == reasons(two) and one.first_failure == two.first_failure


def test_byte_changed_in_a_record(trail):
    store, root = trail
    path = seg(root, 11)
    lines = lines_of(path)
    lines[3] = lines[3].replace(b'"decision":"approve"', b'"decision":"decline"')
    write_lines(path, lines)
    report = verify_store(store)
    assert not report.ok
    first = report.first_failure
    assert (first.reason, first.seq, first.key) == ("hash_mismatch", 14, layout.segment_key(CHAIN, 11))
    assert "broken_link" not in reasons(report)  # the alteration explains record 15's link
    assert "checkpoint_root_mismatch" in reasons(report) and "index_mismatch" in reasons(report)


def test_record_deleted(trail):
    store, root = trail
    path = seg(root, 11)
    lines = lines_of(path)
    del lines[4]
    write_lines(path, lines)
    first = verify_store(store).first_failure
    assert (first.reason, first.seq) == ("seq_gap", 15)


def test_two_records_swapped(trail):
    store, root = trail
    path = seg(root, 21)
    lines = lines_of(path)
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(path, lines)
    first = verify_store(store).first_failure
    assert (first.reason, first.seq) == ("seq_out_of_order", 24)


def test_tail_truncated_after_a_checkpoint(trail):
    store, root = trail
    seg(root, 31).unlink()
    report = verify_store(store)
    assert report.first_failure.reason == "chain_truncated"
    assert "chain truncated: checkpoint at size 41 but only 31 records" in report.first_failure.message


def test_forged_signature_from_another_key(trail):
    store, root = trail
    path = seg(root, 1)
    lines = lines_of(path)
    raw, _ = split_line(lines[5])
    forged = signer(9).sign(RECORD_SIGNATURE_DOMAIN + hashlib.sha256(raw).digest())
    lines[5] = encode_line(raw, forged)[:-1]
    write_lines(path, lines)
    report = verify_store(store)
    assert (report.first_failure.reason, report.first_failure.seq) == ("bad_signature", 6)
    assert reasons(report) == ["bad_signature"]


def test_record_resigned_with_an_unpublished_key(trail):
    store, root = trail
    path = seg(root, 1)
    lines = lines_of(path)
    raw, _ = split_line(lines[2])
    intruder = signer(7)
    record = decode_record(raw)
    changed = msgspec.structs.replace(
        record, key_id=intruder.key_id, body=msgspec.structs.replace(record.body, decision="decline")
    )
    data = record_bytes(changed)
    lines[2] = encode_line(data, intruder.sign(RECORD_SIGNATURE_DOMAIN + hashlib.sha256(data).digest()))[:-1]
    write_lines(path, lines)
    report = verify_store(store)
    assert (report.first_failure.reason, report.first_failure.seq) == ("unknown_key", 3)
    assert intruder.key_id in report.first_failure.message


def test_index_entry_pointing_elsewhere(trail):
    store, root = trail
    key = layout.index_key("b1-5")
    other = decode_entry(store.get(layout.index_key("b1-6")))
    overwrite(root / key, encode_entry(msgspec.structs.replace(other, request_id="b1-5")))
    report = verify_store(store)
    assert report.first_failure.reason == "index_mismatch" and report.first_failure.key == key
    assert "index_missing" in reasons(report)  # b1-5's own record lost its entry


def test_index_entry_missing(trail):
    store, root = trail
    (root / layout.index_key("b2-0")).unlink()
    report = verify_store(store)
    assert reasons(report) == ["index_missing"] and report.first_failure.seq == 21


def test_checkpoint_inconsistent_with_an_earlier_one(trail):
    """Someone holding the key rewrote history from record 5 on and re-signed
    every later checkpoint: the earlier checkpoint 11 is still the original."""
    store, root = trail
    s = signer()
    # rewrite records 5.. with different content, re-sign and re-link them
    leaves = []
    prev = None
    for first in (1, 11, 21, 31):
        path = seg(root, first)
        new_lines = []
        for line in lines_of(path):
            raw, _ = split_line(line)
            record = decode_record(raw)
            if prev is not None:
                record = msgspec.structs.replace(record, prev_hash=prev)
            if record.seq >= 5:
                record = msgspec.structs.replace(record, body=msgspec.structs.replace(record.body, decision="decline"))
            data = record_bytes(record)
            digest = hashlib.sha256(data).digest()
            new_lines.append(
                encode_line(data, s.sign(RECORD_SIGNATURE_DOMAIN + digest))[:-1] if record.seq >= 5 else line
            )
            prev = digest.hex()
        write_lines(path, new_lines)
    genesis_raw, _ = split_line(lines_of(seg(root, 0))[0])
    leaves.append(merkle.leaf_hash(hashlib.sha256(genesis_raw).digest()))
    for first in (1, 11, 21, 31):
        for line in lines_of(seg(root, first)):
            leaves.append(merkle.leaf_hash(hashlib.sha256(split_line(line)[0]).digest()))
    for size in (21, 31, 41):  # the forger re-signs the later checkpoints
        note = sign_checkpoint(
            Checkpoint(f"verdict/{CHAIN}", size, merkle.root_from_leaf_hashes(leaves[:size])), [checkpoint_signer(s)]
        )
        overwrite(root / layout.checkpoint_key(CHAIN, size), note)
    for entry_key in store.list_keys(layout.INDEX_PREFIX):  # and fixes the index
        entry = decode_entry(store.get(entry_key))
        if entry.seq >= 5:
            fixed = msgspec.structs.replace(
                entry,
                record_hash=hashlib.sha256(
                    split_line(lines_of(root / entry.segment_key)[entry.seq - int(entry.segment_key[-20:])])[0]
                ).hexdigest(),
            )
            overwrite(root / entry_key, encode_entry(fixed))
    report = verify_store(store)
    assert not report.ok
    assert set(reasons(report)) == {"checkpoint_root_mismatch", "checkpoint_inconsistent"}
    inconsistent = [f for f in report.failures if f.reason == "checkpoint_inconsistent"]
    assert (
        inconsistent[0].key == layout.checkpoint_key(CHAIN, 21)
        and "checkpoint 21 does not extend checkpoint 11" in inconsistent[0].message
    )


def test_checkpoint_with_a_bad_signature(trail):
    store, root = trail
    path = root / layout.checkpoint_key(CHAIN, 21)
    note = path.read_bytes()
    text, _, sig = note.rpartition(b" ")
    blob = bytearray(base64.b64decode(sig))
    blob[10] ^= 1
    overwrite(path, text + b" " + base64.b64encode(bytes(blob)) + b"\n")
    report = verify_store(store)
    assert reasons(report) == ["bad_checkpoint_signature"] and report.first_failure.key == layout.checkpoint_key(
        CHAIN, 21
    )


def test_old_key_signing_after_rotation(tmp_path):
    store = FilesystemStore(tmp_path / "store")
    old, new = signer(1), signer(2)
    with ChainWriter.open(store, CHAIN, old) as writer:
        writer.append_batch(decisions("a", 3))
        writer.rotate_key(new)
        writer.append_batch(decisions("b", 2))
        head, size = writer.head_hash, writer.size
    # a record signed with the retired key, correctly linked
    record = Record(chain_id=CHAIN, seq=size, prev_hash=head, time=utc_now(), key_id=old.key_id, body=decision("late"))
    data = record_bytes(record)
    store.put_once(
        layout.segment_key(CHAIN, size),
        encode_line(data, old.sign(RECORD_SIGNATURE_DOMAIN + hashlib.sha256(data).digest())),
    )
    report = verify_store(store)
    assert (report.first_failure.reason, report.first_failure.seq) == ("key_not_valid_at_seq", size)
    # records before the rotation, signed by the old key, are all fine
    assert all(f.seq >= size for f in report.failures if f.seq is not None)


def test_content_addressed_object_mismatch(trail):
    store, _ = trail
    wrong = "0" * 64
    store.put_once(f"environments/sha256/{wrong}", b"{}")
    report = verify_store(store)
    assert reasons(report) == ["content_hash_mismatch"] and report.first_failure.key == f"environments/sha256/{wrong}"


def test_unexpected_object_and_misnamed_segment(trail):
    store, root = trail
    store.put_once(f"chains/{CHAIN}/notes.txt", b"hello")
    seg(root, 31).rename(seg(root, 32))
    found = set(reasons(verify_store(store)))
    assert {"unexpected_object", "segment_key_mismatch"} <= found


def test_overlapping_segment(trail):
    store, root = trail
    store.put_once(layout.segment_key(CHAIN, 41), seg(root, 31).read_bytes())
    report = verify_store(store)
    assert "seq_overlap" in reasons(report) and "segment_key_mismatch" in reasons(report)


def test_unpublished_key_document_removed(trail):
    store, root = trail
    (root / layout.public_key_key(signer().key_id)).unlink()
    report = verify_store(store)
    assert report.first_failure.reason == "unknown_key" and report.first_failure.seq == 0


def test_reason_codes_are_documented():
    doc = (__import__("pathlib").Path(__file__).parents[2] / "docs" / "audit-format.md").read_text()
    from verdict.audit.verifier import NOTES

    for code in [*REASONS, *NOTES]:
        assert f"`{code}`" in doc, code


def test_verifying_a_live_chain_gives_no_false_alarms(tmp_path):
    import threading

    store = FilesystemStore(tmp_path / "store")
    writer = ChainWriter.open(store, CHAIN, signer(), checkpoint_every=16)
    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            writer.append_batch(decisions(f"live{n}", 8))
            n += 1

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        reports = [verify_store(store) for _ in range(6)]
    finally:
        stop.set()
        thread.join()
        writer.close()
    for report in reports:
        assert report.ok, report.failures[:3]
    assert verify_store(store).ok

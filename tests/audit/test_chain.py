"""The chain writer: group commit, recovery, conflicts, rotation, crashes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.audit.helpers import checkpoint_sizes, decision, decisions, segment_keys, signer, staged_files
from verdict.audit import layout
from verdict.audit.chain import ChainConflict, ChainCorrupt, ChainError, ChainWriter, KeyMismatch, Receipt
from verdict.audit.index import IndexConflict, RequestIndex
from verdict.audit.records import AccessBody, GenesisBody, KeyRotationBody, decode_record, iter_lines, split_line
from verdict.audit.signing import FileKeyStore, check_key_document, verify_record_signature
from verdict.audit.stores import FilesystemStore, StoreUnavailable
from verdict.audit.verifier import verify_store

REPO = Path(__file__).parents[2]


@pytest.fixture
def store(tmp_path):
    return FilesystemStore(tmp_path / "store")


def _records(store, chain_id="gateway-0"):
    out = []
    for key in segment_keys(store, chain_id):
        for line in iter_lines(store.get(key)):
            raw, signature = split_line(line)
            out.append((key, decode_record(raw), raw, signature))
    return out


def test_new_chain_starts_with_a_signed_genesis_record(store):
    s = signer()
    with ChainWriter.open(store, "gateway-0", s) as writer:
        assert writer.size == 1 and writer.origin == "verdict/gateway-0"
    ((key, record, raw, signature),) = _records(store)
    assert key == "chains/gateway-0/segments/00000000000000000000"
    assert isinstance(record.body, GenesisBody)
    assert record.seq == 0 and record.prev_hash == "0" * 64 and record.key_id == s.key_id
    assert record.body.public_key == s.public_key_document and record.body.chain_id == "gateway-0"
    import hashlib

    assert verify_record_signature(check_key_document(s.public_key_document), hashlib.sha256(raw).digest(), signature)
    assert store.exists(layout.public_key_key(s.key_id))
    assert checkpoint_sizes(store, "gateway-0") == [1]


def test_group_commit_of_64_is_one_segment_object(store):
    with ChainWriter.open(store, "gateway-0", signer()) as writer:
        before = segment_keys(store, "gateway-0")
        receipts = writer.append_batch(decisions("r", 64))
        after = segment_keys(store, "gateway-0")
    assert len(after) == len(before) + 1
    new_key = after[-1]
    assert new_key == layout.segment_key("gateway-0", 1)
    assert len(iter_lines(store.get(new_key))) == 64
    assert [r.seq for r in receipts] == list(range(1, 65))
    assert all(isinstance(r, Receipt) and r.segment_key == new_key and r.segment_version is None for r in receipts)
    for receipt in receipts:
        entry = RequestIndex(store).get(f"r-{receipt.seq - 1}")
        assert entry is not None and (entry.seq, entry.record_hash) == (receipt.seq, receipt.record_hash)


def test_append_then_recover_continues_the_chain(store):
    s = signer()
    writer = ChainWriter.open(store, "gateway-0", s)
    writer.append_batch(decisions("a", 10))
    head = writer.head_hash
    writer.close()
    reopened = ChainWriter.open(store, "gateway-0", s)
    assert reopened.size == 11 and reopened.head_hash == head
    receipt = reopened.append(decision("b-0"))
    assert receipt.seq == 11
    reopened.close()
    records = _records(store)
    assert records[11][1].prev_hash == head
    assert verify_store(store).ok


def test_receipts_carry_the_signature_and_key(store):
    s = signer()
    with ChainWriter.open(store, "gateway-0", s) as writer:
        receipt = writer.append(decision("x"))
    _, record, raw, signature = _records(store)[receipt.seq]
    import base64
    import hashlib

    assert receipt.record_hash == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(receipt.signature) == signature
    assert receipt.key_id == s.key_id == record.key_id and receipt.chain_id == "gateway-0"


def test_a_second_writer_on_the_same_chain_is_refused(store):
    first = ChainWriter.open(store, "gateway-0", signer())
    second = ChainWriter.open(store, "gateway-0", signer())  # both believe they own it
    first.append_batch(decisions("one", 3))
    with pytest.raises(ChainConflict, match="another writer owns chain 'gateway-0'"):
        second.append_batch(decisions("two", 3))
    with pytest.raises(ChainConflict):  # and it stays stopped: never retries silently
        second.append(decision("two-again"))
    first.append_batch(decisions("one-more", 2))
    first.close()
    second.close()
    report = verify_store(store)
    assert report.ok, report.failures
    assert report.records == 6
    assert RequestIndex(store).get("two-0") is None


def test_a_writer_with_a_stale_head_collides_instead_of_forking(store):
    first = ChainWriter.open(store, "gateway-0", signer())
    second = ChainWriter.open(store, "gateway-0", signer())
    first.append_batch(decisions("a", 2))
    second.close()
    third = ChainWriter.open(store, "gateway-0", signer())  # sees the new head
    third.append_batch(decisions("b", 2))
    with pytest.raises(ChainConflict):
        first.append_batch(decisions("c", 2))  # first's head is stale now
    third.close()
    assert verify_store(store).ok


def test_concurrent_batches_from_threads_get_contiguous_sequence_numbers(store):
    writer = ChainWriter.open(store, "gateway-0", signer())
    results: list[Receipt] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for b in range(5):
            got = writer.append_batch(decisions(f"t{t}-b{b}", 16))
            with lock:
                results.extend(got)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert sorted(r.seq for r in results) == list(range(1, 1 + 4 * 5 * 16))
    report = verify_store(store)
    assert report.ok, report.failures


def test_repeated_request_id_is_reported_as_index_conflict(store):
    with ChainWriter.open(store, "gateway-0", signer()) as writer:
        first = writer.append(decision("dup", payload="p1"))
        again = writer.append(decision("dup", payload="p2"))
        in_batch = writer.append_batch([decision("twice"), decision("twice")])
        access = writer.append(
            AccessBody(
                action="lookup",
                actor_key_id="k1",
                target_request_id="dup",
                accessed_at=first.record_hash and "2025-01-01T00:00:00.000000Z",
            )
        )
    assert isinstance(first, Receipt)
    assert isinstance(again, IndexConflict) and again.existing.seq == first.seq
    assert again.existing.request_sha256 != decision("dup", payload="p2").request_sha256
    assert isinstance(in_batch[0], Receipt) and isinstance(in_batch[1], IndexConflict)
    assert in_batch[1].existing.seq == in_batch[0].seq
    # the superseded duplicate is named where it was written (its segment must be kept as long)
    assert again.duplicate is not None and again.duplicate.seq == first.seq + 1
    assert in_batch[1].duplicate is not None and in_batch[1].duplicate.seq == in_batch[0].seq + 1
    assert in_batch[1].duplicate.segment_key == in_batch[0].segment_key
    assert isinstance(access, Receipt)
    report = verify_store(store)
    assert report.ok, report.failures
    assert sorted(n.reason for n in report.notes) == ["superseded_duplicate", "superseded_duplicate"]


def test_request_ids_are_claimed_once_across_chains(store):
    a = ChainWriter.open(store, "gateway-0", signer())
    b = ChainWriter.open(store, "gateway-1", signer(2))
    got_a = a.append(decision("shared"))
    got_b = b.append(decision("shared"))
    a.close()
    b.close()
    assert isinstance(got_a, Receipt) and isinstance(got_b, IndexConflict)
    assert got_b.existing.chain_id == "gateway-0"
    assert got_b.duplicate is not None and got_b.duplicate.chain_id == "gateway-1"
    assert verify_store(store).ok


def test_checkpoints_every_n_records_and_on_close(store):
    writer = ChainWriter.open(store, "gateway-0", signer(), checkpoint_every=10)
    for _ in range(5):
        writer.append_batch(decisions(f"b{_}", 5))
    assert checkpoint_sizes(store, "gateway-0") == [1, 11, 21]
    writer.close()
    assert checkpoint_sizes(store, "gateway-0") == [1, 11, 21, 26]


def test_checkpoint_after_interval(store):
    writer = ChainWriter.open(store, "gateway-0", signer(), checkpoint_interval=0.05)
    writer.append(decision("x"))
    assert writer.maybe_checkpoint() in (None, layout.checkpoint_key("gateway-0", 2))
    time.sleep(0.1)
    writer.append(decision("y"))  # due by time: written in this batch's second round
    assert writer.last_checkpoint_size == 3
    time.sleep(0.1)
    assert writer.maybe_checkpoint() is None  # nothing new since
    writer.close()


class FlakyStore:
    """A real filesystem store whose next segment put fails (before or after landing)."""

    def __init__(self, inner: FilesystemStore, *, land: bool) -> None:
        self.inner, self.land, self.armed = inner, land, False
        self.url = inner.url

    def put_once(self, key, data):
        return self._segment_put(self.inner.put_once, key, data)

    def publish_once(self, key, data):
        return self._segment_put(self.inner.publish_once, key, data)

    def _segment_put(self, put, key, data):
        if self.armed and "/segments/" in key:
            self.armed = False
            if self.land:
                put(key, data)
            raise StoreUnavailable("injected: connection reset")
        return put(key, data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("land", [True, False], ids=["landed", "lost"])
def test_failed_segment_write_is_resolved_without_reusing_or_skipping_seq(store, land):
    flaky = FlakyStore(store, land=land)
    writer = ChainWriter.open(flaky, "gateway-0", signer())
    writer.append_batch(decisions("a", 3))
    flaky.armed = True
    with pytest.raises(StoreUnavailable):
        writer.append_batch(decisions("doubt", 3))
    after = writer.append_batch(decisions("b", 2))
    writer.close()
    assert after[0].seq == (7 if land else 4)
    report = verify_store(store)
    assert report.ok, report.failures
    assert (RequestIndex(store).get("doubt-0") is not None) == land


class FlakyIndexStore(FlakyStore):
    """A real filesystem store whose next index round fails before writing anything."""

    def _segment_put(self, put, key, data):
        return put(key, data)

    def put_many_once(self, items):
        if self.armed and any(key.startswith(layout.INDEX_PREFIX) for key, _ in items):
            self.armed = False
            raise StoreUnavailable("injected: index round failed")
        return self.inner.put_many_once(items)


def test_failed_index_round_is_retried_before_the_next_batch(store):
    flaky = FlakyIndexStore(store, land=False)
    writer = ChainWriter.open(flaky, "gateway-0", signer())
    flaky.armed = True
    with pytest.raises(StoreUnavailable):
        writer.append_batch(decisions("x", 3))  # durable in the chain, not yet indexed
    assert RequestIndex(store).get("x-0") is None
    pending = verify_store(store)  # the tail is not checkpointed: reported as pending, not missing
    assert [n.reason for n in pending.notes].count("index_pending") == 3
    writer.append_batch(decisions("y", 1))
    writer.close()
    assert RequestIndex(store).get("x-2") is not None
    assert verify_store(store).ok


def test_recovery_rewrites_missing_index_entries_and_checkpoint(store, tmp_path):
    s = signer()
    writer = ChainWriter.open(store, "gateway-0", s)
    receipts = writer.append_batch(decisions("a", 8))
    # simulate a crash after the segment round: no index entries, no checkpoint
    for n in range(8):
        (tmp_path / "store" / layout.index_key(f"a-{n}")).unlink()
    assert [n.reason for n in verify_store(store).notes].count("index_pending") == 8
    writer2 = ChainWriter.open(store, "gateway-0", s)
    assert checkpoint_sizes(store, "gateway-0")[-1] == 9
    writer2.close()
    entry = RequestIndex(store).get("a-3")
    assert entry is not None and entry.record_hash == receipts[3].record_hash
    assert verify_store(store).ok


def _lose_segment_name(store: FilesystemStore, key: str, data: bytes) -> None:
    """The state a crash can leave on the filesystem store: a segment published
    with deferred naming whose data (staged copy) is durable but whose name is not."""
    store.publish_once(key, data)
    (store.root / key).unlink()


def test_recovery_puts_back_a_segment_whose_name_a_crash_lost(store):
    s = signer()
    writer = ChainWriter.open(store, "gateway-0", s)
    receipts = writer.append_batch(decisions("a", 4))  # its index entries are durable
    writer.close()
    key = receipts[0].segment_key
    data = store.get(key)
    checkpoint = store.root / layout.checkpoint_key("gateway-0", 5)
    checkpoint.unlink()  # a crash before the segment's name was durable comes before any checkpoint of it
    (store.root / key).unlink()
    _lose_segment_name(FilesystemStore(store.root), key, data)
    assert not store.exists(key) and not verify_store(store).ok  # index entries point at a missing segment
    reopened = ChainWriter.open(store, "gateway-0", s)
    assert reopened.size == 5
    reopened.close()
    assert store.get(key) == data
    assert RequestIndex(store).get("a-3").record_hash == receipts[3].record_hash
    report = verify_store(store)
    assert report.ok, report.failures
    assert staged_files(store.root) == []


def test_recovery_discards_staged_segments_that_do_not_continue_the_chain(store):
    s = signer()
    with ChainWriter.open(store, "gateway-0", s) as writer:
        writer.append_batch(decisions("a", 2))
    head = store.get(layout.segment_key("gateway-0", 1))
    _lose_segment_name(store, layout.segment_key("gateway-0", 3), head)  # the right key, records of another position
    _lose_segment_name(store, layout.segment_key("gateway-0", 9), b"not a segment")
    reopened = ChainWriter.open(store, "gateway-0", s)
    assert reopened.size == 3
    reopened.close()
    assert not store.exists(layout.segment_key("gateway-0", 3))
    assert staged_files(store.root) == []
    assert verify_store(store).ok


def test_writer_refuses_to_extend_a_truncated_chain(store, tmp_path):
    s = signer()
    with ChainWriter.open(store, "gateway-0", s) as writer:
        writer.append_batch(decisions("a", 4))
    (tmp_path / "store" / layout.segment_key("gateway-0", 1)).unlink()
    with pytest.raises(ChainCorrupt, match="truncated"):
        ChainWriter.open(store, "gateway-0", s)


def test_open_without_create_on_missing_chain(store):
    with pytest.raises(ChainError, match="does not exist"):
        ChainWriter.open(store, "nope", signer(), create=False)


def test_key_rotation_switches_signer_and_keeps_old_records_valid(store):
    old, new = signer(1), signer(2)
    writer = ChainWriter.open(store, "gateway-0", old)
    writer.append_batch(decisions("before", 3))
    rotation = writer.rotate_key(new, reason="test")
    after = writer.append_batch(decisions("after", 3))
    writer.close()
    assert rotation.key_id == old.key_id and rotation.seq == 4
    assert all(r.key_id == new.key_id for r in after)
    records = _records(store)
    assert isinstance(records[4][1].body, KeyRotationBody) and records[4][1].body.new_key == new.public_key_document
    report = verify_store(store)
    assert report.ok, report.failures
    assert report.chains[0].keys == [old.key_id, new.key_id]
    with pytest.raises(KeyMismatch, match="retired"):
        ChainWriter.open(store, "gateway-0", old)
    ChainWriter.open(store, "gateway-0", new).close()


def test_open_with_a_new_key_rotates_when_the_old_key_is_available(store, tmp_path):
    keystore = FileKeyStore(tmp_path / "keys")
    first, _ = keystore.init()
    ChainWriter.open(store, "gateway-0", first).close()
    second = keystore.create()
    with pytest.raises(KeyMismatch, match="expects signing key"):
        ChainWriter.open(store, "gateway-0", second)
    with ChainWriter.open(store, "gateway-0", second, keyring=keystore) as writer:
        assert writer.key_id == second.key_id
        writer.append(decision("x"))
    assert verify_store(store).ok


# --- crash test -------------------------------------------------------------------------------

_CRASH_WRITER = r"""
import json, sys
from verdict.audit.chain import ChainWriter
from verdict.audit.index import IndexConflict
from verdict.audit.stores import FilesystemStore
from tests.audit.helpers import decisions, signer
import msgspec, random
root, run = sys.argv[1], int(sys.argv[2])
rng = random.Random(run)
writer = ChainWriter.open(FilesystemStore(root), "crash-0", signer(), checkpoint_every=50)
print("open", writer.size, flush=True)
batch = 0
while True:
    bodies = decisions(f"run{run}-b{batch}", rng.randint(1, 64))
    for result in writer.append_batch(bodies):
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.stdout.flush()
    batch += 1
"""


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_receipt(tmp_path):
    root = tmp_path / "store"
    rng = random.Random(20250101)
    receipts: list[dict] = []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for run in range(22):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CRASH_WRITER, str(root), str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        time.sleep(rng.uniform(0.15, 0.7))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        for line in out.decode().splitlines():
            if line.startswith("{") and line.endswith("}"):
                with contextlib.suppress(json.JSONDecodeError):  # a line cut by the kill (never a complete receipt)
                    receipts.append(json.loads(line))
    assert len(receipts) > 100, "the writer never got going; kill points too early"
    # the next writer start repairs what the last kill cut off, and removes the killed writers' staging
    ChainWriter.open(FilesystemStore(root), "crash-0", signer()).close()
    assert staged_files(root) == []
    store = FilesystemStore(root)
    report = verify_store(store)
    assert report.ok, report.failures[:5]
    by_seq = {r.seq: r for _, r, _, _ in _records(store, "crash-0")}
    import hashlib

    hashes = {r.seq: hashlib.sha256(raw).hexdigest() for _, r, raw, _ in _records(store, "crash-0")}
    index = RequestIndex(store)
    for receipt in receipts:
        assert "existing" not in receipt, receipt  # every request id was fresh
        assert hashes[receipt["seq"]] == receipt["record_hash"], receipt
        entry = index.get(by_seq[receipt["seq"]].body.request_id)
        assert entry is not None and entry.record_hash == receipt["record_hash"]


_RACING_WRITER = r"""
import sys
import msgspec
from verdict.audit.chain import ChainConflict, ChainWriter
from verdict.audit.stores import FilesystemStore
from tests.audit.helpers import decisions, signer
root, name = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()  # both processes start writing together, however slowly each one started
try:
    writer = ChainWriter.open(FilesystemStore(root), "race-0", signer())
    for batch in range(40):
        for receipt in writer.append_batch(decisions(f"{name}-{batch}", 8)):
            print(msgspec.json.encode(receipt).decode(), flush=True)
    writer.close()
    print("finished", flush=True)
except ChainConflict as exc:
    print("refused:", exc, flush=True)
"""


def test_two_writer_processes_on_one_chain_one_is_refused(tmp_path):
    root = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACING_WRITER, str(root), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for name in ("A", "B")
    ]
    assert [p.stdout.readline() for p in procs] == ["ready\n", "ready\n"]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    refused = [out for out in outputs if "refused: another writer owns chain 'race-0'" in out]
    assert len(refused) >= 1, outputs
    store = FilesystemStore(root)
    report = verify_store(store)
    assert report.ok, report.failures[:5]
    hashes = {r.seq: r for _, r, _, _ in _records(store, "race-0")}
    import hashlib

    stored = {r.seq: hashlib.sha256(raw).hexdigest() for _, r, raw, _ in _records(store, "race-0")}
    for out in outputs:
        for line in out.splitlines():
            if line.startswith("{"):
                receipt = json.loads(line)
                assert stored[receipt["seq"]] == receipt["record_hash"]
    assert len(hashes) == report.records


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pre-staging relies on syncfs(2)")
def test_a_batch_costs_two_durability_barriers_on_the_filesystem(store):
    # Segment data with the index entries' data (pre-staged); then the segment's
    # name and the index entries' names together. The segment's data is durable
    # before any index entry is visible, and a staged copy of it stays until
    # its name is durable (recovery puts it again if a crash lost the name).
    writer = ChainWriter.open(store, "gateway-0", signer(), checkpoint_every=10_000, checkpoint_interval=3600)
    before = store._syncs_started
    receipts = writer.append_batch(decisions("b", 16))
    assert store._syncs_started - before == 2
    writer.close()
    assert [RequestIndex(store).get(f"b-{n}").record_hash for n in range(16)] == [r.record_hash for r in receipts]
    assert staged_files(store.root) == []
    assert verify_store(store).ok

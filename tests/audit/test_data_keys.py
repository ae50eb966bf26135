"""The data keyring, its key-encryption keys and sealing through it, driven for real.

Nothing of Verdict's is mocked: the keyring is a real SQLite database in a
temporary directory, the local KEK a real key file, and the KMS KEK talks to
moto's KMS server (a separate process) over HTTP through boto3, with explicit
test credentials. Secure deletion is checked by reading the database and its
write-ahead log as raw bytes and searching them for an erased wrapped key.
Concurrency is checked with threads released by a barrier and with separate
processes released together through their stdin; no test sleeps or times.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.audit.golden.make_golden import decision
from tests.support.moto_server import MotoServer
from verdict.audit.canonical import canonical_bytes
from verdict.audit.data_keys import (
    Assignment,
    DataKeyErased,
    DataKeyMissing,
    DataKeyring,
    ErasureRef,
    LegalHoldActive,
)
from verdict.audit.key_wrapping import KekError, KekUnavailable, KmsKek, LocalKek
from verdict.audit.personal_data import MIN_RETENTION_DAYS, PersonalData, RetentionPolicy
from verdict.audit.records import ErasureBody, LegalHoldBody, PlainInputs, SealedInputs
from verdict.audit.sealing import seal
from verdict.audit.stores import StoreUnavailable

NOW = "2025-01-02T03:04:05.000000Z"
FAR = "2031-01-01T00:00:00.000000Z"
KEY_REF = re.compile(r"^dk_[0-9a-f]{32}$")
REGION = "us-east-1"


# -- helpers ------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ref(n: int) -> str:
    return f"dk_{n:032x}"


def _erasure(key_refs, request_ids, *, cause: str = "request") -> ErasureBody:
    return ErasureBody(
        key_refs=sorted(key_refs),
        request_ids=sorted(request_ids),
        cause=cause,
        basis="GDPR Art. 17(1)(a), ticket DPO-1",
        by="dpo",
        at=NOW,
    )


def _hold(action: str, key_refs, request_ids) -> LegalHoldBody:
    return LegalHoldBody(
        action=action,
        key_refs=sorted(key_refs),
        request_ids=sorted(request_ids),
        basis="litigation hold, case 1",
        by="legal",
        at=NOW,
    )


def _where(record_hash_seed: str = "erasure", seq: int = 7) -> ErasureRef:
    return ErasureRef("subjects", seq, hashlib.sha256(record_hash_seed.encode()).hexdigest(), NOW, "request")


def _wrapped(db_path: Path, key_ref: str) -> bytes:
    """The wrapped key as stored, read with a connection of our own (closed at once)."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        row = db.execute("SELECT wrapped FROM data_keys WHERE key_ref = ?", (key_ref,)).fetchone()
    assert row is not None, key_ref
    return bytes(row[0])


def _raw_files(db_path: Path) -> dict[str, bytes]:
    """The database, its write-ahead log and shared-memory index, byte for byte."""
    found = {}
    for suffix in ("", "-wal", "-shm"):
        path = db_path.with_name(db_path.name + suffix)
        if path.exists():
            found[path.name] = path.read_bytes()
    return found


def _holding(db_path: Path, needle: bytes) -> list[str]:
    return [name for name, data in _raw_files(db_path).items() if needle in data]


def _clear_decision(request_id: str, subject_id: str | None):
    return decision(
        request_id,
        PlainInputs(attributes={"age": 29, "credit_amount": 7200, "duration": 48, "purpose": "A43"}),
        subject_id=subject_id,
    )


@pytest.fixture
def kek(tmp_path) -> LocalKek:
    kek, created = LocalKek.load_or_create(tmp_path / "secrets" / "kek.key")
    assert created
    return kek


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "keyring" / "keyring.sqlite"


@pytest.fixture
def ring(db_path, kek):
    ring = DataKeyring(db_path, kek)
    try:
        yield ring
    finally:
        ring.close()


@pytest.fixture
def second(db_path, tmp_path):
    """A second keyring on the same file, with the KEK loaded from its file again: what
    another process (``verdict subjects`` beside the gateway) has."""
    rings = []

    def open_second() -> DataKeyring:
        kek, created = LocalKek.load_or_create(tmp_path / "secrets" / "kek.key")
        assert not created
        rings.append(DataKeyring(db_path, kek))
        return rings[-1]

    try:
        yield open_second
    finally:
        for ring in rings:
            ring.close()


# -- LocalKek -----------------------------------------------------------------------


def test_local_kek_is_created_private_and_reloads_the_same(tmp_path):
    path = tmp_path / "new-dir" / "kek.key"
    kek, created = LocalKek.load_or_create(path)
    assert created and path.stat().st_size == 32
    assert _mode(path) == 0o600
    assert re.fullmatch(r"local:[0-9a-f]{16}", kek.kek_id)
    assert sorted(p.name for p in path.parent.iterdir()) == ["kek.key"]  # no temporary file left

    again, created_again = LocalKek.load_or_create(path)
    assert not created_again
    assert again.kek_id == kek.kek_id
    key, wrapped = kek.new_key(_ref(1))
    assert len(key) == 32 and key not in wrapped
    assert again.unwrap(_ref(1), wrapped) == key  # the same key, not only the same id

    other, _ = LocalKek.load_or_create(tmp_path / "other" / "kek.key")
    assert other.kek_id != kek.kek_id
    with pytest.raises(KekError, match=other.kek_id):
        other.unwrap(_ref(1), wrapped)


def _load_together(path: Path, threads: int) -> tuple[list[tuple[str, bool]], list[BaseException]]:
    """``load_or_create(path)`` in ``threads`` threads released at once: (kek_id, created)s, errors."""
    barrier = threading.Barrier(threads)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def load() -> None:
        barrier.wait(timeout=60)
        try:
            kek, created = LocalKek.load_or_create(path)
            results.append((kek.kek_id, created))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=load) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results, errors


def test_concurrent_load_or_create_in_threads_agree(tmp_path):
    """Threads of one process share a pid: their temporary files must not collide."""
    for round_no in range(20):
        path = tmp_path / f"round-{round_no}" / "kek.key"
        results, errors = _load_together(path, 8)
        assert errors == []
        assert len(results) == 8
        assert len({kek_id for kek_id, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        assert sorted(p.name for p in path.parent.iterdir()) == ["kek.key"]
        assert _mode(path) == 0o600
        assert LocalKek.load_or_create(path)[0].kek_id == results[0][0]


_WORKER = """
import json, sys
from pathlib import Path
from verdict.audit.data_keys import Assignment, DataKeyring
from verdict.audit.key_wrapping import LocalKek

directory, request_id = Path(sys.argv[1]), sys.argv[2]
sys.stdin.readline()  # released together with the other workers
kek, created = LocalKek.load_or_create(directory / "kek.key")
ring = DataKeyring(directory / "keyring.sqlite", kek)
[(key_ref, key)] = ring.assign([Assignment(request_id, "subject-shared", sys.argv[3])], now=sys.argv[4])
print(json.dumps({"kek_id": kek.kek_id, "created": created, "key_ref": key_ref, "key": key.hex(),
                  "subject_ref": ring.subject_ref("subject-shared")}))
ring.close()
"""


def test_concurrent_processes_agree_on_the_kek_and_the_subject_key(tmp_path):
    """Fresh directory, several processes at once: one KEK file, one index key, one data
    key for the subject they all decide about."""
    directory = tmp_path / "shared"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(directory), f"req-{i}", FAR, NOW],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    answers = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        answers.append(json.loads(out))
    assert sum(a["created"] for a in answers) == 1
    assert len({(a["kek_id"], a["key_ref"], a["key"], a["subject_ref"]) for a in answers}) == 1

    kek, created = LocalKek.load_or_create(directory / "kek.key")
    assert not created and kek.kek_id == answers[0]["kek_id"]
    ring = DataKeyring(directory / "keyring.sqlite", kek)
    try:
        found = ring.subject_file("subject-shared")
        assert found.key_refs == (answers[0]["key_ref"],)
        assert found.request_ids == tuple(f"req-{i}" for i in range(6))
        assert ring.key(answers[0]["key_ref"]).hex() == answers[0]["key"]
    finally:
        ring.close()


def test_a_wrapped_key_is_bound_to_its_key_ref(kek):
    key, wrapped = kek.new_key(_ref(1))
    assert kek.unwrap(_ref(1), wrapped) == key
    with pytest.raises(KekError, match=_ref(2)):
        kek.unwrap(_ref(2), wrapped)  # copied to another row
    flipped = bytearray(wrapped)
    flipped[20] ^= 1
    for bad in (bytes(flipped), wrapped[:-1], wrapped[:12], b""):
        with pytest.raises(KekError):
            kek.unwrap(_ref(1), bad)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_a_key_file_of_the_wrong_size_is_refused_and_left_alone(tmp_path, size):
    path = tmp_path / "kek.key"
    path.write_bytes(b"\x01" * size)
    with pytest.raises(KekError, match=f"32 bytes, got {size}") as refused:
        LocalKek.load_or_create(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == b"\x01" * size  # never replaced by a fresh key
    with pytest.raises(KekError, match="32 bytes"):
        LocalKek(b"\x01" * 31)


# -- DataKeyring with a local KEK -----------------------------------------------------


def test_assign_gives_one_key_per_subject_and_one_per_keyless_decision(ring):
    got = ring.assign(
        [
            Assignment("r-a1", "alice", FAR),
            Assignment("r-a2", "alice", FAR),
            Assignment("r-b1", "bob", FAR),
            Assignment("r-n1", None, FAR),
            Assignment("r-n2", None, FAR),
        ],
        now=NOW,
    )
    (a1, ka1), (a2, ka2), (b1, kb1), (n1, kn1), (n2, kn2) = got
    assert all(KEY_REF.fullmatch(ref) and len(key) == 32 for ref, key in got)
    assert (a1, ka1) == (a2, ka2)
    assert len({a1, b1, n1, n2}) == 4 and len({ka1, kb1, kn1, kn2}) == 4

    # a later batch: the subject keeps its key; retried request ids keep theirs
    later = ring.assign(
        [Assignment("r-a3", "alice", FAR), Assignment("r-n1", None, FAR), Assignment("r-a1", "alice", FAR)], now=NOW
    )
    assert later == [(a1, ka1), (n1, kn1), (a1, ka1)]
    assert ring.assign([Assignment("r-n3", None, FAR)], now=NOW)[0][0] not in {n1, n2}

    assert ring.subject_file("alice").request_ids == ("r-a1", "r-a2", "r-a3")
    assert ring.subject_file("alice").key_refs == (a1,)
    assert ring.subject_file("bob").request_ids == ("r-b1",)
    assert ring.subject_file("nobody").key_refs == () and ring.subject_file("nobody").request_ids == ()
    keyless = ring.key_file(n1)
    assert (keyless.subject_ref, keyless.key_refs, keyless.request_ids, keyless.held) == ("", (n1,), ("r-n1",), False)
    assert ring.key_file(a1).subject_ref == ring.subject_ref("alice")
    assert ring.key(a1) == ka1 and ring.key(n2) == kn2


def test_the_database_is_private_and_holds_no_subject_id_or_clear_key(ring, db_path):
    [(ref, key)] = ring.assign([Assignment("r-1", "subject-7f3e-alice@example.org", FAR)], now=NOW)
    assert ring.key(ref) == key
    files = _raw_files(db_path)
    assert "keyring.sqlite" in files and "keyring.sqlite-wal" in files
    for name in files:
        assert _mode(db_path.with_name(name)) == 0o600, name
    assert _mode(db_path.parent) == 0o700
    assert _holding(db_path, b"subject-7f3e-alice@example.org") == []
    assert _holding(db_path, key) == []  # only the wrapped form is stored
    assert _holding(db_path, _wrapped(db_path, ref)) != []


def test_subject_ref_is_an_hmac_stable_across_reopen_and_private_to_the_keyring(ring, db_path, kek, second, tmp_path):
    ref = ring.subject_ref("alice")
    assert re.fullmatch(r"[0-9a-f]{64}", ref)
    assert "alice" not in ref
    assert ref != hashlib.sha256(b"alice").hexdigest()  # keyed, not a plain hash anyone can compute
    assert ring.subject_ref("bob") != ref
    assert ring.subject_ref("alice") == ref
    assert second().subject_ref("alice") == ref

    ring.close()
    reopened = DataKeyring(db_path, kek)
    try:
        assert reopened.subject_ref("alice") == ref
    finally:
        reopened.close()

    elsewhere = DataKeyring(tmp_path / "another" / "keyring.sqlite", kek)  # same KEK, another keyring
    try:
        assert elsewhere.subject_ref("alice") != ref
    finally:
        elsewhere.close()


def test_a_keyring_does_not_open_under_another_kek(ring, db_path, tmp_path):
    ring.assign([Assignment("r-1", "alice", FAR)], now=NOW)
    stranger, _ = LocalKek.load_or_create(tmp_path / "stranger" / "kek.key")
    with pytest.raises(KekError):
        DataKeyring(db_path, stranger)


def test_a_second_instance_sees_the_keys_and_the_index(ring, second):
    other = second()
    [(ref, key), (own, own_key)] = ring.assign([Assignment("r-1", "alice", FAR), Assignment("r-2", None, FAR)], now=NOW)
    assert other.key(ref) == key and other.key(own) == own_key
    assert other.live(ref)
    assert other.subject_file("alice").request_ids == ("r-1",)
    # the other instance adds a decision for the subject: the same key, seen by the first
    [(ref_again, key_again)] = other.assign([Assignment("r-3", "alice", FAR)], now=NOW)
    assert (ref_again, key_again) == (ref, key)
    assert ring.subject_file("alice").request_ids == ("r-1", "r-3")


def test_a_wrapped_key_copied_to_another_row_does_not_unwrap(ring, db_path, second):
    [(alice, _), (bob, _)] = ring.assign([Assignment("r-1", "alice", FAR), Assignment("r-2", "bob", FAR)], now=NOW)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.execute("UPDATE data_keys SET wrapped = ? WHERE key_ref = ?", (_wrapped(db_path, alice), bob))
        db.commit()
    with pytest.raises(KekError, match=bob):
        second().key(bob)  # a fresh instance: nothing cached


def test_unknown_key_refs_are_missing(ring):
    unknown = _ref(0xABC)
    with pytest.raises(DataKeyMissing, match=unknown):
        ring.key(unknown)
    with pytest.raises(DataKeyMissing):
        ring.key_file(unknown)
    with pytest.raises(DataKeyMissing):
        ring.prepare_erasure(_erasure([unknown], []))
    assert not ring.live(unknown)
    assert ring.pending_erasures() == []


def test_a_legal_hold_blocks_erasure_until_released(ring, second):
    [(ref, _), _] = ring.assign([Assignment("r-1", "alice", FAR), Assignment("r-2", "alice", FAR)], now=NOW)
    body = _erasure([ref], ["r-1", "r-2"])
    ring.set_hold(_hold("hold", [ref], ["r-1", "r-2"]))
    assert ring.subject_file("alice").held and ring.key_file(ref).held
    with pytest.raises(LegalHoldActive, match=ref):
        ring.prepare_erasure(body)
    with pytest.raises(LegalHoldActive):
        second().prepare_erasure(body)  # the hold is in the database, not in one instance
    assert ring.pending_erasures() == []
    assert ring.live(ref)

    ring.set_hold(_hold("release", [ref], ["r-1", "r-2"]))
    assert not ring.subject_file("alice").held
    ring.prepare_erasure(body)
    assert ring.pending_erasures() == [body]


def test_erasure_destroys_the_key_and_its_index_and_names_its_record(ring, second):
    other = second()
    [(alice, alice_key), _, (bob, bob_key), (own, _)] = ring.assign(
        [
            Assignment("r-a1", "alice", FAR),
            Assignment("r-a2", "alice", FAR),
            Assignment("r-b1", "bob", FAR),
            Assignment("r-n1", None, FAR),
        ],
        now=NOW,
    )
    assert other.key(alice) == alice_key  # now cached in the other instance
    body = _erasure([alice, own], ["r-a1", "r-a2", "r-n1"])

    ring.prepare_erasure(body)
    assert ring.pending_erasures() == [body]  # once, though it names two keys
    assert other.pending_erasures() == [body]  # what the next process picks up
    assert ring.live(alice) and ring.key(alice) == alice_key  # nothing destroyed before the record

    where = _where(seq=42)
    ring.complete_erasure(body, where)
    assert ring.pending_erasures() == [] and other.pending_erasures() == []
    for key_ref in (alice, own):
        assert not ring.live(key_ref)
        for keyring in (ring, other):  # the other instance's cache does not outlive the erasure
            with pytest.raises(DataKeyErased, match="subjects/42") as erased:
                keyring.key(key_ref)
            assert erased.value.key_ref == key_ref
            assert erased.value.erasure == where
            assert (erased.value.erasure.chain_id, erased.value.erasure.seq) == ("subjects", 42)
            assert erased.value.erasure.record_hash == where.record_hash
        with pytest.raises(DataKeyErased):
            ring.key_file(key_ref)
        with pytest.raises(DataKeyErased):
            ring.prepare_erasure(_erasure([key_ref], []))  # already gone
    gone = ring.subject_file("alice")
    assert (gone.key_refs, gone.request_ids, gone.held) == ((), (), False)
    assert gone.subject_ref == ring.subject_ref("alice")

    # bob is untouched
    assert ring.key(bob) == bob_key and ring.subject_file("bob").request_ids == ("r-b1",)
    # alice decides again: a new key, and only the new decision in her file
    [(fresh, fresh_key)] = other.assign([Assignment("r-a3", "alice", FAR)], now=NOW)
    assert KEY_REF.fullmatch(fresh) and fresh != alice and fresh_key != alice_key
    assert ring.subject_file("alice").key_refs == (fresh,)
    assert ring.subject_file("alice").request_ids == ("r-a3",)
    # a keyless decision retried after its key's erasure gets a new key as well
    [(own_again, _)] = ring.assign([Assignment("r-n1", None, FAR)], now=NOW)
    assert own_again != own
    with pytest.raises(DataKeyErased):
        ring.key(own)


@pytest.mark.parametrize("checkpointed", [False, True], ids=["key-in-wal", "key-in-database-file"])
def test_an_erased_wrapped_key_is_gone_from_the_files(ring, db_path, second, checkpointed):
    other = second()  # another connection open during the erasure, as the gateway's would be
    got = ring.assign([Assignment(f"r-{i}", f"subject-{i}", FAR) for i in range(40)], now=NOW)
    victim, survivor = got[17][0], got[18][0]
    victim_wrapped, survivor_wrapped = _wrapped(db_path, victim), _wrapped(db_path, survivor)
    assert other.key(victim) == got[17][1]
    if checkpointed:  # the row's page already copied from the log into the database file
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        assert "keyring.sqlite" in _holding(db_path, victim_wrapped)
    assert _holding(db_path, victim_wrapped) != []

    body = _erasure([victim], ["r-17"])
    ring.prepare_erasure(body)
    ring.complete_erasure(body, _where())

    assert _holding(db_path, victim_wrapped) == []
    assert _holding(db_path, survivor_wrapped) != []  # the search does find what is there
    assert ring.key(survivor) == got[18][1] and other.key(survivor) == got[18][1]
    with pytest.raises(DataKeyErased):
        other.key(victim)


def test_expired_keys_respect_retention_and_holds(ring):
    soon, later = "2026-01-01T00:00:00.000000Z", "2031-01-01T00:00:00.000000Z"
    items = [
        Assignment("ann-1", "ann", soon),
        Assignment("ann-2", "ann", soon),
        Assignment("ben-1", "ben", soon),
        Assignment("ben-2", "ben", later),  # one decision still kept: the key stays
        Assignment("cat-1", "cat", soon),
        Assignment("keyless-1", None, soon),
        Assignment("dan-1", "dan", soon),
    ]
    refs = {
        item.request_id.split("-")[0]: ref for item, (ref, _) in zip(items, ring.assign(items, now=NOW), strict=True)
    }
    assert len(set(refs.values())) == 5
    ring.set_hold(_hold("hold", [refs["cat"]], ["cat-1"]))
    # a retried request keeps the longer retention it was given
    ring.assign([Assignment("dan-1", "dan", later)], now=NOW)
    ring.assign([Assignment("dan-1", "dan", soon)], now=NOW)

    assert ring.expired_keys("2025-12-31T23:59:59.999999Z") == []
    assert ring.expired_keys(soon) == sorted([refs["ann"], refs["keyless"]])  # retain_until is inclusive
    assert ring.expired_keys("2027-01-01T00:00:00.000000Z") == sorted([refs["ann"], refs["keyless"]])
    ring.set_hold(_hold("release", [refs["cat"]], ["cat-1"]))
    assert ring.expired_keys("2027-01-01T00:00:00.000000Z") == sorted([refs["ann"], refs["cat"], refs["keyless"]])
    assert ring.expired_keys("2032-01-01T00:00:00.000000Z") == sorted(refs.values())

    body = _erasure([refs["ann"]], ["ann-1", "ann-2"], cause="retention")
    ring.prepare_erasure(body)
    ring.complete_erasure(body, ErasureRef("subjects", 1, "0" * 64, NOW, "retention"))
    assert refs["ann"] not in ring.expired_keys("2032-01-01T00:00:00.000000Z")


# -- PersonalData ---------------------------------------------------------------------


def test_seal_all_and_open_round_trip_and_erasure_makes_them_unopenable(ring):
    personal = PersonalData(ring, RetentionPolicy.parse("*=1827,german-credit-mlp=365"))
    clear = [
        _clear_decision("req-a1", "subject-alice"),
        _clear_decision("req-a2", "subject-alice"),
        _clear_decision("req-x", None),
    ]
    sealed = personal.seal_all(clear, now=NOW)
    assert len(sealed) == 3
    for body in sealed:
        assert isinstance(body.inputs, SealedInputs) and KEY_REF.fullmatch(body.inputs.key_ref)
        assert body.subject_id is None
        assert all(r.value is None and r.text is None for r in body.reasons)
        data = canonical_bytes(body)
        assert b"subject-alice" not in data and b"Fernseher" not in data and b"7200" not in data
    assert sealed[0].inputs.key_ref == sealed[1].inputs.key_ref != sealed[2].inputs.key_ref
    assert [personal.open(body) for body in sealed] == clear
    assert personal.open(clear[0]) is clear[0]  # a plain decision is returned as it is

    # retention: decided 2025-01-02, kept 365 days for this model
    alice = sealed[0].inputs.key_ref
    assert alice not in ring.expired_keys("2026-01-01T00:00:00.000000Z")
    assert alice in ring.expired_keys("2026-01-03T00:00:00.000000Z")

    body = _erasure([alice], ["req-a1", "req-a2"])
    ring.prepare_erasure(body)
    ring.complete_erasure(body, _where(seq=3))
    for erased in sealed[:2]:
        with pytest.raises(DataKeyErased) as why:
            personal.open(erased)
        assert why.value.erasure == _where(seq=3)
    assert personal.open(sealed[2]) == clear[2]

    # a decision sealed under a key this keyring never had
    foreign = seal(_clear_decision("req-f", None), b"\x07" * 32, _ref(99))
    with pytest.raises(DataKeyMissing):
        personal.open(foreign)


def test_retention_policy_parses_and_refuses_less_than_six_months():
    policy = RetentionPolicy.parse("*=1827,m=365")
    assert policy.days_for("m") == 365 and policy.days_for("other") == 1827
    assert policy.retain_until("m", "2025-01-02T03:04:00.250000Z") == "2026-01-02T03:04:00.250000Z"
    assert RetentionPolicy.parse("m=200").days_for("anything") == 1827  # "*" defaults to five years
    assert RetentionPolicy.parse(f"m={MIN_RETENTION_DAYS}").days_for("m") == MIN_RETENTION_DAYS
    with pytest.raises(ValueError, match=r"'m' is 30 days.*183") as refused:
        RetentionPolicy.parse("m=30")
    assert "'m'" in str(refused.value)
    with pytest.raises(ValueError, match="'\\*' is 100 days"):
        RetentionPolicy.parse("*=100,m=365")
    with pytest.raises(ValueError, match="NAME=DAYS"):
        RetentionPolicy.parse("m:365")


# -- KMS (moto's KMS server over HTTP) -----------------------------------------------


def _kms_client(endpoint_url: str):
    return boto3.client(
        "kms",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}),
    )


def _kms_key(endpoint_url: str) -> str:
    return _kms_client(endpoint_url).create_key()["KeyMetadata"]["KeyId"]


@pytest.fixture
def kms_key_id(moto_server) -> str:
    return _kms_key(moto_server.endpoint_url)


def test_kms_keyring_round_trips_across_clients(moto_server, kms_key_id, db_path):
    kek = KmsKek(kms_key_id, _kms_client(moto_server.endpoint_url))
    assert kek.kek_id == f"kms:{kms_key_id}"
    ring = DataKeyring(db_path, kek)
    try:
        got = ring.assign(
            [Assignment("r-a1", "alice", FAR), Assignment("r-a2", "alice", FAR), Assignment("r-n", None, FAR)],
            now=NOW,
        )
        subject_ref = ring.subject_ref("alice")
    finally:
        ring.close()
    (alice, alice_key), (alice_again, _), (own, own_key) = got
    assert alice == alice_again != own and len(alice_key) == 32 and alice_key != own_key
    assert _holding(db_path, alice_key) == []

    reopened = DataKeyring(db_path, KmsKek(kms_key_id, _kms_client(moto_server.endpoint_url)))
    try:
        assert reopened.key(alice) == alice_key and reopened.key(own) == own_key
        assert reopened.subject_ref("alice") == subject_ref  # the index key came back through KMS
        assert reopened.subject_file("alice").request_ids == ("r-a1", "r-a2")
    finally:
        reopened.close()


def test_kms_wrapped_keys_are_bound_to_key_ref_and_kms_key(moto_server, kms_key_id, db_path):
    client = _kms_client(moto_server.endpoint_url)
    kek = KmsKek(kms_key_id, client)
    key, wrapped = kek.new_key(_ref(1))
    assert len(key) == 32 and kek.unwrap(_ref(1), wrapped) == key
    with pytest.raises(KekError, match="Decrypt"):
        kek.unwrap(_ref(2), wrapped)  # another key ref's encryption context
    with pytest.raises(KekError):
        KmsKek(_kms_key(moto_server.endpoint_url), client).unwrap(_ref(1), wrapped)  # another KMS key

    ring = DataKeyring(db_path, kek)
    try:
        [(alice, _), (bob, _)] = ring.assign([Assignment("r-1", "alice", FAR), Assignment("r-2", "bob", FAR)], now=NOW)
    finally:
        ring.close()
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.execute("UPDATE data_keys SET wrapped = ? WHERE key_ref = ?", (_wrapped(db_path, alice), bob))
        db.commit()
    fresh = DataKeyring(db_path, KmsKek(kms_key_id, _kms_client(moto_server.endpoint_url)))
    try:
        with pytest.raises(KekError, match=kms_key_id):
            fresh.key(bob)
    finally:
        fresh.close()


def test_kms_outage_makes_uncached_keys_unavailable(tmp_path, db_path):
    with MotoServer(log_dir=tmp_path / "moto") as server:  # its own server: this test stops it
        key_id = _kms_key(server.endpoint_url)
        ring = DataKeyring(db_path, KmsKek(key_id, _kms_client(server.endpoint_url)))
        fresh = None
        try:
            [(alice, alice_key)] = ring.assign([Assignment("r-1", "alice", FAR)], now=NOW)
            # a fresh instance (nothing cached; its index key unwrapped while KMS answers)
            fresh = DataKeyring(db_path, KmsKek(key_id, _kms_client(server.endpoint_url)))
            server.stop()

            with pytest.raises(KekUnavailable, match="Decrypt") as down:
                fresh.key(alice)
            assert isinstance(down.value, StoreUnavailable)  # the gateway answers 503
            assert ring.key(alice) == alice_key  # a key already in memory needs no KMS call
            with pytest.raises(KekUnavailable, match="GenerateDataKey"):
                ring.assign([Assignment("r-2", "bob", FAR), Assignment("r-3", "carol", FAR)], now=NOW)
            # the failed batch left nothing behind
            assert ring.subject_file("bob").key_refs == () and ring.subject_file("carol").request_ids == ()
            assert fresh.subject_file("alice").request_ids == ("r-1",)
            with pytest.raises(KekUnavailable):
                DataKeyring(db_path, KmsKek(key_id, _kms_client(server.endpoint_url)))
        finally:
            ring.close()
            if fresh is not None:
                fresh.close()

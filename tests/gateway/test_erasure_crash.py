"""An erasure interrupted by SIGKILL never destroys a key without its signed record.

Erasure is: note it in the keyring, append the ``erasure`` record, destroy the keys.
A process killed between the steps leaves either a noted erasure without a record
(the keys intact) or a record whose keys still exist; the next ``verdict subjects``
command (or gateway start) finishes it: the record appended if missing, the keys
destroyed, exactly one record per erasure. Tested at both fixed points and with
real SIGKILLs of ``verdict subjects erase`` at arbitrary moments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.gateway.conftest import SEALED_SUBJECTS as SUBJECTS
from tests.support.gateway_server import PROJECT
from verdict.audit.chain import ChainWriter
from verdict.audit.data_keys import DataKeyErased
from verdict.audit.lease import LeaseOptions
from verdict.audit.personal_data import existing_personal_data
from verdict.audit.reader import read_decision
from verdict.audit.records import ErasureBody, decode_record, iter_lines, split_line, utc_now
from verdict.audit.signing import FileKeyStore
from verdict.audit.trust import configured_root
from verdict.audit.verifier import verify_store
from verdict.gateway.registry_log import RegistryLog
from verdict.gateway.subjects import SUBJECTS_CHAIN, SubjectRights


def _rights(store) -> SubjectRights:
    """What a fresh process builds (the keyring and the subjects chain's log)."""
    personal = existing_personal_data()
    return SubjectRights(store, personal, RegistryLog.local(store, chain_id=SUBJECTS_CHAIN))


def _erasure_records(store) -> list[ErasureBody]:
    found = []
    for key in sorted(store.list_keys(f"chains/{SUBJECTS_CHAIN}/segments/")):
        for line in iter_lines(store.get(key)):
            body = decode_record(split_line(line)[0]).body
            if isinstance(body, ErasureBody):
                found.append(body)
    return found


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "verdict", *args],
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _body(rights: SubjectRights, subject: str) -> ErasureBody:
    found = rights.file(subject)
    return ErasureBody(
        key_refs=sorted(found.key_refs),
        request_ids=sorted(found.request_ids),
        cause="request",
        basis="GDPR Art. 17",
        by="test",
        at=utc_now(),
    )


def _check_consistent(store, *, finished: bool) -> None:
    """No key destroyed without its record; once finished, no recorded key still alive."""
    rights = _rights(store)
    keyring = rights.keyring
    recorded = {k for body in _erasure_records(store) for k in body.key_refs}
    for subject in SUBJECTS:
        for request_id in [f"kill-{n:03d}" for n, s in enumerate(SUBJECTS * 2) if s == subject]:
            key_ref = read_decision(store, request_id, prove=False).body.inputs.key_ref
            alive = keyring.live(key_ref)
            if not alive:
                assert key_ref in recorded, f"{key_ref} destroyed without an erasure record"
            if finished:
                assert alive == (key_ref not in recorded), f"{key_ref}: recorded {key_ref in recorded}, alive {alive}"
    if finished:
        assert keyring.pending_erasures() == []
    keyring.close()


def test_killed_after_the_record_the_keys_are_destroyed_on_the_next_start(sealed_trail):
    trail = sealed_trail
    rights = _rights(sealed_trail)
    body = _body(rights, "person-00")
    rights.keyring.prepare_erasure(body)
    rights._append(body)  # the state a SIGKILL right after the record leaves: record durable, keys alive
    assert rights.keyring.live(body.key_refs[0])
    rights.keyring.close()
    _check_consistent(trail, finished=False)

    done = _cli("subjects", "show", "person-01")  # any subjects command finishes it first
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "Finished an earlier erasure" in err
    assert _erasure_records(sealed_trail) == [body]  # not recorded twice
    after = _rights(sealed_trail)
    with pytest.raises(DataKeyErased) as erased:
        after.keyring.key(body.key_refs[0])
    assert erased.value.erasure.chain_id == SUBJECTS_CHAIN
    _check_consistent(trail, finished=True)


def test_killed_before_the_record_the_erasure_is_recorded_then_done(sealed_trail):
    trail = sealed_trail
    rights = _rights(sealed_trail)
    body = _body(rights, "person-02")
    rights.keyring.prepare_erasure(body)  # noted, then killed: no record, keys alive
    rights.keyring.close()
    assert _erasure_records(sealed_trail) == []
    _check_consistent(trail, finished=False)
    finished = _rights(sealed_trail).recover()
    assert [f.body for f in finished] == [body] and _erasure_records(sealed_trail) == [body]
    _check_consistent(trail, finished=True)


def test_a_restored_keyring_backup_loses_the_erased_keys_again(sealed_trail, verdict_home):
    trail = sealed_trail
    database = verdict_home / "keyring" / "keyring.sqlite"
    backup = verdict_home / "backup.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as db:  # a backup taken before the erasure
        db.execute(f"VACUUM INTO '{backup}'")
    rights = _rights(sealed_trail)
    done = rights.erase("person-03", "GDPR Art. 17", "test")
    rights.keyring.close()
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    backup.rename(database)  # restored: the erased key is back
    assert _rights(sealed_trail).keyring.live(done.body.key_refs[0])
    _rights(sealed_trail).recover()
    _check_consistent(trail, finished=True)


def test_sigkill_of_an_erasure_waiting_to_record(sealed_trail):
    trail = sealed_trail
    """A real ``verdict subjects erase`` killed with SIGKILL after it noted the erasure and
    while it waits for the ``subjects`` chain (this test holds the chain's lease): nothing
    destroyed, nothing recorded; the next command records the erasure and destroys the key."""
    signer, _ = FileKeyStore.default().init()
    holder = ChainWriter.open(trail, SUBJECTS_CHAIN, signer, root=configured_root(), lease=LeaseOptions())
    try:
        process = _cli("subjects", "erase", "person-05", "--basis", "GDPR Art. 17")
        watcher = _rights(sealed_trail)
        # Poll for the state to kill in (noted, not yet recorded). The loop ends either way: the
        # process, blocked on the lease this test holds, gives up and exits if it never notes it.
        while not watcher.keyring.pending_erasures():
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
        (pending,) = watcher.keyring.pending_erasures()
        assert all(watcher.keyring.live(k) for k in pending.key_refs) and _erasure_records(sealed_trail) == []
        watcher.keyring.close()
        _check_consistent(trail, finished=False)
    finally:
        holder.close()
    finisher = _cli("subjects", "show", "person-06")
    _, err = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, err
    assert [b.request_ids for b in _erasure_records(sealed_trail)] == [pending.request_ids]
    _check_consistent(trail, finished=True)
    assert verify_store(sealed_trail).ok

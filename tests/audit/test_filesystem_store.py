"""FilesystemStore: the embedded write-once default, on a real directory."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.audit.helpers import staged_files
from verdict.audit.stores import (
    FilesystemStore,
    ObjectExists,
    StoreUnavailable,
)
from verdict.audit.stores.keys import InvalidKey

INCOMING = ".incoming"


@pytest.fixture
def store(tmp_path):
    return FilesystemStore(tmp_path / "store")


def _incoming(store: FilesystemStore) -> list[str]:
    return staged_files(store.root)


# The contract every backend shares (write once, read back, batches, keys, listing,
# failures) is tests/audit/test_store_conformance.py; what follows is the filesystem's own.


def test_objects_are_files_under_the_root_named_by_the_url(store, tmp_path):
    store.put_once("chains/c0/00000001", b"record one")
    assert (store.root / "chains/c0/00000001").read_bytes() == b"record one"
    assert store.url == (tmp_path / "store").as_uri()


def test_a_refused_second_put_leaves_the_file_and_no_staging(store):
    store.put_once("k/1", b"original")
    before = os.stat(store.root / "k/1")
    with pytest.raises(ObjectExists):
        store.put_once("k/1", b"forged, and longer than the original")
    after = os.stat(store.root / "k/1")
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert _incoming(store) == []  # the staged copy of the refused write is gone


def test_objects_are_read_only_files(store):
    store.put_many_once([("a", b"1"), ("deep/er/b", b"2")])
    for key in ("a", "deep/er/b"):
        mode = os.stat(store.root / key).st_mode
        assert stat.S_ISREG(mode)
        assert stat.S_IMODE(mode) == 0o444, oct(mode)
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError), open(store.root / "a", "r+b"):
            pass


def test_invalid_key_in_a_batch_stages_nothing_and_nothing_escapes_the_root(store):
    with pytest.raises(InvalidKey):
        store.put_many_once([("good/1", b"x"), ("../bad", b"y")])
    assert not (store.root.parent / "bad").exists()
    assert _incoming(store) == []


def test_list_keys_ignores_incoming(store):
    store.put_once("real", b"1")
    (store.root / INCOMING / "half-written").write_bytes(b"partial")
    (store.root / "sub").mkdir()
    (store.root / "sub" / INCOMING).mkdir()
    (store.root / "sub" / INCOMING / "x").write_bytes(b"y")
    assert list(store.list_keys()) == ["real"]
    assert [v.key for v in store.list_versions()] == ["real"]


def test_no_leftover_temporary_files_after_success_and_conflict(store):
    store.put_many_once([(f"t/{i}", b"x" * i) for i in range(20)])
    assert _incoming(store) == []
    with pytest.raises(ObjectExists):
        store.put_many_once([("t/new", b"n"), ("t/3", b"again")])
    assert _incoming(store) == []
    assert store.get("t/new") == b"n"


# ---------------------------------------------------------------------------
# Regression tests for defects found in review (each failed before its fix).


def test_temp_file_removed_when_staging_fails(tmp_path):
    """A real write failure (EFBIG from RLIMIT_FSIZE) in a child process."""
    root = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(Path.cwd())!r})
        from verdict.audit.stores import FilesystemStore, StoreUnavailable
        store = FilesystemStore({str(root)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        try:
            store.put_once("big", b"x" * 4096)
        except StoreUnavailable as exc:
            print("unavailable:", exc)
        else:
            sys.exit("write over the limit succeeded")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "unavailable:" in done.stdout, done.stdout + done.stderr
    assert not (root / "big").exists()
    assert staged_files(root) == []


def test_file_and_directory_of_one_name_is_a_taken_key(store):
    """S3 allows both "f" and "f/g"; a filesystem cannot. Reported as taken, not as an outage."""
    store.put_once("f", b"file")
    with pytest.raises(ObjectExists):
        store.put_once("f/g", b"under a file")
    store.put_once("d/x", b"in a directory")
    with pytest.raises(ObjectExists):
        store.put_once("d", b"over a directory")
    assert store.get("f") == b"file" and store.get("d/x") == b"in a directory"


needs_syncfs = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pre-staging relies on syncfs(2)")


@needs_syncfs
def test_prestaged_objects_cost_only_the_directory_barrier(store):
    entries = [(f"index/requests/{n}", f"entry {n}".encode()) for n in range(3)]
    store.prestage(entries)
    assert list(store.list_keys()) == []  # nothing is visible before the put
    store.put_once("chains/c0/segments/00000001", b"segment")  # its data barrier covers the entries
    barriers_before = store._syncs_started
    store.put_many_once(entries)
    assert store._syncs_started - barriers_before == 1  # directories only: the data was already durable
    assert [store.get(key) for key, _ in entries] == [data for _, data in entries]
    assert _incoming(store) == []


@needs_syncfs
def test_prestaged_bytes_are_only_used_for_identical_data(store):
    store.prestage([("k", b"staged"), ("j", b"unused")])
    barriers_before = store._syncs_started
    store.put_many_once([("k", b"different")])  # not covered by any barrier yet, and other bytes
    assert store._syncs_started - barriers_before == 2  # data and directories
    assert store.get("k") == b"different"
    assert not store.exists("j")
    store.prestage([("j", b"again")])  # replaces the unused earlier file
    assert len(_incoming(store)) == 1


@needs_syncfs
def test_prestaged_but_uncovered_objects_are_synced_before_publication(store):
    store.prestage([("k", b"v")])
    barriers_before = store._syncs_started
    store.put_many_once([("k", b"v")])  # no barrier since pre-staging: one for the data first
    assert store._syncs_started - barriers_before == 2
    assert store.get("k") == b"v"
    assert _incoming(store) == []


@needs_syncfs
def test_unused_prestaged_files_are_bounded(store, monkeypatch):
    import verdict.audit.stores.filesystem as filesystem

    monkeypatch.setattr(filesystem, "_MAX_PRESTAGED", 4)
    store.prestage([(f"k{n}", b"x") for n in range(10)])
    assert len(_incoming(store)) == 4


class _SlowSyncfs:
    """The real syncfs(2), slowed down and logged: each call's (start, end)."""

    def __init__(self, real, seconds: float, fail_calls: frozenset[int] = frozenset()) -> None:
        self.real, self.seconds, self.fail_calls = real, seconds, fail_calls
        self.calls: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> int:
        started = time.monotonic()
        result = self.real(fd)
        time.sleep(self.seconds)
        with self._lock:
            self.calls.append((started, time.monotonic()))
            number = len(self.calls)
        if number in self.fail_calls:
            ctypes.set_errno(errno.EIO)
            return -1
        return result


def _concurrent_puts(store: FilesystemStore, count: int) -> list[tuple[float, float, BaseException | None]]:
    """``count`` threads each put one object at the same moment; per thread (called, returned, error)."""
    start = threading.Barrier(count)
    outcomes: list[tuple[float, float, BaseException | None]] = [(0.0, 0.0, None)] * count

    def put(n: int) -> None:
        start.wait()
        called = time.monotonic()
        try:
            store.put_once(f"objects/{n}", f"object {n}".encode())
            outcomes[n] = (called, time.monotonic(), None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcomes[n] = (called, time.monotonic(), exc)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@needs_syncfs
def test_concurrent_commits_share_disk_flushes_each_started_after_their_writes(store, monkeypatch):
    import verdict.audit.stores.filesystem as filesystem

    slow = _SlowSyncfs(filesystem._SYNCFS, 0.05)
    monkeypatch.setattr(filesystem, "_SYNCFS", slow)
    outcomes = _concurrent_puts(store, 8)
    assert [error for _, _, error in outcomes] == [None] * 8
    # Each put needs two barriers (data, directory): sixteen alone, far fewer shared.
    assert len(slow.calls) < 12
    for called, returned, _ in outcomes:
        # Both of a put's barriers began after it was called and ended before it returned.
        covering = [(s, e) for s, e in slow.calls if s >= called and e <= returned]
        assert len(covering) >= 2
    assert sorted(store.list_keys("objects/")) == sorted(f"objects/{n}" for n in range(8))


@needs_syncfs
def test_a_failed_shared_flush_fails_every_commit_that_waited_for_it(store, monkeypatch):
    import verdict.audit.stores.filesystem as filesystem

    # The first flush serves the first put alone; the others arrive while it
    # runs and share the second one, which fails: all of them must fail.
    slow = _SlowSyncfs(filesystem._SYNCFS, 0.05, fail_calls=frozenset({2}))
    monkeypatch.setattr(filesystem, "_SYNCFS", slow)
    outcomes = _concurrent_puts(store, 6)
    failed = [str(error) for _, _, error in outcomes if error is not None]
    assert all(isinstance(error, (StoreUnavailable, type(None))) for _, _, error in outcomes)
    assert len(failed) >= 2 and all("syncfs" in message for message in failed)
    assert any("shared with another commit" in message for message in failed)
    for n, (_, _, error) in enumerate(outcomes):
        if error is None:
            assert store.get(f"objects/{n}") == f"object {n}".encode()
        else:  # in doubt, like any failed put: absent, or (failed at its directory barrier) whole
            assert not store.exists(f"objects/{n}") or store.get(f"objects/{n}") == f"object {n}".encode()
    assert not _incoming(store)
    store.put_once("after", b"the next barrier works again")
    assert store.get("after") == b"the next barrier works again"


def test_publish_once_keeps_a_staged_copy_until_a_barrier_makes_the_name_durable(store):
    store.publish_once("chains/c0/segments/1", b"segment one")
    assert store.get("chains/c0/segments/1") == b"segment one"  # visible at once
    assert len(_incoming(store)) == 1  # the durable copy, until the name is durable
    store.put_once("index/requests/r1", b"entry")  # any put's barrier covers the name
    assert _incoming(store) == []
    with pytest.raises(ObjectExists):
        store.publish_once("chains/c0/segments/1", b"another")
    assert _incoming(store) == [] and store.get("chains/c0/segments/1") == b"segment one"
    store.publish_once("chains/c0/segments/2", b"segment two")
    assert len(_incoming(store)) == 1
    store.barrier()
    assert _incoming(store) == []


def test_unconfirmed_finds_published_data_whose_name_was_lost(store):
    store.publish_once("chains/c1/segments/1", b"other chain")
    store.publish_once("chains/c0/segments/1", b"kept")
    store.publish_once("chains/c0/segments/2", b"lost name")  # its data barrier made the names before it durable
    assert len(_incoming(store)) == 1
    # A crash before the next barrier may lose the last name, never the staged copy (its data was synced):
    (store.root / "chains/c0/segments/2").unlink()
    leftover = FilesystemStore(store.root)
    leftover.publish_once("chains/c1/segments/2", b"published, then the process died")
    reopened = FilesystemStore(store.root)
    assert reopened.unconfirmed("chains/c0/") == [("chains/c0/segments/2", b"lost name")]
    reopened.discard_unconfirmed("chains/c0/segments/2")
    assert reopened.unconfirmed("chains/c0/") == []
    assert len(_incoming(store)) == 1  # chains/c1/segments/2: outside the prefix asked about
    assert reopened.unconfirmed("chains/") == []  # its name exists (and is durable now): the copy goes
    assert _incoming(store) == []
    assert store.get("chains/c1/segments/2") == b"published, then the process died"


def test_without_syncfs_names_are_confirmed_by_directory_fsyncs(store, monkeypatch):
    # Platforms without syncfs(2) (macOS) fsync files and directories one by one:
    # a deferred name must still be made durable, and its staged copy then removed.
    import verdict.audit.stores.filesystem as filesystem
    from tests.audit.helpers import decisions
    from verdict.audit.chain import ChainWriter
    from verdict.audit.signing import Ed25519Signer
    from verdict.audit.verifier import verify_store

    monkeypatch.setattr(filesystem, "_SYNCFS", None)
    store.publish_once("objects/published", b"data")
    assert len(_incoming(store)) == 1
    store.barrier()
    assert _incoming(store) == []
    writer = ChainWriter.open(store, "gateway-0", Ed25519Signer.from_seed(bytes(32), "2026-01-01T00:00:00.000000Z"))
    receipts = writer.append_batch(decisions("m", 5))
    assert _incoming(store) == []  # the index round's directory fsyncs confirmed the segment's name
    writer.close()
    assert store.get(receipts[0].segment_key)
    assert verify_store(store).ok


_STAGING_WRITER = textwrap.dedent("""
    import sys
    from verdict.audit.stores import FilesystemStore
    store = FilesystemStore(sys.argv[1])
    store.prestage([("index/requests/r-1", b"request id and hash of r-1")])
    store.publish_once("chains/c0/segments/1", b"a segment whose name may be lost")
    print("staged", flush=True)
    sys.stdin.read()  # alive until killed
""")


def test_staging_of_a_killed_writer_is_removed_once_proved_dead(store):
    """Pre-staged index entries (request ids, hashes) of a writer killed
    mid-batch are removed by the next recovery; a live writer's staging and a
    key-named copy that recovery may put again are kept."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _STAGING_WRITER, str(store.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert writer.stdout.readline() == b"staged\n"
        staged = [n for n in _incoming(store) if n.startswith(f"{writer.pid}-")]
        assert len(staged) == 2
        assert store.discard_orphans() == 0 and _incoming(store) == staged  # alive: its lock is held
    finally:
        writer.kill()
        writer.wait()
    (store.root / "chains/c0/segments/1").unlink()  # the crash lost the segment's name
    assert store.discard_orphans() == 1
    (copy,) = _incoming(store)
    assert "=" in copy  # the key-named copy stays for the chain's recovery
    assert store.unconfirmed("chains/c0/") == [("chains/c0/segments/1", b"a segment whose name may be lost")]
    assert not [n for n in os.listdir(store.root / INCOMING) if n.startswith(f"{writer.pid}-") and n.endswith(".lock")]


def test_staging_left_by_a_writer_without_a_lock_is_orphaned(store):
    """Files from a writer that never took a lock (an earlier version) are
    gone-owner files: removed, while this store's own staging is kept."""
    (store.root / INCOMING / "12345-0123456789abcdef-0").write_bytes(b"pre-staged by an old version")
    (store.root / INCOMING / "12345-0123456789abcdef-1=chains~c9~segments~1").write_bytes(b"key-named copy")
    store.prestage([("index/requests/mine", b"mine")])
    mine = [n for n in _incoming(store) if n.startswith(f"{os.getpid()}-")]
    assert store.discard_orphans() == 1
    assert _incoming(store) == sorted(["12345-0123456789abcdef-1=chains~c9~segments~1", *mine])


def test_write_probe_reports_the_os_reason(store, monkeypatch):
    store.probe_write()
    assert [n for n in _incoming(store) if n.endswith("probe")] == []
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StoreUnavailable, match="No space left on device"):
        store.probe_write()
    monkeypatch.setattr(os, "write", real_write)
    assert [n for n in _incoming(store) if n.endswith("probe")] == []


def test_a_lock_file_left_unnamed_by_a_killed_writer_is_removed(store):
    """SIGKILL between creating its liveness lock and naming it leaves ``<owner>.lock.new``."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    incoming = store.root / ".incoming"
    incoming.mkdir(exist_ok=True)
    dead = incoming / f"{gone.pid}-0123456789abcdef.lock.new"
    alive = incoming / f"{os.getpid()}-fedcba9876543210.lock.new"  # a live process's, mid-creation
    dead.touch()
    alive.touch()
    store.discard_orphans()
    assert not dead.exists() and alive.exists()

"""Filesystem WORM store: the embedded default.

Guarantees: an object appears at its key whole or not at all, and a key is
never overwritten by this code (publication is ``link(2)``, which fails if the
name exists). Files are made read-only (0444). Durability: file data is
fsynced before publication and every directory that gained an entry is fsynced
after it. A batch is one durable round: on Linux one ``syncfs(2)`` makes all
its files durable (and another one its new directory entries); elsewhere the
files are fsynced concurrently, so the journal commits them together (one
fsync after another cost 5x more here).

Pre-staging (Linux): the chain writer knows a batch's index entries before it
writes the batch's segment, but may publish them only once the segment is
durable. :meth:`FilesystemStore.prestage` writes their files unpublished, so
the segment's data barrier makes them durable too, and the index round then
needs only its directory barrier.

Deferred naming: :meth:`FilesystemStore.publish_once` returns once an
object's data is durable and its name visible; the name becomes durable at
the next barrier, and until then a durable copy stays in staging under a name
that says its key, so recovery can put it again (:meth:`unconfirmed`). The
chain writer publishes segments this way and the index round's barrier makes
the segment's name durable with the index entries': two barriers per batch.

Barriers are shared: threads that need one while a ``syncfs`` runs share the
next one (see ``_syncfs_counted``).

Limits, stated plainly: a local root user can still delete or rewrite files.
This store is therefore tamper-*evident*, not tamper-proof: the hash chain,
signatures and Merkle checkpoints make any change detectable by the verifier.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from verdict.audit.durable import fsync_directory, unlink_if_present
from verdict.audit.stores.base import (
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    ObjectVersion,
    StoreConfigurationError,
    StoreUnavailable,
)
from verdict.audit.stores.keys import check_key, check_prefix
from verdict.audit.stores.staging import StagingOwner

__all__ = ["FilesystemStore"]

_TMP_DIR = ".incoming"
_STAGED_KEY_MARK = "="  # staged copy of a publish_once object: <unique>=<key with "/" as "~">
_STAGED_SLASH = "~"  # neither character can occur in a key
_MAX_PRESTAGED = 4096
_PROBE_BYTES = 64 * 1024  # about one batch's segment and index entries
_FSYNC_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="verdict-fsync")


def _load_syncfs():  # noqa: ANN202 - a ctypes function or None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


class FilesystemStore:
    """Write-once objects as read-only files under ``root``."""

    versioned = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()
        self._root_text = str(self.root) + os.sep  # plain strings on the per-object paths (pathlib costs ~20 us)
        # Staging files are named after their owner, who holds a lock while alive (audit.stores.staging).
        self._owner = StagingOwner(self._root_text + _TMP_DIR, _STAGED_KEY_MARK)
        self._staging = self._owner.prefix
        self._staged_count = itertools.count()
        # key -> (staged path, data, syncfs calls started when it was written); see prestage().
        self._prestaged: dict[str, tuple[str, bytes, int]] = {}
        self._prestage_lock = threading.Lock()
        # Barrier bookkeeping (see _syncfs_counted), under the same lock as pre-staging.
        self._sync_done = threading.Condition(self._prestage_lock)
        self._sync_running = False
        self._syncs_started = 0
        self._synced_through = 0  # the highest start number of a syncfs that has completed
        self._sync_failed_through = 0  # the highest start number of a syncfs that failed
        # publish_once() objects whose name is not yet known durable:
        # (staged copy, directories that changed, syncfs calls started when published).
        self._unconfirmed: list[tuple[str, set[str], int]] = []
        try:
            (self.root / _TMP_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create store directory {self.root}: {exc.strerror}") from exc

    @classmethod
    def from_url(cls, url: str) -> FilesystemStore:
        """Open ``file:///absolute/path`` (the directory is created if missing)."""
        return cls(root_of_url(url))

    @staticmethod
    def present(url: str) -> bool:
        """Whether a store directory exists at ``url`` (opening would create one)."""
        try:
            return Path(root_of_url(url)).is_dir()
        except StoreConfigurationError:
            return True  # not ours to judge here: opening names what is wrong with the URL

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_once(self, key: str, data: bytes) -> ObjectRef:
        return self.put_many_once([(key, data)])[0]

    def put_many_once(self, items: Sequence[tuple[str, bytes]]) -> list[ObjectRef]:
        # Plain path strings: pathlib cost more per object than writing it.
        paths = [self._root_text + check_key(key) for key, _ in items]
        parents = {os.path.dirname(path) for path in paths}
        staged: list[str] = []
        try:
            self._stage_all(items, staged)
            new_dirs = self._make_parents(parents)
            conflicts = self._publish(staged, paths, items)
            self._sync_directories(parents | new_dirs)
        except OSError as exc:
            raise StoreUnavailable(f"filesystem store {self.root}: {exc}") from exc
        finally:
            for tmp in staged:
                unlink_if_present(tmp)
        if conflicts:
            raise ObjectExists(conflicts[0])
        return [ObjectRef(key=key) for key, _ in items]

    def publish_once(self, key: str, data: bytes) -> ObjectRef:
        """Like put_once, but returns as soon as the data is durable and the
        name is visible, before the *name* is durable: the next barrier of
        this store (any put's directory barrier, or :meth:`barrier`) makes
        it so. Until then a durable copy stays in staging, named after the
        key, and after a crash :meth:`unconfirmed` finds it, so a caller can
        put it again if the name was lost.

        Why: the chain writer publishes a segment this way and lets the index
        round's barrier make the segment's name durable together with the
        index entries: two barriers per batch instead of three.
        """
        path = self._root_text + check_key(key)
        parent = os.path.dirname(path)
        staged: list[str] = []
        published = False
        try:
            fd = self._write_staged(data, staged, keep_open=True, key=key)
            try:
                self._sync_files([fd], staged)
            finally:
                os.close(fd)
            if _SYNCFS is None:  # syncfs covered the staged copy's own name; fsync does not
                fsync_directory(self._root_text + _TMP_DIR)
            changed = self._make_parents({parent}) | {parent}
            if self._publish(staged, [path], [(key, data)]):
                raise ObjectExists(key)
            published = True
        except OSError as exc:
            raise StoreUnavailable(f"filesystem store {self.root}: {exc}") from exc
        finally:
            if not published:
                for tmp in staged:
                    unlink_if_present(tmp)
        with self._prestage_lock:
            self._unconfirmed.append((staged[0], changed, self._syncs_started))
        return ObjectRef(key=key)

    def barrier(self) -> None:
        """Make every name published so far durable (see publish_once)."""
        try:
            self._sync_directories({self._root_text.rstrip(os.sep)})
        except OSError as exc:
            raise StoreUnavailable(f"filesystem store {self.root}: {exc}") from exc

    def unconfirmed(self, prefix: str) -> list[tuple[str, bytes]]:
        """Objects under ``prefix`` that publish_once wrote durably but whose
        name is missing (a crash before the next barrier lost it), in key
        order, for the caller to put again or discard. Staged copies whose
        name exists are removed (after a barrier, so that name is durable)."""
        check_prefix(prefix)
        self.barrier()
        found: list[tuple[str, bytes]] = []
        incoming = self._root_text + _TMP_DIR + os.sep
        for name in os.listdir(incoming):
            key = _key_of_staged(name)
            if key is None or not key.startswith(prefix):
                continue
            if os.path.lexists(self._root_text + key):
                unlink_if_present(incoming + name)
                continue
            try:
                with open(incoming + name, "rb") as file:
                    found.append((key, file.read()))
            except FileNotFoundError:
                continue  # removed meanwhile by another process's recovery
        return sorted(found)

    def discard_unconfirmed(self, key: str) -> None:
        """Remove the staged copies of ``key`` (a caller decided not to put them again)."""
        check_key(key)
        incoming = self._root_text + _TMP_DIR + os.sep
        for name in os.listdir(incoming):
            if _key_of_staged(name) == key:
                unlink_if_present(incoming + name)

    def discard_orphans(self) -> int:
        """Remove staging files left by writers proved dead (killed mid-batch):
        pre-staged index entries and temporary copies, never a key-named copy
        that crash recovery may still put again. Returns how many were removed."""
        try:
            return self._owner.discard_orphans()
        except OSError as exc:
            raise StoreUnavailable(f"filesystem store {self.root}: cannot clean staging: {exc}") from exc

    def probe_write(self, size: int = _PROBE_BYTES) -> None:
        """Can this store take an append now? Writes ``size`` bytes to a scratch
        file in staging, syncs and removes it; raises StoreUnavailable (with
        the OS reason, e.g. "No space left on device") if it cannot."""
        path = f"{self._staging}probe"
        try:
            self._owner.hold()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(bytes(size))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreUnavailable(f"filesystem store {self.root} cannot take writes: {exc.strerror or exc}") from exc
        finally:
            unlink_if_present(path)

    def prestage(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write these objects' files now, unpublished: the next durability
        barrier (any put's data sync) makes them durable, and a later
        put_many_once of the same key and bytes then only publishes them.

        A hint, never a write: nothing becomes visible here, and a pre-staged
        file that is never put is removed (at most ``_MAX_PRESTAGED`` are kept).
        Only where ``syncfs(2)`` exists, since only it covers files it was not
        handed.
        """
        if _SYNCFS is None or not items:
            return
        staged: list[str] = []
        try:
            for _, data in items:
                self._write_staged(data, staged)
        except OSError:
            for tmp in staged:
                unlink_if_present(tmp)
            return  # only a hint: the put stages them itself
        with self._prestage_lock:
            generation = self._syncs_started
            for (key, data), tmp in zip(items, staged, strict=True):
                self._forget_prestaged(key)
                self._prestaged[key] = (tmp, data, generation)
            while len(self._prestaged) > _MAX_PRESTAGED:
                self._forget_prestaged(next(iter(self._prestaged)))

    def _forget_prestaged(self, key: str) -> None:
        old = self._prestaged.pop(key, None)
        if old is not None:
            unlink_if_present(old[0])

    def _take_prestaged(self, key: str, data: bytes) -> tuple[str, bool] | None:
        """The pre-staged file for exactly these bytes, and whether a barrier
        has made it durable since; None if there is none."""
        with self._prestage_lock:
            found = self._prestaged.pop(key, None)
            if found is None:
                return None
            tmp, staged_data, generation = found
            if staged_data != data:
                unlink_if_present(tmp)
                return None
            return tmp, self._synced_through > generation

    def _stage_all(self, items: Sequence[tuple[str, bytes]], staged: list[str]) -> None:
        """Give each item a durable temporary file (O_EXCL, read-only): a
        pre-staged one, or one written now, then synced with the rest.
        ``staged`` collects the paths in item order, so the caller removes
        every one of them, whatever fails."""
        fds: list[int] = []
        needs_sync = False
        try:
            for key, data in items:
                prestaged = self._take_prestaged(key, data)
                if prestaged is None:
                    fds.append(self._write_staged(data, staged, keep_open=True))
                    needs_sync = True
                else:
                    tmp, durable = prestaged
                    staged.append(tmp)
                    needs_sync = needs_sync or not durable
            if needs_sync:
                self._sync_files(fds, staged)
        finally:
            for fd in fds:
                os.close(fd)

    def _write_staged(self, data: bytes, staged: list[str], *, keep_open: bool = False, key: str | None = None) -> int:
        # Unique per process and store object; O_EXCL still refuses any collision.
        self._owner.hold()
        tmp = f"{self._staging}{next(self._staged_count)}"
        if key is not None:
            tmp += _STAGED_KEY_MARK + key.replace("/", _STAGED_SLASH)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        staged.append(tmp)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            raise
        if not keep_open:
            os.close(fd)
        return fd

    def _sync_files(self, fds: list[int], staged: list[str]) -> None:
        if _SYNCFS is not None:
            if fds:
                self._syncfs_counted(fds[0])
                return
            fd = os.open(staged[0], os.O_RDONLY)  # only pre-staged files, not yet covered by a barrier
            try:
                self._syncfs_counted(fd)
            finally:
                os.close(fd)
        else:
            for _ in _FSYNC_POOL.map(os.fsync, fds):
                pass

    def _syncfs_counted(self, fd: int) -> None:
        """A durability barrier: returns once a syncfs that *started* after this
        call has completed, so every write made before the call is durable.

        Shared between threads (group commit at the disk): a caller arriving
        while a syncfs runs cannot use that one (it may have missed the
        caller's writes), so it waits and then starts the next one, which
        every caller that arrived meanwhile shares. With two batches
        committing at once, one disk flush serves both. If the syncfs a
        caller was waiting for fails, that caller fails too: nothing is
        reported durable on the strength of a flush that did not happen.
        """
        with self._sync_done:
            target = self._syncs_started + 1
            while self._synced_through < target:
                if self._sync_failed_through >= target:
                    raise OSError(errno.EIO, "syncfs failed for a barrier shared with another commit")
                if self._sync_running:
                    self._sync_done.wait()
                    continue
                self._sync_running = True
                self._syncs_started += 1
                number = self._syncs_started
                self._sync_done.release()
                try:
                    _syncfs(fd)
                except BaseException:
                    self._sync_done.acquire()
                    self._sync_failed_through = max(self._sync_failed_through, number)
                    raise
                else:
                    self._sync_done.acquire()
                    self._synced_through = max(self._synced_through, number)
                    self._drop_staged_copies([u for u in self._unconfirmed if u[2] < number])  # names durable now
                finally:
                    self._sync_running = False
                    self._sync_done.notify_all()

    def _sync_directories(self, directories: set[str]) -> None:
        existing = [d for d in directories if os.path.isdir(d)]
        if _SYNCFS is not None and existing:
            fd = os.open(existing[0], os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._syncfs_counted(fd)  # also confirms publish_once names
            finally:
                os.close(fd)
            return
        with self._prestage_lock:
            covered = list(self._unconfirmed)  # published before these fsyncs start
        for directory in set(existing).union(*(changed for _, changed, _ in covered)):
            fsync_directory(directory)
        with self._prestage_lock:
            self._drop_staged_copies(covered)

    def _drop_staged_copies(self, confirmed: list[tuple[str, set[str], int]]) -> None:
        """Under the lock: these publish_once names are durable; their staged copies can go."""
        self._unconfirmed = [u for u in self._unconfirmed if u not in confirmed]
        for tmp, _, _ in confirmed:
            unlink_if_present(tmp)

    @staticmethod
    def _make_parents(parents: set[str]) -> set[str]:
        """Create missing parent directories; return the directories whose
        entries changed (so they get fsynced too). A parent that exists as a
        file is left alone: publishing under it then reports a taken key."""
        changed: set[str] = set()
        for parent in sorted(parents):
            missing = []
            probe = parent
            while not os.path.exists(probe):
                missing.append(probe)
                probe = os.path.dirname(probe)
            if not os.path.isdir(probe):
                continue
            for directory in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(directory)
                changed.add(os.path.dirname(directory))
        return changed

    @staticmethod
    def _publish(staged: list[str], paths: list[str], items: Sequence[tuple[str, bytes]]) -> list[str]:
        """Link each staged file to its final name; return keys that existed."""
        conflicts = []
        for tmp, final, (key, _) in zip(staged, paths, items, strict=True):
            try:
                os.link(tmp, final)
            except (FileExistsError, IsADirectoryError, NotADirectoryError):
                # The last two: "a" and "a/b" cannot both be files here (S3 allows
                # it). Our own layouts never do this; report it as a taken key.
                conflicts.append(key)
        return conflicts

    def get(self, key: str, version: str | None = None) -> bytes:
        path = self._root_text + check_key(key)
        try:
            with open(path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise ObjectMissing(key, f"no file {path}") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {path}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        # Walk the directory holding the prefix's complete segments, then
        # filter by plain string prefix (so "chains/c1" also finds "chains/c10/...").
        directory = check_prefix(prefix).rpartition("/")[0]
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != _TMP_DIR]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    found.append(key)
        yield from sorted(found)

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        for key in self.list_keys(prefix):
            size = (self.root / key).stat().st_size  # key came from list_keys: inside root
            yield ObjectVersion(key=key, version=None, is_latest=True, size=size)


def root_of_url(url: str) -> str:
    """The directory a ``file:///path`` URL names; StoreConfigurationError for another host."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise StoreConfigurationError(f"file store URL {url!r} must be file:///absolute/path")
    return unquote(parsed.path)


def _key_of_staged(name: str) -> str | None:
    """The key a staged copy was published under, or None for other staging files."""
    _, mark, key = name.partition(_STAGED_KEY_MARK)
    return key.replace(_STAGED_SLASH, "/") if mark and key else None


def _syncfs(fd: int) -> None:
    """Flush the whole filesystem holding ``fd``; errors (Linux >= 5.8 reports
    writeback errors here) become OSError, so nothing is reported durable that is not."""
    if _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")

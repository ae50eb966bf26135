"""Who owns the filesystem store's staging files, and proving an owner gone.

Why: a writer stages files in ``.incoming`` before publishing them (pre-staged
index entries, temporary copies). A writer killed mid-batch leaves them
behind, and they hold request ids and request hashes. They can be removed
only once it is *proved* that their writer is gone: a live writer may
publish one at any moment.

The proof is a lock. Each writing store instance names its staging files
``<owner>-<n>`` and, before writing the first of them, creates
``<owner>.lock`` and holds an exclusive ``flock(2)`` on it for the life of
the process. The kernel drops the lock when the process dies, however it
dies (SIGKILL included). So another process that can take that lock, or
that finds staged files whose owner has no lock file, knows the owner is
gone. Owners are ``<pid>-<16 hex>``, so a reused pid never names a live
owner's files.

What is never removed here: a staged copy whose name records its key
(``<owner>-<n>=<key>``, see the filesystem store's deferred naming); crash
recovery may still put it again, and the chain writer's recovery decides.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import threading

from verdict.audit.durable import unlink_if_present

__all__ = ["StagingOwner", "discard_orphans"]

_OWNER = re.compile(r"(?P<owner>[0-9]+-[0-9a-f]{16})(?:-(?P<rest>.*)|\.lock(?P<unnamed>\.new)?)")
_LOCK_SUFFIX = ".lock"


class StagingOwner:
    """This store instance's staging identity and its liveness lock."""

    def __init__(self, incoming: str, key_mark: str) -> None:
        self.name = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.prefix = os.path.join(incoming, self.name) + "-"
        self._lock_path = os.path.join(incoming, self.name) + _LOCK_SUFFIX
        self._incoming, self._key_mark = incoming, key_mark
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()

    def hold(self) -> None:
        """Take the liveness lock (once); call before writing any staging file."""
        if self._lock_fd is not None:
            return
        with self._mutex:
            if self._lock_fd is None:
                # Locked before it gets its name, so the name never shows an unlocked live owner.
                unnamed = self._lock_path + ".new"
                fd = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.rename(unnamed, self._lock_path)
                except BaseException:
                    os.close(fd)
                    unlink_if_present(unnamed)
                    raise
                self._lock_fd = fd

    def discard_orphans(self) -> int:
        """Remove the staging files of every other owner proved gone."""
        return discard_orphans(self._incoming, self._key_mark, keep=self.name)


def discard_orphans(incoming: str, key_mark: str, keep: str | None = None) -> int:
    """Remove staged files (never key-named copies) of owners proved gone, and
    their lock files; return how many staged files were removed."""
    owners: dict[str, list[str]] = {}
    try:
        names = os.listdir(incoming)
    except FileNotFoundError:
        return 0
    for name in names:
        match = _OWNER.fullmatch(name)
        if match is None or match["owner"] == keep:
            continue
        files = owners.setdefault(match["owner"], [])
        if match["rest"] is not None and key_mark not in match["rest"]:
            files.append(name)
        elif match["unnamed"] is not None and not _pid_alive(match["owner"]):
            files.append(name)  # killed between creating its lock and naming it (StagingOwner.hold)
    removed = 0
    for owner, files in owners.items():
        lock = _take_if_gone(os.path.join(incoming, owner) + _LOCK_SUFFIX)
        if lock is False:
            continue  # alive
        try:
            for name in files:
                unlink_if_present(os.path.join(incoming, name))
                removed += 1
            unlink_if_present(os.path.join(incoming, owner) + _LOCK_SUFFIX)
        finally:
            if lock is not None:
                os.close(lock)
    return removed


def _pid_alive(owner: str) -> bool:
    try:
        os.kill(int(owner.split("-", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_if_gone(path: str) -> int | bool | None:
    """False if the owner is alive; else the fd of its lock (now ours), or
    None if it has no lock file (gone: every owner locks before staging)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return fd

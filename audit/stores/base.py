"""The write-once store contract every audit backend implements.

Why a contract: the chain writer, the model registry and the verifier must not
care whether bytes live in a local directory or an S3 Object Lock bucket; they
only need "write this key once, durably", "read it back", and "list what is
there, with every version the backend kept".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import msgspec

__all__ = [
    "DeferredNaming",
    "ObjectExists",
    "ObjectMissing",
    "ObjectRef",
    "ObjectVersion",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "WormStore",
    "WriteProbe",
]


class StoreError(Exception):
    """Base class for store failures; messages name the key and the backend."""


class ObjectExists(StoreError):
    """A write-once key already holds an object (never overwritten)."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        super().__init__(f"object {key!r} already exists" + (f": {detail}" if detail else ""))


class ObjectMissing(StoreError):
    """The requested key (or version) is not in the store."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        super().__init__(f"object {key!r} not found" + (f": {detail}" if detail else ""))


class StoreUnavailable(StoreError):
    """The backend cannot be reached or did not confirm durability (fail closed)."""


class StoreConfigurationError(StoreError):
    """The backend is reachable but unfit for an audit trail (e.g. no Object Lock)."""


class ObjectRef(msgspec.Struct, frozen=True):
    """Where a durable object lives: its key and, on versioned backends, the
    exact version written (S3 VersionId), so later readers can pin it."""

    key: str
    version: str | None = None


class ObjectVersion(msgspec.Struct, frozen=True):
    """One stored version of a key as the backend reports it (for the verifier)."""

    key: str
    version: str | None
    is_latest: bool
    is_delete_marker: bool = False
    size: int | None = None


@runtime_checkable
class WormStore(Protocol):
    """Write-once-read-many object store.

    Keys are '/'-separated relative paths of ASCII letters, digits and
    ``-_.``; no empty segments, no ``..``.
    """

    url: str
    versioned: bool  # whether a put returns a version to pin (S3 VersionId)

    def put_once(self, key: str, data: bytes) -> ObjectRef:
        """Durably write ``data`` at a key that must not exist yet.

        Returns only after the backend confirms durability. Raises
        :class:`ObjectExists` if the key is taken (the existing object is left
        untouched) and :class:`StoreUnavailable` on any I/O failure.
        """
        ...

    def put_many_once(self, items: Sequence[tuple[str, bytes]]) -> list[ObjectRef]:
        """Write several new keys in one durable round (group commit).

        All writes are attempted; returns refs in input order once every one
        is durable. If any key exists, raises :class:`ObjectExists` for the
        first such key in input order after the round completes (the other
        objects of the round may be durable: callers must tolerate that, and
        the chain writer's recovery rule covers it).
        """
        ...

    def prestage(self, items: Sequence[tuple[str, bytes]]) -> None:
        """A hint: these objects will be put soon (by put_many_once, with these
        exact bytes) after the next put. A backend may write their data now so
        that the next put's durability barrier covers it; nothing becomes
        visible, and a backend may ignore the hint."""
        ...

    def get(self, key: str, version: str | None = None) -> bytes:
        """Read an object (a pinned version where the backend has versions)."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` in ascending byte order."""
        ...

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under ``prefix`` (one per key on
        unversioned backends), for the verifier's overwrite/deletion checks."""
        ...


@runtime_checkable
class DeferredNaming(Protocol):
    """A store that can publish an object before its *name* is durable (the
    filesystem store). Why: the name of a batch's segment then becomes
    durable in the same barrier as the batch's index entries. Safe because the
    object's data is durable when publish_once returns and a staged copy
    outlives a crash that loses the name: recovery finds it with
    ``unconfirmed`` and puts it again."""

    def publish_once(self, key: str, data: bytes) -> ObjectRef:
        """Write ``data`` at a new key: durable data, visible name; the name is
        durable after the next ``barrier`` (or any put's barrier)."""
        ...

    def barrier(self) -> None:
        """Make every name published so far durable."""
        ...

    def unconfirmed(self, prefix: str) -> list[tuple[str, bytes]]:
        """(key, data) of published objects under ``prefix`` whose name a crash lost."""
        ...

    def discard_unconfirmed(self, key: str) -> None:
        """Forget the staged copies of ``key``."""
        ...

    def discard_orphans(self) -> int:
        """Remove staging left by writers proved dead (never a copy that
        ``unconfirmed`` may still return); return how many files went."""
        ...


@runtime_checkable
class WriteProbe(Protocol):
    """A store that can tell, without writing an object, whether it could take
    one now (the filesystem store: a scratch write in its staging area). Why:
    readiness must notice a full disk, and notice by itself when space is
    back, although an unready replica receives no decision to try with."""

    def probe_write(self) -> None:
        """Raise :class:`StoreUnavailable` if a write would fail now."""
        ...

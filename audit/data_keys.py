"""The data keyring: per-subject data keys, the subject index, holds and erasures.

Why it exists: sealed records (spec §3a) are only as erasable as their keys.
The keyring is the one mutable store in the system — a SQLite database
outside the write-once store — holding, per data subject, one data key
wrapped by the key-encryption key (:mod:`audit.key_wrapping`); the subject
index (which decisions each key sealed, keyed by an HMAC of the subject id so
the index names no one); legal holds; tombstones of erased keys (which
erasure record destroyed them, so a lookup can say so); and erasures in
progress.

Erasure is two steps around one signed record: :meth:`prepare_erasure`
notes the erasure as pending (refusing a subject under legal hold), the
caller appends the ``erasure`` record, and :meth:`complete_erasure` deletes
the keys and index rows and leaves tombstones, in one transaction. A process
killed in between leaves a pending erasure whose keys still exist;
:meth:`pending_erasures` hands it to the next process, which appends the
record if it is not on the chain yet and completes it. So no key is ever
destroyed without its record.

Concurrency: several processes (the gateway, ``verdict subjects``) share
the database; SQLite serialises writers (WAL, ``synchronous=FULL``: a data
key is durable before any record sealed under it is written). Unwrapped keys
are cached in memory, but whether a key still exists is always read from the
database, so an erasure by another process takes effect at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from verdict.audit.canonical import canonical_bytes
from verdict.audit.key_wrapping import KeyWrapper
from verdict.audit.records import ErasureBody, LegalHoldBody

__all__ = [
    "Assignment",
    "DataKeyErased",
    "DataKeyMissing",
    "DataKeyring",
    "ErasureRef",
    "KeyringError",
    "LegalHoldActive",
    "SubjectFile",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS data_keys (
    key_ref TEXT PRIMARY KEY, subject TEXT UNIQUE, kek_id TEXT NOT NULL,
    wrapped BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    request_id TEXT PRIMARY KEY, key_ref TEXT NOT NULL, retain_until TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_by_key ON decisions (key_ref);
CREATE TABLE IF NOT EXISTS holds (key_ref TEXT PRIMARY KEY, basis TEXT NOT NULL, held_by TEXT NOT NULL,
    held_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS erased (key_ref TEXT PRIMARY KEY, chain_id TEXT NOT NULL, seq INTEGER NOT NULL,
    record_hash TEXT NOT NULL, erased_at TEXT NOT NULL, cause TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending_erasures (key_ref TEXT PRIMARY KEY, body BLOB NOT NULL);
"""
_INDEX_KEY_REF = "verdict:subject-index"
_CACHE_SIZE = 65536
_body_decoder = msgspec.json.Decoder(ErasureBody)


class KeyringError(Exception):
    """The data keyring refused an operation; the message says why."""


class LegalHoldActive(KeyringError):
    """Erasure refused: a legal hold is set on the subject's decisions."""


class DataKeyMissing(KeyringError):
    """The keyring has no such key and no record of erasing it (a keyring restored from an
    older backup, or another keyring): the sealed data cannot be opened here."""


@dataclass(frozen=True)
class ErasureRef:
    """Where the erasure record that destroyed a key is."""

    chain_id: str
    seq: int
    record_hash: str
    erased_at: str
    cause: str

    def as_dict(self) -> dict[str, object]:
        """The reference as the API's problem body and replay's verdict name it."""
        return {
            "chain_id": self.chain_id,
            "seq": self.seq,
            "record_hash": self.record_hash,
            "erased_at": self.erased_at,
            "cause": self.cause,
        }


class DataKeyErased(KeyringError):
    """The key was destroyed by an erasure; ``erasure`` names its record."""

    def __init__(self, key_ref: str, erasure: ErasureRef) -> None:
        super().__init__(f"{key_ref} was erased by record {erasure.chain_id}/{erasure.seq} ({erasure.cause})")
        self.key_ref = key_ref
        self.erasure = erasure


@dataclass(frozen=True)
class Assignment:
    """A decision about to be sealed: its request id, subject (None: a key of its own)
    and the end of its retention (RFC 3339)."""

    request_id: str
    subject_id: str | None
    retain_until: str


@dataclass(frozen=True)
class SubjectFile:
    """What the index holds about one subject: its live key (or None) and decisions."""

    subject_ref: str
    key_refs: tuple[str, ...]
    request_ids: tuple[str, ...]
    held: bool


class DataKeyring:
    """The keyring database at ``path``, its keys wrapped by ``wrapper``."""

    def __init__(self, path: Path, wrapper: KeyWrapper) -> None:
        self.path = Path(path)
        self.wrapper = wrapper
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # created private before SQLite opens it
        os.close(fd)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        try:
            self._open_schema()
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # a destroyed key's bytes are overwritten, not freed
            self._db.executescript(_SCHEMA)
            self._index_key = self._load_index_key()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- subject references ---------------------------------------------------------
    def subject_ref(self, subject_id: str) -> str:
        """HMAC-SHA256 of the subject id under the keyring's index key (hex): the index's
        key, which says nothing about who the subject is without that key."""
        return hmac.new(self._index_key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- sealing --------------------------------------------------------------------
    def assign(self, items: Sequence[Assignment], *, now: str) -> list[tuple[str, bytes]]:
        """(key ref, data key) to seal each item under, creating subject keys (and a key of
        its own for an item without a subject) and indexing the decisions, in one durable
        transaction: the keys exist before anything is sealed under them. One lookup for
        the batch's subjects and one bulk insert of its index rows (the gateway's hot path)."""
        subjects = [self.subject_ref(i.subject_id) if i.subject_id is not None else None for i in items]
        out: list[tuple[str, bytes]] = []
        with self._transaction() as db:
            known = self._subject_keys(db, {s for s in subjects if s is not None})
            for item, subject in zip(items, subjects, strict=True):
                found = known.get(subject) if subject is not None else self._own_key(db, item.request_id)
                if found is None:
                    found = self._new_key(db, subject, now)
                    if subject is not None:
                        known[subject] = found
                out.append(found)
            db.executemany(
                "INSERT INTO decisions (request_id, key_ref, retain_until) VALUES (?, ?, ?) "
                "ON CONFLICT (request_id) DO UPDATE SET key_ref = excluded.key_ref, "
                "retain_until = max(retain_until, excluded.retain_until)",
                [(i.request_id, key_ref, i.retain_until) for i, (key_ref, _) in zip(items, out, strict=True)],
            )
        return out

    def _subject_keys(self, db: sqlite3.Connection, subjects: set[str]) -> dict[str | None, tuple[str, bytes]]:
        found: dict[str | None, tuple[str, bytes]] = {}
        ordered = sorted(subjects)
        for start in range(0, len(ordered), 500):  # SQLite's bound-parameter limit
            chunk = ordered[start : start + 500]
            rows = db.execute(
                f"SELECT subject, key_ref, wrapped FROM data_keys WHERE subject IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for subject, key_ref, wrapped in rows:
                found[subject] = (key_ref, self._unwrapped(key_ref, bytes(wrapped)))
        return found

    def _own_key(self, db: sqlite3.Connection, request_id: str) -> tuple[str, bytes] | None:
        """A retried request without a subject keeps the key it was given."""
        row = db.execute(
            "SELECT d.key_ref, k.wrapped FROM decisions d JOIN data_keys k ON k.key_ref = d.key_ref "
            "WHERE d.request_id = ? AND k.subject IS NULL",
            (request_id,),
        ).fetchone()
        return None if row is None else (str(row[0]), self._unwrapped(str(row[0]), bytes(row[1])))

    def _new_key(self, db: sqlite3.Connection, subject: str | None, now: str) -> tuple[str, bytes]:
        key_ref = "dk_" + os.urandom(16).hex()
        key, wrapped = self.wrapper.new_key(key_ref)
        db.execute(
            "INSERT INTO data_keys (key_ref, subject, kek_id, wrapped, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_ref, subject, self.wrapper.kek_id, wrapped, now),
        )
        self._remember(key_ref, key)
        return key_ref, key

    def _unwrapped(self, key_ref: str, wrapped: bytes) -> bytes:
        cached = self._cache.get(key_ref)
        if cached is None:
            cached = self.wrapper.unwrap(key_ref, wrapped)
            self._remember(key_ref, cached)
        return cached

    def key(self, key_ref: str) -> bytes:
        """The data key ``key_ref``; DataKeyErased if an erasure destroyed it, DataKeyMissing
        if this keyring never had it."""
        with self._lock:
            row = self._db.execute("SELECT wrapped FROM data_keys WHERE key_ref = ?", (key_ref,)).fetchone()
            if row is None:
                raise self._gone(key_ref)
            cached = self._cache.get(key_ref)
            if cached is not None:
                self._cache.move_to_end(key_ref)
                return cached
        key = self.wrapper.unwrap(key_ref, bytes(row[0]))
        with self._lock:
            self._remember(key_ref, key)
        return key

    def _gone(self, key_ref: str) -> KeyringError:
        row = self._db.execute(
            "SELECT chain_id, seq, record_hash, erased_at, cause FROM erased WHERE key_ref = ?", (key_ref,)
        ).fetchone()
        if row is None:
            return DataKeyMissing(f"the keyring {self.path} has no data key {key_ref}")
        return DataKeyErased(key_ref, ErasureRef(*row))

    def _remember(self, key_ref: str, key: bytes) -> None:
        self._cache[key_ref] = key
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    # -- the subject index ------------------------------------------------------------
    def subject_file(self, subject_id: str) -> SubjectFile:
        """The subject's live key and the decisions it sealed (empty once erased)."""
        subject = self.subject_ref(subject_id)
        with self._lock:
            keys = tuple(r[0] for r in self._db.execute("SELECT key_ref FROM data_keys WHERE subject = ?", (subject,)))
            return SubjectFile(subject, keys, self._decisions_of(keys), self._held(keys))

    def key_file(self, key_ref: str) -> SubjectFile:
        """The decisions one key sealed (a decision without a subject has a key of its own)."""
        with self._lock:
            row = self._db.execute("SELECT subject FROM data_keys WHERE key_ref = ?", (key_ref,)).fetchone()
            if row is None:
                raise self._gone(key_ref)
            keys = (key_ref,)
            return SubjectFile(row[0] or "", keys, self._decisions_of(keys), self._held(keys))

    def _decisions_of(self, key_refs: Sequence[str]) -> tuple[str, ...]:
        found: list[str] = []
        for key_ref in key_refs:
            found += [r[0] for r in self._db.execute("SELECT request_id FROM decisions WHERE key_ref = ?", (key_ref,))]
        return tuple(sorted(found))

    def _held(self, key_refs: Sequence[str]) -> bool:
        return any(
            self._db.execute("SELECT 1 FROM holds WHERE key_ref = ?", (key_ref,)).fetchone() for key_ref in key_refs
        )

    # -- legal holds ----------------------------------------------------------------
    def set_hold(self, body: LegalHoldBody) -> None:
        """Apply a recorded ``legal_hold`` record (hold or release) to the keyring."""
        with self._transaction() as db:
            for key_ref in body.key_refs:
                if body.action == "hold":
                    db.execute(
                        "INSERT OR REPLACE INTO holds (key_ref, basis, held_by, held_at) VALUES (?, ?, ?, ?)",
                        (key_ref, body.basis, body.by, body.at),
                    )
                else:
                    db.execute("DELETE FROM holds WHERE key_ref = ?", (key_ref,))

    def held_request_ids(self) -> list[str]:
        """Every decision under a legal hold now (to keep their objects' holds on)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.request_id FROM decisions d JOIN holds h ON h.key_ref = d.key_ref ORDER BY d.request_id"
            ).fetchall()
        return [r[0] for r in rows]

    # -- erasure --------------------------------------------------------------------
    def prepare_erasure(self, body: ErasureBody) -> None:
        """Note ``body`` as pending for each of its keys; LegalHoldActive if one is held,
        KeyringError if a key is not live (already erased, or unknown)."""
        data = canonical_bytes(body)
        with self._transaction() as db:
            for key_ref in body.key_refs:
                if db.execute("SELECT 1 FROM holds WHERE key_ref = ?", (key_ref,)).fetchone():
                    raise LegalHoldActive(f"{key_ref} is under legal hold; release the hold before erasing")
                if not db.execute("SELECT 1 FROM data_keys WHERE key_ref = ?", (key_ref,)).fetchone():
                    raise self._gone(key_ref)
                db.execute("INSERT OR REPLACE INTO pending_erasures (key_ref, body) VALUES (?, ?)", (key_ref, data))

    def pending_erasures(self) -> list[ErasureBody]:
        """Erasures noted but not completed (a process stopped between the steps)."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT body FROM pending_erasures ORDER BY key_ref").fetchall()
        return [_body_decoder.decode(bytes(r[0])) for r in rows]

    def complete_erasure(self, body: ErasureBody, erasure: ErasureRef) -> None:
        """Destroy ``body``'s keys now that its record (``erasure``) is durable: delete the
        wrapped keys and index rows, leave tombstones naming the record."""
        with self._transaction() as db:
            for key_ref in body.key_refs:
                db.execute("DELETE FROM data_keys WHERE key_ref = ?", (key_ref,))
                db.execute("DELETE FROM decisions WHERE key_ref = ?", (key_ref,))
                db.execute("DELETE FROM pending_erasures WHERE key_ref = ?", (key_ref,))
                db.execute(
                    "INSERT OR REPLACE INTO erased (key_ref, chain_id, seq, record_hash, erased_at, cause) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key_ref, erasure.chain_id, erasure.seq, erasure.record_hash, erasure.erased_at, erasure.cause),
                )
                self._cache.pop(key_ref, None)
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Copy the log into the database file and empty it, so that no earlier page holding
        a destroyed key stays in the write-ahead log. A reader mid-transaction in another
        process can hold the log for a moment: then wait at most 2 s and leave it to the
        next erasure (the key is wrapped either way; docs/compliance.md)."""
        with self._lock:
            self._db.execute("PRAGMA busy_timeout = 2000")
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.execute("PRAGMA busy_timeout = 30000")

    def live(self, key_ref: str) -> bool:
        """Whether the keyring holds ``key_ref`` (restored from a backup after its erasure, say)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM data_keys WHERE key_ref = ?", (key_ref,)).fetchone() is not None

    def expired_keys(self, now: str) -> list[str]:
        """Live keys whose every decision is past its retention and that no hold covers."""
        with self._lock:
            rows = self._db.execute(
                "SELECT k.key_ref FROM data_keys k WHERE "
                "EXISTS (SELECT 1 FROM decisions d WHERE d.key_ref = k.key_ref) AND "
                "NOT EXISTS (SELECT 1 FROM decisions d WHERE d.key_ref = k.key_ref AND d.retain_until > ?) AND "
                "NOT EXISTS (SELECT 1 FROM holds h WHERE h.key_ref = k.key_ref) ORDER BY k.key_ref",
                (now,),
            ).fetchall()
        return [r[0] for r in rows]

    # -- internals ------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _load_index_key(self) -> bytes:
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'index_key'").fetchone()
            if row is None:
                key, wrapped = self.wrapper.new_key(_INDEX_KEY_REF)
                db.execute("INSERT INTO meta (name, value) VALUES ('index_key', ?)", (wrapped,))
                db.execute("INSERT INTO meta (name, value) VALUES ('kek_id', ?)", (self.wrapper.kek_id.encode(),))
                return key
        return self.wrapper.unwrap(_INDEX_KEY_REF, bytes(row[0]))

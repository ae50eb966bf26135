"""Getting a chain's checkpoints cosigned by witnesses, off the decision path (spec §8a).

Why a background thread: a witness is another organisation's service; it
may be slow or down. Decisions must not wait for it, so the chain writer only
hands each new checkpoint over (``on_checkpoint``) and this thread submits
the latest one to every witness of the trust policy, with a consistency
proof from the size that witness last cosigned. A witness that is down
delays cosigning, never a decision. Only the newest pending checkpoint is
submitted: a witness that cosigns size n has implicitly checked every
smaller size.

The writer's and the witnesses' latest checkpoints are also kept in a
directory outside the store (``held_dir``) so that a restarted gateway can
refuse a chain that was truncated while it was down.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from verdict.audit import layout, merkle
from verdict.audit.durable import replace_durably
from verdict.audit.records import iter_lines, split_line
from verdict.audit.stores.base import ObjectExists, StoreError, WormStore
from verdict.audit.trust import WitnessEntry
from verdict.audit.witness_client import WitnessClient, WitnessClientError

__all__ = ["CheckpointWitnessing", "held_notes", "keep_checkpoint"]

_log = logging.getLogger("verdict.audit.witnessing")


def _held_path(held_dir: Path, chain_id: str, what: str) -> Path:
    return held_dir / f"{layout.check_chain_id(chain_id)}.{what}"


def keep_checkpoint(held_dir: Path, chain_id: str, note: bytes, what: str = "checkpoint") -> None:
    """Keep ``note`` as this chain's latest ``what`` ("checkpoint" or "witnessed") outside the store."""
    held_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_durably(_held_path(held_dir, chain_id, what), note)


def held_notes(held_dir: Path, chain_id: str) -> list[bytes]:
    """The checkpoints of ``chain_id`` kept in ``held_dir`` (own latest, latest witnessed)."""
    notes = []
    for what in ("checkpoint", "witnessed"):
        with contextlib.suppress(FileNotFoundError):
            notes.append(_held_path(held_dir, chain_id, what).read_bytes())
    return notes


class CheckpointWitnessing:
    """Submits one chain's newest checkpoint to the policy's witnesses; thread-safe."""

    def __init__(
        self,
        store: WormStore,
        chain_id: str,
        witnesses: Sequence[WitnessEntry],
        quorum: int,
        held_dir: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.quorum = quorum
        self.held_dir = held_dir
        self.clients = [WitnessClient(w.url, w.name, w.vkey, timeout) for w in witnesses if w.url]
        self._last_size: dict[str, int] = {}  # witness name -> size it last cosigned (a hint; 409 corrects it)
        self._tree = merkle.MerkleTree()
        self._incoming: list[tuple[int, list[bytes]]] = []  # leaf hashes the writer handed over
        self._leaf_lock = threading.Lock()
        self._pending: tuple[int, bytes] | None = None
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self.submitted = 0  # checkpoints submitted (to all witnesses)
        self.witnessed_size = 0  # the largest size cosigned by a quorum
        self.failures: dict[str, str] = {}  # witness name -> last error
        self._thread = threading.Thread(target=self._run, name=f"witness-{chain_id}", daemon=True)
        self._thread.start()

    def checkpointed(self, size: int, note: bytes) -> None:
        """The chain writer's ``on_checkpoint`` hook: queue the note. Never blocks: keeping it
        outside the store (two fsyncs) and witnessing it happen in the background thread."""
        with self._cond:
            if self._pending is None or size > self._pending[0]:
                self._pending = (size, note)
                self._cond.notify_all()

    def appended(self, first_seq: int, leaf_hashes: list[bytes]) -> None:
        """The chain writer's ``on_leaves`` hook: keep a batch's leaf hashes (O(1), under its commit lock)."""
        if self.clients:
            with self._leaf_lock:
                self._incoming.append((first_seq, leaf_hashes))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued checkpoint was submitted; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Submit what is queued (the shutdown checkpoint), then stop."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                size, note = self._pending
                self._pending = None
                self._busy = True
            try:
                self._submit(size, note)
            except Exception:  # noqa: BLE001 - a witnessing failure is logged, the gateway goes on deciding
                _log.exception("chain %s: witnessing checkpoint %d failed", self.chain_id, size)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _submit(self, size: int, note: bytes) -> None:
        if self.held_dir is not None:
            keep_checkpoint(self.held_dir, self.chain_id, note)
        if not self.clients:
            return
        self._catch_up(size)
        lines: list[str] = []
        for client in self.clients:
            try:
                line = client.submit_with_retry(
                    note, lambda old: self._tree.consistency_proof(old, size), self._last_size.get(client.name, 0)
                )
            except WitnessClientError as exc:
                self.failures[client.name] = str(exc)
                _log.warning(
                    "chain %s: witness %s did not cosign checkpoint %d: %s", self.chain_id, client.name, size, exc
                )
                continue
            self.failures.pop(client.name, None)
            self._last_size[client.name] = size
            lines.append(line)
        self.submitted += 1
        if not lines:
            return
        cosigned = note + "".join(lines).encode("utf-8")
        with contextlib.suppress(ObjectExists):  # cosigned earlier (a restart resubmitted it): the first copy stands
            self.store.put_once(layout.cosigned_key(self.chain_id, size), cosigned)
        if self.quorum and len(lines) >= self.quorum:
            self.witnessed_size = max(self.witnessed_size, size)
            if self.held_dir is not None:
                keep_checkpoint(self.held_dir, self.chain_id, cosigned, "witnessed")

    def _catch_up(self, size: int) -> None:
        """The chain's leaf hashes up to ``size``: those the writer handed over, and from the
        store whatever came before them (the chain's history at this process's start)."""
        with self._leaf_lock:
            incoming, self._incoming = self._incoming, []
        for first, leaves in incoming:
            if first > self._tree.size:
                self._read_store(first)
            skip = self._tree.size - first
            for leaf in leaves[skip:] if skip >= 0 else ():
                self._tree.append(leaf)
        if self._tree.size < size:
            self._read_store(size)

    def _read_store(self, size: int) -> None:
        """Read leaf hashes from the store's segments until the tree holds ``size`` (only what is new)."""
        if self._tree.size >= size:
            return
        for key in sorted(self.store.list_keys(layout.segments_prefix(self.chain_id))):
            first = layout.number_from_key(key)
            if first is None or first < self._tree.size:
                continue
            if first != self._tree.size:
                raise StoreError(f"chain {self.chain_id}: segment {key} does not continue at {self._tree.size}")
            for line in iter_lines(self.store.get(key)):
                raw, _signature = split_line(line)
                self._tree.append(merkle.leaf_hash(hashlib.sha256(raw).digest()))
            if self._tree.size >= size:
                return

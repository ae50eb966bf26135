"""Chain leases: one writer per chain, enforced through the store.

A writer holds a lease on its chain while it writes: a small write-once JSON
object ``chains/<chain_id>/leases/<n:020d>`` naming the holder and an expiry
(docs/audit-format.md §9a). Lease ``n + 1`` is only ever written by someone
who read lease ``n``; because every put is write-once (``O_EXCL`` /
``If-None-Match: *``), of two processes racing for the same ``n + 1`` exactly
one wins, so at any time the newest lease names one holder.

* **Acquire** (:func:`acquire`, called by ``ChainWriter.open`` before
  recovery writes anything): read the newest lease; if it is live and not
  ours, refuse with :class:`audit.chain_errors.LeaseHeld` naming the holder, its
  expiry and how long to wait; else put lease ``n + 1``.
* **Renew**: a daemon thread writes ``n + 1`` every ``renew_every`` seconds;
  a writer also renews synchronously before an append if its lease ran out
  (a store outage longer than the renewals' slack). A renewal that finds
  another holder's lease at ``n + 1`` marks the lease lost
  (:class:`audit.chain_errors.LeaseLost`): the writer stops for good.
* **Release** on a clean close: a lease with ``released: true`` and
  ``expires_at`` = now, so the next writer starts at once.

A lease is *free* when it is released, expired by more than the clock-skew
margin, or held by a process this machine can prove dead (same host, boot and
PID namespace, and that PID is gone or is another process): a SIGKILLed
gateway restarted on the same machine need not wait for expiry. A lease held
by this very process is taken over too (a process is one failure domain; the
displaced writer stops at its next renewal, and the write-once segment keys
still keep two writers from forking the chain).

Leases are coordination objects, not evidence: they are not signed and the
verifier does not read them.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import msgspec

from verdict.audit import layout
from verdict.audit.chain_errors import LeaseHeld, LeaseLost
from verdict.audit.records import format_time
from verdict.audit.stores.base import ObjectExists, StoreError, WormStore

__all__ = [
    "DEFAULT_LEASE",
    "ChainLease",
    "Holder",
    "LeaseDoc",
    "LeaseOptions",
    "acquire",
    "newest_lease",
]

_log = logging.getLogger("audit.lease")


class LeaseOptions(msgspec.Struct, frozen=True):
    """How long a lease lasts and how often it is renewed (seconds).

    ``skew`` is the most two writers' clocks may disagree (UTC, e.g. NTP):
    another host treats a lease as expired only ``skew`` after its
    ``expires_at``, and the holder stops trusting it ``skew`` before."""

    ttl: float = 180.0
    renew_every: float = 60.0
    skew: float = 15.0

    def __post_init__(self) -> None:
        if self.skew < 0 or self.renew_every <= 0 or self.ttl - self.skew <= self.renew_every:
            raise ValueError(f"lease options need 0 <= skew and 0 < renew_every < ttl - skew, got {self}")


DEFAULT_LEASE = LeaseOptions()


class Holder(msgspec.Struct, frozen=True):
    host: str
    pid: int
    token: str
    """Random, per writer: tells two writers of one process apart."""
    created_by: str
    process: str | None = None
    """``<boot id>/<pid namespace>/<start time>`` (Linux): proves a holder dead on the same machine."""

    def describe(self) -> str:
        return f"{self.created_by} (pid {self.pid} on host {self.host}, token {self.token[:8]})"


class LeaseDoc(msgspec.Struct, frozen=True):
    chain_id: str
    n: int
    holder: Holder
    acquired_at: str
    expires_at: str
    released: bool = False

    def expires(self) -> float:
        """``expires_at`` as a POSIX timestamp."""
        return _parse_time(self.expires_at)


def _parse_time(value: str) -> float:
    return _dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC).timestamp()


def _format(ts: float) -> str:
    return format_time(_dt.datetime.fromtimestamp(ts, _dt.UTC))


# --- who we are, and whether a holder on this machine is alive ---------------------------------


def _machine() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _process_id(pid: int) -> str | None:
    machine, started = _machine(), _start_time(pid)
    return f"{machine}/{started}" if machine and started else None


def _new_holder(created_by: str) -> Holder:
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        token=secrets.token_hex(16),
        created_by=created_by,
        process=_process_id(os.getpid()),
    )


def _same_process(holder: Holder) -> bool:
    return holder.process is not None and holder.pid == os.getpid() and holder.process == _process_id(os.getpid())


def _proved_dead(holder: Holder) -> bool:
    """True only if the holder ran on this machine (host, boot, PID namespace) and
    its PID is gone or now belongs to a process started at another time."""
    machine = _machine()
    if holder.process is None or machine is None or holder.host != socket.gethostname():
        return False
    if holder.process.rsplit("/", 1)[0] != machine:
        return False
    return _process_id(holder.pid) != holder.process


# --- reading and writing lease objects ------------------------------------------------------


def _decode(store: WormStore, key: str) -> LeaseDoc | None:
    try:
        doc = msgspec.json.decode(store.get(key), type=LeaseDoc)
        _parse_time(doc.acquired_at), _parse_time(doc.expires_at)
        return doc
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return None


def newest_lease(store: WormStore, chain_id: str) -> tuple[int, LeaseDoc | None] | None:
    """The highest lease number and its document (None if unreadable), or None
    if the chain has no lease. Lease numbers are contiguous (n + 1 is only
    written after n), so this is a galloping search with O(log n) existence
    checks instead of a listing of every lease ever written."""
    key = lambda n: layout.lease_key(chain_id, n)  # noqa: E731
    if not store.exists(key(0)):
        return None
    low, step = 0, 1  # invariant: lease `low` exists
    while store.exists(key(low + step)):
        low += step
        step *= 2
    high = low + step  # missing
    while high - low > 1:
        mid = (low + high) // 2
        if store.exists(key(mid)):
            low = mid
        else:
            high = mid
    return low, _decode(store, key(low))


def _free(doc: LeaseDoc | None, now: float, skew: float) -> bool:
    if doc is None:
        return True  # unreadable: not a lease anyone holds (write-once still decides the race for n + 1)
    if doc.released or now >= _parse_time(doc.expires_at) + skew:
        return True
    return _same_process(doc.holder) or _proved_dead(doc.holder)


def _held(chain_id: str, key: str, doc: LeaseDoc, now: float, skew: float) -> Exception:
    wait = max(0.0, _parse_time(doc.expires_at) + skew - now)
    return LeaseHeld(
        f"another writer owns chain {chain_id!r}: {doc.holder.describe()} holds its lease {key} "
        f"until {doc.expires_at}; stop that writer, or if it is gone wait for the lease to expire "
        f"(about {wait:.0f} s) and start again",
        holder=doc.holder,
        expires_at=doc.expires_at,
    )


def acquire(
    store: WormStore,
    chain_id: str,
    *,
    created_by: str,
    options: LeaseOptions = DEFAULT_LEASE,
    wall: Callable[[], float] = time.time,
) -> ChainLease:
    """Take the lease on ``chain_id`` or raise LeaseHeld (naming the holder)."""

    holder = _new_holder(created_by)
    for attempt in range(3):
        newest = newest_lease(store, chain_id)
        n = -1
        if newest is not None:
            n, doc = newest
            now = wall()
            if doc is not None and not _free(doc, now, options.skew):
                raise _held(chain_id, layout.lease_key(chain_id, n), doc, now, options.skew)
            if doc is not None and not doc.released and now < _parse_time(doc.expires_at) + options.skew:
                _log.warning(
                    "chain %s: taking over lease %d of %s, which %s",
                    chain_id,
                    n,
                    doc.holder.describe(),
                    "is this process" if _same_process(doc.holder) else "is proved dead on this machine",
                )
        lease = ChainLease(store, chain_id, holder, options, n, wall)
        try:
            lease._put_next(released=False)
            return lease
        except LeaseHeld as exc:
            # Another process wrote lease n + 1 first. Refuse, unless what it
            # wrote is already free again (e.g. a release): then look again.
            if attempt == 2:
                raise
            again = newest_lease(store, chain_id)
            if again is None or again[1] is None or not _free(again[1], wall(), options.skew):
                raise exc from None
    raise AssertionError("unreachable")


class ChainLease:
    """A lease this process holds (see the module docstring). Thread-safe."""

    def __init__(
        self, store: WormStore, chain_id: str, holder: Holder, options: LeaseOptions, n: int, wall: Callable[[], float]
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.holder = holder
        self.options = options
        self.n = n  # number of the newest lease we know (ours once acquired)
        self.acquired = False
        self.lost: Exception | None = None
        self._wall = wall
        self._valid_until = 0.0  # time.monotonic() after which we no longer trust our lease
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner: weakref.ref | None = None
        self.on_lost: Callable[[Exception], None] | None = None

    @property
    def key(self) -> str:
        return layout.lease_key(self.chain_id, self.n)

    def valid(self) -> bool:
        return self.lost is None and time.monotonic() < self._valid_until

    def _put_next(self, *, released: bool, unless_valid: bool = False) -> None:
        """Write lease n + 1 for us. On a collision: adopt it if it is ours (an
        earlier put that failed after landing), else raise LeaseHeld/LeaseLost."""
        with self._lock:
            if unless_valid and self.valid():
                return  # the renewal thread renewed while we waited for the lock
            for _ in range(3):
                started = time.monotonic()
                now = self._wall()
                nxt = self.n + 1
                doc = LeaseDoc(
                    chain_id=self.chain_id,
                    n=nxt,
                    holder=self.holder,
                    acquired_at=_format(now),
                    expires_at=_format(now if released else now + self.options.ttl),
                    released=released,
                )
                key = layout.lease_key(self.chain_id, nxt)
                try:
                    self.store.put_once(key, msgspec.json.encode(doc))
                except ObjectExists:
                    other = _decode(self.store, key)
                    if other is not None and other.holder.token == self.holder.token:
                        self.n = nxt  # ours after all; write the next one
                        continue
                    if not self.acquired:  # acquiring: someone else won the race for lease n + 1
                        if other is None:
                            other = LeaseDoc(
                                self.chain_id, nxt, Holder("?", 0, "?", "an unreadable lease"), "", _format(now)
                            )
                        raise _held(self.chain_id, key, other, self._wall(), self.options.skew) from None

                    who = other.holder.describe() if other is not None else "an unreadable object"
                    self.lost = LeaseLost(
                        f"another writer owns chain {self.chain_id!r}: lease {key} was written by {who}, "
                        f"so this writer ({self.holder.describe()}) lost its lease and stopped; "
                        f"one writer per chain"
                    )
                    _log.error("%s", self.lost)
                    raise self.lost from None
                self.n = nxt
                self.acquired = True
                self._valid_until = 0.0 if released else started + self.options.ttl - self.options.skew
                return
            raise StoreError(f"lease {self.key}: could not write a new lease after 3 attempts")

    def check(self) -> None:
        """Before a write: raise if lost; renew now if the lease ran out (e.g.
        renewals failed during a store outage). StoreError = try again later."""
        if self.lost is not None:
            raise self.lost
        if not self.valid():
            self._put_next(released=False, unless_valid=True)

    def start(self, owner: object | None = None) -> None:
        """Renew in a daemon thread until released, lost, or ``owner`` is garbage."""
        if owner is not None:
            self._owner = weakref.ref(owner)
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.chain_id}", daemon=True)
        self._thread.start()

    def set_owner(self, owner: object) -> None:
        self._owner = weakref.ref(owner)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.options.renew_every):
            if self._owner is not None and self._owner() is None:
                return  # the writer was dropped without close(): let the lease expire
            try:
                self._put_next(released=False)
            except StoreError as exc:
                _log.warning("chain %s: renewing lease %d failed (will retry): %s", self.chain_id, self.n + 1, exc)
            except Exception as exc:  # noqa: BLE001 - LeaseLost (or LeaseHeld): stop renewing, tell the owner
                if self.lost is None:
                    self.lost = exc
                if self.on_lost is not None:
                    self.on_lost(exc)
                return

    def wait_renewals_stopped(self, timeout: float | None = None) -> bool:
        """Wait until the renewal thread has stopped (released, or the lease
        lost); True if it has. For callers that must see a loss happen."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def release(self) -> None:
        """Stop renewing and, unless lost, write a released lease (best effort:
        if that fails the lease simply expires)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self.lost is not None:
            return
        try:
            self._put_next(released=True)
        except StoreError as exc:  # the lease expires by itself
            _log.warning("chain %s: could not release lease %d: %s", self.chain_id, self.n, exc)
        except Exception as exc:  # noqa: BLE001 - LeaseLost: already logged, nothing of ours to release
            _log.debug("chain %s: lease %d not released: %s", self.chain_id, self.n, exc)

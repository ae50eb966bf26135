"""The registry chain: signed records of what the model registry did
(docs/audit-format.md §3 ``registry``).

Why a chain of its own: registry objects (manifests, blobs, alias events) are
write-once, but nothing signed said which of them the registry itself wrote.
A store writer could add an alias object by hand and the gateway would serve
the version it names. Each registration, promotion and status change is
therefore appended as a ``registry`` record, naming every object it wrote by
hash, to the chain ``registry`` under the same trust root as the decision
chains; the verifier holds the objects to these records (and every alias
object to a promotion record).

Registry events are rare, so the log holds no writer open: each
:meth:`RegistryLog.record` takes the chain's lease (short TTL), appends, writes
a checkpoint and releases the lease. Two processes recording at once
serialize on the lease (the second waits, up to ``wait_s``).

The record is appended only after the objects it names are durable; a
failure in between leaves an object without a record, which the verifier
reports, and :meth:`record` raises so that the command says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

from verdict.audit import layout
from verdict.audit.chain import ChainError, ChainWriter, KeyRing, LeaseHeld, Receipt, scan_timeline
from verdict.audit.config import data_dir
from verdict.audit.lease import LeaseOptions
from verdict.audit.records import AccessBody, ErasureBody, LegalHoldBody, RegistryBody
from verdict.audit.signing import FileKeyStore, Signer
from verdict.audit.stores import StoreError, WormStore
from verdict.audit.trust import RootKey, TrustError, TrustPolicy, configured_root, local_root_path

__all__ = [
    "ADOPTED_BY",
    "ADOPTED_REASON",
    "REGISTRY_CHAIN",
    "RegistryLog",
    "RegistryLogError",
    "append_records",
]

REGISTRY_CHAIN = "registry"
ADOPTED_REASON = "adopted: written before the registry chain existed"
ADOPTED_BY = "adopted"
REGISTRY_LEASE = LeaseOptions(ttl=60.0, renew_every=20.0, skew=10.0)
"""Held for one append: short, so a crashed recorder blocks the next one briefly."""


class RegistryLogError(RuntimeError):
    """A registry record could not be appended; the message says why."""


EventBody = RegistryBody | ErasureBody | LegalHoldBody | AccessBody
"""What these short-lease chains record: registry events, and (on the ``subjects``
chain, gateway.subjects) erasures, legal holds and the subject-access exports made
from the command line."""


def append_records(writer: ChainWriter, bodies: Sequence[EventBody]) -> list[Receipt]:
    """Append ``bodies`` to an open ``writer`` as one batch; their receipts."""
    bodies = list(bodies)
    for body in bodies:
        if not isinstance(body, RegistryBody | ErasureBody | LegalHoldBody | AccessBody):
            raise TypeError(
                f"append_records takes registry, erasure, legal hold or access bodies, not {type(body).__name__}"
            )
    return [r for r in writer.append_batch(bodies) if isinstance(r, Receipt)] if bodies else []


class RegistryLog:
    """Appends registry records to the registry chain of ``store``.

    ``signer``/``keyring``: the chain's signing key (and older keys, for a
    rotation); ``root``: the trust root that certifies the chain's keys (spec
    §5a); ``policy``: without a root, the policy whose pre-issued certificates
    the chain must have (``verdict trust certify``). With neither, the chain
    is written uncertified (certify it after the fact).
    """

    def __init__(
        self,
        store: WormStore,
        signer: Signer,
        *,
        keyring: KeyRing | None = None,
        root: RootKey | None = None,
        policy: TrustPolicy | None = None,
        chain_id: str = REGISTRY_CHAIN,
        created_by: str = "verdict registry",
        lease: LeaseOptions = REGISTRY_LEASE,
        wait_s: float = 30.0,
    ) -> None:
        self.store = store
        self.signer = signer
        self.keyring = keyring
        self.root = root
        self.policy = policy
        self.chain_id = layout.check_chain_id(chain_id)
        self.created_by = created_by
        self.lease = lease
        self.wait_s = wait_s

    @classmethod
    def local(
        cls,
        store: WormStore,
        *,
        create_root: bool = False,
        say: Callable[[str], None] | None = None,
        chain_id: str = REGISTRY_CHAIN,
    ) -> RegistryLog:
        """The embedded default: this machine's signing key (``FileKeyStore``,
        created if there is none) and its trust root (``local_root()``).

        ``create_root``: create the root in the data directory if there is
        none, as ``verdict serve`` does on its first start (the gateway's
        bootstrap runs before the gateway would create it)."""
        keys = FileKeyStore.default()
        signer, created = keys.init()
        if created and say is not None:
            say(f"Generated a development signing key {signer.key_id} in {keys.directory} (mode 0600)")
        path = local_root_path(data_dir())
        existed = path.exists()
        root = configured_root(create=create_root)  # $VERDICT_TRUST_ROOT, else the data directory's file
        if root is not None and not existed and path.exists() and say is not None:
            say(f"Generated the trust root {root.key_id} in {path} (mode 0600, outside the store)")
        return cls(store, signer, keyring=keys, root=root, chain_id=chain_id, created_by=f"verdict {chain_id}")

    def check(self) -> None:
        """Before the registry writes anything: can this log append? A chain that
        another key signs (another machine's), unless the keyring holds that key,
        would only be found out after the objects are written (left unrecorded)."""
        if not self.exists():
            return
        try:
            timeline = scan_timeline(self.store, self.chain_id)
        except (ChainError, StoreError) as exc:
            raise RegistryLogError(f"cannot read the registry chain {self.chain_id!r}: {exc}") from exc
        current = timeline[-1][1].key_id if timeline else None
        if current is None or current == self.signer.key_id:
            return
        not_at_hand: Exception | None = None
        if self.keyring is not None:
            try:
                self.keyring.load(current)
                return
            except Exception as exc:  # noqa: BLE001 - any failure: the key is not at hand
                not_at_hand = exc
        raise RegistryLogError(
            f"the registry chain {self.chain_id!r} is signed by {current}, which this machine does not hold "
            f"(its key is {self.signer.key_id}); record registry events where that key is, or rotate the chain "
            f"to this key there (`verdict keys rotate --chain {self.chain_id}`)"
        ) from not_at_hand

    def exists(self) -> bool:
        """Whether the registry chain has any record yet."""
        return any(True for _ in self.store.list_keys(layout.segments_prefix(self.chain_id)))

    def record(
        self,
        bodies: Sequence[EventBody],
        adopt: Callable[[], Sequence[RegistryBody]] | None = None,
    ) -> list[Receipt]:
        """Durably append ``bodies`` (one batch); the receipts of all records appended.

        ``adopt``: called when the chain holds nothing but its genesis record
        (it was just created), with the chain's lease held; what it returns is
        recorded first (spec §3 "Adoption": registry objects written before
        the chain existed)."""
        bodies = list(bodies)
        if not bodies:
            return []
        writer = self._open()
        try:
            if adopt is not None and writer.size == 1:
                bodies = list(adopt()) + bodies
            receipts = append_records(writer, bodies)
        except (ChainError, StoreError) as exc:
            raise RegistryLogError(f"could not append to the chain {self.chain_id!r}: {exc}") from exc
        finally:
            # The records are durable; a missing final checkpoint is written by the next writer.
            with contextlib.suppress(ChainError, StoreError):
                writer.close()
        return receipts

    def _open(self) -> ChainWriter:
        deadline = time.monotonic() + self.wait_s
        delay = 0.05
        while True:
            try:
                return ChainWriter.open(
                    self.store,
                    self.chain_id,
                    self.signer,
                    keyring=self.keyring,
                    created_by=self.created_by,
                    lease=self.lease,
                    root=self.root,
                    policy=self.policy,
                )
            except LeaseHeld as exc:
                if time.monotonic() + delay > deadline:
                    raise RegistryLogError(f"the chain {self.chain_id!r} is busy: {exc}") from exc
                time.sleep(delay)  # another process is recording; its lease is released when it is done
                delay = min(delay * 2, 1.0)
            except (ChainError, StoreError, TrustError) as exc:
                raise RegistryLogError(f"cannot open the chain {self.chain_id!r}: {exc}") from exc

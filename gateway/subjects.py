"""Data-subject rights on an immutable trail: access, erasure, legal holds, retention.

Why here: each right touches three stores in a fixed order — the data
keyring (mutable), the write-once trail (a signed record on the ``subjects``
chain) and, on S3, the objects' Object Lock settings — and the order is what
makes it safe: an erasure is noted in the keyring, its ``erasure`` record is
made durable, and only then are the keys destroyed (spec §3a). A process
stopped anywhere in between is finished by :meth:`SubjectRights.recover`,
which every ``verdict subjects`` command and the gateway run first.

The same recovery also re-applies erasures to a keyring restored from a
backup older than them: any key an ``erasure`` record names that is still in
the keyring is destroyed again (docs/compliance.md, "Backups").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.chain import Receipt
from verdict.audit.data_keys import ErasureRef, LegalHoldActive, SubjectFile
from verdict.audit.index import RequestIndex
from verdict.audit.object_retention import set_legal_holds
from verdict.audit.personal_data import PersonalData
from verdict.audit.records import (
    ErasureBody,
    LegalHoldBody,
    decode_record,
    iter_lines,
    split_line,
    utc_now,
)
from verdict.audit.stores import ObjectMissing, StoreError, WormStore
from verdict.gateway.registry_log import RegistryLog, RegistryLogError
from verdict.gateway.service_errors import AuditUnavailable, NoSubjectRecords, SubjectRequestInvalid, SubjectUnderHold

__all__ = ["SUBJECTS_CHAIN", "ErasureOutcome", "SubjectRights"]

SUBJECTS_CHAIN = "subjects"
"""The chain erasure and legal-hold records are appended to (spec §3a)."""


@dataclass(frozen=True)
class ErasureOutcome:
    """An erasure carried out: its body, where its record is, and the record's receipt
    (None when recovery found the record already on the chain)."""

    body: ErasureBody
    record: ErasureRef
    receipt: Receipt | None = None

    @property
    def where(self) -> str:
        return f"{self.record.chain_id}/{self.record.seq}"


class SubjectRights:
    """Access, erasure, holds and retention sweeps over ``personal``'s keyring, recording
    each erasure and hold on the ``subjects`` chain through ``log``."""

    def __init__(
        self,
        store: WormStore,
        personal: PersonalData,
        log: RegistryLog,
        *,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.store = store
        self.personal = personal
        self.keyring = personal.keyring
        self.log = log
        self.clock = clock
        self.index = RequestIndex(store)

    # -- access -------------------------------------------------------------------
    def file(self, subject_id: str) -> SubjectFile:
        """The subject's key and the decisions the trail holds about them (only request ids
        whose decision was recorded: an assignment whose decision failed is left out)."""
        found = self.keyring.subject_file(subject_id)
        return SubjectFile(
            found.subject_ref, found.key_refs, tuple(r for r in found.request_ids if self._recorded(r)), found.held
        )

    def _recorded(self, request_id: str) -> bool:
        return self.index.get(request_id) is not None

    # -- erasure ------------------------------------------------------------------
    def erase(self, subject_id: str, basis: str, by: str) -> ErasureOutcome:
        """Erase the subject (GDPR Art. 17): record the erasure, then destroy the key.
        NoSubjectRecords if nothing is held about them; SubjectUnderHold under a legal hold;
        AuditUnavailable if the record cannot be made durable (then nothing is destroyed)."""
        if not basis.strip():
            raise SubjectRequestInvalid(
                "basis", "an erasure needs its legal basis (e.g. 'GDPR Art. 17(1)(a), ticket 114')"
            )
        found = self.file(subject_id)
        if not found.key_refs:
            raise NoSubjectRecords()
        if found.held:
            raise SubjectUnderHold("a legal hold is set on this subject's decisions; release it before erasing")
        try:
            return self._erase(list(found.key_refs), list(found.request_ids), "request", basis, by)
        except LegalHoldActive as exc:  # a hold set meanwhile
            raise SubjectUnderHold(str(exc)) from None

    def _erase(self, key_refs: list[str], request_ids: list[str], cause: str, basis: str, by: str) -> ErasureOutcome:
        body = ErasureBody(
            key_refs=sorted(key_refs),
            request_ids=sorted(set(request_ids)),
            cause=cause,  # type: ignore[arg-type]
            basis=basis,
            by=by,
            at=self.clock(),
        )
        self.keyring.prepare_erasure(body)  # LegalHoldActive: nothing noted, nothing written
        receipt = self._append(body)
        ref = _ref(receipt, body)
        self.keyring.complete_erasure(body, ref)
        return ErasureOutcome(body, ref, receipt)

    def _append(self, body: ErasureBody | LegalHoldBody) -> Receipt:
        try:
            return self.log.record([body])[-1]
        except RegistryLogError as exc:
            raise AuditUnavailable(f"the record could not be appended, so nothing was changed: {exc}", 5) from exc

    # -- legal holds ----------------------------------------------------------------
    def hold(self, subject_id: str, basis: str, by: str, *, release: bool = False) -> LegalHoldBody:
        """Set (or release) a legal hold on the subject's decisions: recorded first, then
        applied to the keyring (erasure and sweeps refuse a held subject)."""
        if not basis.strip():
            raise SubjectRequestInvalid("basis", "a legal hold and its release need their basis (e.g. a case number)")
        found = self.file(subject_id)
        if not found.key_refs:
            raise NoSubjectRecords()
        if release and not found.held:
            raise SubjectRequestInvalid("subject_id", "no legal hold is set on this subject")
        body = LegalHoldBody(
            action="release" if release else "hold",
            key_refs=sorted(found.key_refs),
            request_ids=sorted(found.request_ids),
            basis=basis,
            by=by,
            at=self.clock(),
        )
        self._append(body)
        self.keyring.set_hold(body)
        # S3: an Object Lock legal hold on the segments too (a release keeps those another hold needs)
        try:
            set_legal_holds(self.store, body.request_ids, not release, keep=self.keyring.held_request_ids())
        except StoreError as exc:
            raise AuditUnavailable(
                f"the {body.action} is recorded and in force for erasure, but the stored objects' legal hold "
                f"could not be changed; run the command again: {exc}",
                5,
            ) from exc
        return body

    # -- retention ------------------------------------------------------------------
    def sweep(self, by: str, *, now: str | None = None) -> list[ErasureOutcome]:
        """Erase every key whose decisions are all past retention and not on hold (one
        erasure record per key, cause ``retention``)."""
        done = []
        for key_ref in self.keyring.expired_keys(now or self.clock()):
            held = self.keyring.key_file(key_ref)
            try:
                done.append(
                    self._erase(
                        [key_ref],
                        [r for r in held.request_ids if self._recorded(r)],
                        "retention",
                        "retention period ended (GDPR Art. 5(1)(e))",
                        by,
                    )
                )
            except LegalHoldActive:  # a hold set since the listing: skipped, as it should be
                continue
        return done

    # -- recovery -------------------------------------------------------------------
    def recover(self) -> list[ErasureOutcome]:
        """Bring the keyring in line with the ``subjects`` chain, which is authoritative:
        finish erasures a stopped process left half done, destroy keys that erasure records
        name but the keyring still holds (restored from an older backup), and apply the
        recorded legal holds and releases (one recorded but not applied, or lost with a
        restored backup)."""
        records = list(self._subject_records())
        erasures = [(ref, body) for ref, body in records if isinstance(body, ErasureBody)]
        recorded = {canonical_bytes(body): ref for ref, body in erasures}
        finished = []
        for body in self.keyring.pending_erasures():
            ref = recorded.get(canonical_bytes(body))
            receipt = None
            if ref is None:  # noted, never recorded: record it now, then destroy
                receipt = self._append(body)
                ref = _ref(receipt, body)
            self.keyring.complete_erasure(body, ref)
            finished.append(ErasureOutcome(body, ref, receipt))
        for ref, body in erasures:
            if any(self.keyring.live(k) for k in body.key_refs):
                self.keyring.complete_erasure(body, ref)
                finished.append(ErasureOutcome(body, ref))
        for _, hold in records:
            if isinstance(hold, LegalHoldBody):
                self.keyring.set_hold(hold)  # in chain order: the latest event of each key wins
        return finished

    def _subject_records(self) -> Iterator[tuple[ErasureRef, ErasureBody | LegalHoldBody]]:
        """Erasure and legal-hold records of the ``subjects`` chain, in order (a short chain:
        one record per erasure, hold and command-line export)."""
        for key in sorted(self.store.list_keys(layout.segments_prefix(SUBJECTS_CHAIN))):
            try:
                segment = self.store.get(key)
            except ObjectMissing:
                continue
            for line in iter_lines(segment):
                raw, _ = split_line(line)
                record = decode_record(raw)
                body = record.body
                if isinstance(body, ErasureBody | LegalHoldBody):
                    cause = body.cause if isinstance(body, ErasureBody) else body.action
                    digest = hashlib.sha256(raw).hexdigest()
                    yield ErasureRef(record.chain_id, record.seq, digest, body.at, cause), body


def _ref(receipt: Receipt, body: ErasureBody) -> ErasureRef:
    return ErasureRef(receipt.chain_id, receipt.seq, receipt.record_hash, body.at, body.cause)

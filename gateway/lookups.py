"""GDPR / adverse-action lookups of logged decisions, each one itself audited.

Why verify before showing: an explanation given to an applicant or an
examiner must be the one that was logged, so every lookup re-verifies the
record (hash, signature, chain position, inclusion in the latest checkpoint)
and says so. Why audit the lookup: who looked at whose decision, when, is
itself regulated information; the access record is made durable before the
answer leaves (fail closed, like decisions).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from verdict.audit import records as rec
from verdict.audit.chain import ChainError
from verdict.audit.chain_leaves import LeafCache
from verdict.audit.data_keys import KeyringError
from verdict.audit.key_wrapping import KekError
from verdict.audit.personal_data import PersonalData
from verdict.audit.reader import ReadError, VerifiedDecision, read_decision
from verdict.audit.stores import StoreError, StoreUnavailable, WormStore
from verdict.audit.trust import TrustPolicy
from verdict.gateway.engine import Engine
from verdict.gateway.explanation import ExplanationResult
from verdict.gateway.fidelity import Fidelity, from_record
from verdict.gateway.reasons import principal_reasons_for_denial
from verdict.gateway.registry_log import RegistryLog, RegistryLogError
from verdict.gateway.sealed_reads import open_decision
from verdict.gateway.service_errors import (
    AuditUnavailable,
    InputsSealed,
    NotExplained,
    RecordInvalid,
    SubjectAccessUnavailable,
    UnknownDecision,
)
from verdict.gateway.subjects import SubjectRights
from verdict.gateway.waterfall import render_waterfall

__all__ = ["AccessLog", "EventAccessLog", "ExplanationView", "LookupService", "SubjectDecisionsView", "Verification"]

_log = logging.getLogger(__name__)


class InclusionView(msgspec.Struct, frozen=True):
    checkpoint_size: int
    checkpoint_root: str
    leaf_index: int
    proof: list[str]
    checkpoint_note: str
    signed_by: list[str]


class Verification(msgspec.Struct, frozen=True):
    record_hash: str
    signature: str
    signature_valid: bool
    key_id: str
    chain_id: str
    seq: int
    inclusion: InclusionView | None
    status: str
    """"verified" (signature, certified key, inclusion in the latest signed checkpoint),
    "verified_pending_checkpoint" (the same; no checkpoint covers it yet) or
    "signature_verified" (hash, signature and certified key, without the inclusion proof:
    subject access, which verifies many records at once; the per-decision lookup proves it)."""


class ReasonView(msgspec.Struct, frozen=True):
    attribute: str
    label: str
    value: Any
    direction: str
    text: str


class ExplanationView(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str
    subject_id: str | None
    decided_at: str
    model: dict[str, str]
    decision: str
    score: float
    output_space: str
    base_value: float
    contributions: dict[str, float]
    reasons: list[ReasonView]
    principal_reasons_for_denial: list[ReasonView]
    method: str
    verification: Verification
    fidelity: Fidelity | None = None
    """Whether the reasons are certified against the exact Shapley values for the model's pinned
    background, the evaluations spent and each contribution's error bound (docs/api.md).
    Absent for a record written before fidelity was recorded, and for one not explained."""


class SubjectDecisionsView(msgspec.Struct, frozen=True):
    """Everything on file about one data subject (GDPR Art. 15): each decision with its
    plain-language explanation, verification and receipt."""

    subject_id: str
    decisions: list[ExplanationView]
    legal_hold: bool
    generated_at: str


class RecordView(msgspec.Struct, frozen=True, omit_defaults=True):
    record: rec.Record | rec.RecordV2
    """The record exactly as stored (a sealed decision's personal fields stay sealed), of
    either format (named apart so the API's schema allows both ``format`` values)."""
    verification: Verification
    opened: rec.DecisionBody | None = None
    """A sealed decision opened with its subject's data key (spec §3a): the same decision
    with its personal fields in clear. Absent for a record stored in clear."""


def _verification(verified: VerifiedDecision, *, proven: bool = True) -> Verification:
    inclusion = verified.inclusion
    view = None
    if inclusion is not None:
        view = InclusionView(
            checkpoint_size=inclusion.tree_size,
            checkpoint_root=inclusion.root,
            leaf_index=inclusion.leaf_index,
            proof=list(inclusion.hashes),
            checkpoint_note=inclusion.checkpoint_note,
            signed_by=list(inclusion.signed_by),
        )
    return Verification(
        record_hash=verified.record_hash,
        signature=verified.signature,
        signature_valid=True,
        key_id=verified.key_id,
        chain_id=verified.chain_id,
        seq=verified.seq,
        inclusion=view,
        status=("verified" if view is not None else "verified_pending_checkpoint") if proven else "signature_verified",
    )


class AccessLog(Protocol):
    """Where access records go: the gateway's own chain (:class:`AuditLane`), or, for the
    command line, the ``subjects`` chain (:class:`EventAccessLog`)."""

    def append(self, bodies: Sequence[Any]) -> Any: ...


class EventAccessLog:
    """Access records appended through a short-lease event log (gateway.registry_log)."""

    def __init__(self, log: RegistryLog) -> None:
        self._log = log

    def append(self, bodies: Sequence[Any]) -> Any:
        try:
            return self._log.record(bodies)
        except RegistryLogError as exc:
            raise StoreError(str(exc)) from exc


class LookupService:
    def __init__(
        self,
        store: WormStore,
        lane: AccessLog,
        models: Engine,
        retry_after_s: int = 5,
        trust: TrustPolicy | None = None,
        personal: PersonalData | None = None,
        subjects: SubjectRights | None = None,
    ) -> None:
        self.store, self.lane, self.models, self.retry_after_s = store, lane, models, retry_after_s
        self.trust = trust  # lookups verify against the same trust root as `verdict audit verify`
        self.personal = personal  # opens sealed decisions (spec §3a); None: sealed ones answer 409
        self.subjects = subjects  # the subject index (access by subject id); None when sealing is off
        self.leaves = LeafCache(store)  # proofs read only the segments written since the last lookup

    def warm(self) -> None:
        """Read every chain's leaves ahead of the first lookup (a background thread at start);
        a failure here is only logged: the lookup that needs the chain reads and reports it."""
        try:
            self.leaves.warm()
        except Exception as exc:  # noqa: BLE001 - nobody waits on this thread; the next lookup retries
            _log.warning("reading the chains ahead of lookups failed: %s", exc)

    def _opened(self, verified: VerifiedDecision) -> rec.DecisionBody:
        """The decision in clear: DecisionErased (410) once its subject was erased."""
        return open_decision(self.personal, verified.body, self.retry_after_s)

    def _verified(self, request_id: str, *, prove: bool = True) -> VerifiedDecision:
        try:
            return read_decision(self.store, request_id, trust=self.trust, prove=prove, leaves=self.leaves)
        except ReadError as exc:
            if exc.reason == "not_found":
                raise UnknownDecision(request_id) from None
            _log.error("decision %r failed verification: %s: %s", request_id, exc.reason, exc)
            raise RecordInvalid(request_id, exc.reason) from None
        except (StoreUnavailable, StoreError) as exc:
            _log.error("audit trail unreadable for lookup of %r: %s", request_id, exc)
            raise AuditUnavailable("the audit trail cannot be read right now", self.retry_after_s) from None

    def log_access(self, action: str, actor_key_id: str, *targets: str) -> None:
        """Make an access record durable, or refuse the answer (AuditUnavailable).

        Called once the answer is ready and just before it is returned, so the
        trail records only what was delivered: an answer that fails to build
        (a chart that cannot render, a sealed record) leaves no access record.
        ``targets``: the request ids looked at (for replay reads: the replay id), one
        access record each, in one append.
        """
        at = rec.utc_now()
        bodies = [
            rec.AccessBody(action=action, actor_key_id=actor_key_id, target_request_id=target, accessed_at=at)
            for target in targets
        ]
        if not bodies:
            return
        try:
            self.lane.append(bodies)
        except (StoreError, ChainError) as exc:
            raise AuditUnavailable(
                f"the lookup could not be recorded, so it was not answered: {exc}", self.retry_after_s
            ) from None

    def subject_decisions(self, subject_id: str, actor_key_id: str) -> SubjectDecisionsView:
        """Every decision the subject index holds about ``subject_id``, verified and opened,
        found without scanning the trail; one ``subject_access`` access record per decision
        disclosed (the subject id itself is never written to the trail)."""
        if self.subjects is None:
            raise SubjectAccessUnavailable()
        try:
            found = self.subjects.file(subject_id)
        except (KeyringError, KekError, sqlite3.Error, StoreError) as exc:
            raise AuditUnavailable(f"the subject index cannot be read right now: {exc}", self.retry_after_s) from None
        # Without the inclusion proof: proving reads the whole chain per record (O(chain length));
        # GET /v1/decisions/{id}/explanation proves any one of them.
        views = [self._view(self._verified(r, prove=False), proven=False) for r in found.request_ids]
        views.sort(key=lambda v: (v.decided_at, v.request_id))
        self.log_access("subject_access", actor_key_id, *found.request_ids)
        return SubjectDecisionsView(subject_id, views, found.held, rec.utc_now())

    def record(self, request_id: str, actor_key_id: str) -> RecordView:
        """The record as stored (sealed fields stay sealed); 410 once its subject was erased."""
        verified = self._verified(request_id)
        opened = self._opened(verified)
        view = RecordView(
            record=verified.record,
            verification=_verification(verified),
            opened=opened if opened is not verified.body else None,
        )
        self.log_access("lookup", actor_key_id, request_id)
        return view

    def decision_with_inputs(self, request_id: str, actor_key_id: str) -> tuple[ExplanationView, dict[str, Any]]:
        """The explanation and the inputs in clear, for a person reading one decision (the
        console): everything a record lookup discloses, so recorded as a ``lookup``."""
        verified = self._verified(request_id)
        view = self._view(verified)
        attributes = _attributes(self._opened(verified))
        self.log_access("lookup", actor_key_id, request_id)
        return view, attributes

    def explanation(self, request_id: str, actor_key_id: str) -> ExplanationView:
        view = self._view(self._verified(request_id))
        self.log_access("explanation", actor_key_id, request_id)
        return view

    def explanation_chart(self, request_id: str, actor_key_id: str, fmt: str = "png") -> bytes:
        verified = self._verified(request_id)
        body = self._opened(verified)
        if not body.explanation.contributions:
            raise NotExplained(request_id, body.explanation.method)
        manifest = self.models.manifest(body.model.name, body.model.version)
        chart = render_waterfall(manifest, _attributes(body), _result(body), fmt=fmt)
        self.log_access("explanation_chart", actor_key_id, request_id)
        return chart

    def _view(self, verified: VerifiedDecision, *, proven: bool = True) -> ExplanationView:
        body = self._opened(verified)
        manifest = self.models.manifest(body.model.name, body.model.version)
        denial = []
        if body.decision == manifest.decision.at_or_above and body.explanation.contributions:
            denial = [
                ReasonView(r.attribute, r.label, r.value, r.direction, r.text or "")
                for r in principal_reasons_for_denial(manifest, _attributes(body), _result(body))
            ]
        return ExplanationView(
            request_id=body.request_id,
            subject_id=body.subject_id,
            decided_at=body.decided_at,
            model={"name": body.model.name, "version": body.model.version, "sha256": body.model.sha256},
            decision=body.decision,
            score=body.score,
            output_space=body.explanation.output_space,
            base_value=body.explanation.base_value,
            contributions=dict(body.explanation.contributions),
            reasons=[ReasonView(r.attribute, r.label, r.value, r.direction, r.text or "") for r in body.reasons],
            principal_reasons_for_denial=denial,
            method=body.explanation.method,
            verification=_verification(verified, proven=proven),
            fidelity=from_record(body.explanation.fidelity),
        )


def _attributes(body: rec.DecisionBody) -> dict[str, Any]:
    if not isinstance(body.inputs, rec.PlainInputs):
        raise InputsSealed(body.request_id)
    return dict(body.inputs.attributes)


def _result(body: rec.DecisionBody):  # noqa: ANN202 - ExplanationResult
    """Rebuild the explainer's result from the logged explanation (for reasons and charts)."""
    e = body.explanation
    budget = e.budget or {}
    return ExplanationResult(
        method=e.method,
        output_space=e.output_space,
        base_value=e.base_value,
        contributions=dict(e.contributions),
        seed=e.seed,
        evaluations=int(budget.get("evaluations", 0)),
        bucket=rec.explain_bucket(body, 0) or 0,
        additivity_error=e.additivity_error or 0.0,
        fidelity=from_record(e.fidelity),
    )

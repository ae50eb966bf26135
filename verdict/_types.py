"""The public result types: plain frozen dataclasses, no HTTP wire types.

Why separate from the wire types: the HTTP schema (gateway.api_models) and the
record format (audit.records) evolve on their own schedules; these are what a
Python caller holds on to, converted at the edge of the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Decision",
    "Finding",
    "LoggedDecision",
    "ModelVersion",
    "Promotion",
    "Reason",
    "Receipt",
    "ReplayVerdict",
    "Verification",
]


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """Where the decision's signed record is: keep it to prove later that the trail still holds it."""

    chain_id: str
    seq: int
    record_hash: str
    """hex SHA-256 of the canonical record"""
    signature: str
    """base64 Ed25519 signature over the record hash"""
    key_id: str


@dataclass(frozen=True, kw_only=True)
class Reason:
    """A principal reason, in plain language, with the applicant's value and its SHAP contribution."""

    attribute: str
    label: str
    value: str
    direction: str
    """``raises`` or ``lowers`` the score"""
    contribution: float
    text: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    """An audited decision, built only from what was logged."""

    request_id: str
    model: str
    model_version: str
    model_sha256: str
    score: float
    decision: str
    reasons: tuple[Reason, ...]
    base_value: float
    """base value + the sum of ``contributions`` = ``score`` (within the manifest's epsilon)"""
    contributions: dict[str, float] = field(hash=False)
    receipt: Receipt
    decided_at: str
    idempotent_replay: bool = False
    """True when this request id had already been decided and the logged decision was returned."""


@dataclass(frozen=True, kw_only=True)
class LoggedDecision:
    """A decision read back from the trail and verified (hash, signature, key, inclusion)."""

    decision: Decision
    anchored: bool
    """True when the signing key was checked against a trust policy; False when read unanchored."""
    checkpoint_key: str | None
    """The signed checkpoint whose Merkle tree includes the record; None while no checkpoint covers it yet."""
    attributes: dict[str, Any] | None = field(default=None, hash=False)
    """The applicant's attributes as logged; None when the record holds them sealed."""


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One failure (or note) of a verification, with the verifier's stable reason code."""

    reason: str
    message: str
    chain_id: str | None = None
    seq: int | None = None
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Verification:
    """The outcome of verifying a whole store."""

    ok: bool
    anchored: bool
    """False when verified without a trust policy (``unanchored=True``): then any store writer could have forged it."""
    store: str
    records: int
    chains: tuple[str, ...]
    failures: tuple[Finding, ...]
    """The first failures (up to a thousand); ``failure_count`` counts them all."""
    failure_count: int
    notes: tuple[Finding, ...]
    trust_roots: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ReplayVerdict:
    """The verdict of replaying one logged decision against its registered tolerance."""

    request_id: str
    verdict: str
    """``identical``, ``within_tolerance``, ``out_of_tolerance`` or ``cannot_replay``"""
    passed: bool
    """identical or within tolerance"""
    reason: str | None
    """cannot_replay: the reason code"""
    why: tuple[str, ...]
    """plain-language reasons for any verdict other than identical"""
    logged_score: float | None
    replayed_score: float | None
    replay_id: str
    report_key: str | None
    """The signed JSON report, stored as evidence in the trail (None if not recorded)."""
    anchored: bool


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """A registered model version."""

    name: str
    version: str
    artifact_sha256: str
    newly_registered: bool
    """False when the identical version was already registered (nothing was written)."""


@dataclass(frozen=True, kw_only=True)
class Promotion:
    """One event of a model's alias history (append-only)."""

    name: str
    version: str
    alias: str
    sequence: int
    promoted_at: str
    promoted_by: str

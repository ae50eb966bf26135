"""The HTTP API's request and response bodies (msgspec Structs at the edge).

These are the public contract documented in docs/api.md and served as
OpenAPI at /schema. The attributes object is typed loosely here on purpose:
its rules come from the model's manifest and are checked by gateway.schema,
which reports every broken rule with field and value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from verdict.gateway.manifest import NAME_RE, VERSION_RE
from verdict.replay.report import ReplayReport, ReportSignature

__all__ = [
    "MODEL_NAME_PATTERN",
    "MODEL_VERSION_PATTERN",
    "DecisionRequest",
    "DecisionResponse",
    "Health",
    "ModelListing",
    "ModelOut",
    "Problem",
    "Readiness",
    "ReasonOut",
    "ReceiptOut",
    "SignedReplayReport",
    "VersionState",
]


def _whole(regex: str) -> str:
    """Anchor ``regex`` to the whole value, for msgspec (Python's ``re.search``) and
    OpenAPI readers (ECMA-262) alike. Python's ``$`` also matches before a final
    newline, so ``"german-credit\\n"`` passed ``^...$`` and reached the store as an
    impossible key (a 500); ``(?!\\n)`` closes that (in ECMA it is redundant)."""
    return f"^{regex}$(?!\\n)"


MODEL_NAME_PATTERN = _whole(NAME_RE.pattern)
"""A registrable model name (gateway.manifest.NAME_RE, checked at registration)."""
MODEL_VERSION_PATTERN = _whole(VERSION_RE.pattern)
"""A registrable version (gateway.manifest.VERSION_RE)."""

RequestId = Annotated[
    str, msgspec.Meta(pattern=_whole(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"), description="Client-chosen idempotency key")
]
Name = Annotated[str, msgspec.Meta(pattern=MODEL_NAME_PATTERN)]
Version = Annotated[str, msgspec.Meta(pattern=MODEL_VERSION_PATTERN)]
SubjectId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: Name
    attributes: dict[str, Any]
    version: Version | None = None
    request_id: RequestId | None = None
    subject_id: SubjectId | None = None


class ModelOut(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str


class ReceiptOut(msgspec.Struct, frozen=True):
    chain_id: str
    seq: int
    record_hash: str
    signature: str
    key_id: str


class ReasonOut(msgspec.Struct, frozen=True):
    attribute: str
    label: str
    value: str
    direction: str
    contribution: float
    text: str


class DecisionResponse(msgspec.Struct, frozen=True):
    request_id: str
    model: ModelOut
    score: float
    decision: str
    reasons: list[ReasonOut]
    base_value: float
    contributions: dict[str, float]
    receipt: ReceiptOut
    decided_at: str
    idempotent_replay: bool = False


class VersionState(msgspec.Struct, frozen=True, omit_defaults=True):
    """Whether this replica serves a version: ``loaded``; ``unready`` (it failed to load:
    ``reason``; its requests get 503 model-unavailable until a retry loads it);
    ``revoked`` (never serves again: ``reason`` says who, when, why); ``not_loaded``
    (loaded on its first pinned request)."""

    state: Literal["loaded", "unready", "revoked", "not_loaded"]
    reason: str | None = None


class ValidationStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """A version's current model-risk validation status: the latest signed status event
    (``verdict models status``); ``note``: conditions, findings or a ticket."""

    status: str
    at: str
    by: str
    note: str | None = None


class ModelListing(msgspec.Struct, frozen=True):
    """One registered model: its versions, the one the production alias serves, each
    version's state on this replica, and each version's validation status (versions
    without one recorded are absent)."""

    name: str
    versions: list[str]
    production: str | None
    states: dict[str, VersionState]
    validation: dict[str, ValidationStatus] = {}


class FieldProblem(msgspec.Struct, frozen=True, omit_defaults=True):
    field: str
    rule: str
    message: str
    value: Any = None


class ErasureRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``DELETE /v1/subjects/{subject_id}``: the legal basis the erasure is made under."""

    basis: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    """e.g. "GDPR Art. 17(1)(a), ticket DPO-2026-114"."""


class ErasureDone(msgspec.Struct, frozen=True):
    """What an erasure destroyed and where its signed record is."""

    erased_decisions: list[str]
    """The request ids whose personal data is now unreadable."""
    key_refs: list[str]
    basis: str
    by: str
    erased_at: str
    record: ReceiptOut
    """The signed ``erasure`` record on the ``subjects`` chain."""


class ErasureOut(msgspec.Struct, frozen=True):
    """Where the signed erasure record of an erased decision is: record ``seq`` of chain
    ``chain_id`` (``subjects``), with its record hash."""

    chain_id: str
    seq: int
    record_hash: str
    erased_at: str
    cause: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    erasure: ErasureOut | None = None
    """On 410 decision-erased: the signed erasure record that destroyed the data."""


class Health(msgspec.Struct, frozen=True):
    """``GET /healthz``: the process answers."""

    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, frozen=True):
    """``GET /readyz`` (200 ready, 503 not): each check's value (``"ok"`` or why not) and
    the model versions this replica cannot serve (``name:version`` -> reason)."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
    unready_models: dict[str, str]


class SignedReplayReport(msgspec.Struct, frozen=True):
    """``GET /v1/replays/{replay_id}/report.json``: the signed envelope, sent as the bytes
    stored in the trail (re-encoding would change what the signature covers). The signature
    is Ed25519 over the report's RFC 8785 canonical JSON (docs/replay.md)."""

    format: Literal["verdict.signed-replay-report/v1"]
    report: ReplayReport
    signature: ReportSignature

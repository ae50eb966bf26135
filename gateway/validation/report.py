"""The validation report: what was checked, what was measured, and the verdict.

Why a document of its own (``verdict.validation/v1``): the registry stores it
beside the model as evidence (docs/audit-format.md, ``validation_sha256``), so
a model-risk validator reading the trail years later sees exactly which rules
the version passed and with what numbers, not merely that it "was validated".
Its JSON is canonical (RFC 8785) and, apart from ``validated_at``, depends only
on the model directory, the code and the machine: validating the same
directory twice gives the same bytes, so two reports can be diffed.

Every check is a :class:`Check` whose ``rule`` names the rule it broke and whose
``detail`` names the op, field or value and the fix; ``status`` says whether it
ran (``passed``/``failed``), was ``skipped`` on purpose (nothing to check: no
held-out rows, no eager module) or could not run because a check it depends on
failed (``failed-dependency``: not a pass, and never a crash).
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from verdict.audit.canonical import canonical_bytes
from verdict.gateway.manifest import WithheldAttribute

__all__ = [
    "FORMAT",
    "STATUSES",
    "Check",
    "Measured",
    "OutputDistribution",
    "ProtectedAmongReasons",
    "ReasonFrequency",
    "ValidationRefused",
    "ValidationReport",
    "decode_report",
    "encode_report",
    "measure",
    "require_valid",
]

FORMAT: Literal["verdict.validation/v1"] = "verdict.validation/v1"
STATUSES = ("passed", "failed", "skipped", "failed-dependency")
"""``passed`` and ``skipped`` let a model through; ``failed`` and ``failed-dependency`` refuse it."""

Measured = dict[str, float | int | str]


def measure(value: float | int | str | bool) -> float | int | str:
    """A measurement as canonical JSON can carry it: NaN and infinities (a
    broken model's outputs) become their names, booleans become 0/1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    return value


class Check(msgspec.Struct, frozen=True):
    """One rule and its outcome. ``status`` defaults from ``passed`` (``passed``/``failed``);
    set it to ``skipped`` (with ``passed=True``) or ``failed-dependency`` (``passed=False``)."""

    name: str
    passed: bool
    detail: str
    rule: str = ""
    measured: Measured = msgspec.field(default_factory=dict)
    status: str = ""

    def __post_init__(self) -> None:
        status = self.status or ("passed" if self.passed else "failed")
        if status not in STATUSES:
            raise ValueError(f"check {self.name}: status must be one of {', '.join(STATUSES)}, got {status!r}")
        if self.passed != (status in ("passed", "skipped")):
            raise ValueError(f"check {self.name}: status {status!r} contradicts passed={self.passed}")
        msgspec.structs.force_setattr(self, "status", status)
        for key, value in self.measured.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"check {self.name}: measured {key} = {value!r}: pass it through measure()")


class ReasonFrequency(msgspec.Struct, frozen=True):
    """How often one attribute was among the principal reasons (the top increased-risk
    reasons an adverse-action notice gives, gateway.reasons, at most four) of the
    explained rows. Informational: it never refuses a model."""

    attribute: str
    label: str
    protected: bool
    principal: int  # explained rows where it was among the principal reasons
    first: int  # explained rows where it was the first principal reason
    share: float  # principal / explained rows
    mean_abs_contribution: float


class ProtectedAmongReasons(msgspec.Struct, frozen=True):
    """Protected characteristics among the principal reasons of the explained rows,
    and the attributes the manifest says were deliberately withheld from the model.
    Informational: a reviewer weighs it (a version using a protected attribute is
    promoted only with a recorded justification)."""

    explained_rows: int
    adverse_rows: int  # explained rows whose score is at or above the decision threshold
    protected_attributes: list[str]  # model inputs marked ``protected`` in the manifest
    rows_with_protected_reason: int
    adverse_rows_with_protected_reason: int
    share: float  # rows_with_protected_reason / explained_rows
    withheld: list[WithheldAttribute]


class OutputDistribution(msgspec.Struct, frozen=True):
    """The model's outputs on the probe rows (held-out, background, boundary), as a histogram."""

    rows: dict[str, int]  # probe rows by source
    finite: int
    minimum: float | None
    maximum: float | None
    bin_edges: list[float]
    counts: list[int]
    threshold: float | None = None  # the decision threshold, drawn on the chart


class ValidationReport(msgspec.Struct, frozen=True):
    format: Literal["verdict.validation/v1"]
    model: str  # "name:version" (as far as the manifest could be read)
    manifest_sha256: str
    artifact_sha256: str
    background_sha256: str
    heldout_sha256: str | None
    validated_at: str  # RFC 3339 UTC, audit.records.utc_now()
    validator: str  # "verdict <version>"
    environment: dict[str, str]  # python, torch, platform, machine, cpu, ...
    checks: list[Check]
    passed: bool
    protected_among_reasons: ProtectedAmongReasons | None = None
    reason_frequency: list[ReasonFrequency] = msgspec.field(default_factory=list)
    output_distribution: OutputDistribution | None = None

    def check(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


class ValidationRefused(ValueError):
    """The model cannot be served deterministically; ``report`` says why, check by check."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = [f"{check.name}: {check.detail}" for check in report.failed]
        super().__init__(f"{report.model} refused by validation:\n" + "\n".join(lines))

    def __reduce__(self):  # noqa: ANN204 - keep the report when the error crosses a process boundary
        return type(self), (self.report,)


def require_valid(report: ValidationReport) -> None:
    """Raise :class:`ValidationRefused` unless every check passed (or was skipped)."""
    if not report.passed or report.failed:
        raise ValidationRefused(report)


def encode_report(report: ValidationReport) -> bytes:
    """Canonical bytes (RFC 8785): what the registry stores and hashes."""
    return canonical_bytes(report)


def decode_report(data: bytes) -> ValidationReport:
    return msgspec.json.decode(data, type=ValidationReport)

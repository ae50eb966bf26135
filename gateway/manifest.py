"""Model manifest: everything needed to serve, explain and replay a model
version, fixed at registration and never edited afterwards.

Why each part is here: the input schema drives validation and reason texts;
the decision rule turns a score into the decision on the record; explainer
settings pin how contributions are computed; the replay tolerance must be
fixed *before* any replay so nobody can choose "close enough" after the fact;
runtime settings pin the execution shapes; training provenance lets a model
risk validator trace the artifact back to data, code and environment.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import msgspec

from verdict.audit.canonical import canonical_bytes
from verdict.gateway.schema import AttributeSpec

__all__ = [
    "CertificationSettings",
    "DatasetProvenance",
    "DecisionRule",
    "ExplainerSettings",
    "Manifest",
    "ManifestError",
    "ModelCard",
    "OutputSpace",
    "OutputSpec",
    "ReplayTolerance",
    "RuntimeSettings",
    "TrainingProvenance",
    "WithheldAttribute",
    "decode_manifest",
    "encode_manifest",
]

MANIFEST_FORMAT = "verdict.model/v1"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A registrable model name; every one is also a valid store key segment (audit.stores.keys)."""
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A registrable model version, likewise."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that must not be registered or loaded; names the field."""


# Subclasses restate frozen=True: msgspec inherits it, but a type checker reads it per class.
class _Strict(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    pass


OutputSpace = Literal["probability", "score"]
"""``probability``: of the adverse outcome, in [0, 1]; ``score``: any finite real
(a premium, a loss estimate). A model output outside its space fails the decision closed."""


class OutputSpec(_Strict, frozen=True):
    name: str  # e.g. "probability_of_default"
    description: str
    space: OutputSpace = "probability"


class DecisionRule(_Strict, frozen=True):
    """score >= threshold → ``at_or_above``; otherwise ``below``."""

    threshold: float
    at_or_above: str
    below: str
    rationale: str


class CertificationSettings(_Strict, frozen=True):
    """Adaptive sampling until the reasons are certified (algorithm "certified").

    Each background row gets its own antithetic walks; a request starts with
    ``explainer.permutations`` pairs per row and doubles them, round by round,
    until its reason lists are certified at ``z`` standard errors and its largest
    bound is at most ``target_error``, or ``max_pairs`` pairs per row are spent.
    Then, if exact enumeration of the attributes that differ from each
    background row needs at most ``exact_rows`` model rows, the explanation is
    enumerated exactly (0: never); otherwise the record says the reasons are
    not certified."""

    z: float
    target_error: float
    max_pairs: int
    exact_rows: int


class ExplainerSettings(_Strict, kw_only=True, frozen=True):
    """How contributions are computed (docs/explanations.md).

    No new field has a default: a default is left out of the canonical
    manifest bytes, so a later change to it in code would silently change how
    already registered models explain and word their decisions."""

    algorithm: Literal["exact", "permutation", "certified"]
    output_space: OutputSpace
    background_sha256: str
    background_rows: int
    background_summary: str  # how the background rows and their counts were chosen
    max_evaluations: int  # model rows per explanation (budget); settings needing more are refused
    permutations: int  # antithetic pairs per explanation ("permutation"), per background row in the first round ("certified"); 0 for "exact"
    seed_policy: str  # how the per-request seed is derived
    additivity_epsilon: float
    reason_templates: dict[str, str]  # "increased_risk"/"decreased_risk" -> str.format template ({label}, {value})
    top_reasons: int = 4
    certification: CertificationSettings | None = None
    """Required by "certified", absent otherwise (None is left out of the canonical bytes)."""


class ReplayTolerance(_Strict, frozen=True):
    """|replayed - logged| <= absolute + relative * |logged| (per value)."""

    absolute: float
    relative: float


class RuntimeSettings(_Strict, frozen=True):
    """Execution shapes: every forward pass runs at exactly ``score_bucket``
    rows (decisions) or ``explain_bucket`` rows (explanation evaluations),
    padding as needed, because kernels, and so last bits, depend on shape."""

    dtype: Literal["float32"]
    score_bucket: int
    explain_bucket: int
    threads: int


class DatasetProvenance(_Strict, frozen=True):
    name: str
    title: str
    sha256: str
    rows: int
    citation: str
    licence: str


class TrainingProvenance(_Strict, frozen=True):
    code_commit: str  # git commit, or "uncommitted"
    source_sha256: str  # hash of the sources that trained it (packaged models: the user's model source files)
    dataset: DatasetProvenance
    split: str
    seed: int
    hyperparameters: dict[str, float | int | str | list[int]]
    environment_sha256: str
    environment_summary: dict[str, str]
    metrics: dict[str, float]
    source_files: dict[str, str] | None = None  # packaged models: file name -> sha256 of the model's source
    target: str | None = None  # packaged models: the data column the model was trained to predict
    packaged_by: str | None = None  # packaged models: "verdict models package" and its version


class ModelCard(_Strict, kw_only=True, frozen=True):
    """Model inventory fields that model-risk guidance (SR 26-2) and the EU AI Act's
    technical documentation ask for. Validation *status* changes over time, so it is
    not here: it is a series of signed registry ``status`` events."""

    purpose: str
    owner: str
    intended_use: str
    limitations: str
    risk_tier: str  # the bank's own tiering, e.g. "high", "tier 1"
    regulations: tuple[str, ...] = ()  # e.g. ("EU AI Act Annex III 5(b)", "SR 26-2", "ECOA / Reg B")
    contact: str = ""


class WithheldAttribute(_Strict, frozen=True):
    """An attribute of the training data deliberately *not* given to the model
    (e.g. a protected characteristic), named so reviewers see it was left out."""

    name: str
    label: str
    reason: str
    protected: bool = True


class Manifest(_Strict, frozen=True):
    format: Literal["verdict.model/v1"]
    name: str
    version: str
    artifact_sha256: str
    artifact_bytes: int
    inputs: tuple[AttributeSpec, ...]
    output: OutputSpec
    decision: DecisionRule
    explainer: ExplainerSettings
    tolerance: ReplayTolerance
    runtime: RuntimeSettings
    training: TrainingProvenance
    description: str = ""
    card: ModelCard | None = None
    withheld: tuple[WithheldAttribute, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def attribute(self, name: str) -> AttributeSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _check(manifest: Manifest) -> Manifest:
    """Rules a msgspec type alone cannot express."""
    problems = []
    if not NAME_RE.fullmatch(manifest.name):
        problems.append(f"name {manifest.name!r} must match {NAME_RE.pattern}")
    if not VERSION_RE.fullmatch(manifest.version):
        problems.append(f"version {manifest.version!r} must match {VERSION_RE.pattern}")
    for field in ("artifact_sha256",):
        if not _SHA256.fullmatch(getattr(manifest, field)):
            problems.append(f"{field} must be 64 lowercase hex digits")
    if not _SHA256.fullmatch(manifest.explainer.background_sha256):
        problems.append("explainer.background_sha256 must be 64 lowercase hex digits")
    for field in ("score_bucket", "explain_bucket"):
        if not 1 <= getattr(manifest.runtime, field) <= 1 << 16:
            problems.append(f"runtime.{field} must be 1..65536")
    if manifest.runtime.threads < 1:
        problems.append("runtime.threads must be >= 1")
    if manifest.tolerance.absolute < 0 or manifest.tolerance.relative < 0:
        problems.append("tolerance bounds must be >= 0")
    if manifest.explainer.output_space != manifest.output.space:
        problems.append(
            f"explainer.output_space {manifest.explainer.output_space!r} must equal output.space {manifest.output.space!r}"
        )
    threshold = manifest.decision.threshold
    if not math.isfinite(threshold):
        problems.append("decision.threshold must be a finite number")
    elif manifest.output.space == "probability" and not 0 < threshold <= 1:
        problems.append(f"decision.threshold {threshold!r} must be in (0, 1] for a probability output")
    names = [s.name for s in manifest.inputs]
    if overlap := sorted({w.name for w in manifest.withheld} & set(names)):
        problems.append(f"withheld: {', '.join(overlap)} cannot be both withheld and a model input")
    if len(set(names)) != len(names):
        problems.append("inputs: attribute names must be unique")
    for spec in manifest.inputs:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", spec.name):
            problems.append(f"inputs: attribute name {spec.name!r} must be lower_snake_case ASCII")
        if spec.kind == "category" and not spec.categories:
            problems.append(f"inputs.{spec.name}: a category attribute needs categories")
        if spec.kind != "category" and (spec.minimum is None or spec.maximum is None):
            problems.append(f"inputs.{spec.name}: a numeric attribute needs minimum and maximum")
    if problems:
        raise ManifestError("invalid manifest: " + "; ".join(problems))
    return manifest


def decode_manifest(data: bytes) -> Manifest:
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"invalid manifest: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    return _check(manifest)


def encode_manifest(manifest: Manifest) -> bytes:
    """Canonical bytes: the registry stores exactly these, so equal manifests are equal bytes."""
    return canonical_bytes(_check(manifest))

"""Folding logged decisions into per-version monitoring counts (issue 20, monitoring).

Why counts and fixed bins: a trail of 100,000 decisions is summarised once and
then only its new records are added, so everything kept must merge exactly
when a record is added: integer counts per day and outcome, per score bin and
attribute bin (the bins fixed by the training reference when the version is
first seen), per principal-reason attribute. No per-decision value is kept,
so the summary holds no personal data and its size does not grow with the trail.

What is read from a record, and what needs its keys (spec §3a): the model,
time, score, decision and explanation (contributions) are in clear in every
decision, sealed or not; only the attributes, the subject id and the values
quoted in reasons are sealed. So decisions, outcomes, the score distribution
and the principal reasons count every decision; the attribute distributions
count the decisions whose attributes could be read, and the others by why not:
``erased`` (the subject's key was destroyed), ``sealed`` (no data keyring here,
or one without the key), ``unreadable`` (the ciphertext does not authenticate).
A decision folded before its subject was erased stays in the counts: they are
anonymous aggregates, not the subject's data.

Principal reasons are those of an adverse-action notice (gateway.reasons
:func:`principal_reasons_for_denial`: the at most four attributes that raised
the risk most), ranked from the record's contributions by its rule
(:func:`principal_attributes`, checked against it by the tests), for every
explained decision; so the rate is the validation report's
"reason frequency" (gateway.validation), measured on live traffic. They are
also counted for adverse decisions alone (what notices actually cite).

Protected attributes: a validator asks "does a protected characteristic drive
our decisions?", whatever the version's own manifest says. So the protected
set of a version is its inputs the manifest marks ``protected``, plus its
inputs that another version of the same model withholds as protected (the
reference models' 2.0.0 withholds age, sex and marital status, and national
origin; 1.0.0 uses them unmarked, and is counted for them). There is no proxy
list in the manifest; the reason rates of the other attributes are where a
reviewer looks for proxies (docs/bring-your-own-model.md).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from verdict.audit.personal_data import PersonalData
from verdict.audit.records import NOT_EXPLAINED, DecisionBody, PlainInputs
from verdict.audit.stores import StoreError
from verdict.gateway.engine import Engine
from verdict.gateway.manifest import Manifest, ManifestError
from verdict.gateway.monitoring_reference import (
    NoReference,
    ReferenceCache,
    TrainingReference,
    bin_index,
)
from verdict.gateway.reasons import ECOA_MAX_REASONS
from verdict.gateway.registry import RegistryError
from verdict.gateway.schema import AttributeSpec
from verdict.gateway.sealed_reads import open_decision
from verdict.gateway.service_errors import DecisionErased, InputsSealed, RecordInvalid, ServiceError

__all__ = ["DecisionFolder", "VersionFold", "fallback_score_edges", "principal_attributes"]

_log = logging.getLogger(__name__)
_MISSING = object()


@dataclass(frozen=True)
class _Binner:
    name: str
    counts: list[int]
    """The fold's own count list (counted into in place)."""
    edges: list[float]
    positions: dict[str, int] | None
    """Category code -> bin; None for a numeric attribute."""


def fallback_score_edges(output_space: str) -> list[float]:
    """Score bins without a reference: tenths of [0, 1] for a probability, none for a free score."""
    return [k / 10 for k in range(1, 10)] if output_space == "probability" else []


class VersionFold(msgspec.Struct, kw_only=True):
    """Everything counted about one model version's decisions (mutable; one per ``name:version``)."""

    model: str
    version: str
    artifact_sha256: str
    manifest_sha256: str | None = None
    """None: the registry here has no readable manifest of this version (see ``note``)."""
    inputs: list[AttributeSpec] = []
    output_space: str = "probability"
    threshold: float | None = None
    adverse_decision: str | None = None
    """The decision label at or above the threshold (``decline``): an adverse action."""
    reference: TrainingReference | None = None
    no_reference: str | None = None
    """Why there is no training reference (None when there is one)."""
    protected: dict[str, str] = {}
    """Protected attribute -> why it counts as protected."""
    notes: list[str] = []

    decisions: int = 0
    first_at: str | None = None
    last_at: str | None = None
    days: dict[str, dict[str, int]] = {}
    """UTC day (YYYY-MM-DD of ``decided_at``) -> decision label -> count."""
    outcomes: dict[str, int] = {}
    score_edges: list[float] = []
    score_counts: list[int] = []
    """Per score bin; empty when the score has no bins (a free score without a reference)."""
    score_sum: float = 0.0
    score_min: float | None = None
    score_max: float | None = None

    attributes_read: int = 0
    erased: int = 0
    sealed: int = 0
    unreadable: int = 0
    attribute_counts: dict[str, list[int]] = {}
    unbinned: dict[str, int] = {}
    """Values outside the reference's categories (not expected: requests are validated)."""

    explained: int = 0
    adverse: int = 0
    adverse_explained: int = 0
    principal: dict[str, int] = {}
    first: dict[str, int] = {}
    principal_adverse: dict[str, int] = {}
    with_protected: int = 0
    adverse_with_protected: int = 0


class DecisionFolder:
    """Adds decisions to their version's :class:`VersionFold`, creating it (manifest,
    reference bins, protected set) the first time a version is seen."""

    def __init__(self, engine: Engine, references: ReferenceCache, personal: PersonalData | None) -> None:
        self.engine = engine
        self.references = references
        self.personal = personal
        self._manifests: dict[tuple[str, str], Manifest | None] = {}
        self._input_names: dict[tuple[str, str], list[str]] = {}
        self._binners: dict[tuple[str, str], tuple[VersionFold, list[_Binner]]] = {}

    # -- a new version ----------------------------------------------------------------------

    def new_fold(self, body: DecisionBody) -> VersionFold:
        model = body.model
        fold = VersionFold(model=model.name, version=model.version, artifact_sha256=model.sha256)
        manifest = self._manifest(model.name, model.version)
        if manifest is None:
            fold.no_reference = f"the registry here has no readable manifest of {model.name}:{model.version}"
            fold.output_space = body.explanation.output_space
            fold.score_edges = fallback_score_edges(fold.output_space)
            fold.score_counts = [0] * (len(fold.score_edges) + 1) if fold.score_edges else []
            fold.notes.append("no manifest: principal reasons are not ranked and attributes are not binned")
            return fold
        try:
            fold.manifest_sha256 = self.engine.registry.manifest_sha256(model.name, model.version)
        except (RegistryError, StoreError) as exc:
            fold.notes.append(f"the manifest's sha256 could not be read: {exc}")
        if manifest.artifact_sha256 != model.sha256:
            fold.notes.append(
                f"decisions name artifact {model.sha256[:12]}..., the registered manifest {manifest.artifact_sha256[:12]}..."
            )
        fold.inputs = list(manifest.inputs)
        fold.output_space = manifest.output.space
        fold.threshold = manifest.decision.threshold
        fold.adverse_decision = manifest.decision.at_or_above
        fold.protected = self._protected(manifest)
        found: TrainingReference | NoReference = (
            self.references.get(manifest, fold.manifest_sha256)
            if fold.manifest_sha256
            else NoReference("the manifest's sha256 could not be read")
        )
        if isinstance(found, TrainingReference):
            fold.reference = found
            fold.score_edges = list(found.score_edges)
            fold.attribute_counts = {a.name: [0] * len(a.counts) for a in found.attributes}
        else:
            fold.no_reference = found.why
            fold.score_edges = fallback_score_edges(fold.output_space)
        fold.score_counts = [0] * (len(fold.score_edges) + 1) if fold.score_edges or fold.reference else []
        fold.principal = dict.fromkeys((s.name for s in manifest.inputs), 0)
        fold.first = dict(fold.principal)
        fold.principal_adverse = dict(fold.principal)
        return fold

    def _manifest(self, name: str, version: str) -> Manifest | None:
        key = (name, version)
        if key not in self._manifests:
            try:
                self._manifests[key] = self.engine.manifest(name, version)
            except (ServiceError, RegistryError, StoreError, ManifestError) as exc:
                _log.warning("monitoring: no manifest for %s:%s: %s", name, version, exc)
                self._manifests[key] = None
        return self._manifests[key]

    def _protected(self, manifest: Manifest) -> dict[str, str]:
        """Inputs marked protected, and inputs another version of the model withholds as protected."""
        found = {s.name: "marked protected in this version's manifest" for s in manifest.inputs if s.protected}
        inputs = {s.name for s in manifest.inputs}
        try:
            versions = self.engine.registry.versions(manifest.name)
        except (RegistryError, StoreError):
            versions = []
        for version in versions:
            other = self._manifest(manifest.name, version) if version != manifest.version else manifest
            for withheld in other.withheld if other is not None else ():
                if withheld.protected and withheld.name in inputs and withheld.name not in found:
                    found[withheld.name] = f"withheld as protected by {manifest.name}:{version}: {withheld.reason}"
        return found

    # -- one decision -----------------------------------------------------------------------

    def fold(self, fold: VersionFold, body: DecisionBody) -> None:
        """Add ``body`` to ``fold``. Raises AuditUnavailable (the data keyring did not
        answer) before anything is counted, so the caller can retry the record later."""
        attributes = self._attributes(fold, body)  # first: it may raise
        fold.decisions += 1
        day = body.decided_at[:10]
        per_day = fold.days.setdefault(day, {})
        per_day[body.decision] = per_day.get(body.decision, 0) + 1
        fold.outcomes[body.decision] = fold.outcomes.get(body.decision, 0) + 1
        if fold.first_at is None or body.decided_at < fold.first_at:
            fold.first_at = body.decided_at
        if fold.last_at is None or body.decided_at > fold.last_at:
            fold.last_at = body.decided_at
        score = body.score
        fold.score_sum += score
        fold.score_min = score if fold.score_min is None else min(fold.score_min, score)
        fold.score_max = score if fold.score_max is None else max(fold.score_max, score)
        if fold.score_counts:
            fold.score_counts[bin_index(fold.score_edges, score)] += 1
        adverse = fold.adverse_decision is not None and body.decision == fold.adverse_decision
        fold.adverse += adverse
        if attributes is not None and fold.reference is not None:
            self._bin_attributes(fold, fold.reference, attributes)
        self._reasons(fold, body, adverse)

    def _attributes(self, fold: VersionFold, body: DecisionBody) -> Mapping[str, Any] | None:
        try:
            opened = open_decision(self.personal, body)
        except DecisionErased:
            fold.erased += 1
            return None
        except InputsSealed:
            fold.sealed += 1
            return None
        except RecordInvalid:
            fold.unreadable += 1
            return None
        if not isinstance(opened.inputs, PlainInputs):  # the reserved "encrypted" form: no key here
            fold.sealed += 1
            return None
        fold.attributes_read += 1
        return opened.inputs.attributes

    def _bin_attributes(self, fold: VersionFold, reference: TrainingReference, attributes: Mapping[str, Any]) -> None:
        for binner in self._binners_of(fold, reference):
            value = attributes.get(binner.name, _MISSING)
            if value is _MISSING:
                continue
            if binner.positions is not None:
                k = binner.positions.get(str(value))  # category_key, inlined: this loop runs per attribute
            elif isinstance(value, int | float) and not isinstance(value, bool):
                k = bin_index(binner.edges, value)
            else:
                k = None
            if k is None:
                fold.unbinned[binner.name] = fold.unbinned.get(binner.name, 0) + 1
            else:
                binner.counts[k] += 1

    def _binners_of(self, fold: VersionFold, reference: TrainingReference) -> list[_Binner]:
        """Per attribute, its bins as lookups (built once per fold object, not per decision)."""
        key = (fold.model, fold.version)
        found = self._binners.get(key)
        if found is None or found[0] is not fold:
            binners = [
                _Binner(
                    name=a.name,
                    counts=fold.attribute_counts[a.name],
                    edges=a.edges,
                    positions={code: k for k, code in enumerate(a.categories)} if a.kind == "category" else None,
                )
                for a in reference.attributes
            ]
            found = self._binners[key] = (fold, binners)
        return found[1]

    def _reasons(self, fold: VersionFold, body: DecisionBody, adverse: bool) -> None:
        explanation = body.explanation
        if explanation.method == NOT_EXPLAINED or not explanation.contributions or not fold.inputs:
            return
        try:
            names = principal_attributes(self._names(fold), explanation.contributions)
        except KeyError:  # contributions that do not name the version's inputs
            return
        fold.explained += 1
        fold.adverse_explained += adverse
        for name in names:
            fold.principal[name] += 1
            if adverse:
                fold.principal_adverse[name] += 1
        if names:
            fold.first[names[0]] += 1
        if any(name in fold.protected for name in names):
            fold.with_protected += 1
            fold.adverse_with_protected += adverse

    def _names(self, fold: VersionFold) -> list[str]:
        key = (fold.model, fold.version)
        names = self._input_names.get(key)
        if names is None:
            names = self._input_names[key] = [spec.name for spec in fold.inputs]
        return names


def principal_attributes(names: Sequence[str], contributions: Mapping[str, float]) -> list[str]:
    """The attributes :func:`gateway.reasons.principal_reasons_for_denial` gives for these
    contributions (inputs in schema order ``names``): those that raised the risk
    (contribution > 0), largest first, ties in schema order, at most ECOA_MAX_REASONS.

    Why not call it: it words each reason (the applicant's value in a template), which
    needs the sealed attributes and costs more than the ranking; over a 100,000-decision
    trail that was most of the fold. tests/gateway/test_monitoring.py checks that both
    give the same attributes on real decisions."""
    raised = [(-c, i, name) for i, name in enumerate(names) if (c := contributions[name]) > 0.0]
    return [name for _, _, name in heapq.nsmallest(ECOA_MAX_REASONS, raised)]

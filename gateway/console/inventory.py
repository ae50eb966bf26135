"""Model inventory for the console: every model and version, the production alias and its
history, validation status and revocations, each manifest's model card and the manifest in
words, and the validation report the registry kept.

Why the registry chain is read here: alias and status objects are plain store objects, and
the registry serves whatever the newest alias object says. What makes them evidence is the
signed ``registry`` record naming each by hash (gateway.registry_log). So every promotion,
status change and registration shown is matched with its record, whose signature is checked
against the key the trust root certified for the registry chain; one that no verified record
names is shown red ("a store writer could have added it"), never silently trusted.

Cost: the registry's objects (a few per version) and one pass over the registry chain,
which holds registry events only (tens to hundreds of records), never the decisions.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.records import RecordError, RegistryBody, decode_record, iter_lines, split_line
from verdict.audit.signing import verify_record_signature
from verdict.audit.stores import StoreError, StoreUnavailable, WormStore
from verdict.audit.trust import TrustPolicy, load_anchors
from verdict.gateway.console.trail_health import State
from verdict.gateway.manifest import (
    DecisionRule,
    ExplainerSettings,
    Manifest,
    ManifestError,
    ModelCard,
    OutputSpec,
    ReplayTolerance,
    RuntimeSettings,
    TrainingProvenance,
    WithheldAttribute,
)
from verdict.gateway.registry import (
    REVOKED,
    VALIDATION_STATUSES,
    Promotion,
    Registry,
    RegistryError,
    StatusEvent,
    UnknownModel,
    alias_prefix,
    status_prefix,
)
from verdict.gateway.registry_log import REGISTRY_CHAIN
from verdict.gateway.validation.report import ValidationReport, decode_report

if TYPE_CHECKING:
    from verdict.gateway.engine import Engine

__all__ = [
    "PRODUCTION",
    "AttributeView",
    "CategoryView",
    "CheckView",
    "ModelDetail",
    "ModelEntry",
    "PromotionView",
    "Sentence",
    "StatusView",
    "ValidationReportView",
    "VersionSummary",
    "model_detail",
    "model_inventory",
]

PRODUCTION = "production"


class PromotionView(msgspec.Struct, frozen=True):
    """One promotion of the production alias (oldest first in a history)."""

    version: str
    sequence: int
    at: str
    by: str
    reason: str | None
    """The justification on the promotion record (e.g. protected attributes acknowledged)."""
    recorded: bool
    """Named, with these bytes, by a verified record on the registry chain."""


class StatusView(msgspec.Struct, frozen=True):
    """One status event of a version: a validation status or ``revoked``."""

    status: str
    sequence: int
    at: str
    by: str
    note: str
    revocation: bool
    recorded: bool


class VersionSummary(msgspec.Struct, frozen=True):
    version: str
    description: str | None
    """None: the stored manifest cannot be read (see ``state``)."""
    registered_at: str | None
    registered_by: str | None
    production: bool
    validation: StatusView | None
    """The latest validation status (None: none recorded)."""
    revoked: StatusView | None
    serving: str | None
    """With an engine: "loaded", "not loaded" or "failed to load: <reason>"; else None."""
    state: State


class ModelEntry(msgspec.Struct, frozen=True):
    name: str
    production: str | None
    """The version the production alias names (None: never promoted)."""
    production_since: str | None
    promotions: list[PromotionView]
    versions: list[VersionSummary]
    state: State


class CategoryView(msgspec.Struct, frozen=True):
    code: str
    label: str


class AttributeView(msgspec.Struct, frozen=True):
    name: str
    label: str
    kind: str
    """"category", "integer" or "number"."""
    unit: str | None
    minimum: int | float | None
    maximum: int | float | None
    categories: list[CategoryView]
    protected: bool


class Sentence(msgspec.Struct, frozen=True):
    """One line of the manifest in words: a heading and a sentence a non-programmer reads."""

    heading: str
    text: str


class CheckView(msgspec.Struct, frozen=True):
    name: str
    status: str
    """"passed", "failed", "skipped" or "failed-dependency"."""
    passed: bool
    detail: str
    rule: str


class ValidationReportView(msgspec.Struct, frozen=True):
    """The validation report the registry stored when it registered the version."""

    sha256: str | None
    validated_at: str | None
    validator: str | None
    passed: bool | None
    checks: list[CheckView]
    report: ValidationReport | None
    """The whole document (reason frequencies, output distribution...); None if unusable."""
    state: State
    """Green: the document hashes to what the verified registration record names."""


class ModelDetail(msgspec.Struct, frozen=True):
    name: str
    version: str
    manifest_sha256: str | None
    artifact_sha256: str | None
    registered_at: str | None
    registered_by: str | None
    production: bool
    promotions: list[PromotionView]
    """The production alias's whole history (every version), oldest first."""
    status_history: list[StatusView]
    validation: StatusView | None
    revoked: StatusView | None
    serving: str | None
    description: str | None
    card: ModelCard | None
    output: OutputSpec | None
    decision: DecisionRule | None
    attributes: list[AttributeView]
    withheld: list[WithheldAttribute]
    explainer: ExplainerSettings | None
    runtime: RuntimeSettings | None
    tolerance: ReplayTolerance | None
    training: TrainingProvenance | None
    in_words: list[Sentence]
    validation_report: ValidationReportView | None
    """None when the registry holds no report for the version (registered before
    validation, or without a registry chain)."""
    state: State


# --- the registry chain -------------------------------------------------------------------------


class _Ledger:
    """The registry chain's records, each kept only if its signature verifies with the key
    the trust root certified for it (without a policy: kept, and the ledger says so)."""

    def __init__(self, store: WormStore, trust: TrustPolicy | None) -> None:
        self.registrations: dict[tuple[str, str], RegistryBody] = {}
        self.objects: dict[str, tuple[str, RegistryBody]] = {}
        """alias or status key -> (sha256 the record names, record)."""
        self.problems: list[str] = []
        if trust is None:
            self.problems.append("no trust policy: the registry records are not verified")
        anchors = load_anchors(store, REGISTRY_CHAIN, trust) if trust is not None else None
        if anchors is not None:
            self.problems.extend(message for _, _, message in anchors.problems)
        for key in store.list_keys(layout.segments_prefix(REGISTRY_CHAIN)):
            try:
                lines = iter_lines(store.get(key))
            except StoreUnavailable:
                raise
            except (StoreError, RecordError) as exc:
                self.problems.append(f"{key}: {exc}")
                continue
            for line in lines:
                try:
                    raw, signature = split_line(line)
                    record = decode_record(raw)
                except RecordError as exc:
                    self.problems.append(f"{key}: {exc}")
                    continue
                if not isinstance(record.body, RegistryBody):
                    continue
                where = f"{REGISTRY_CHAIN}/{record.seq}"
                if anchors is not None:
                    cert = anchors.for_key(record.key_id, record.seq)
                    public = (
                        Ed25519PublicKey.from_public_bytes(anchors.public_key(cert.from_seq, cert.key.key_id))
                        if cert
                        else None
                    )
                    if public is None or not verify_record_signature(public, hashlib.sha256(raw).digest(), signature):
                        self.problems.append(f"record {where} does not verify with a root-certified key: ignored")
                        continue
                self._add(record.body)

    def _add(self, body: RegistryBody) -> None:
        if body.event == "registration":
            self.registrations.setdefault((body.model.name, body.model.version), body)
        elif body.alias_key and body.alias_sha256:
            self.objects[body.alias_key] = (body.alias_sha256, body)
        elif body.status_key and body.status_sha256:
            self.objects[body.status_key] = (body.status_sha256, body)

    def names(self, key: str, event: msgspec.Struct) -> RegistryBody | None:
        """The record naming the object at ``key`` whose stored bytes are ``event``'s canonical form."""
        found = self.objects.get(key)
        if found is None or found[0] != hashlib.sha256(canonical_bytes(event)).hexdigest():
            return None
        return found[1]


# --- reading one model ------------------------------------------------------------------------


def _promotions(registry: Registry, name: str, ledger: _Ledger) -> tuple[list[PromotionView], list[str]]:
    problems: list[str] = []
    views = []
    for event in registry.alias_history(name, PRODUCTION):
        record = ledger.names(_alias_key(name, event), event)
        if record is None:
            problems.append(f"promotion {event.sequence} ({event.version}) is named by no verified registry record")
        views.append(
            PromotionView(
                version=event.version,
                sequence=event.sequence,
                at=event.promoted_at,
                by=event.promoted_by,
                reason=record.reason if record else None,
                recorded=record is not None,
            )
        )
    if len(views) != len(list(registry.store.list_keys(alias_prefix(name, PRODUCTION)))):
        problems.append("an alias object is not a promotion event")
    return views, problems


def _alias_key(name: str, event: Promotion) -> str:
    return f"{alias_prefix(name, event.alias)}{event.sequence:08d}.json"


def _statuses(registry: Registry, name: str, version: str, ledger: _Ledger) -> tuple[list[StatusView], list[str]]:
    problems: list[str] = []
    views = []
    for event in registry.status_history(name, version):
        record = ledger.names(_status_key(event), event)
        if record is None:
            problems.append(f"status {event.sequence} ({event.status}) is named by no verified registry record")
        views.append(
            StatusView(
                status=event.status,
                sequence=event.sequence,
                at=event.at,
                by=event.by,
                note=event.note,
                revocation=event.status == REVOKED,
                recorded=record is not None,
            )
        )
    if len(views) != len(list(registry.store.list_keys(status_prefix(name, version)))):
        problems.append("a status object is not a status event of this version")
    return views, problems


def _status_key(event: StatusEvent) -> str:
    return f"{status_prefix(event.name, event.version)}{event.sequence:08d}.json"


def _serving(engine: Engine | None, name: str, version: str) -> str | None:
    if engine is None:
        return None
    if (name, version) in engine.loaded_versions():
        return "loaded"
    failure = engine.failures().get((name, version))
    return f"failed to load: {failure.reason}" if failure is not None else "not loaded"


class _Version:
    """What the inventory and the detail page share about one version."""

    def __init__(self, registry: Registry, name: str, version: str, ledger: _Ledger, production: str | None) -> None:
        self.problems: list[str] = []
        self.manifest: Manifest | None = None
        self.manifest_bytes: bytes | None = None
        try:
            self.manifest_bytes = registry.manifest_bytes(name, version)
            self.manifest = registry.manifest(name, version)
        except StoreUnavailable:
            raise
        except (ManifestError, RegistryError, StoreError) as exc:
            self.problems.append(f"the stored manifest cannot be read: {exc}")
        self.statuses, problems = _statuses(registry, name, version, ledger)
        self.problems += problems
        self.registration = ledger.registrations.get((name, version))
        if self.registration is None:
            self.problems.append("its registration is named by no verified registry record")
        elif (
            self.manifest_bytes is not None
            and hashlib.sha256(self.manifest_bytes).hexdigest() != self.registration.manifest_sha256
        ):
            self.problems.append("the stored manifest is not the one its registration record names")
        validation = [s for s in self.statuses if s.status in VALIDATION_STATUSES]
        self.validation = validation[-1] if validation else None
        self.revoked = next((s for s in self.statuses if s.revocation), None)
        self.production = production == version

    def state(self, ledger: _Ledger, *more: str) -> State:
        return _state([*ledger.problems, *self.problems, *more])


def _state(problems: list[str]) -> State:
    if problems:
        return State(False, "; ".join(dict.fromkeys(problems)))
    return State(True, "every registration, promotion and status event is a signed registry record")


def _production(promotions: list[PromotionView]) -> PromotionView | None:
    return promotions[-1] if promotions else None


# --- the inventory --------------------------------------------------------------------------------


def model_inventory(
    registry: Registry, engine: Engine | None = None, *, trust: TrustPolicy | None = None
) -> list[ModelEntry]:
    """Every registered model with its versions, production alias and its history.

    ``engine``: the gateway's model cache, to say which versions are loaded here.
    ``trust``: the policy the registry chain's records are verified with (None: nothing
    is verified and every entry is red). Store failures other than an unreachable store
    become red states."""
    ledger = _Ledger(registry.store, trust)
    entries = []
    for name in registry.names():
        promotions, problems = _promotions(registry, name, ledger)
        current = _production(promotions)
        versions = []
        for version in registry.versions(name):
            found = _Version(registry, name, version, ledger, current.version if current else None)
            versions.append(
                VersionSummary(
                    version=version,
                    description=(
                        found.manifest.description or (found.manifest.card.purpose if found.manifest.card else "")
                    )
                    if found.manifest
                    else None,
                    registered_at=found.registration.at if found.registration else None,
                    registered_by=found.registration.by if found.registration else None,
                    production=found.production,
                    validation=found.validation,
                    revoked=found.revoked,
                    serving=_serving(engine, name, version),
                    state=found.state(ledger),
                )
            )
        reds = [*ledger.problems, *problems, *(f"{v.version}: {v.state.reason}" for v in versions if not v.state.ok)]
        entries.append(
            ModelEntry(
                name=name,
                production=current.version if current else None,
                production_since=current.at if current else None,
                promotions=promotions,
                versions=versions,
                state=_state(reds),
            )
        )
    return entries


def model_detail(
    registry: Registry,
    name: str,
    version: str,
    engine: Engine | None = None,
    *,
    trust: TrustPolicy | None = None,
) -> ModelDetail:
    """One version: its standing, model card, manifest in words and validation report.

    Raises :class:`UnknownModel` for a model or version that is not registered."""
    if version not in registry.versions(name):
        raise UnknownModel(f"no model {name}:{version} is registered")
    ledger = _Ledger(registry.store, trust)
    promotions, problems = _promotions(registry, name, ledger)
    current = _production(promotions)
    found = _Version(registry, name, version, ledger, current.version if current else None)
    report = _report(registry, name, version, found.registration)
    manifest = found.manifest
    report_problems = (
        [f"validation report: {report.state.reason}"] if report is not None and not report.state.ok else []
    )
    return ModelDetail(
        name=name,
        version=version,
        manifest_sha256=hashlib.sha256(found.manifest_bytes).hexdigest() if found.manifest_bytes else None,
        artifact_sha256=manifest.artifact_sha256 if manifest else None,
        registered_at=found.registration.at if found.registration else None,
        registered_by=found.registration.by if found.registration else None,
        production=found.production,
        promotions=promotions,
        status_history=found.statuses,
        validation=found.validation,
        revoked=found.revoked,
        serving=_serving(engine, name, version),
        description=manifest.description if manifest else None,
        card=manifest.card if manifest else None,
        output=manifest.output if manifest else None,
        decision=manifest.decision if manifest else None,
        attributes=[_attribute(spec) for spec in manifest.inputs] if manifest else [],
        withheld=list(manifest.withheld) if manifest else [],
        explainer=manifest.explainer if manifest else None,
        runtime=manifest.runtime if manifest else None,
        tolerance=manifest.tolerance if manifest else None,
        training=manifest.training if manifest else None,
        in_words=in_words(manifest) if manifest else [],
        validation_report=report,
        state=found.state(ledger, *problems, *report_problems),
    )


def _attribute(spec) -> AttributeView:  # noqa: ANN001 - gateway.schema.AttributeSpec
    labels = spec.category_labels or {}
    return AttributeView(
        name=spec.name,
        label=spec.label,
        kind=spec.kind,
        unit=spec.unit,
        minimum=spec.minimum,
        maximum=spec.maximum,
        categories=[CategoryView(str(code), labels.get(str(code), str(code))) for code in spec.categories or ()],
        protected=spec.protected,
    )


def _report(
    registry: Registry, name: str, version: str, registration: RegistryBody | None
) -> ValidationReportView | None:
    """The stored validation report, held to the hash its registration record names."""
    try:
        data = registry.validation_report(name, version)
    except StoreUnavailable:
        raise
    except (RegistryError, StoreError) as exc:
        return _bad_report(None, f"the validation report cannot be read: {exc}")
    if data is None:
        return None
    digest = hashlib.sha256(data).hexdigest()
    if registration is None or registration.validation_sha256 != digest:
        return _bad_report(digest, "no verified registration record names this validation report")
    try:
        report = decode_report(data)
    except msgspec.MsgspecError as exc:
        return _bad_report(digest, f"the validation report is not a verdict.validation/v1 document: {exc}")
    checks = [CheckView(c.name, c.status, c.passed, c.detail, c.rule) for c in report.checks]
    failed = [c.name for c in report.checks if not c.passed]
    return ValidationReportView(
        sha256=digest,
        validated_at=report.validated_at,
        validator=report.validator,
        passed=report.passed,
        checks=checks,
        report=report,
        state=State(True, f"all {len(checks)} checks passed or were skipped on purpose")
        if report.passed and not failed
        else State(False, f"failed: {', '.join(failed) or 'the report says it did not pass'}"),
    )


def _bad_report(digest: str | None, reason: str) -> ValidationReportView:
    return ValidationReportView(digest, None, None, None, [], None, State(False, reason))


# --- the manifest in words -----------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.4g}"


def _listing(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def in_words(manifest: Manifest) -> list[Sentence]:
    """The manifest as (heading, sentence) pairs a non-programmer reads, in the order a
    model-risk reviewer asks: what it is for, what it decides, from what, how it explains,
    how it was trained, and what a replay must reproduce."""
    out: list[Sentence] = []
    card = manifest.card
    if card is not None:
        out.append(Sentence("Purpose", card.purpose))
        out.append(Sentence("Owner", card.owner + (f" ({card.contact})" if card.contact else "")))
        out.append(Sentence("Intended use", card.intended_use))
        out.append(Sentence("Limitations", card.limitations))
        regulations = f"; regulations: {', '.join(card.regulations)}" if card.regulations else ""
        out.append(Sentence("Risk tier", f"{card.risk_tier}{regulations}"))
    elif manifest.description:
        out.append(Sentence("Purpose", manifest.description))
    output, rule = manifest.output, manifest.decision
    quantity = output.description[:1].lower() + output.description[1:] if output.description else output.name
    if output.space == "probability":
        out.append(Sentence("Output", f"The model gives the {quantity.removeprefix('the ')}, between 0 and 1."))
    else:
        out.append(Sentence("Output", f"The model gives a score: {quantity}."))
    threshold = _number(rule.threshold)
    out.append(
        Sentence(
            "Decision",
            f'The decision is "{rule.below}" when the {quantity.removeprefix("the ")} is below {threshold}, '
            f'and "{rule.at_or_above}" when it is {threshold} or more.',
        )
    )
    if rule.rationale:
        out.append(Sentence("Why this threshold", rule.rationale))
    out.append(Sentence("Attributes", _attributes_sentence(manifest)))
    if manifest.withheld:
        left_out = _listing([w.label.lower() if w.label else w.name for w in manifest.withheld])
        reasons = "; ".join(f"{w.label or w.name}: {w.reason}" for w in manifest.withheld if w.reason)
        out.append(Sentence("Left out", f"Leaves out {left_out}" + (f" ({reasons})." if reasons else ".")))
    else:
        out.append(Sentence("Left out", "The manifest names no attribute deliberately left out of the model."))
    explainer = manifest.explainer
    method = "exact Shapley values" if explainer.algorithm == "exact" else "permutation SHAP"
    out.append(
        Sentence(
            "Explanations",
            f"Every decision is explained with {method} against {_plural(explainer.background_rows, 'background row')} "
            f"(at most {explainer.max_evaluations:,} model evaluations each); the top {explainer.top_reasons} "
            "reasons are given, and contributions must add up to the output within "
            f"{_number(explainer.additivity_epsilon)}.",
        )
    )
    out.append(Sentence("Training", _training_sentence(manifest.training)))
    if manifest.training.metrics:
        measured = ", ".join(f"{k} {_number(v)}" for k, v in sorted(manifest.training.metrics.items()))
        out.append(Sentence("Measured", f"When it was trained: {measured}."))
    tolerance = manifest.tolerance
    out.append(
        Sentence(
            "Replay",
            f"A replay must reproduce every score and contribution within {_number(tolerance.absolute)} plus "
            f"{_number(tolerance.relative)} of its size, a tolerance fixed when the model was registered.",
        )
    )
    runtime = manifest.runtime
    out.append(
        Sentence(
            "Runtime",
            f"Runs in {runtime.dtype} on {_plural(runtime.threads, 'thread')} at fixed shapes "
            f"({runtime.score_bucket} rows per scoring pass, {runtime.explain_bucket} per explanation pass), "
            "so the same request gives the same bits.",
        )
    )
    return out


def _attributes_sentence(manifest: Manifest) -> str:
    inputs = manifest.inputs
    categories = sum(1 for spec in inputs if spec.kind == "category")
    sentence = (
        f"Uses {_plural(len(inputs), 'attribute')}: {categories} categorical and {len(inputs) - categories} numeric."
    )
    protected = [spec.label for spec in inputs if spec.protected]
    if protected:
        sentence += (
            f" {_listing(protected)} {'is a' if len(protected) == 1 else 'are'} protected "
            f"characteristic{'s' if len(protected) != 1 else ''}: promoted only with a recorded justification."
        )
    else:
        sentence += " None is marked as a protected characteristic."
    return sentence


def _training_sentence(training: TrainingProvenance) -> str:
    dataset = training.dataset
    target = f" to predict {training.target}" if training.target else ""
    return (
        f"Trained{target} on {dataset.title} ({_plural(dataset.rows, 'row')}, licence {dataset.licence}) "
        f"with seed {training.seed}; held-out rows: {training.split}; code commit {training.code_commit}"
        + (f"; packaged by {training.packaged_by}" if training.packaged_by else "")
        + "."
    )

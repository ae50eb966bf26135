"""Manifest rules that the manifest's own decoder cannot know: they depend on this
code's explainer, reasons and runtime.

Why at validation and not in gateway.manifest: ``decode_manifest`` must keep
loading manifests registered years ago (replay), while the rules here are what
*this* code can serve: its seed policy, its explanation budget arithmetic, the
fields its reason templates are rendered with. A manifest that breaks one of
them would decode, register, and then fail every decision (or, for a template
typo, every adverse-action notice), so it is refused at the gate instead.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable

from verdict.gateway import explanation
from verdict.gateway.manifest import ExplainerSettings, Manifest
from verdict.gateway.validation.report import Check

__all__ = ["TEMPLATE_FIELDS", "TEMPLATE_KEYS", "manifest_checks"]

TEMPLATE_KEYS = ("decreased_risk", "increased_risk")
TEMPLATE_FIELDS = ("label", "value")
_EXACT_AFFORDABLE = explanation.MAX_EXACT_ATTRIBUTES


def manifest_checks(manifest: Manifest) -> list[Check]:
    return [
        _check("manifest_inputs", "inputs", _input_problems(manifest)),
        _check("manifest_explainer", "explainer", _explainer_problems(manifest)),
        _check("manifest_reasons", "explainer.reason_templates", _template_problems(manifest)),
        _check("manifest_decision", "decision", _decision_problems(manifest)),
        _check("manifest_runtime", "runtime", _runtime_problems(manifest)),
    ]


Problem = tuple[str, str]  # (rule, sentence)


def _check(name: str, scope: str, problems: list[Problem]) -> Check:
    if problems:
        return Check(
            name,
            False,
            "; ".join(sentence for _, sentence in problems),
            rule=problems[0][0],
            measured={"problems": len(problems)},
        )
    return Check(name, True, f"{scope}: every rule holds", rule=scope)


def _input_problems(manifest: Manifest) -> list[Problem]:
    problems: list[Problem] = []
    for spec in manifest.inputs:
        where = f"inputs.{spec.name}"
        if not spec.label.strip():
            problems.append(("inputs.label", f"{where}.label is empty: reasons name the attribute by its label"))
        if spec.kind == "category":
            codes = spec.categories or ()
            if len(set(codes)) != len(codes):
                problems.append(("inputs.categories", f"{where}.categories repeats a code: {list(codes)}"))
            if len({type(code) for code in codes}) > 1:
                problems.append(("inputs.categories", f"{where}.categories mixes strings and numbers: {list(codes)}"))
            unknown = sorted(set(spec.category_labels or {}) - {str(code) for code in codes})
            if unknown:
                problems.append(
                    ("inputs.category_labels", f"{where}.category_labels names codes not in categories: {unknown}")
                )
            continue
        low, high = spec.minimum, spec.maximum
        if low is None or high is None:
            continue  # decode_manifest refuses these
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            problems.append(("inputs.range", f"{where}: minimum {low!r} must be finite and <= maximum {high!r}"))
        elif spec.kind == "integer" and math.ceil(low) > math.floor(high):
            problems.append(("inputs.range", f"{where}: no whole number lies in {low!r}..{high!r}"))
    return problems


def _explainer_problems(manifest: Manifest) -> list[Problem]:
    settings, d = manifest.explainer, len(manifest.inputs)
    problems: list[Problem] = []
    if settings.seed_policy != explanation.SEED_POLICY:
        problems.append(
            (
                "explainer.seed_policy",
                f"explainer.seed_policy is {settings.seed_policy!r}; this code derives seeds as "
                f"{explanation.SEED_POLICY!r} (explanation.SEED_POLICY) and refuses to explain under another",
            )
        )
    if settings.background_rows < 1:
        problems.append(("explainer.background_rows", "explainer.background_rows must be >= 1"))
    if settings.algorithm == "exact" and d > _EXACT_AFFORDABLE:
        problems.append(
            (
                "explainer.algorithm",
                f"explainer.algorithm 'exact' is limited to {_EXACT_AFFORDABLE} attributes "
                f"(explanation.MAX_EXACT_ATTRIBUTES), the model has {d}: use 'permutation'",
            )
        )
    if settings.algorithm == "certified":
        problems += _certification_problems(settings)
    elif settings.certification is not None:
        problems.append(
            ("explainer.certification", "explainer.certification is only for explainer.algorithm 'certified'")
        )
    if settings.algorithm == "permutation" and settings.permutations < 1:
        problems.append(
            (
                "explainer.permutations",
                f"explainer.permutations is {settings.permutations}; 'permutation' needs >= 1 antithetic pair",
            )
        )
    if settings.background_rows >= 1 and d >= 1 and not problems:
        needed = explanation.worst_case_rows(settings, d)
        if settings.max_evaluations < needed:
            problems.append(
                (
                    "explainer.max_evaluations",
                    f"explainer.max_evaluations {settings.max_evaluations} is below the {needed} model rows that "
                    f"{settings.algorithm} over {d} attributes and {settings.background_rows} background rows "
                    f"needs per explanation (explanation.rows_needed; explanation.default_budget picks a budget)",
                )
            )
    epsilon = settings.additivity_epsilon
    if not (math.isfinite(epsilon) and epsilon > 0):
        problems.append(
            ("explainer.additivity_epsilon", f"explainer.additivity_epsilon {epsilon!r} must be finite and > 0")
        )
    if not 1 <= settings.top_reasons <= d:
        problems.append(
            ("explainer.top_reasons", f"explainer.top_reasons {settings.top_reasons} must be 1..{d} (the attributes)")
        )
    return problems


def _certification_problems(settings: ExplainerSettings) -> list[Problem]:
    c = settings.certification
    if c is None:
        return [("explainer.certification", "explainer.algorithm 'certified' needs explainer.certification")]
    problems: list[Problem] = []
    if settings.permutations < 2:
        problems.append(
            (
                "explainer.permutations",
                f"explainer.permutations is {settings.permutations}; 'certified' needs >= 2 pairs per background row "
                f"in its first round (one pair cannot estimate its own error)",
            )
        )
    if c.max_pairs < settings.permutations:
        problems.append(
            (
                "explainer.certification.max_pairs",
                f"certification.max_pairs {c.max_pairs} is below explainer.permutations",
            )
        )
    for name, value in (("z", c.z), ("target_error", c.target_error)):
        if not (math.isfinite(value) and value > 0):
            problems.append(
                (f"explainer.certification.{name}", f"certification.{name} {value!r} must be finite and > 0")
            )
    if c.exact_rows < 0:
        problems.append(("explainer.certification.exact_rows", "certification.exact_rows must be >= 0 (0: never)"))
    return problems


def _template_problems(manifest: Manifest) -> list[Problem]:
    templates = manifest.explainer.reason_templates
    problems: list[Problem] = []
    keys = set(templates)
    if missing := sorted(set(TEMPLATE_KEYS) - keys):
        problems.append(("reason_templates.keys", f"explainer.reason_templates lacks {', '.join(missing)}"))
    if extra := sorted(keys - set(TEMPLATE_KEYS)):
        problems.append(
            (
                "reason_templates.keys",
                f"explainer.reason_templates has unknown key(s) {', '.join(map(repr, extra))}; the keys are "
                f"exactly {' and '.join(TEMPLATE_KEYS)}",
            )
        )
    for key in sorted(keys & set(TEMPLATE_KEYS)):
        problems += _one_template(key, templates[key])
    return problems


def _one_template(key: str, template: str) -> list[Problem]:
    where = f"explainer.reason_templates.{key}"
    if not template.strip():
        return [("reason_templates.empty", f"{where} is empty")]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [("reason_templates.syntax", f"{where} ({template!r}) is not a format string: {exc}")]
    problems: list[Problem] = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            allowed = " and ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            shown = "{" + field + "}" if field else "{} (a positional field)"
            problems.append(
                ("reason_templates.fields", f"{where} ({template!r}) uses {shown}; the only fields are {allowed}")
            )
    if not problems:
        render: Callable[..., str] = template.format
        try:
            render(label="Label", value="value")
        except (ValueError, KeyError, IndexError) as exc:
            problems.append(("reason_templates.render", f"{where} ({template!r}) cannot be rendered: {exc}"))
    return problems


def _decision_problems(manifest: Manifest) -> list[Problem]:
    rule = manifest.decision
    problems: list[Problem] = []
    for field in ("at_or_above", "below"):
        if not getattr(rule, field).strip():
            problems.append(("decision.labels", f"decision.{field} is empty: the record names the decision by it"))
    if rule.at_or_above.strip() and rule.at_or_above.strip() == rule.below.strip():
        problems.append(
            ("decision.labels", f"decision.at_or_above and decision.below are both {rule.at_or_above!r}: no decision")
        )
    return problems


def _runtime_problems(manifest: Manifest) -> list[Problem]:
    runtime, tolerance = manifest.runtime, manifest.tolerance
    problems: list[Problem] = []
    if runtime.score_bucket > runtime.explain_bucket:
        problems.append(
            (
                "runtime.buckets",
                f"runtime.score_bucket {runtime.score_bucket} exceeds runtime.explain_bucket {runtime.explain_bucket}: "
                f"explanations evaluate many rows per decision, so their bucket is the larger one",
            )
        )
    if not (math.isfinite(tolerance.absolute) and math.isfinite(tolerance.relative)):
        problems.append(("tolerance.finite", "tolerance bounds must be finite: an infinite bound accepts any replay"))
    return problems

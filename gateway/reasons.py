"""Plain-language reasons from a decision's contributions.

Why templates live in the manifest: the wording shown to an applicant is part
of what a model version does. An examiner replaying a 2026 decision must see
the sentence the applicant saw, so the templates are fixed at registration
with the model, not kept in code that changes.

Direction: every model here outputs the probability of the adverse outcome
(bad credit, default), so a positive contribution pushed that probability up
(``increased_risk``) and a negative one pushed it down.

ECOA / Regulation B (12 CFR 1002.9(b)(2)) asks for the specific principal
reasons for an adverse action; its official commentary notes that more than
four reasons is not likely to be helpful, hence at most four.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from verdict.gateway.explanation import ExplanationResult
from verdict.gateway.fidelity import ECOA_MAX_REASONS
from verdict.gateway.manifest import Manifest

__all__ = [
    "DEFAULT_REASON_TEMPLATES",
    "ECOA_MAX_REASONS",
    "Reason",
    "ReasonTemplateError",
    "principal_reasons_for_denial",
    "reasons",
]

Direction = Literal["increased_risk", "decreased_risk"]
DEFAULT_REASON_TEMPLATES: dict[str, str] = {
    "increased_risk": "{label}: {value} — increased risk",
    "decreased_risk": "{label}: {value} — decreased risk",
}


class ReasonTemplateError(ValueError):
    """A manifest's reason template cannot be rendered; names the template."""


class Reason(msgspec.Struct, frozen=True):
    attribute: str
    label: str
    value: str  # the applicant's value in words, e.g. "48 months"
    direction: Direction
    contribution: float
    text: str


def reasons(
    manifest: Manifest, attributes: Mapping[str, Any], result: ExplanationResult, *, top: int | None = None
) -> list[Reason]:
    """Attributes that moved the score, largest |contribution| first (ties in
    schema order); ``top`` defaults to the manifest's ``top_reasons``.
    Attributes with a contribution of exactly zero moved nothing and are no reason."""
    limit = manifest.explainer.top_reasons if top is None else top
    return _ranked(manifest, attributes, result, lambda c: c != 0.0, limit)


def principal_reasons_for_denial(
    manifest: Manifest, attributes: Mapping[str, Any], result: ExplanationResult
) -> list[Reason]:
    """The (at most four) attributes that raised the risk most: an adverse-action notice's principal reasons."""
    return _ranked(manifest, attributes, result, lambda c: c > 0.0, ECOA_MAX_REASONS)


def _ranked(
    manifest: Manifest,
    attributes: Mapping[str, Any],
    result: ExplanationResult,
    keep: Callable[[float], bool],
    limit: int,
) -> list[Reason]:
    # Only the reasons returned are rendered: on the decision path, rendering
    # every attribute cost more than ranking them.
    contributions = result.contributions
    order = sorted(range(len(manifest.inputs)), key=lambda i: (-abs(contributions[manifest.inputs[i].name]), i))
    kept = [manifest.inputs[i] for i in order if keep(contributions[manifest.inputs[i].name])][:limit]
    return [_reason(manifest, spec, attributes[spec.name], contributions[spec.name]) for spec in kept]


def _reason(manifest: Manifest, spec, value: Any, contribution: float) -> Reason:  # noqa: ANN001
    direction: Direction = "increased_risk" if contribution > 0 else "decreased_risk"
    described = spec.describe(value)
    template = manifest.explainer.reason_templates.get(direction)
    if template is None:
        raise ReasonTemplateError(f"{manifest.ref}: explainer.reason_templates has no {direction!r} template")
    try:
        text = template.format(label=spec.label, value=described, attribute=spec.name)
    except (KeyError, IndexError, ValueError) as exc:
        raise ReasonTemplateError(
            f"{manifest.ref}: reason template {direction!r} ({template!r}) cannot be rendered: {exc!r}"
        ) from None
    return Reason(spec.name, spec.label, described, direction, contribution, text)

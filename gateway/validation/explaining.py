"""Explanations of held-out rows: additive, close to exact, and which attributes they name.

Why validate explanations at registration: every decision is explained, and a
decision whose explanation does not add up to its score fails closed; a model
whose explanations cannot add up would fail every request in production.
Sampled contributions are compared with exact Shapley values over the same
background where enumeration is affordable, through the explainer itself with
an exact-algorithm copy of the manifest (no second implementation of the
maths). Which attributes become principal reasons, and how often a protected
one does, is measured for the reviewer; it informs, it does not refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import numpy as np

from verdict.gateway import explanation
from verdict.gateway.explanation import AdditivityError, ExplainerConfigError, ExplanationResult
from verdict.gateway.fidelity import principal_set, top_set
from verdict.gateway.manifest import Manifest
from verdict.gateway.model_runtime import ModelRuntime
from verdict.gateway.reasons import ECOA_MAX_REASONS, ReasonTemplateError, principal_reasons_for_denial, reasons
from verdict.gateway.validation.report import Check, ProtectedAmongReasons, ReasonFrequency, measure
from verdict.gateway.validation.rows import ProbeRows

__all__ = [
    "EXACT_ATTRIBUTES",
    "Explained",
    "additivity_check",
    "exact_check",
    "reasons_check",
]

MIN_EXPLAINED = 16  # explained rows, at least (when the model directory has that many)
MAX_EXPLAINED = 64  # at most, within EXPLAIN_ROW_BUDGET model rows
EXPLAIN_ROW_BUDGET = 1 << 20
EXACT_ATTRIBUTES = 12  # exact Shapley values are computed for comparison up to this many attributes
EXACT_ROW_BUDGET = 1 << 21  # model rows the exact comparison may spend


class Explained(NamedTuple):
    rows: list[dict[str, Any]]
    labels: list[str]
    x: np.ndarray
    scores: np.ndarray
    seeds: list[int]
    results: list[ExplanationResult]


class _WithManifest:
    """A loaded runtime seen under another manifest (an exact-algorithm copy): the explainer
    reads its settings from ``manifest``; the model and its bits are the same."""

    def __init__(self, runtime: ModelRuntime, manifest: Manifest) -> None:
        self._runtime, self.manifest = runtime, manifest

    def evaluate_for_explanation(self, x: np.ndarray, explain_bucket: int) -> np.ndarray:
        return self._runtime.evaluate_for_explanation(x, explain_bucket)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def additivity_check(
    runtime: ModelRuntime, manifest: Manifest, background: bytes, probes: ProbeRows
) -> tuple[Explained | None, Check]:
    """Explain the first probe rows (held-out first) with the manifest's own explainer at its
    explain bucket; base value + contributions must reproduce the decision score."""
    name = "additivity"
    epsilon = manifest.explainer.additivity_epsilon
    try:
        explainer = explanation.Explainer(runtime, background, explain_bucket=manifest.runtime.explain_bucket)
    except ExplainerConfigError as exc:
        return None, Check(name, False, f"the explainer refuses the manifest: {exc}", rule="additivity.explainer")
    except Exception as exc:  # noqa: BLE001 - evaluating the background runs the user's graph
        return None, Check(name, False, f"evaluating the background raised {_error(exc)}", rule="additivity.run")
    n = min(len(probes.rows), max(MIN_EXPLAINED, min(MAX_EXPLAINED, EXPLAIN_ROW_BUDGET // explainer.max_evaluations)))
    x = probes.matrix[:n]
    seeds = [explanation.seed_for(f"validation-{i}") for i in range(n)]
    measured: dict[str, float | int | str] = {
        "rows": n,
        "epsilon": epsilon,
        "explain_bucket": explainer.explain_bucket,
        "method": explainer.method,
    }
    try:
        scores = runtime.score_matrix(x, manifest.runtime.score_bucket)[0]
        results = explainer.explain(x, scores, seeds)
    except AdditivityError:
        return None, _not_additive(explainer, x, scores, seeds, probes.labels, epsilon, measured)
    except Exception as exc:  # noqa: BLE001 - explaining runs the user's graph
        return None, Check(name, False, f"explaining raised {_error(exc)}", rule="additivity.run", measured=measured)
    worst = max(r.additivity_error for r in results)
    measured["max_additivity_error"] = measure(worst)
    measured["evaluations_per_row_max"] = max(r.evaluations for r in results)
    explained = Explained(probes.rows[:n], probes.labels[:n], x, scores, seeds, results)
    return explained, Check(
        name,
        True,
        f"{n} explanations ({explainer.method}, bucket {explainer.explain_bucket}) add up to their decision "
        f"scores: max |base + sum - score| = {worst:.3g} <= epsilon {epsilon:g}",
        rule="additivity.epsilon",
        measured=measured,
    )


def _not_additive(
    explainer: explanation.Explainer,
    x: np.ndarray,
    scores: np.ndarray,
    seeds: Sequence[int],
    labels: Sequence[str],
    epsilon: float,
    measured: dict[str, float | int | str],
) -> Check:
    """Explain row by row to say how many fail and which is worst."""
    failing: list[tuple[int, AdditivityError]] = []
    for i in range(len(x)):
        try:
            explainer.explain(x[i : i + 1], scores[i : i + 1], seeds[i : i + 1])
        except AdditivityError as exc:
            failing.append((i, exc))
    worst_i, worst = max(failing, key=lambda item: abs(item[1].total - item[1].score))
    gap = abs(worst.total - worst.score)
    measured["not_additive"] = len(failing)
    measured["max_additivity_error"] = measure(gap)
    return Check(
        "additivity",
        False,
        f"{len(failing)} of {len(x)} explanations are not additive: base value + contributions misses the "
        f"decision score by more than epsilon {epsilon:g} (worst {labels[worst_i]}: {worst.total!r} vs "
        f"{worst.score!r}, |difference| {gap:.3g}); such decisions fail closed: the model's outputs at the "
        f"score and explain buckets differ, or epsilon is too tight for its output scale",
        rule="additivity.epsilon",
        measured=measured,
    )


def exact_check(runtime: ModelRuntime, manifest: Manifest, background: bytes, explained: Explained) -> Check:
    """The manifest's contributions against exact Shapley values over the same background."""
    name = "sampled_vs_exact"
    d, settings = len(manifest.inputs), manifest.explainer
    if d > EXACT_ATTRIBUTES:
        return Check(
            name,
            True,
            f"skipped: {d} attributes; exact Shapley values need 2^{d} coalitions per row, compared up to "
            f"{EXACT_ATTRIBUTES} attributes",
            status="skipped",
            measured={"attributes": d},
        )
    needed = explanation.rows_needed("exact", d, settings.background_rows, 0)
    exact_manifest = msgspec.structs.replace(
        manifest,
        explainer=msgspec.structs.replace(
            settings, algorithm="exact", permutations=0, max_evaluations=needed, certification=None
        ),
    )
    manifest_exact = settings.algorithm == "exact"
    m = min(len(explained.rows), max(1, EXACT_ROW_BUDGET // needed))
    try:
        # The manifest's own exact explanations are checked against every coalition evaluated
        # again without skipping repeated rows: the same numbers by an independent path.
        exact = explanation.Explainer(
            _WithManifest(runtime, exact_manifest),
            background,
            explain_bucket=manifest.runtime.explain_bucket,
            skip_repeated_rows=not manifest_exact,
        ).explain(explained.x[:m], explained.scores[:m], explained.seeds[:m])
    except AdditivityError as exc:
        return Check(name, not manifest_exact, f"exact explanations are not additive: {exc}", rule="exact.additivity")
    except Exception as exc:  # noqa: BLE001 - explaining runs the user's graph
        return Check(name, False, f"exact explanations raised {_error(exc)}", rule="exact.run")
    names = [spec.name for spec in manifest.inputs]
    sampled = np.array([[r.contributions[a] for a in names] for r in explained.results[:m]])
    truth = np.array([[r.contributions[a] for a in names] for r in exact])
    error = np.abs(sampled - truth)
    top = settings.top_reasons
    try:
        same_top, same_principal = _agreement(manifest, explained, exact, m, top)
        agreement = (
            f"top-{top} reason sets agree on {same_top} of {m} rows, principal reasons on {same_principal} of {m}"
        )
    except ReasonTemplateError:  # reported by manifest_reasons; the numbers still compare
        same_top = same_principal = -1
        agreement = "reasons not compared (the reason templates do not render: see manifest_reasons)"
    measured: dict[str, float | int | str] = {
        "rows": m,
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "top_reasons_agree": same_top,
        "principal_reasons_agree": same_principal,
        "exact_rows_per_explanation": needed,
    }
    if manifest_exact:
        epsilon = settings.additivity_epsilon
        if not float(error.max()) <= epsilon:
            return Check(
                name,
                False,
                f"the manifest explains exactly, yet its contributions differ from every coalition evaluated "
                f"again by up to {float(error.max()):.3g} > epsilon {epsilon:g} on {m} rows: the model's bits "
                f"depend on which rows share a forward pass",
                rule="exact.agreement",
                measured=measured,
            )
        return Check(
            name,
            True,
            f"the manifest explains exactly; evaluating every coalition again without skipping repeated rows "
            f"agrees on {m} rows (max |difference| {float(error.max()):.3g})",
            rule="exact.agreement",
            measured=measured,
        )
    if settings.algorithm == "certified":
        return _certified_check(name, explained, exact, m, top, measured)
    return Check(
        name,
        True,
        f"informational: sampled ({settings.permutations} antithetic permutation pair(s)) against exact Shapley "
        f"values over the same background on {m} rows: max |error| {float(error.max()):.3g}, mean "
        f"{float(error.mean()):.3g}; {agreement}",
        rule="exact.informational",
        measured=measured,
    )


def _certified_check(
    name: str,
    explained: Explained,
    exact: list[ExplanationResult],
    m: int,
    top: int,
    measured: dict[str, float | int | str],
) -> Check:
    """A certified explainer may leave reasons uncertified, never certify wrong ones: a certified
    row whose reason lists differ from the exact values' fails validation."""
    certified = silent = 0
    for mine, theirs in zip(explained.results[:m], exact, strict=True):
        if mine.fidelity is None or not mine.fidelity.certified:
            continue
        certified += 1
        a = np.array(list(mine.contributions.values()))
        b = np.array(list(theirs.contributions.values()))
        same = set(principal_set(a)) == set(principal_set(b)) and set(top_set(a, top)) == set(top_set(b, top))
        silent += not same
    measured = {**measured, "certified": certified, "certified_but_different": silent}
    summary = (
        f"certified reasons on {certified} of {m} rows; mean |error| {measured['mean_abs_error']:.3g}, "
        f"max {measured['max_abs_error']:.3g} against exact Shapley values over the same background"
    )
    if silent:
        return Check(
            name,
            False,
            f"{silent} certified reason list(s) differ from the exact values' ({summary}): the certificate "
            f"does not hold for this model",
            rule="exact.certified",
            measured=measured,
        )
    return Check(
        name, True, f"{summary}; every certified list equals the exact one", rule="exact.certified", measured=measured
    )


def _agreement(
    manifest: Manifest, explained: Explained, exact: list[ExplanationResult], m: int, top: int
) -> tuple[int, int]:
    """Rows whose top-``top`` reason sets, and whose principal reason sets, are the same both ways."""
    same_top = same_principal = 0
    for row, mine, theirs in zip(explained.rows[:m], explained.results[:m], exact, strict=True):
        same_top += _attributes(reasons(manifest, row, mine, top=top)) == _attributes(
            reasons(manifest, row, theirs, top=top)
        )
        same_principal += _attributes(principal_reasons_for_denial(manifest, row, mine)) == _attributes(
            principal_reasons_for_denial(manifest, row, theirs)
        )
    return same_top, same_principal


def _attributes(found: Sequence[Any]) -> frozenset[str]:
    return frozenset(reason.attribute for reason in found)


def reasons_check(
    manifest: Manifest, explained: Explained
) -> tuple[ProtectedAmongReasons | None, list[ReasonFrequency], Check]:
    """How often each attribute is among the principal reasons (top increased-risk reasons,
    at most ECOA_MAX_REASONS) of the explained rows, and how often a protected one is."""
    name = "protected_among_reasons"
    specs = manifest.inputs
    principal = dict.fromkeys((s.name for s in specs), 0)
    first = dict.fromkeys(principal, 0)
    protected = [s.name for s in specs if s.protected]
    with_protected = adverse = adverse_with_protected = 0
    try:
        for row, result, score in zip(explained.rows, explained.results, explained.scores, strict=True):
            found = principal_reasons_for_denial(manifest, row, result)
            names = [reason.attribute for reason in found]
            for attribute in names:
                principal[attribute] += 1
            if names:
                first[names[0]] += 1
            is_adverse = float(score) >= manifest.decision.threshold
            hit = any(attribute in protected for attribute in names)
            adverse += is_adverse
            with_protected += hit
            adverse_with_protected += is_adverse and hit
    except ReasonTemplateError as exc:
        return None, [], Check(name, False, str(exc), rule="reasons.render")
    n = len(explained.rows)
    contributions = np.array([[r.contributions[s.name] for s in specs] for r in explained.results])
    mean_abs = np.abs(contributions).mean(axis=0)
    frequency = [
        ReasonFrequency(
            attribute=spec.name,
            label=spec.label,
            protected=spec.protected,
            principal=principal[spec.name],
            first=first[spec.name],
            share=principal[spec.name] / n,
            mean_abs_contribution=float(mean_abs[j]),
        )
        for j, spec in enumerate(specs)
    ]
    frequency.sort(key=lambda f: (-f.principal, -f.mean_abs_contribution, f.attribute))
    summary = ProtectedAmongReasons(
        explained_rows=n,
        adverse_rows=adverse,
        protected_attributes=protected,
        rows_with_protected_reason=with_protected,
        adverse_rows_with_protected_reason=adverse_with_protected,
        share=with_protected / n,
        withheld=list(manifest.withheld),
    )
    withheld = (
        "; withheld from the model: " + ", ".join(f"{w.name} ({w.reason})" for w in manifest.withheld)
        if manifest.withheld
        else ""
    )
    if protected:
        detail = (
            f"informational: protected attribute(s) {', '.join(protected)} among the principal reasons "
            f"(at most {ECOA_MAX_REASONS}) of {with_protected} of {n} explained rows ({adverse_with_protected} of "
            f"{adverse} at or above the threshold){withheld}"
        )
    else:
        detail = f"informational: no model input is marked protected{withheld}"
    measured: dict[str, float | int | str] = {
        "explained_rows": n,
        "adverse_rows": adverse,
        "protected_inputs": len(protected),
        "rows_with_protected_reason": with_protected,
        "withheld": len(manifest.withheld),
    }
    return summary, frequency, Check(name, True, detail, rule="reasons.informational", measured=measured)

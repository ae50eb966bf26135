"""Plain-language reasons: wording from the manifest, values from the schema,
order by size of contribution, and at most four principal reasons for a denial."""

from __future__ import annotations

import msgspec
import pytest

from verdict.gateway.datasets import load_dataset
from verdict.gateway.explanation import Explainer, ExplanationResult, seed_for
from verdict.gateway.reasons import (
    DEFAULT_REASON_TEMPLATES,
    ReasonTemplateError,
    principal_reasons_for_denial,
    reasons,
)
from verdict.gateway.schema import encode_rows


def result_with(manifest, contributions: dict[str, float]) -> ExplanationResult:
    """An explanation with chosen contributions (every other attribute 0)."""
    full = {spec.name: contributions.get(spec.name, 0.0) for spec in manifest.inputs}
    return ExplanationResult(
        method="test",
        output_space="probability",
        base_value=0.3,
        contributions=full,
        seed=1,
        evaluations=1,
        bucket=4096,
        additivity_error=0.0,
    )


@pytest.fixture(scope="module")
def applicant() -> dict:
    return dict(load_dataset("german-credit").rows[0], duration_months=48, checking_account="A14")


def test_reasons_name_label_value_and_direction(german_model, applicant):
    manifest = german_model.manifest
    result = result_with(manifest, {"duration_months": 0.12, "checking_account": -0.05, "age_years": 0.01})
    found = reasons(manifest, applicant, result)
    assert [r.attribute for r in found] == ["duration_months", "checking_account", "age_years"]  # by |contribution|
    duration, checking = found[0], found[1]
    assert duration.text == "Duration of credit: 48 months — increased risk"
    assert (duration.label, duration.value, duration.direction, duration.contribution) == (
        "Duration of credit",
        "48 months",
        "increased_risk",
        0.12,
    )
    assert checking.text == "Status of existing checking account: no checking account — decreased risk"
    assert checking.direction == "decreased_risk"


def test_top_defaults_to_the_manifest_and_zero_is_no_reason(german_model, applicant):
    manifest = german_model.manifest
    contributions = {spec.name: 0.001 * (i + 1) for i, spec in enumerate(manifest.inputs)}
    contributions["job"] = 0.0
    result = result_with(manifest, contributions)
    assert len(reasons(manifest, applicant, result)) == manifest.explainer.top_reasons
    everything = reasons(manifest, applicant, result, top=len(manifest.inputs))
    assert len(everything) == len(manifest.inputs) - 1 and "job" not in {r.attribute for r in everything}


def test_ties_keep_schema_order(german_model, applicant):
    manifest = german_model.manifest
    result = result_with(manifest, {"purpose": 0.02, "credit_history": -0.02, "duration_months": 0.02})
    assert [r.attribute for r in reasons(manifest, applicant, result)] == [
        "duration_months",
        "credit_history",
        "purpose",
    ]


def test_principal_reasons_are_at_most_four_risk_increasing(german_model, applicant):
    manifest = german_model.manifest
    result = result_with(
        manifest,
        {
            "duration_months": 0.1,
            "checking_account": -0.2,
            "savings": 0.05,
            "purpose": 0.04,
            "age_years": 0.03,
            "housing": 0.02,
            "job": -0.01,
        },
    )
    principal = principal_reasons_for_denial(manifest, applicant, result)
    assert [r.attribute for r in principal] == ["duration_months", "savings", "purpose", "age_years"]
    assert all(r.direction == "increased_risk" for r in principal)


def test_templates_come_from_the_manifest(german_model, applicant):
    manifest = german_model.manifest
    assert manifest.explainer.reason_templates == DEFAULT_REASON_TEMPLATES
    custom = msgspec.structs.replace(
        manifest,
        explainer=msgspec.structs.replace(
            manifest.explainer,
            reason_templates={
                "increased_risk": "{label} ({value}) raised the risk",
                "decreased_risk": "{label} ({value}) lowered the risk",
            },
        ),
    )
    result = result_with(manifest, {"duration_months": 0.12})
    assert reasons(custom, applicant, result)[0].text == "Duration of credit (48 months) raised the risk"
    broken = msgspec.structs.replace(
        manifest,
        explainer=msgspec.structs.replace(
            manifest.explainer, reason_templates={"increased_risk": "{lable}: {value}", "decreased_risk": "{label}"}
        ),
    )
    with pytest.raises(ReasonTemplateError, match="increased_risk"):
        reasons(broken, applicant, result)


def test_a_real_denial_has_principal_reasons(german_model, registry):
    manifest = german_model.manifest
    rows = load_dataset("german-credit").rows[:200]
    x = encode_rows(manifest.inputs, rows)
    scores, _ = german_model.score_matrix(x)
    worst = int(scores.argmax())
    assert german_model.decide(float(scores[worst])) == manifest.decision.at_or_above == "decline"
    explainer = Explainer(german_model, registry.background(manifest))
    result = explainer.explain(x[worst : worst + 1], scores[worst : worst + 1], [seed_for("denial")])[0]
    principal = principal_reasons_for_denial(manifest, rows[worst], result)
    assert 1 <= len(principal) <= 4
    assert all(r.contribution > 0 and r.text.endswith("increased risk") for r in principal)
    assert principal[0].contribution == max(result.contributions.values())

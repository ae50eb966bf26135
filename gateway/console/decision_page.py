"""One logged decision as a person reads it: outcome, reasons, picture, inputs in words, proof.

Why the verification state leads: the page is worth showing only if it shows the record
that was logged. Green means the signature verifies under a key the trust root
certified and the record is in the latest signed checkpoint; amber that the signature
verifies and no checkpoint covers the record yet; red that the record failed
verification, and then nothing of its content is shown as if it could be relied on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verdict.gateway.contribution_chart import chart_bars, contribution_svg
from verdict.gateway.fidelity import Fidelity
from verdict.gateway.lookups import ExplanationView
from verdict.gateway.manifest import Manifest

__all__ = ["Check", "DecisionPage", "ReasonsCheck", "decision_page", "failed_check"]

_MEANING = {
    "verified": (
        "ok",
        "Verified",
        "This is the record that was logged: its signature is valid under a key the trust root certified, "
        "and it is included in the latest signed checkpoint of the audit trail.",
    ),
    "verified_pending_checkpoint": (
        "pending",
        "Signature verified, checkpoint pending",
        "The record's signature is valid under a certified key; no signed checkpoint covers it yet "
        "(the next one will), so its place in the trail is not yet proven.",
    ),
    "signature_verified": (
        "pending",
        "Signature verified",
        "The record's signature is valid under a certified key; its inclusion in a checkpoint was not checked here.",
    ),
}


@dataclass(frozen=True)
class Check:
    """The verification panel: a state (ok / pending / failed), a heading, one sentence, details."""

    state: str
    heading: str
    meaning: str
    rows: list[tuple[str, str]]


@dataclass(frozen=True)
class ReasonsCheck:
    """Whether the reasons shown are those the exact Shapley values give: a state (ok / pending,
    never colour alone: the heading says it), one sentence, and what the explanation cost."""

    state: str
    heading: str
    meaning: str
    evaluations: str


@dataclass(frozen=True)
class DecisionPage:
    view: ExplanationView
    outcome: str
    adverse: bool
    reasons: list[str]
    denial_reasons: list[str]
    inputs: list[tuple[str, str, str]]  # label, value in words, protected note
    contributions: list[tuple[str, float, float | None]]  # label, contribution, ± bound; largest raise first
    withheld: list[str]
    chart_svg: str
    chart_note: str
    check: Check
    reasons_check: ReasonsCheck | None = None  # None: a record from before fidelity was recorded
    bound_note: str = ""  # what the "± bound" column means; empty: no bounds, no column


def decision_page(view: ExplanationView, attributes: dict[str, Any], manifest: Manifest) -> DecisionPage:
    specs = {spec.name: spec for spec in manifest.inputs}
    inputs = []
    for name, value in attributes.items():
        spec = specs.get(name)
        if spec is None:
            inputs.append((name, str(value), ""))
            continue
        inputs.append((spec.label, spec.describe(value), "protected characteristic" if spec.protected else ""))
    bars = chart_bars(view)
    bounds = view.fidelity.error_bounds if view.fidelity is not None else {}
    return DecisionPage(
        view=view,
        outcome=view.decision,
        adverse=view.decision == manifest.decision.at_or_above,
        reasons=[r.text for r in view.reasons if r.text],
        denial_reasons=[r.text for r in view.principal_reasons_for_denial if r.text],
        inputs=inputs,
        contributions=sorted(
            ((specs[n].label if n in specs else n, v, bounds.get(n)) for n, v in view.contributions.items()),
            key=lambda c: -c[1],
        ),
        withheld=[f"{w.label}: {w.reason}" for w in manifest.withheld],
        chart_svg=contribution_svg(bars, title="How each attribute moved the score") if bars else "",
        chart_note=(
            f"Each bar shows how much one attribute moved the score away from the model's starting point of "
            f"{view.base_value:.4f} (the average over its reference data): bars to the right raised the risk, "
            f"bars to the left lowered it. The largest {len(bars)} are shown; all are listed below."
            if bars
            else "This decision was not explained attribute by attribute."
        ),
        check=_check(view),
        reasons_check=None if view.fidelity is None else _reasons_check(view.fidelity),
        bound_note=_bound_note(view.fidelity) if bounds else "",
    )


def _reasons_check(fidelity: Fidelity) -> ReasonsCheck:
    """Say how far the reasons can be relied on: a sampled explanation is never exact, but its
    reason lists can be (gateway.fidelity), and staff answering "why was I declined" must know which."""
    evaluations = f"{fidelity.evaluations:,} model evaluations spent on this explanation"
    if fidelity.certified:
        how = (
            "by exact enumeration."
            if fidelity.z is None
            else f"statistically, at {fidelity.z:g} standard errors (a confidence level, not a proof); their "
            "order may differ where two reasons are close."
        )
        meaning = (
            "The principal reasons and the top reasons are the same as the exact Shapley values for this "
            f"model's reference data give, checked {how}"
        )
        return ReasonsCheck("ok", "Reasons certified", meaning, evaluations)
    if fidelity.error_bounds:
        meaning = (
            "The sampling budget ran out before the reasons could be certified: within the error bounds below, "
            "the exact Shapley values for this model's reference data could give different reasons."
        )
    else:
        meaning = (
            "The contributions were sampled without estimating their error, so the exact Shapley values for "
            "this model's reference data could give different reasons."
        )
    return ReasonsCheck("pending", "Reasons not certified", meaning, evaluations)


def _bound_note(fidelity: Fidelity | None) -> str:
    """What the "± bound" column means: a bound of zero is exact, others are z standard errors."""
    if fidelity is None or fidelity.z is None:
        return "± bound: each contribution's error bound; 0 means it is exact."
    return f"± bound: {fidelity.z:g} standard errors of each sampled contribution; 0 means it is exact."


def _check(view: ExplanationView) -> Check:
    v = view.verification
    state, heading, meaning = _MEANING.get(v.status, ("pending", v.status, "Verification state as recorded."))
    rows = [
        ("Audit chain / position", f"{v.chain_id} / {v.seq}"),
        ("Record hash (SHA-256)", v.record_hash),
        ("Signature", f"Ed25519, valid, by key {v.key_id}"),
        ("Model fingerprint (SHA-256)", view.model.get("sha256", "")),
    ]
    if v.inclusion is not None:
        i = v.inclusion
        rows.append(("Signed checkpoint", f"size {i.checkpoint_size}, root {i.checkpoint_root}"))
        rows.append(("Checkpoint signed by", ", ".join(i.signed_by) or "—"))
        rows.append(("Inclusion proof", f"leaf {i.leaf_index}, {len(i.proof)} hashes, checked against that root"))
    return Check(state, heading, meaning, rows)


def failed_check(request_id: str, reason: str) -> Check:
    return Check(
        "failed",
        "Verification FAILED",
        "This record does not verify against the trust root: it was altered, moved or signed by a key the root "
        "never certified. Do not rely on it; report it to the trail's operators.",
        [("Request id", request_id), ("Why", reason)],
    )

"""Verdicts: how a replayed number is judged against the logged one.

Why four verdicts and no fifth: an examiner must be able to tell "the same
bits" from "different bits, inside the bound that was fixed when the model
was registered" from "outside it", and all three from "we could not even
try". There is no "probably fine": every decision gets exactly one overall
verdict, and the score, the base value and every contribution get their own.

The bound is the manifest's ``ReplayTolerance``, per value::

    |replayed - logged| <= absolute + relative * |logged|

A replay may *tighten* the bound (an examiner asking for more), never widen
it: the tolerance was fixed in advance, so nobody can choose "close enough"
after seeing the numbers (:func:`effective_tolerance`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from typing import Literal, TypedDict, Unpack

import msgspec

from verdict.audit.records import Fidelity

__all__ = [
    "CANNOT_REPLAY_REASONS",
    "VALUE_VERDICTS",
    "VERDICTS",
    "ContributionSummary",
    "DecisionCheck",
    "DecisionResult",
    "FidelityCheck",
    "FieldDifference",
    "KnownFields",
    "Tolerance",
    "ToleranceError",
    "ValueCheck",
    "Verdict",
    "cannot_replay",
    "check_fidelity",
    "check_value",
    "effective_tolerance",
    "erased",
    "worst",
]

Verdict = Literal["identical", "within_tolerance", "erased", "out_of_tolerance", "cannot_replay"]
VERDICTS: tuple[str, ...] = ("identical", "within_tolerance", "erased", "out_of_tolerance", "cannot_replay")
"""In rising severity. ``erased``: the decision's personal data was erased (its subject's data
key destroyed, spec §3a), so there is nothing left to re-score; the record itself verified."""
VALUE_VERDICTS: tuple[str, ...] = ("identical", "within_tolerance", "out_of_tolerance", "not_replayed")
_RANK = {v: i for i, v in enumerate(VERDICTS)}
ValueVerdict = Literal["identical", "within_tolerance", "out_of_tolerance", "not_replayed"]

CANNOT_REPLAY_REASONS = {
    # the record itself (codes of audit.reader.ReadError / audit.verifier.REASONS)
    "not_found": "no decision with this request id in the trail",
    "not_checkpointed": "the record is not yet covered by a signed checkpoint (replay requires one)",
    "parse_error": "a segment line is not well-formed",
    "bad_record": "the record does not match the verdict.audit/v1 schema",
    "not_canonical": "the stored record bytes are not canonical",
    "hash_mismatch": "the record's bytes no longer match their hash (tampered)",
    "bad_signature": "the record's signature does not verify",
    "unknown_key": "the record is signed by a key that is not published",
    "bad_key_document": "the published key document is malformed",
    "key_not_valid_at_seq": "the record is signed by a key not valid at its position",
    "index_mismatch": "the request index disagrees with the record",
    "index_missing": "the decision has no request index entry",
    "bad_checkpoint": "the covering checkpoint is malformed",
    "bad_checkpoint_signature": "the covering checkpoint's signature does not verify",
    "checkpoint_root_mismatch": "the record is not included in the signed checkpoint (chain altered)",
    "chain_truncated": "the chain holds fewer records than its checkpoint covers",
    "store_error": "the store could not be read",
    # what the decision needs
    "inputs_sealed": "the applicant's inputs are sealed and this keyring does not hold their key",
    "sealed_tampered": "the sealed personal data does not authenticate under its key (altered after sealing)",
    "inputs_invalid": "the logged inputs do not validate against the model's schema",
    "manifest_missing": "the model version is not registered in the store",
    "manifest_invalid": "the model manifest cannot be decoded",
    "manifest_mismatch": "the registered manifest names another artifact than the record",
    "artifact_missing": "the model artifact blob is missing from the store",
    "artifact_altered": "the model artifact blob does not hash to its address (altered)",
    "background_missing": "the explanation background blob is missing from the store",
    "background_altered": "the explanation background blob does not hash to its address",
    "environment_missing": "the environment manifest the record references is missing",
    "environment_altered": "the environment manifest does not hash to its address",
    "environment_cannot_run": "this environment cannot run the recorded model or settings",
    "environment_not_rebuilt": "the recorded environment could not be rebuilt",
    "replay_failed": "re-scoring raised an error",
}
"""Stable reason codes for ``cannot_replay`` (part of the report format)."""


class ToleranceError(ValueError):
    """A requested tolerance would widen the manifest's bound, or is malformed."""


class Tolerance(msgspec.Struct, frozen=True):
    """|replayed - logged| <= absolute + relative * |logged|."""

    absolute: float
    relative: float

    def bound(self, logged: float) -> float:
        return self.absolute + self.relative * abs(logged)


def effective_tolerance(
    manifest: Tolerance,
    tighten_absolute: float | None = None,
    tighten_relative: float | None = None,
    *,
    model: str = "the model",
) -> Tolerance:
    """The manifest's tolerance, tightened where asked. Widening is refused:
    the bound was fixed at registration, before anyone saw a replay."""
    absolute, relative = manifest.absolute, manifest.relative
    for name, value, fixed in (("absolute", tighten_absolute, absolute), ("relative", tighten_relative, relative)):
        if value is None:
            continue
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ToleranceError(f"--tighten-{name} must be a finite number >= 0, got {value!r}")
        if value > fixed:
            raise ToleranceError(
                f"--tighten-{name} {value!r} is wider than the {name} tolerance {fixed!r} fixed in the manifest of "
                f"{model}; a replay may only tighten the bound registered with the model"
            )
    return Tolerance(
        absolute=absolute if tighten_absolute is None else float(tighten_absolute),
        relative=relative if tighten_relative is None else float(tighten_relative),
    )


class ValueCheck(msgspec.Struct, frozen=True, omit_defaults=True):
    """One number, logged vs replayed."""

    name: str
    verdict: ValueVerdict
    logged: float | None = None
    replayed: float | None = None
    delta: float | None = None
    """replayed - logged (absent when identical)"""
    bound: float | None = None
    """the tolerance bound for this value: absolute + relative * |logged|"""


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def check_value(name: str, logged: float, replayed: float, tolerance: Tolerance) -> ValueCheck:
    """Classify one replayed value. ``identical`` means the same float64 bits."""
    logged, replayed = float(logged), float(replayed)
    bound = tolerance.bound(logged)
    if _bits(logged) == _bits(replayed):
        return ValueCheck(name, "identical", logged, replayed, None, bound)  # no delta: the same bits
    delta = replayed - logged
    verdict: ValueVerdict = "within_tolerance" if abs(delta) <= bound else "out_of_tolerance"  # NaN -> out
    # NaN or infinities have no JSON form; the verdict already says what matters.
    return ValueCheck(name, verdict, _finite(logged), _finite(replayed), _finite(delta), _finite(bound))


class ContributionSummary(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every contribution's verdict: ``counts`` covers all of them; ``deviations``
    lists each one that is not ``identical`` with its numbers (so a contribution
    not listed there is bit-identical, and the counts prove none is missing)."""

    verdict: ValueVerdict
    counts: dict[str, int]
    max_abs_delta: float = 0.0
    deviations: list[ValueCheck] = []
    missing: list[str] = []
    """attributes logged but not replayed, or replayed but not logged (out_of_tolerance)"""


def summarize_contributions(checks: list[ValueCheck], missing: list[str]) -> ContributionSummary:
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    if missing:
        counts["out_of_tolerance"] = counts.get("out_of_tolerance", 0) + len(missing)
    verdict: ValueVerdict = "identical"
    for c in checks:
        if c.verdict == "not_replayed":
            verdict = "not_replayed"
            break
        if _RANK[c.verdict] > _RANK[verdict]:
            verdict = c.verdict
    if missing:
        verdict = "out_of_tolerance"
    deltas = [abs(c.delta) for c in checks if c.delta is not None]
    return ContributionSummary(
        verdict=verdict,
        counts=dict(sorted(counts.items())),
        max_abs_delta=max(deltas, default=0.0),
        deviations=[c for c in checks if c.verdict not in ("identical", "not_replayed")],
        missing=missing,
    )


class FieldDifference(msgspec.Struct, frozen=True, omit_defaults=True):
    """A fidelity field that must be reproduced exactly and was not (absent: the field was absent)."""

    name: str
    logged: bool | int | float | None = None
    replayed: bool | int | float | None = None


class FidelityCheck(msgspec.Struct, frozen=True, omit_defaults=True):
    """The logged explanation's fidelity vs the replayed one (audit-format §3, "Fidelity").

    Why ``certified``, ``evaluations``, ``pairs`` and ``z`` have no tolerance: they are
    counts and a yes/no, decided by the sampler's stopping rule; the same bits in give the
    same answers out, so any difference means the replay did not run the same explanation
    (or changed what the applicant may rely on). The error bounds are numbers like the
    contributions and are judged the same way."""

    verdict: ValueVerdict
    certified: bool | None = None
    """the logged certificate"""
    differences: list[FieldDifference] = []
    """the exact fields that differ (any one makes the fidelity out_of_tolerance)"""
    error_bounds: ContributionSummary | None = None
    """every error bound's verdict; absent when neither side estimated bounds"""


_EXACT_FIDELITY_FIELDS = ("certified", "evaluations", "pairs", "z")


def check_fidelity(logged: Fidelity, replayed: Fidelity | None, tolerance: Tolerance) -> FidelityCheck:
    """Judge a replayed fidelity: exact fields exactly, error bounds like contributions.
    ``replayed`` None: the replay produced none, which reproduces nothing."""
    if replayed is None:
        return FidelityCheck("out_of_tolerance", logged.certified, [FieldDifference("fidelity")])
    differences = [
        FieldDifference(name, getattr(logged, name), getattr(replayed, name))
        for name in _EXACT_FIDELITY_FIELDS
        if getattr(logged, name) != getattr(replayed, name)
    ]
    bounds = None
    if logged.error_bounds or replayed.error_bounds:
        bounds = _summarize_values(logged.error_bounds, replayed.error_bounds, tolerance)
    verdict: ValueVerdict = "out_of_tolerance" if differences else bounds.verdict if bounds else "identical"
    return FidelityCheck(verdict, logged.certified, differences, bounds)


def _summarize_values(
    logged: Mapping[str, float], replayed: Mapping[str, float], tolerance: Tolerance
) -> ContributionSummary:
    """Every value of two per-attribute maps judged, and the attributes only one side has."""
    checks = [check_value(name, logged[name], replayed[name], tolerance) for name in logged if name in replayed]
    return summarize_contributions(checks, sorted(set(logged) ^ set(replayed)))


def _fidelity_why(check: FidelityCheck) -> list[str]:
    if check.verdict == "identical":
        return []
    why = [
        f"fidelity {d.name} not reproduced: logged {d.logged!r}, replayed {d.replayed!r}"
        if d.name != "fidelity"
        else "fidelity not reproduced: the replayed explanation has none"
        for d in check.differences
    ]
    bounds = check.error_bounds
    if bounds is not None and bounds.verdict != "identical":
        why.append(
            f"{len(bounds.deviations) + len(bounds.missing)} fidelity error bounds not bit-identical, worst "
            f"{bounds.verdict.replace('_', ' ')} (max |delta| {bounds.max_abs_delta!r})"
        )
    return why


class DecisionCheck(msgspec.Struct, frozen=True, omit_defaults=True):
    """The logged vs replayed decision label and reasons."""

    logged: str
    replayed: str
    reasons_match: bool | None = None
    """None when reasons were not replayed (score-only scope)."""


class DecisionResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """The verdict on one logged decision."""

    request_id: str
    verdict: Verdict
    why: list[str] = []
    """Plain-language reasons for a verdict other than identical."""
    reason: str | None = None
    """cannot_replay: a code of CANNOT_REPLAY_REASONS."""
    chain_id: str | None = None
    seq: int | None = None
    record_hash: str | None = None
    decided_at: str | None = None
    model: str | None = None
    """name:version"""
    model_sha256: str | None = None
    environment_sha256: str | None = None
    """the environment manifest the decision was made in"""
    replay_environment_sha256: str | None = None
    """the fingerprint of the environment the replay ran in"""
    runtime: dict[str, int | str] = {}
    """the runtime the replay ran with: device, dtype, score bucket, explain bucket, threads"""
    verification: str | None = None
    """how the record was proven: e.g. 'signature+inclusion in checkpoint 1200'"""
    score: ValueCheck | None = None
    base_value: ValueCheck | None = None
    contributions: ContributionSummary | None = None
    fidelity: FidelityCheck | None = None
    """absent when the logged explanation has no fidelity (a record written before it existed)"""
    decision: DecisionCheck | None = None
    seed: int | None = None


class KnownFields(TypedDict, total=False):
    """What is known of a logged decision apart from the verdict on it: the
    DecisionResult fields that ``judge`` and ``cannot_replay`` pass through."""

    chain_id: str | None
    seq: int | None
    record_hash: str | None
    decided_at: str | None
    model: str | None
    model_sha256: str | None
    environment_sha256: str | None
    replay_environment_sha256: str | None
    runtime: dict[str, int | str]
    verification: str | None
    seed: int | None


def cannot_replay(request_id: str, reason: str, message: str, **known: Unpack[KnownFields]) -> DecisionResult:
    assert reason in CANNOT_REPLAY_REASONS, reason
    return DecisionResult(request_id=request_id, verdict="cannot_replay", reason=reason, why=[message], **known)


def erased(request_id: str, erasure: Mapping[str, object], **known: Unpack[KnownFields]) -> DecisionResult:
    """The verdict on a decision whose personal data was erased: named, never skipped."""
    return DecisionResult(
        request_id=request_id,
        verdict="erased",
        why=[
            f"personal data erased ({erasure['cause']}) on {erasure['erased_at']} by erasure record "
            f"{erasure['chain_id']}/{erasure['seq']} (record hash {erasure['record_hash']}); "
            "the record verified, nothing is left to re-score"
        ],
        **known,
    )


def worst(verdicts: Iterable[str]) -> Verdict:
    """The most severe verdict (identical < within < erased < out < cannot_replay);
    ``not_replayed`` values do not count towards it."""
    best = "identical"
    for v in verdicts:
        if v in _RANK and _RANK[v] > _RANK[best]:
            best = v
    return best  # type: ignore[return-value]


def judge(
    request_id: str,
    *,
    logged_score: float,
    replayed_score: float,
    tolerance: Tolerance,
    logged_decision: str,
    replayed_decision: str,
    logged_base: float | None = None,
    replayed_base: float | None = None,
    logged_contributions: Mapping[str, float] | None = None,
    replayed_contributions: Mapping[str, float] | None = None,
    reasons_match: bool | None = None,
    problems: list[str] | None = None,
    logged_fidelity: Fidelity | None = None,
    replayed_fidelity: Fidelity | None = None,
    **known: Unpack[KnownFields],
) -> DecisionResult:
    """Build a decision's result from the logged and replayed numbers.

    With ``replayed_contributions`` None the explanation was not replayed
    (score-only scope): contributions, base value and fidelity are
    ``not_replayed``, said so explicitly, and do not count towards the overall
    verdict. Without ``logged_fidelity`` (a record older than the field) the
    fidelity is not judged at all.
    """
    why: list[str] = []
    score = check_value("score", logged_score, replayed_score, tolerance)
    if score.verdict != "identical":
        why.append(
            f"score {score.verdict.replace('_', ' ')}: replayed {replayed_score!r}, logged {logged_score!r} "
            f"(delta {score.delta!r}, bound {score.bound!r})"
        )
    parts = [score.verdict]
    base = None
    contributions = None
    fidelity = None
    logged_contributions = logged_contributions or {}
    if replayed_contributions is None:
        base = ValueCheck("base_value", "not_replayed", logged_base)
        contributions = ContributionSummary(
            verdict="not_replayed", counts={"not_replayed": len(logged_contributions)}, deviations=[]
        )
        if logged_fidelity is not None:
            fidelity = FidelityCheck("not_replayed", logged_fidelity.certified)
    else:
        if logged_base is not None and replayed_base is not None:
            base = check_value("base_value", logged_base, replayed_base, tolerance)
            parts.append(base.verdict)
            if base.verdict != "identical":
                why.append(f"base value {base.verdict.replace('_', ' ')} (delta {base.delta!r})")
        contributions = _summarize_values(logged_contributions, replayed_contributions, tolerance)
        missing = contributions.missing
        parts.append(contributions.verdict)
        if contributions.verdict != "identical":
            n = len(contributions.deviations) + len(missing)
            why.append(
                f"{n} of {len(set(logged_contributions) | set(replayed_contributions))} contributions "
                f"not bit-identical, worst {contributions.verdict.replace('_', ' ')} "
                f"(max |delta| {contributions.max_abs_delta!r})"
            )
        if missing:
            why.append(f"attributes explained differently: {', '.join(missing)}")
        if logged_fidelity is not None:
            fidelity = check_fidelity(logged_fidelity, replayed_fidelity, tolerance)
            parts.append(fidelity.verdict)
            why += _fidelity_why(fidelity)
    decision = DecisionCheck(logged=logged_decision, replayed=replayed_decision, reasons_match=reasons_match)
    if logged_decision != replayed_decision:
        parts.append("out_of_tolerance")
        why.append(f"decision changed: logged {logged_decision!r}, replayed {replayed_decision!r}")
    if reasons_match is False:
        parts.append("out_of_tolerance")
        why.append("the reasons given to the applicant differ from the replayed ones")
    for problem in problems or []:  # e.g. the replayed explanation does not add up to the replayed score
        parts.append("out_of_tolerance")
        why.append(problem)
    return DecisionResult(
        request_id=request_id,
        verdict=worst(parts),
        why=why,
        score=score,
        base_value=base,
        contributions=contributions,
        fidelity=fidelity,
        decision=decision,
        **known,
    )

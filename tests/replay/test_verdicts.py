"""Verdict rules: bits, the registered bound, tightening only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verdict.replay.verdicts import Tolerance, ToleranceError, check_value, effective_tolerance, judge, worst

TOL = Tolerance(absolute=1e-6, relative=1e-5)


def judge_unchanged_score(request_id: str, logged: dict, replayed: dict | None, **more):
    """judge() for a decision whose score (0.4) and base value (0.3) replayed unchanged; label
    "approve" both times unless ``more`` says otherwise."""
    fields = {
        "logged_score": 0.4,
        "replayed_score": 0.4,
        "tolerance": TOL,
        "logged_decision": "approve",
        "replayed_decision": "approve",
        "logged_base": 0.3,
        "replayed_base": 0.3,
        **more,
    }
    return judge(request_id, logged_contributions=logged, replayed_contributions=replayed, **fields)


def test_identical_means_same_bits():
    assert check_value("score", 0.25, 0.25, TOL).verdict == "identical"
    # 0.0 and -0.0 compare equal but are different bits: not "identical".
    assert check_value("score", 0.0, -0.0, TOL).verdict == "within_tolerance"


def test_one_float32_ulp_is_within_the_reference_tolerance():
    logged = float(np.float32(0.3))
    replayed = float(np.nextafter(np.float32(0.3), np.float32(1)))
    check = check_value("score", logged, replayed, TOL)
    assert check.verdict == "within_tolerance"
    assert check.delta == replayed - logged and 0 < check.delta <= check.bound


def test_bound_is_absolute_plus_relative_times_logged():
    logged = 0.5
    bound = 1e-6 + 1e-5 * 0.5
    assert check_value("score", logged, logged + bound * 0.999, TOL).verdict == "within_tolerance"
    assert check_value("score", logged, logged + bound * 1.001, TOL).verdict == "out_of_tolerance"
    assert check_value("score", -logged, -logged - bound * 1.001, TOL).verdict == "out_of_tolerance"


def test_nan_is_never_a_pass():
    check = check_value("score", 0.5, math.nan, TOL)
    assert check.verdict == "out_of_tolerance"
    assert check.replayed is None and check.delta is None  # no JSON form, verdict says it


def test_tolerance_may_only_be_tightened():
    assert effective_tolerance(TOL, 1e-9, None) == Tolerance(1e-9, 1e-5)
    assert effective_tolerance(TOL, None, 0.0) == Tolerance(1e-6, 0.0)
    assert effective_tolerance(TOL) == TOL
    with pytest.raises(ToleranceError, match="wider than the absolute tolerance"):
        effective_tolerance(TOL, 1e-3, None, model="m:1")
    with pytest.raises(ToleranceError, match="relative"):
        effective_tolerance(TOL, None, 0.1)
    with pytest.raises(ToleranceError):
        effective_tolerance(TOL, -1.0, None)
    with pytest.raises(ToleranceError):
        effective_tolerance(TOL, math.nan, None)


def test_every_contribution_gets_a_verdict_and_the_worst_decides():
    logged = {"a": 0.1, "b": -0.2, "c": 0.0}
    replayed = {"a": 0.1, "b": -0.2 + 1e-9, "c": 0.5}
    result = judge_unchanged_score("r1", logged, replayed, reasons_match=True)
    assert result.verdict == "out_of_tolerance"
    assert result.contributions.counts == {"identical": 1, "out_of_tolerance": 1, "within_tolerance": 1}
    assert {d.name: d.verdict for d in result.contributions.deviations} == {
        "b": "within_tolerance",
        "c": "out_of_tolerance",
    }
    assert result.score.verdict == "identical" and result.base_value.verdict == "identical"


def test_missing_contribution_or_changed_decision_is_flagged():
    result = judge_unchanged_score(
        "r2", {"a": 0.1}, {"a": 0.1, "b": 0.0}, replayed_decision="decline", reasons_match=False
    )
    assert result.verdict == "out_of_tolerance"
    assert result.contributions.missing == ["b"]
    assert any("decision changed" in w for w in result.why) and any("reasons" in w for w in result.why)


def test_score_only_scope_says_contributions_were_not_replayed():
    result = judge(
        "r3",
        logged_score=0.4,
        replayed_score=0.4,
        tolerance=TOL,
        logged_decision="approve",
        replayed_decision="approve",
        logged_contributions={"a": 0.1, "b": 0.2},
        replayed_contributions=None,
    )
    assert result.verdict == "identical"
    assert result.contributions.verdict == "not_replayed" and result.contributions.counts == {"not_replayed": 2}
    assert result.base_value.verdict == "not_replayed"


def test_worst_orders_the_verdicts():
    assert worst(["identical", "within_tolerance"]) == "within_tolerance"
    assert worst(["out_of_tolerance", "cannot_replay", "identical"]) == "cannot_replay"
    assert worst(["not_replayed", "identical"]) == "identical"

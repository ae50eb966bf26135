"""Replay reproduces an explanation's fidelity (docs/audit-format.md §3, "Fidelity"):
its counts and certificate exactly, its error bounds like contributions; a record
written before the field is not judged on it."""

from __future__ import annotations

import math

import msgspec

from tests.replay.conftest import cli, report_of
from tests.replay.test_verdicts import judge_unchanged_score
from verdict.audit.chain import ChainWriter
from verdict.audit.personal_data import existing_personal_data
from verdict.audit.reader import read_decision
from verdict.audit.records import DecisionBody, Fidelity
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import open_store
from verdict.audit.trust import RootKey
from verdict.replay.report import summarize
from verdict.replay.verdicts import FieldDifference, Tolerance, check_fidelity

TOL = Tolerance(absolute=1e-6, relative=1e-5)
CERTIFIED = Fidelity(certified=True, evaluations=2913, pairs=24, error_bounds={"a": 0.0078125, "b": 0.0}, z=3.0)


def _judged(logged: Fidelity | None, replayed: Fidelity | None, *, explained: bool = True):
    contributions = {"a": 0.25, "b": 0.0}
    return judge_unchanged_score(
        "r",
        contributions,
        dict(contributions) if explained else None,
        logged_fidelity=logged,
        replayed_fidelity=replayed,
    )


def test_the_same_fidelity_is_identical():
    result = _judged(CERTIFIED, msgspec.structs.replace(CERTIFIED))
    assert result.verdict == "identical" and result.fidelity.verdict == "identical" and result.fidelity.certified
    assert result.fidelity.error_bounds.counts == {"identical": 2} and not result.fidelity.differences


def test_a_changed_count_or_certificate_is_out_of_tolerance_and_named():
    for name, value in (("certified", False), ("pairs", 25), ("evaluations", 2912), ("z", 2.0)):
        replayed = msgspec.structs.replace(CERTIFIED, **{name: value})
        result = _judged(CERTIFIED, replayed)
        assert result.verdict == "out_of_tolerance", name
        assert result.fidelity.differences == [FieldDifference(name, getattr(CERTIFIED, name), value)]
        assert any(w.startswith(f"fidelity {name} not reproduced") for w in result.why), result.why


def test_error_bounds_are_judged_like_contributions():
    one_ulp = msgspec.structs.replace(CERTIFIED, error_bounds={"a": math.nextafter(0.0078125, 1.0), "b": 0.0})
    result = _judged(CERTIFIED, one_ulp)
    assert result.verdict == "within_tolerance" and result.fidelity.verdict == "within_tolerance"
    assert result.fidelity.error_bounds.counts == {"identical": 1, "within_tolerance": 1}
    far = msgspec.structs.replace(CERTIFIED, error_bounds={"a": 0.5, "b": 0.0})
    assert _judged(CERTIFIED, far).fidelity.error_bounds.deviations[0].name == "a"
    assert _judged(CERTIFIED, far).verdict == "out_of_tolerance"
    fewer = msgspec.structs.replace(CERTIFIED, error_bounds={"a": 0.0078125})
    assert _judged(CERTIFIED, fewer).fidelity.error_bounds.missing == ["b"]
    assert _judged(CERTIFIED, fewer).verdict == "out_of_tolerance"


def test_older_records_score_only_replays_and_missing_replays():
    assert _judged(None, CERTIFIED).fidelity is None  # written before the field: not judged
    assert _judged(None, CERTIFIED).verdict == "identical"
    score_only = _judged(CERTIFIED, None, explained=False)
    assert score_only.verdict == "identical" and score_only.fidelity.verdict == "not_replayed"
    lost = check_fidelity(CERTIFIED, None, TOL)
    assert lost.verdict == "out_of_tolerance" and lost.differences == [FieldDifference("fidelity")]
    summary = summarize([_judged(CERTIFIED, CERTIFIED), _judged(None, None), score_only])
    assert summary.fidelity == {"identical": 1, "not_replayed": 1}


def test_a_fresh_decision_carries_its_fidelity_and_replay_reproduces_it(trail_copy):
    """A real decision's record has a fidelity; its replay is identical, fidelity included.
    Copies re-signed by the host with an altered fidelity are flagged, naming the field;
    a copy without one (a record of the older shape) is not judged on it."""
    store = open_store(trail_copy.store_url)
    root = RootKey.load(trail_copy.home / "trust" / "root.pem")
    personal = existing_personal_data()
    genuine = personal.open(read_decision(store, trail_copy.production[3], trust=root.policy()).body)
    explanation = genuine.explanation
    fidelity = explanation.fidelity
    assert fidelity is not None and fidelity.evaluations == explanation.budget["evaluations"]
    assert set(fidelity.error_bounds) <= set(explanation.contributions)

    def altered(request_id: str, fidelity: Fidelity | None) -> DecisionBody:
        return msgspec.structs.replace(
            genuine,
            request_id=request_id,
            explanation=msgspec.structs.replace(explanation, fidelity=fidelity),
        )

    forged = [
        altered("fidelity-certified", msgspec.structs.replace(fidelity, certified=not fidelity.certified)),
        altered("fidelity-pairs", msgspec.structs.replace(fidelity, pairs=fidelity.pairs + 1)),
        altered("fidelity-absent", None),
    ]
    key = FileKeyStore(trail_copy.home / "keys").current()
    with ChainWriter.open(store, "gateway-0", key, root=root, lease=None) as writer:
        writer.append_batch(personal.seal_all(forged, now=genuine.decided_at))

    result = cli(genuine.request_id, *(f.request_id for f in forged))
    assert result.exit_code == 1, result.output  # two are flagged
    report = report_of(result)["report"]
    real, certified, pairs, absent = report["decisions"]
    assert real["verdict"] == "identical", real["why"]
    assert real["fidelity"]["verdict"] == "identical" and real["fidelity"]["certified"] == fidelity.certified
    assert certified["verdict"] == pairs["verdict"] == "out_of_tolerance"
    assert [d["name"] for d in certified["fidelity"]["differences"]] == ["certified"]
    assert pairs["fidelity"]["differences"] == [
        {"name": "pairs", "logged": fidelity.pairs + 1, "replayed": fidelity.pairs}
    ]
    assert absent["verdict"] == "identical" and "fidelity" not in absent, absent.get("why")
    assert report["summary"]["fidelity"] == {"identical": 1, "out_of_tolerance": 2}

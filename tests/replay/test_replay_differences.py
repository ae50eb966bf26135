"""A replay whose runtime really differs, classified against the manifest's bounds.

On this CPU the reference model gives some rows different last bits at a
score bucket of 8 than at the recorded 64 (different GEMM kernels; see
gateway/runtime.py). ``--override-bucket 8`` forces that real difference: the
reference manifest's tolerance (1e-6 + 1e-5*|score|) absorbs a one-ulp
change; the tight version's (1e-12, registered with the same artifact) does not.
Nothing is faked: the records come from the real server, the replay really
runs the model at the other bucket, and the bounds are the registered ones.
"""

from __future__ import annotations

import numpy as np

from tests.replay.conftest import cli, report_of


def _expected_deltas(trail, request_ids):
    """Independently: the logged score vs the model at bucket 8, per request."""
    from verdict.audit.personal_data import existing_personal_data
    from verdict.audit.reader import read_decision
    from verdict.audit.stores import open_store
    from verdict.gateway.registry import Registry
    from verdict.gateway.runtime import load_model
    from verdict.gateway.schema import encode_rows

    store = open_store(trail.store_url)
    registry = Registry(store)
    out = {}
    personal = existing_personal_data()  # the gateway sealed the records (spec §3a)
    bodies = [personal.open(read_decision(store, r).body) for r in request_ids]
    model = load_model(registry, bodies[0].model.name, bodies[0].model.version)
    x = encode_rows(model.manifest.inputs, [b.inputs.attributes for b in bodies])
    at8, _ = model.score_matrix(x, 8)
    for body, score in zip(bodies, at8, strict=True):
        out[body.request_id] = float(score) - body.score
    return out


def test_other_bucket_is_within_the_reference_tolerance(at_trail):
    result = cli("--model", "german-credit:1.0.0", "--override-bucket", "8")
    assert result.exit_code == 0, result.output
    report = report_of(result)["report"]
    assert report["counterfactual"] is True and report["environment"]["overrides"] == {"score_bucket": 8}
    by_id = {d["request_id"]: d for d in report["decisions"]}
    assert set(by_id) == set(at_trail.production)
    expected = _expected_deltas(at_trail, at_trail.production)
    moved = [r for r, delta in expected.items() if delta != 0.0]
    assert moved, "bucket 8 should change the last bits of some rows on this CPU"
    for request_id, delta in expected.items():
        d = by_id[request_id]
        assert d["runtime"]["score_bucket"] == 8
        if delta == 0.0:
            assert d["score"]["verdict"] == "identical"
        else:
            assert d["score"]["verdict"] == "within_tolerance" and d["verdict"] == "within_tolerance"
            assert d["score"]["delta"] == delta and 0 < abs(delta) <= d["score"]["bound"] == 1e-6 + 1e-5 * abs(
                d["score"]["logged"]
            )
            assert abs(delta) < 1e-6  # last bits only
        assert d["contributions"]["counts"] == {"identical": 20}  # explanations run at the recorded explain bucket
    summary = report["summary"]
    assert summary["within_tolerance"] == len(moved) and summary["identical"] == len(expected) - len(moved)
    assert summary["out_of_tolerance"] == summary["cannot_replay"] == 0 and summary["passed"]


def test_other_bucket_is_out_of_a_tight_registered_tolerance(at_trail):
    result = cli("--model", "german-credit:1.0.0-tight", "--override-bucket", "8")
    assert result.exit_code == 1, result.output
    assert "NOT PASSED" in result.output
    report = report_of(result)["report"]
    expected = _expected_deltas(at_trail, at_trail.tight)
    moved = {r for r, delta in expected.items() if delta != 0.0}
    assert moved
    for d in report["decisions"]:
        if d["request_id"] in moved:
            assert d["verdict"] == "out_of_tolerance" and d["score"]["verdict"] == "out_of_tolerance"
            assert d["score"]["bound"] == 1e-12 and abs(d["score"]["delta"]) > 1e-12
            assert any("score out of tolerance" in w for w in d["why"])
        else:
            assert d["verdict"] == "identical"
    assert report["summary"]["out_of_tolerance"] == len(moved)


def test_tightening_on_the_command_line_can_flag_what_the_manifest_allows(at_trail):
    deltas = _expected_deltas(at_trail, at_trail.production)
    moved = [r for r, delta in deltas.items() if delta != 0.0][:10]
    assert moved
    ids = moved + [r for r, delta in deltas.items() if delta == 0.0][:30]  # which rows move is the CPU's business
    result = cli(*ids, "--override-bucket", "8", "--tighten-absolute", "1e-12", "--tighten-relative", "0")
    assert result.exit_code == 1, result.output
    report = report_of(result)["report"]
    assert report["tolerances"] == [
        {
            "model": "german-credit:1.0.0",
            "manifest": {"absolute": 1e-6, "relative": 1e-5},
            "effective": {"absolute": 1e-12, "relative": 0},
        }
    ]
    assert {d["request_id"] for d in report["decisions"] if d["verdict"] == "out_of_tolerance"} == set(moved)


def test_a_wider_tolerance_is_refused(at_trail):
    result = cli(at_trail.production[0], "--tighten-absolute", "0.01")
    assert result.exit_code == 2
    assert "wider than the absolute tolerance" in result.output and "fixed in the manifest" in result.output
    result = cli(at_trail.production[0], "--tighten-relative", "1")
    assert result.exit_code == 2


def test_nothing_selected_is_a_usage_error(at_trail):
    assert cli().exit_code == 2
    assert cli("x", "--all").exit_code == 2
    assert cli("--model", "a:b:c").exit_code == 2
    assert cli("--since", "yesterday").exit_code == 2


def test_time_window_selects_by_decision_time(at_trail):
    from verdict.audit.reader import read_decision
    from verdict.audit.stores import open_store

    store = open_store(at_trail.store_url)
    times = sorted(read_decision(store, r).body.decided_at for r in at_trail.production[:60])
    since, until = times[10], times[50]
    result = cli("--model", "german-credit:1.0.0", "--since", since, "--until", until, "--score-only")
    assert result.exit_code == 0, result.output
    report = report_of(result)["report"]
    decided = [d["decided_at"] for d in report["decisions"]]
    assert decided and all(since <= t < until for t in decided)
    assert np.all(np.diff([int(d["seq"]) for d in report["decisions"]]) > 0)

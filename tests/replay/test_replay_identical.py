"""Decisions made through the real server, replayed: all identical, signed, recorded."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.replay.conftest import cli, report_of
from tests.support.gateway_server import PROJECT
from verdict.audit import layout
from verdict.audit.records import AccessBody, EvidenceBody, decode_record, iter_lines, split_line
from verdict.audit.stores import open_store
from verdict.audit.verifier import verify_store
from verdict.replay.report import verify_signed_report


def chain_records(store, chain_id):
    for key in store.list_keys(layout.segments_prefix(chain_id)):
        for line in iter_lines(store.get(key)):
            yield decode_record(split_line(line)[0])


def test_one_decision_replayed_by_the_real_cli_is_identical(replay_trail):
    request_id = replay_trail.production[7]
    env = {**os.environ, "VERDICT_HOME": str(replay_trail.home)}
    env.pop("VERDICT_STORE", None)
    run = subprocess.run(
        [sys.executable, "-m", "verdict.replay.cli", request_id, "--no-progress"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in run.stdout
    envelope = report_of(run)
    report = envelope["report"]
    (decision,) = report["decisions"]
    assert decision["request_id"] == request_id and decision["verdict"] == "identical"
    assert decision["score"]["verdict"] == "identical" and decision["base_value"]["verdict"] == "identical"
    assert decision["contributions"]["counts"] == {"identical": 20}
    assert decision["decision"]["logged"] == decision["decision"]["replayed"] and decision["decision"]["reasons_match"]
    assert "inclusion proof" in decision["verification"]
    assert decision["runtime"] == {
        "device": "cpu",
        "dtype": "float32",
        "score_bucket": 64,
        "explain_bucket": 4096,
        "threads": 1,
    }
    # Same installation, same source: the replay ran in the very environment the decision recorded.
    (recorded,) = report["recorded_environments"]
    assert recorded.get("identical") is True and "differences" not in recorded, recorded.get("summary")
    assert report["environment"]["mode"] == "current"

    store = open_store(replay_trail.store_url)
    check = verify_signed_report(
        store, (replay_trail.home / "replays" / report["replay_id"] / "report.json").read_bytes()
    )
    assert check.ok, check.message
    assert check.report == report


def test_all_decisions_of_both_versions_replay_identical_in_worker_processes(at_trail):
    result = cli("--all", "--workers", "2", "--purpose", "quarterly model validation")
    assert result.exit_code == 0, result.output
    report = report_of(result)["report"]
    summary = report["summary"]
    total = len(at_trail.production) + len(at_trail.tight)
    assert summary["decisions"] == total and summary["identical"] == total and summary["passed"] is True
    assert summary["contributions"] == {"identical": 20 * total}
    assert report["timing"]["workers"] == 2
    assert {d["model"] for d in report["decisions"]} == {"german-credit:1.0.0", "german-credit:1.0.0-tight"}
    assert {t["model"]: t["manifest"] for t in report["tolerances"]} == {
        "german-credit:1.0.0": {"absolute": 1e-6, "relative": 1e-5},
        "german-credit:1.0.0-tight": {"absolute": 1e-12, "relative": 0},
    }

    # Recorded in the trail: an access record per decision naming the actor, then the evidence record.
    store = open_store(at_trail.store_url)
    records = list(chain_records(store, "replay-0"))
    evidence = [r.body for r in records if isinstance(r.body, EvidenceBody)]
    access = [
        r.body for r in records if isinstance(r.body, AccessBody) and report["replay_id"] in (r.body.purpose or "")
    ]
    assert len(access) == total and {a.action for a in access} == {"replay"}
    assert all(a.purpose.endswith("quarterly model validation") for a in access)
    mine = [e for e in evidence if report["replay_id"] in e.summary]
    assert len(mine) == 1 and mine[0].evidence_kind == "replay_report"
    data = store.get(mine[0].object_key)
    check = verify_signed_report(store, data)
    assert check.ok and check.report["replay_id"] == report["replay_id"]
    html = store.get(report["html"]["object_key"]).decode()
    assert "data:image/png;base64," in html and "PASSED" in html and at_trail.production[0] in html

    # The replay chain, its evidence and the replay's environment manifest keep the trail verifiable.
    verified = verify_store(store)
    assert verified.ok, verified.first_failure
    for sha in report["environment"]["fingerprints"]:
        assert store.exists(f"environments/sha256/{sha}")


def test_score_only_replay_says_so(at_trail):
    result = cli(*at_trail.production[:5], "--score-only")
    assert result.exit_code == 0, result.output
    report = report_of(result)["report"]
    assert report["scope"] == "score_only"
    assert report["summary"]["contributions"] == {"not_replayed": 100}
    assert all(
        d["verdict"] == "identical" and d["contributions"]["verdict"] == "not_replayed" for d in report["decisions"]
    )


def test_altered_report_does_not_verify(at_trail, tmp_path):
    result = cli(at_trail.production[0], "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    data = (tmp_path / "r.json").read_bytes()
    assert cli("--verify-report", str(tmp_path / "r.json")).exit_code == 0
    altered = data.replace(b'"identical":1', b'"identical":2', 1)
    assert altered != data
    (tmp_path / "bad.json").write_bytes(altered)
    bad = cli("--verify-report", str(tmp_path / "bad.json"))
    assert bad.exit_code == 1 and "does not verify" in bad.output


def test_many_request_ids_are_proven_in_one_pass_like_lookups(at_trail):
    ids = [*at_trail.production[40:60], *at_trail.tight[:5], "no-such-request"]
    result = cli(*ids, "--score-only")
    assert result.exit_code == 1  # the unknown id cannot be replayed
    report = report_of(result)["report"]
    assert [d["request_id"] for d in report["decisions"]] == ids
    assert [d["verdict"] for d in report["decisions"]] == ["identical"] * 25 + ["cannot_replay"]
    assert report["decisions"][-1]["reason"] == "not_found"
    assert all("inclusion in signed checkpoint" in d["verification"] for d in report["decisions"][:-1])

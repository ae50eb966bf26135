"""A damaged trail or model never passes: cannot_replay with the reason, non-zero exit.

Each test damages a private copy of the trail the way an attacker with file
access (or a failing disk) would, then replays it through the CLI.
"""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from tests.replay.conftest import cli, report_of, writable
from tests.support.gateway_server import GatewayServer
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.stores import open_store
from verdict.gateway.registry import blob_key
from verdict.replay.trail import Selection, scan


def _segment_holding(trail, request_id):
    store = open_store(trail.store_url)
    entry = read_decision(store, request_id).index_entry
    return trail.store_dir / entry.segment_key


def _tamper_score(trail, request_id: str) -> None:
    """Rewrite the logged score of one record in its segment file (keeps valid JSON)."""
    path = writable(_segment_holding(trail, request_id))
    lines = path.read_bytes().split(b"\n")
    for i, line in enumerate(lines):
        if f'"request_id":"{request_id}"'.encode() in line:
            lines[i] = re.sub(
                rb'"score":0\.(\d)', lambda m: b'"score":0.' + str((int(m.group(1)) + 1) % 10).encode(), line, count=1
            )
            assert lines[i] != line
    path.write_bytes(b"\n".join(lines))


def test_tampered_record_cannot_be_replayed(trail_copy):
    victim = trail_copy.production[3]
    _tamper_score(trail_copy, victim)
    result = cli(victim)
    assert result.exit_code == 1, result.output
    (decision,) = report_of(result)["report"]["decisions"]
    assert decision["verdict"] == "cannot_replay" and decision["reason"] == "hash_mismatch"
    assert "hashes to" in decision["why"][0]
    assert "cannot_replay: " + victim in result.output


def test_batch_replay_of_a_tampered_chain_agrees_with_lookups(trail_copy):
    """The batch scan proves records exactly as read_decision does: the altered
    record fails on its hash, and every other record under the same signed
    checkpoint fails on the checkpoint root (the chain no longer matches it)."""
    victim = trail_copy.production[10]
    _tamper_score(trail_copy, victim)
    store = open_store(trail_copy.store_url)
    targets, _ = scan(store, Selection(all=True))
    by_id = {t.request_id: t for t in targets}
    assert len(by_id) == len(trail_copy.production) + len(trail_copy.tight)
    for request_id in [*trail_copy.production[:20], *trail_copy.tight[-5:]]:
        try:
            read_decision(store, request_id, require_checkpoint=True)
            expected = None
        except ReadError as exc:
            expected = exc.reason
        got = by_id[request_id].problem[0] if by_id[request_id].problem else None
        assert got == expected, (request_id, got, expected)
    assert by_id[victim].problem[0] == "hash_mismatch"
    assert by_id[trail_copy.production[0]].problem[0] == "checkpoint_root_mismatch"

    result = cli("--all", "--workers", "0")
    assert result.exit_code == 1
    summary = report_of(result)["report"]["summary"]
    assert summary["cannot_replay"] == summary["decisions"] and summary["by_reason"]["hash_mismatch"] == 1


def _artifact(trail):
    store = open_store(trail.store_url)
    return trail.store_dir / blob_key(read_decision(store, trail.production[0]).body.model.sha256)


def test_missing_model_blob_cannot_be_replayed(trail_copy):
    _artifact(trail_copy).unlink()
    result = cli(trail_copy.production[0], trail_copy.tight[0])
    assert result.exit_code == 1, result.output
    decisions = report_of(result)["report"]["decisions"]
    assert [d["reason"] for d in decisions] == ["artifact_missing", "artifact_missing"]
    assert all(d["verdict"] == "cannot_replay" and "missing" in d["why"][0] for d in decisions)


def test_altered_model_blob_cannot_be_replayed(trail_copy):
    path = writable(_artifact(trail_copy))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = cli(trail_copy.production[0])
    assert result.exit_code == 1, result.output
    (decision,) = report_of(result)["report"]["decisions"]
    assert decision["verdict"] == "cannot_replay" and decision["reason"] == "artifact_altered"
    assert "altered" in decision["why"][0]


def test_missing_environment_manifest_cannot_be_replayed(trail_copy):
    store = open_store(trail_copy.store_url)
    sha = read_decision(store, trail_copy.production[0]).body.environment_sha256
    (trail_copy.store_dir / "environments" / "sha256" / sha).unlink()
    result = cli(trail_copy.production[0])
    assert result.exit_code == 1
    (decision,) = report_of(result)["report"]["decisions"]
    assert decision["reason"] == "environment_missing"


def test_unknown_request_id_cannot_be_replayed(at_trail):
    result = cli("no-such-request")
    assert result.exit_code == 1
    (decision,) = report_of(result)["report"]["decisions"]
    assert decision["verdict"] == "cannot_replay" and decision["reason"] == "not_found"


@pytest.mark.slow
def test_record_not_yet_checkpointed_needs_allow_pending(trail_copy):
    """A live gateway checkpoints every N records or T seconds: a fresh decision is
    signed and chained but not yet in a signed tree head."""
    from tests.replay.conftest import post_decisions

    server = GatewayServer(trail_copy.home).start()
    try:
        from verdict.gateway.datasets import load_dataset

        (answer,) = post_decisions(
            server.url,
            trail_copy.tokens["client"],
            [
                {
                    "model": "german-credit",
                    "request_id": "pending-0001",
                    "attributes": load_dataset("german-credit").rows[500],
                }
            ],
        )
        strict = cli("pending-0001")
        assert strict.exit_code == 1
        (decision,) = report_of(strict)["report"]["decisions"]
        assert decision["reason"] == "not_checkpointed"
        assert any("--allow-pending" in why and "retry in a minute" in why for why in decision["why"]), decision
        relaxed = cli("pending-0001", "--allow-pending")
        assert relaxed.exit_code == 0, relaxed.output
        (decision,) = report_of(relaxed)["report"]["decisions"]
        assert decision["verdict"] == "identical" and "not yet covered by a checkpoint" in decision["verification"]
        assert decision["score"]["logged"] == answer["score"]
    finally:
        server.stop()


def test_evidence_objects_are_content_addressed(at_trail, tmp_path):
    result = cli(at_trail.production[1], "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0
    data = (tmp_path / "r.json").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert (at_trail.store_dir / "evidence" / "sha256" / digest).read_bytes() == data
    shutil.rmtree(tmp_path / "r.json", ignore_errors=True)


def test_a_decision_made_on_cuda_cannot_run_on_a_cpu_only_machine(at_trail):
    import torch

    from verdict.replay.rescore import ReplayOptions, Rescorer

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rescorer = Rescorer(at_trail.store_url, ReplayOptions())
    with pytest.raises(Exception) as problem:
        rescorer._device("cuda:0")
    assert problem.value.reason == "environment_cannot_run" and "cuda:0" in str(problem.value)
    assert rescorer._device("cpu") == "cpu"

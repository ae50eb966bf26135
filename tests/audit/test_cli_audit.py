"""`verdict audit ...` and `verdict keys ...`, driven through their Typer apps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.audit.helpers import decisions, overwrite
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.cli import audit_app, keys_app
from verdict.audit.config import data_dir, store_url
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import open_store
from verdict.audit.trust import RootKey, load_policy, local_root_path
from verdict.audit.trust_cli import trust_app

REPO = Path(__file__).parents[2]
runner = CliRunner()


@pytest.fixture
def trail(verdict_home):
    """keys init + a chain with 20 decisions in the default store of a private home."""
    result = runner.invoke(keys_app, ["init"])
    assert result.exit_code == 0, result.output
    signer = FileKeyStore.default().current()
    store = open_store(store_url())
    root, _ = RootKey.load_or_create(local_root_path(data_dir()))  # as the gateway does on first start
    with ChainWriter.open(store, "gateway-0", signer, checkpoint_every=5, root=root) as writer:
        writer.append_batch(decisions("req", 20))
    return store


def test_verify_ok(trail):
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 1 chain(s), 21 records")


def test_verify_json_to_stdout_and_file(trail, tmp_path):
    result = runner.invoke(audit_app, ["verify", "--json", "-"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["records"] == 21 and report["failures"] == []
    assert "OK:" in result.stderr  # the human summary moves to stderr
    out = tmp_path / "report.json"
    result = runner.invoke(audit_app, ["verify", "--quiet", "--json", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text())["ok"] is True


def test_verify_names_the_first_bad_record_and_exits_1(trail, verdict_home):
    path = Path(verdict_home) / "store" / layout.segment_key("gateway-0", 1)
    overwrite(path, path.read_bytes().replace(b'"score":0.05', b'"score":0.06'))
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert (
        "first failure: [hash_mismatch] (chain gateway-0, seq 6, chains/gateway-0/segments/00000000000000000001)"
        in result.stdout
    )
    result = runner.invoke(audit_app, ["verify", "--json", "-", "--quiet"])
    report = json.loads(result.stdout)
    assert (
        result.exit_code == 1
        and report["first_failure"]["reason"] == "hash_mismatch"
        and report["first_failure"]["seq"] == 6
    )


def test_verify_unusable_store_exits_2(verdict_home, tmp_path):
    result = runner.invoke(audit_app, ["verify", "--store", "ftp://example.com/trail"])
    assert result.exit_code == 2
    assert "cannot open store" in result.stderr
    missing = tmp_path / "no-such-store"
    result = runner.invoke(audit_app, ["verify", "--store", missing.as_uri()])
    assert result.exit_code == 2 and "no store at" in result.stderr
    assert not missing.exists()  # verifying never creates a store


def test_show(trail):
    result = runner.invoke(audit_app, ["show", "req-7"])
    assert result.exit_code == 0, result.output
    assert "req-7" in result.stdout and "chain / seq" in result.stdout and "inclusion proof" in result.stdout
    result = runner.invoke(audit_app, ["show", "req-7", "--json"])
    shown = json.loads(result.stdout)
    assert shown["seq"] == 8 and shown["record"]["body"]["request_id"] == "req-7"
    assert shown["inclusion"]["tree_size"] == 21 and shown["inclusion"]["signed_by"]
    result = runner.invoke(audit_app, ["show", "nope"])
    assert result.exit_code == 1 and "not_found" in result.stderr


def test_keys_list_and_rotate(trail):
    before = FileKeyStore.default().current_key_id()
    result = runner.invoke(keys_app, ["rotate", "--chain", "gateway-0", "--reason", "annual"])
    assert result.exit_code == 0, result.output
    after = FileKeyStore.default().current_key_id()
    assert after != before and f"current key is now {after}" in result.stdout
    result = runner.invoke(keys_app, ["list"])
    assert result.exit_code == 0 and before[:16] in result.stdout and after[:16] in result.stdout
    # the new key continues the chain; old and new records verify
    store = open_store(store_url())
    with ChainWriter.open(store, "gateway-0", FileKeyStore.default().current()) as writer:
        writer.append_batch(decisions("later", 3))
    result = runner.invoke(audit_app, ["verify", "--json", "-"])
    report = json.loads(result.stdout)
    assert report["ok"] and report["chains"][0]["keys"] == [before, after]


def test_keys_rotate_on_a_missing_chain_reports_it(trail):
    result = runner.invoke(keys_app, ["rotate", "--chain", "other-9"])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_audit_cli_does_not_import_torch():
    code = "import sys, audit.cli, audit.verifier, audit.chain, audit.reader; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    result = subprocess.run(
        [sys.executable, "-c", "from audit.cli import audit_app; audit_app()", "verify", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0 and "--store" in result.stdout


# --- trust: no verification "OK" without a trust policy (spec §5b) -------------------------------


def test_verify_without_any_trust_policy_refuses(verdict_home):
    store = open_store(store_url())
    with ChainWriter.open(store, "gateway-0", FileKeyStore.default().init()[0]) as writer:
        writer.append_batch(decisions("req", 3))
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 2
    assert "no trust policy" in result.stderr and "--unanchored" in result.stderr
    result = runner.invoke(audit_app, ["verify", "--unanchored"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and all(line.startswith("UNANCHORED (no trust policy: any store writer") for line in lines)
    result = runner.invoke(audit_app, ["show", "req-1", "--unanchored"])
    assert result.exit_code == 0 and "UNANCHORED" in result.stderr and "found in the store" in result.stdout


def test_trust_export_gives_the_examiner_a_policy_that_verifies(trail, tmp_path):
    policy_file = tmp_path / "policy.json"
    result = runner.invoke(trust_app, ["export", "--out", str(policy_file)])
    assert result.exit_code == 0, result.output
    policy = load_policy(policy_file)
    assert policy.roots[0].key_id == RootKey.load(local_root_path(data_dir())).key_id
    result = runner.invoke(audit_app, ["verify", "--trust", str(policy_file)])
    assert result.exit_code == 0, result.output
    assert "anchored to root " + policy.roots[0].key_id in result.stdout and "UNANCHORED" not in result.stdout
    other = tmp_path / "other.json"
    other.write_bytes(RootKey.load_or_create(tmp_path / "other" / "root.pem")[0].policy().encode())
    result = runner.invoke(audit_app, ["verify", "--trust", str(other)])
    assert result.exit_code == 1 and "[untrusted_root]" in result.stdout and "[uncertified_chain]" in result.stdout
    result = runner.invoke(audit_app, ["verify", "--trust", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read trust policy" in result.stderr


def test_trust_certify_anchors_an_older_trail_only_if_it_verifies(verdict_home, tmp_path):
    store = open_store(store_url())
    with ChainWriter.open(store, "gateway-0", FileKeyStore.default().init()[0]) as writer:  # before roots existed
        writer.append_batch(decisions("req", 3))
    RootKey.load_or_create(local_root_path(data_dir()))
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 1 and "[uncertified_chain]" in result.stdout
    result = runner.invoke(trust_app, ["certify", "--chain", "gateway-0"])
    assert result.exit_code == 0, result.output
    assert "certified ed25519:" in result.stdout
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0
    # a damaged chain is refused: certifying it would vouch for it
    with ChainWriter.open(store, "gateway-1", FileKeyStore.default().current()) as writer:
        writer.append_batch(decisions("other", 3))
    path = Path(verdict_home) / "store" / layout.segment_key("gateway-1", 1)
    overwrite(path, path.read_bytes().replace(b'"score":0', b'"score":1', 1))
    result = runner.invoke(trust_app, ["certify", "--chain", "gateway-1"])
    assert result.exit_code == 1 and "refused" in result.stderr


def test_verify_with_held_checkpoint_and_receipts(trail, tmp_path):
    note = trail.get(layout.checkpoint_key("gateway-0", 21))
    (tmp_path / "cp").write_bytes(note)
    result = runner.invoke(audit_app, ["verify", "--checkpoint", str(tmp_path / "cp")])
    assert result.exit_code == 0, result.output
    for key in list(trail.list_keys(layout.segments_prefix("gateway-0")))[-1:]:
        path = Path(trail.root) / key
        path.parent.chmod(0o755)
        path.unlink()
    result = runner.invoke(audit_app, ["verify", "--checkpoint", str(tmp_path / "cp"), "--json", "-"])
    assert result.exit_code == 1
    assert "below_held_checkpoint" in {f["reason"] for f in json.loads(result.stdout)["failures"]}
    (tmp_path / "bad.jsonl").write_text("not json\n")
    result = runner.invoke(audit_app, ["verify", "--receipts", str(tmp_path / "bad.jsonl")])
    assert result.exit_code == 2 and "not a receipt" in result.stderr

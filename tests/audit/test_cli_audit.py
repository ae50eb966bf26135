"""`verdict audit ...` and `verdict keys ...`, driven through their Typer apps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit import layout
from audit.chain import ChainWriter
from audit.cli import audit_app, keys_app
from audit.config import store_url
from audit.signing import FileKeyStore
from audit.stores import open_store
from tests.audit.helpers import decisions, overwrite

REPO = Path(__file__).parents[2]
runner = CliRunner()


@pytest.fixture
def trail(verdict_home):
    """keys init + a chain with 20 decisions in the default store of a private home."""
    result = runner.invoke(keys_app, ["init"])
    assert result.exit_code == 0, result.output
    signer = FileKeyStore.default().current()
    store = open_store(store_url())
    with ChainWriter.open(store, "gateway-0", signer, checkpoint_every=5) as writer:
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
    assert "first failure: [hash_mismatch] (chain gateway-0, seq 6, chains/gateway-0/segments/00000000000000000001)" in result.stdout
    result = runner.invoke(audit_app, ["verify", "--json", "-", "--quiet"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["first_failure"]["reason"] == "hash_mismatch" and report["first_failure"]["seq"] == 6


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
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0 and "--store" in result.stdout

"""The chain writer and verifier on S3 Object Lock (moto server over real HTTP):
pinned versions, overwrite and delete detection, second writer refused."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.audit.helpers import decisions, signer
from verdict.audit import layout
from verdict.audit.chain import ChainConflict, ChainWriter, Receipt
from verdict.audit.index import RequestIndex
from verdict.audit.reader import read_decision
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store

CHAIN = "gateway-0"


ROOT = RootKey(signer(90))


@pytest.fixture
def s3_trail(s3_store):
    with ChainWriter.open(s3_store, CHAIN, signer(), checkpoint_every=8, root=ROOT) as writer:
        receipts = writer.append_batch(decisions("a", 12))
        receipts += writer.append_batch(decisions("b", 6))
    return s3_store, receipts


def test_writer_pins_versions_and_the_store_verifies(s3_trail):
    store, receipts = s3_trail
    assert all(isinstance(r, Receipt) and r.segment_version for r in receipts)
    entry = RequestIndex(store).get("a-3")
    assert entry is not None and entry.segment_version == receipts[3].segment_version
    report = verify_store(store)
    assert report.ok, report.failures
    assert report.records == 19 and report.index_entries == 18
    verified = read_decision(store, "b-2", require_checkpoint=True)
    assert verified.segment_version == receipts[14].segment_version


def test_new_version_over_an_existing_key_is_detected(s3_trail, s3_client, s3_bucket):
    store, receipts = s3_trail
    key = layout.segment_key(CHAIN, 1)
    original = store.get(key)
    forged = original.replace(b'"decision":"approve"', b'"decision":"decline"', 1)
    s3_client.put_object(Bucket=s3_bucket, Key=f"trail/{key}", Body=forged)  # out of band, no If-None-Match
    report = verify_store(store)
    assert not report.ok
    assert report.first_failure.reason == "extra_version" and report.first_failure.key == key
    reasons = {f.reason for f in report.failures}
    assert "index_mismatch" in reasons  # the altered record's entry: another record hash
    # the batch's unaltered records: their entries pin the original VersionId, not the latest
    assert "index_version_mismatch" in reasons
    # the pinned version still reads back the audited bytes
    assert store.get(key, receipts[0].segment_version) == original


def test_delete_marker_is_detected(s3_trail, s3_client, s3_bucket):
    store, _ = s3_trail
    key = layout.checkpoint_key(CHAIN, 19)
    s3_client.delete_object(Bucket=s3_bucket, Key=f"trail/{key}")  # creates a delete marker
    report = verify_store(store)
    assert report.first_failure.reason == "delete_marker" and report.first_failure.key == key


def test_second_writer_on_s3_is_refused(s3_store):
    first = ChainWriter.open(s3_store, CHAIN, signer())
    second = ChainWriter.open(s3_store, CHAIN, signer())
    first.append_batch(decisions("one", 4))
    with pytest.raises(ChainConflict):
        second.append_batch(decisions("two", 4))
    first.close()
    second.close()
    assert verify_store(s3_store).ok


def test_cli_verify_on_s3(s3_trail, s3_store_url, verdict_home, tmp_path):
    from verdict.audit.cli import audit_app

    (tmp_path / "policy.json").write_bytes(ROOT.policy().encode())
    result = CliRunner().invoke(
        audit_app, ["verify", "--store", s3_store_url, "--json", "-", "--trust", str(tmp_path / "policy.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True and json.loads(result.stdout)["anchored"] is True


def test_cli_verify_unreachable_s3_exits_2(s3_env, verdict_home):
    from verdict.audit.cli import audit_app

    url = "s3://nobucket/trail?endpoint_url=http://127.0.0.1:9&region=us-east-1&timeout=1"
    result = CliRunner().invoke(audit_app, ["verify", "--store", url])
    assert result.exit_code == 2, result.output

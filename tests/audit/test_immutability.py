"""`verdict audit immutability-test` against moto's S3 Object Lock over HTTP, a
deliberately weak bucket, and the filesystem store.

The expected outcomes are the honest ones: moto lets COMPLIANCE retention be
shortened, switched to GOVERNANCE and removed, so those probes must report
FAILED; probes on real records never run an operation that was not first
refused on a canary, and never change a real record.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.audit.helpers import decisions
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.cli import audit_app
from verdict.audit.immutability import (
    CANARY_PREFIX,
    EVIDENCE_KIND,
    TrailView,
    open_store_for_probing,
    run_immutability_test,
)
from verdict.audit.records import EvidenceBody, decode_record, iter_lines, split_line
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import verify_store

runner = CliRunner()

# What moto 5.2.5 does to an Object Lock bucket (see audit/stores/s3.py for the gaps).
MOTO_EXPECTED = {
    "bucket_versioning": "enforced",
    "bucket_object_lock": "enforced",
    "bucket_default_retention": "enforced",
    "bucket_policy": "evident",
    "canary_overwrite": "enforced",
    "store_lock_on_write": "enforced",
    "canary_new_version": "evident",
    "canary_delete_marker": "evident",
    "canary_delete_version": "enforced",
    "canary_delete_bypass": "enforced",
    "canary_shorten_retention": "FAILED",  # moto gap: real S3 refuses it in COMPLIANCE mode
    "canary_change_lock_mode": "FAILED",  # moto gap
    "canary_remove_retention": "FAILED",  # moto gap
    "record_overwrite": "enforced",
    "record_delete_version": "enforced",
    "record_delete_bypass": "enforced",
    "record_shorten_retention": "skipped",  # its canary twin FAILED: never tried on a real record
    "record_change_lock_mode": "skipped",
    "trail_verification": "enforced",
    "retention_matches_policy": "FAILED",  # records written here, not by a gateway: the store's 1-day lock only
    "trail_consistency": "enforced",
}


def _run_cli(*args: str):
    # These tests probe the storage; their stores were made without a trust root, so the
    # trail verification is explicitly unanchored (test_anchored_evidence covers the root).
    return runner.invoke(audit_app, ["immutability-test", "--unanchored", *args])


def _trail_with_decisions(store, n: int = 6) -> None:
    signer = FileKeyStore.default().init()[0]
    with ChainWriter.open(store, "gateway-0", signer, keyring=FileKeyStore.default(), checkpoint_every=3) as writer:
        for i in range(n):
            writer.append_batch(decisions(f"imm-{i}", 2))


def _versions_outside_canaries(store) -> dict[str, list[tuple[str | None, bool]]]:
    out: dict[str, list[tuple[str | None, bool]]] = {}
    for v in store.list_versions(""):
        if not v.key.startswith(CANARY_PREFIX):
            out.setdefault(v.key, []).append((v.version, v.is_delete_marker))
    return out


def _evidence_records(store, chain_id: str = "immutability-0") -> list[EvidenceBody]:
    found = []
    for key in store.list_keys(layout.segments_prefix(chain_id)):
        for line in iter_lines(store.get(key)):
            body = decode_record(split_line(line)[0]).body
            if isinstance(body, EvidenceBody):
                found.append(body)
    return found


# --- S3 Object Lock on moto ----------------------------------------------------------------------


def test_moto_object_lock_bucket_reports_the_honest_failures(
    verdict_home, s3_store_url, s3_store, s3_client, s3_bucket, tmp_path
):
    _trail_with_decisions(s3_store)
    before = _versions_outside_canaries(s3_store)
    json_path, junit_path = tmp_path / "evidence" / "run.json", tmp_path / "evidence" / "junit.xml"

    result = _run_cli("--store", s3_store_url, "--json", str(json_path), "--junit", str(junit_path))

    assert result.exit_code == 1, result.output  # FAILED probes: non-zero
    report = json.loads(json_path.read_text())
    statuses = {p["name"]: p["status"] for p in report["probes"]}
    assert statuses == MOTO_EXPECTED, result.output
    assert sorted(report["failed"]) == [
        "canary_change_lock_mode",
        "canary_remove_retention",
        "canary_shorten_retention",
        "retention_matches_policy",
    ]
    short = next(p for p in report["probes"] if p["name"] == "retention_matches_policy")["evidence"]
    assert short["checked"] >= 1 and len(short["short"]) == short["checked"]  # every decision segment named
    assert "FAILED" in result.output and "canary_shorten_retention" in result.output

    # the honest failure carries its evidence: the lock got shorter, and the version could then be deleted
    shorten = next(p for p in report["probes"] if p["name"] == "canary_shorten_retention")
    ev = shorten["evidence"]
    assert (
        ev["lock_before"]["mode"] == "COMPLIANCE"
        and ev["lock_after"]["retain_until"] < ev["lock_before"]["retain_until"]
    )
    assert ev["then_delete_version"]["accepted"] is True
    assert ev["key"].startswith(f"trail/canary/{report['run_id']}/canary_shorten_retention/")
    # "evident" is demonstrated with the real verifier, not assumed
    new_version = next(p for p in report["probes"] if p["name"] == "canary_new_version")["evidence"]
    assert new_version["original_intact"] is True and new_version["verifier_detects"] is True
    assert any("[extra_version]" in f for f in new_version["verifier_findings"])

    # real records: only refused operations, on a gateway record, nothing changed
    record = next(p for p in report["probes"] if p["name"] == "record_delete_version")["evidence"]
    assert record["key"].startswith("trail/chains/gateway-0/segments/") and record["lock_after"] == record["lock"]
    after = _versions_outside_canaries(s3_store)
    assert {k: v for k, v in after.items() if k in before} == before, "a real record was changed"
    new_keys = set(after) - set(before)
    assert new_keys and all(k.startswith(("chains/immutability-0/", "evidence/sha256/", "keys/")) for k in new_keys)
    assert all(len(v) == 1 and not v[0][1] for v in after.values())

    # the evidence is filed: content-addressed document + signed record on its own chain, and the trail verifies
    assert report["filed"]["receipt"]["chain_id"] == "immutability-0"
    (evidence,) = _evidence_records(s3_store)
    assert evidence.evidence_kind == EVIDENCE_KIND and evidence.object_key == report["filed"]["object_key"]
    stored = json.loads(s3_store.get(evidence.object_key))
    assert stored["run_id"] == report["run_id"] and stored["probes"] == report["probes"]
    assert (
        "4 FAILED (canary_shorten_retention, canary_change_lock_mode, canary_remove_retention, retention_matches_policy)"
        in evidence.summary
    )
    verified = verify_store(TrailView(s3_store))
    assert verified.ok, verified.first_failure
    assert {c.chain_id for c in verified.chains} == {"gateway-0", "immutability-0"}

    # JUnit: one testcase per probe (+ the filing), FAILED as <failure>, skipped as <skipped>
    suite = ET.parse(junit_path).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(MOTO_EXPECTED) | {"evidence_filed"}
    assert suite.get("failures") == "4" and suite.get("skipped") == "2"
    assert {n for n, c in cases.items() if c.find("failure") is not None} == set(report["failed"])
    assert {n for n, c in cases.items() if c.find("skipped") is not None} == {
        "record_shorten_retention",
        "record_change_lock_mode",
    }
    assert "PutObjectRetention" in cases["canary_shorten_retention"].find("failure").text


def test_second_run_checks_consistency_with_the_first(verdict_home, s3_store_url, s3_store):
    _trail_with_decisions(s3_store, 2)
    assert _run_cli("--store", s3_store_url, "-q").exit_code == 1
    signer = FileKeyStore.default().current()
    outcome = run_immutability_test(open_store_for_probing(s3_store_url), signer, keyring=FileKeyStore.default())
    probe = next(p for p in outcome.report.probes if p.name == "trail_consistency")
    assert probe.status == "enforced" and "gateway-0@" in " ".join(probe.evidence["checked"])
    assert outcome.report.previous_evidence is not None
    assert len(_evidence_records(s3_store)) == 2


def test_weak_bucket_without_object_lock_names_its_failures(verdict_home, moto_server, weak_s3_bucket, tmp_path):
    url = f"s3://{weak_s3_bucket}/trail?endpoint_url={moto_server.endpoint_url}&region=us-east-1&retention_days=1&timeout=5"
    json_path, junit_path = tmp_path / "weak.json", tmp_path / "weak.xml"

    result = _run_cli("--store", url, "--json", str(json_path), "--junit", str(junit_path))

    assert result.exit_code == 1, result.output
    report = json.loads(json_path.read_text())
    statuses = {p["name"]: p["status"] for p in report["probes"]}
    for name in (
        "bucket_versioning",
        "bucket_object_lock",
        "bucket_default_retention",
        "store_lock_on_write",
        "canary_new_version",
        "canary_delete_marker",
        "canary_delete_version",
        "canary_delete_bypass",
        "canary_shorten_retention",
        "canary_change_lock_mode",
        "canary_remove_retention",
    ):
        assert statuses[name] == "FAILED", (name, result.output)
        assert name in result.output
    assert statuses["canary_overwrite"] == "enforced"  # If-None-Match works even without versioning
    details = {p["name"]: p["detail"] for p in report["probes"]}
    assert "Object Lock is NOT enabled" in details["bucket_object_lock"]
    assert "ORIGINAL BYTES ARE GONE" in details["canary_new_version"]
    assert any("WITHOUT Object Lock headers" in n for n in report["notes"])
    # the store's own write path is refused by this bucket, so no evidence can be filed: said so, and exit 1
    assert report["filed"] is None and "ObjectLockConfiguration" in report["filing_error"]
    assert "evidence NOT filed" in result.output
    suite = ET.parse(junit_path).getroot().find("testsuite")
    failed_cases = {c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert {"bucket_object_lock", "bucket_versioning", "evidence_filed"} <= failed_cases


# --- filesystem ----------------------------------------------------------------------------------------


def test_filesystem_store_reports_enforced_and_evident(verdict_home, tmp_path):
    store = FilesystemStore(verdict_home / "store")
    _trail_with_decisions(store)
    json_path = tmp_path / "fs.json"

    result = _run_cli("--json", str(json_path), "--junit", str(tmp_path / "fs.xml"))

    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    statuses = {p["name"]: p["status"] for p in report["probes"]}
    assert statuses["fs_record_overwrite"] == "enforced"
    assert statuses["fs_record_modes"] == "enforced"
    assert statuses["fs_immutable_attribute"] == "evident"  # the store does not set chattr +i itself
    for name in ("fs_canary_rewrite", "fs_canary_replace", "fs_canary_delete"):
        assert statuses[name] == "evident", result.output  # the filesystem store is tamper-evident
        assert next(p for p in report["probes"] if p["name"] == name)["evidence"]["verifier_detects"] is True
    assert statuses["trail_verification"] == statuses["trail_consistency"] == "enforced"
    assert report["backend"] == "filesystem" and report["result"] == "passed"
    immutable = next(p for p in report["probes"] if p["name"] == "fs_immutable_attribute")
    assert "setting it is" in immutable["detail"]  # permitted or not here: detected and said
    # canaries are removed; the whole store (not a filtered view) verifies, including the evidence record
    assert not (verdict_home / "store" / "canary").exists()
    verified = verify_store(store)
    assert verified.ok, verified.first_failure
    assert len(_evidence_records(store)) == 1
    assert (store.root / report["filed"]["object_key"]).stat().st_mode & 0o777 == 0o444


def test_filesystem_truncation_is_caught_by_the_next_run(verdict_home):
    """A tail cut off together with its checkpoints is invisible to the verifier on its
    own; the heads recorded in the previous evidence reveal it."""
    store = FilesystemStore(verdict_home / "store")
    _trail_with_decisions(store)
    assert _run_cli("-q").exit_code == 0
    chain = store.root / "chains" / "gateway-0"
    last_segment = sorted((chain / "segments").iterdir())[-1]
    first_cut = int(last_segment.name)
    for line in iter_lines(last_segment.read_bytes()):  # a careful insider removes the index entries too
        body = decode_record(split_line(line)[0]).body
        (store.root / layout.index_key(body.request_id)).unlink()
    last_segment.unlink()
    for cp in (chain / "checkpoints").iterdir():
        if int(cp.name) > first_cut:
            cp.unlink()
    alone = verify_store(TrailView(store))
    assert alone.ok, alone.failures  # the verifier alone cannot see it

    result = _run_cli()

    assert result.exit_code == 1
    assert "trail_consistency" in result.output and "gateway-0 shrank" in result.output


def _immutable_flag_permitted(path: Path) -> bool:
    probe = path / "probe"
    probe.write_bytes(b"x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, 0x80086601, buf, True)
        buf[0] |= 0x10
        fcntl.ioctl(fd, 0x40086602, buf, False)
        buf[0] &= ~0x10
        fcntl.ioctl(fd, 0x40086602, buf, False)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


def _set_all_immutable(root: Path, on: bool) -> None:
    for path in root.rglob("*"):
        if path.is_file() and ".incoming" not in path.parts:
            fd = os.open(path, os.O_RDONLY)
            try:
                buf = array.array("i", [0])
                fcntl.ioctl(fd, 0x80086601, buf, True)
                buf[0] = buf[0] | 0x10 if on else buf[0] & ~0x10
                fcntl.ioctl(fd, 0x40086602, buf, False)
            finally:
                os.close(fd)


def test_filesystem_with_chattr_immutable_reports_enforced(verdict_home, tmp_path):
    if not _immutable_flag_permitted(tmp_path):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE on a filesystem with inode flags)")
    store = FilesystemStore(verdict_home / "store")
    _trail_with_decisions(store, 2)
    assert _run_cli("-q").exit_code == 0  # creates the evidence chain before sealing
    _set_all_immutable(store.root, True)
    try:
        result = _run_cli("--json", str(tmp_path / "sealed.json"))
    finally:
        _set_all_immutable(store.root, False)
    assert result.exit_code == 0, result.output
    statuses = {p["name"]: p["status"] for p in json.loads((tmp_path / "sealed.json").read_text())["probes"]}
    assert statuses["fs_immutable_attribute"] == "enforced"
    for name in ("fs_canary_rewrite", "fs_canary_replace", "fs_canary_delete"):
        assert statuses[name] == "enforced", result.output
    assert not (store.root / "canary").exists()


def test_never_writes_to_a_gateway_chain(verdict_home):
    FilesystemStore(verdict_home / "store")
    result = _run_cli("--chain-id", "gateway-0")
    assert result.exit_code == 2 and "never writes to a gateway chain" in result.output
    assert not (verdict_home / "store" / "chains").exists()


def test_missing_store_is_a_usage_error(verdict_home):
    result = _run_cli("--store", (verdict_home / "nowhere").as_uri())
    assert result.exit_code == 2 and "no store" in result.output


def test_anchored_evidence_says_so_and_an_unanchored_run_says_that_too(verdict_home, tmp_path):
    from verdict.audit.trust import RootKey, local_root_path

    store = FilesystemStore(verdict_home / "store")
    _trail_with_decisions(store)
    result = _run_cli("--json", str(tmp_path / "unanchored.json"))
    probes = {p["name"]: p for p in json.loads((tmp_path / "unanchored.json").read_text())["probes"]}
    assert "UNANCHORED" in probes["trail_verification"]["detail"]
    assert probes["trail_verification"]["evidence"]["anchored"] is False
    # with a root: the new evidence chain is certified, the trail verifies anchored ... except the
    # gateway chain made before the root existed, which the evidence names (certify it first)
    RootKey.load_or_create(local_root_path(verdict_home))
    result = runner.invoke(audit_app, ["immutability-test", "--json", str(tmp_path / "anchored.json")])
    assert result.exit_code == 1, result.output
    probes = {p["name"]: p for p in json.loads((tmp_path / "anchored.json").read_text())["probes"]}
    assert probes["trail_verification"]["status"] == "FAILED"
    assert "uncertified_chain" in probes["trail_verification"]["detail"]

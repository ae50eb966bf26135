"""The trust root (spec §5a-§5b): certificates, anchored verification, and what a
store writer without keys can no longer do. Real keys, real chains, a real store."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.audit.golden import make_golden
from tests.audit.helpers import decision, overwrite, signer
from verdict.audit import layout
from verdict.audit.chain import ChainNotAnchored, ChainWriter
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.signing import Ed25519Signer
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import (
    CERTIFICATE_DOMAIN,
    RootKey,
    TrustError,
    certificate_hash,
    decode_certificate,
    decode_policy,
    issue_certificate,
    load_policy,
)
from verdict.audit.verifier import verify_store


def root(n: int = 90) -> RootKey:
    return RootKey(signer(n))


def reasons(report) -> set[str]:
    return {f.reason for f in report.failures}


@pytest.fixture
def anchored(tmp_path):
    """A chain created and rotated under a root: genesis, 3 decisions, rotation, 2 decisions."""
    store = FilesystemStore(tmp_path / "store")
    the_root = root()
    writer = ChainWriter.open(store, "gw-0", signer(1), root=the_root, lease=None)
    writer.append_batch([decision(f"r-{i}") for i in range(3)])
    writer.rotate_key(signer(2), reason="scheduled")
    writer.append_batch([decision(f"s-{i}") for i in range(2)])
    writer.close()
    return store, the_root


# --- format: golden vectors ---------------------------------------------------------------------


def test_golden_trail_verifies_anchored_under_its_policy():
    policy = load_policy(make_golden.POLICY)
    report = verify_store(FilesystemStore(make_golden.STORE_DIR), trust=policy)
    assert report.ok, report.failures
    assert report.anchored and report.certificates == len(make_golden.certificates())
    assert report.trust_roots == [make_golden.root_key().key_id]


def test_golden_certificate_vectors_match_the_spec():
    vectors = json.loads(make_golden.VECTORS.read_text())
    roots = load_policy(make_golden.POLICY).root_keys()
    for vector in vectors["certificates"]:
        data = vector["bytes"].encode()
        cert = decode_certificate(vector["key"], data, roots)
        digest = certificate_hash(cert)
        assert digest.hex() == vector["certificate_sha256"]
        assert (CERTIFICATE_DOMAIN + digest).hex() == vector["signing_input_hex"]
        assert data[15:-104].startswith(b'{"chain_id":') and data[15:-104].endswith(b"}")  # the spec's framing
        assert (make_golden.STORE_DIR / vector["key"]).read_bytes() == data


def test_golden_trail_under_another_root_is_not_anchored():
    report = verify_store(FilesystemStore(make_golden.STORE_DIR), trust=root(77).policy())
    assert not report.ok
    assert {"untrusted_root", "uncertified_chain", "uncertified_key"} <= reasons(report)


# --- the writer certifies, the verifier checks ----------------------------------------------------


def test_writer_certifies_creation_and_rotation(anchored):
    store, the_root = anchored
    keys = sorted(store.list_keys(layout.CERTIFICATES_PREFIX))
    assert keys == [
        layout.certificate_key("gw-0", 0, signer(1).key_id),
        layout.certificate_key("gw-0", 5, signer(2).key_id),
    ]
    report = verify_store(store, trust=the_root.policy())
    assert report.ok, report.failures
    assert report.anchored and report.certificates == 2
    assert verify_store(store).anchored is False  # no policy: the report says it is unanchored


def test_reader_uses_certified_keys(anchored):
    store, the_root = anchored
    verified = read_decision(store, "s-1", trust=the_root.policy())
    assert verified.key_id == signer(2).key_id and verified.seq == 6
    with pytest.raises(ReadError) as exc:
        read_decision(store, "s-1", trust=root(77).policy())
    assert exc.value.reason in {"uncertified_chain", "uncertified_key"}


def test_forged_chain_with_a_fresh_key_is_detected(anchored):
    """Issue 15 (1): key injection + chain injection + index hijack, with no private key of ours."""
    store, the_root = anchored
    forger = Ed25519Signer.from_seed(b"\x66" * 32, "2025-01-01T00:00:00.000000Z")
    with ChainWriter.open(store, "gw-1", forger, lease=None) as forged:  # publishes its key, as a forger can
        forged.append(decision("r-1", score=0.99))  # the request id is already indexed: a duplicate
        forged.append(decision("brand-new", score=0.01))  # a wholly fabricated decision
    # hijack the index of r-1 to point at the forgery
    target = store.root / layout.index_key("r-1")
    forged_entry = (store.root / layout.index_key("brand-new")).read_bytes()
    entry = json.loads(forged_entry)
    overwrite(
        target,
        forged_entry.replace(b'"brand-new"', b'"r-1"').replace(
            entry["request_sha256"].encode(), decision("r-1").request_sha256.encode()
        ),
    )
    report = verify_store(store, trust=the_root.policy())
    assert not report.ok
    assert "uncertified_chain" in reasons(report)
    assert [f.chain_id for f in report.failures if f.reason == "uncertified_chain"] == ["gw-1"]
    with pytest.raises(ReadError) as exc:
        read_decision(store, "brand-new", trust=the_root.policy())
    assert exc.value.reason == "uncertified_chain"
    # unanchored, the same forgery passes the chain checks: exactly the gap the root closes
    assert "uncertified_chain" not in reasons(verify_store(store))


def test_rotation_to_an_uncertified_key_is_detected(tmp_path):
    """A holder of the current signing key (no root) announces a key of its own."""
    store = FilesystemStore(tmp_path / "store")
    the_root = root()
    with ChainWriter.open(store, "gw-0", signer(1), root=the_root, lease=None) as writer:
        writer.append(decision("a"))
    with ChainWriter.open(store, "gw-0", signer(1), lease=None) as writer:  # no trust: the old behaviour
        writer.rotate_key(signer(3))
        writer.append(decision("b"))
    report = verify_store(store, trust=the_root.policy())
    assert (report.first_failure.reason, report.first_failure.seq) == ("uncertified_key", 2)
    # the checkpoints the uncertified key signed are not trusted either
    assert reasons(report) == {"uncertified_key", "bad_checkpoint_signature"}
    # a writer under the policy refuses to extend such a chain
    with pytest.raises(ChainNotAnchored, match=r"uncertified|certificate"):
        ChainWriter.open(store, "gw-0", signer(3), policy=the_root.policy(), lease=None)


def test_writer_without_the_root_needs_a_certificate_issued_beforehand(tmp_path):
    store = FilesystemStore(tmp_path / "store")
    the_root = root()
    with pytest.raises(ChainNotAnchored, match="verdict trust certify"):
        ChainWriter.open(store, "gw-0", signer(1), policy=the_root.policy(), lease=None)
    assert not list(store.list_keys(layout.segments_prefix("gw-0")))  # nothing written
    the_root.certify(store, "gw-0", signer(1).public_key_document, 0, "verdict/gw-0")
    with ChainWriter.open(store, "gw-0", signer(1), policy=the_root.policy(), lease=None) as writer:
        writer.append(decision("a"))
    assert verify_store(store, trust=the_root.policy()).ok


def test_altered_and_foreign_certificates_are_rejected(anchored):
    store, the_root = anchored
    key = layout.certificate_key("gw-0", 5, signer(2).key_id)
    original = store.get(key)
    overwrite(store.root / key, original.replace(b'"from_seq":5', b'"from_seq":6'))
    assert {"bad_certificate", "uncertified_key"} <= reasons(verify_store(store, trust=the_root.policy()))
    foreign = issue_certificate(signer(77), "gw-0", signer(2).public_key_document, 5, "verdict/gw-0")
    overwrite(store.root / key, foreign)
    assert {"untrusted_root", "uncertified_key"} <= reasons(verify_store(store, trust=the_root.policy()))


def test_certify_is_idempotent_and_refuses_a_different_certificate(anchored):
    store, the_root = anchored
    doc = signer(1).public_key_document
    assert the_root.certify(store, "gw-0", doc, 0, "verdict/gw-0") == layout.certificate_key("gw-0", 0, doc.key_id)
    with pytest.raises(TrustError):
        the_root.certify(store, "gw-0", doc, 0, "verdict/other")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: {**p, "format": "x"}, "format"),
        (lambda p: {**p, "roots": []}, "at least one root"),
        (lambda p: {**p, "roots": [{**p["roots"][0], "key_id": "ed25519:0000000000000000"}]}, "does not match"),
        (lambda p: {**p, "witness_quorum": 1}, "witness_quorum"),
        (lambda p: {**p, "extra": 1}, "unknown field"),
    ],
)
def test_bad_trust_policies_are_refused(mutate, message):
    policy = json.loads(root().policy().encode())
    with pytest.raises(TrustError, match=message) as exc:
        decode_policy(json.dumps(mutate(policy)).encode())
    assert exc.value.reason == "bad_trust_policy"


def test_root_key_file_is_private_and_stable(tmp_path):
    path = tmp_path / "trust" / "root.pem"
    first, created = RootKey.load_or_create(path)
    again, created_again = RootKey.load_or_create(path)
    assert created and not created_again and first.key_id == again.key_id
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    path.chmod(0o644)
    with pytest.raises(TrustError, match="group/others"):
        RootKey.load(path)


def test_golden_copy_without_certificates_fails_anchored(tmp_path):
    copy = tmp_path / "golden"
    shutil.copytree(make_golden.STORE_DIR, copy)
    for path in (copy / "trust").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(copy / "trust")
    report = verify_store(FilesystemStore(copy), trust=load_policy(make_golden.POLICY))
    assert report.first_failure.reason == "uncertified_chain"
    assert reasons(report) == {"uncertified_chain", "uncertified_key", "bad_checkpoint_signature"}


def test_a_certificate_nothing_uses_is_reported(anchored):
    store, the_root = anchored
    the_root.certify(store, "gw-0", signer(7).public_key_document, 99, "verdict/gw-0")  # the root alone
    report = verify_store(store, trust=the_root.policy())
    assert report.ok, report.failures
    assert [(n.reason, n.chain_id) for n in report.notes if n.reason == "unused_certificate"] == [
        ("unused_certificate", "gw-0")
    ]


def test_every_test_the_threat_model_names_exists():
    """docs/audit-format.md §12a: every "detected" row names its test; the names must stay true."""
    import re
    from pathlib import Path

    tests = Path(__file__).parents[1]
    doc = (tests.parent / "docs" / "audit-format.md").read_text()
    table = doc.split("## 12a. Threat model", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| adversary")]
    assert len(rows) >= 12
    for row in rows:
        named = re.findall(r"`([a-z_/]+\.py)`", row.rsplit("|", 2)[-2])
        if "detected" in row and "**never**" not in row.split("|")[3].lower():
            assert named, f"a detected row without a test: {row}"
        for name in named:
            assert (tests / name).is_file(), f"§12a names {name}, which does not exist"

"""The record format: golden vectors (bytes must never drift), schema rules,
segment lines, and an independent re-derivation of hashes and signatures
with nothing but hashlib, base64 and cryptography."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import typing
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.audit.golden import make_golden
from verdict.audit.records import (
    FORMAT,
    GENESIS_PREV_HASH,
    NOT_EXPLAINED,
    AccessBody,
    Body,
    DecisionBody,
    EncryptedInputs,
    PlainInputs,
    Record,
    RecordError,
    decode_record,
    encode_line,
    explain_bucket,
    iter_lines,
    record_bytes,
    record_hash,
    split_line,
)
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import verify_store

GOLDEN = Path(make_golden.__file__).parent
GOLDEN_STORE = GOLDEN / "store"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rebuilding_the_golden_trail_gives_identical_bytes(tmp_path):
    """Every object of the golden trail (records, signatures, index entries, key
    documents, checkpoint notes) is rebuilt by today's code byte for byte."""
    make_golden.build(tmp_path / "store")
    rebuilt = _files(tmp_path / "store")
    committed = _files(GOLDEN_STORE)
    assert sorted(rebuilt) == sorted(committed)
    for key in committed:
        assert rebuilt[key] == committed[key], f"{key} drifted from the golden vector"


def test_golden_vectors_file_matches_the_golden_trail():
    assert json.loads((GOLDEN / "records.json").read_text()) == make_golden.vectors(GOLDEN_STORE)


def test_golden_trail_verifies(tmp_path):
    shutil.copytree(GOLDEN_STORE, tmp_path / "store")
    report = verify_store(FilesystemStore(tmp_path / "store"))
    assert report.ok, report.failures
    # golden-0 (6 records, 3 checkpoints, 2 index entries), golden-registry (5, 2, 1), golden-1 (3, 2, 2),
    # golden-models (4, 2, 0), golden-sealed (6, 2, 2), golden-fidelity (4, 2, 3)
    assert report.records == 28 and report.checkpoints == 13 and report.index_entries == 10


def test_golden_vectors_independently():
    """What an auditor does: slice the record out of the line, SHA-256 it, check
    the link and the Ed25519 signature over the domain-separated hash."""
    vectors = json.loads((GOLDEN / "records.json").read_text())
    keys = {}
    for key in vectors["keys"]:
        doc = key["document"]
        raw = base64.b64decode(doc["public_key"])
        assert doc["key_id"] == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
        keys[doc["key_id"]] = Ed25519PublicKey.from_public_bytes(raw)
    prev = "0" * 64
    for n, vector in enumerate(vectors["records"]):
        line = vector["line"].encode()
        assert line.startswith(b'{"record":') and line.endswith(b'"}')
        record_text = line[len(b'{"record":') : -len(b',"signature":"') - 88 - 2]
        assert record_text == vector["canonical"].encode()
        digest = hashlib.sha256(record_text).digest()
        assert digest.hex() == vector["sha256"]
        record = json.loads(record_text)
        assert record["seq"] == n and record["prev_hash"] == prev and record["format"] == FORMAT
        signing_input = b"verdict.audit.record.v1\x00" + digest
        assert signing_input.hex() == vector["signing_input_hex"]
        keys[record["key_id"]].verify(base64.b64decode(vector["signature_b64"]), signing_input)
        prev = digest.hex()


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("openssl", "xxd", "sha256sum", "sed")), reason="needs openssl, xxd"
)
def test_documented_shell_check_works(tmp_path):
    """The shell example in docs/audit-format.md, run on the golden trail."""
    doc = (Path(__file__).parents[2] / "docs" / "audit-format.md").read_text()
    script = doc.split("```sh\n", 1)[1].split("```", 1)[0]
    shutil.copytree(GOLDEN_STORE, tmp_path / "store")
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path / "store", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout


def test_documented_python_verifier_works(tmp_path):
    """The independent Python sketch in docs/audit-format.md, run on the golden trail."""
    import sys

    doc = (Path(__file__).parents[2] / "docs" / "audit-format.md").read_text()
    script = next(b.split("```", 1)[0] for b in doc.split("```python\n")[1:] if "sys.argv" in b)
    (tmp_path / "verify.py").write_text(script)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "verify.py"), str(GOLDEN_STORE), "golden-0", str(make_golden.POLICY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "chain golden-0: 6 records, all checks passed" in result.stdout


# --- schema -------------------------------------------------------------------------------------


def _golden_records() -> list[Record]:
    vectors = json.loads((GOLDEN / "records.json").read_text())
    return [decode_record(v["canonical"].encode()) for v in vectors["records"]]


def test_records_round_trip_and_hash():
    for record in _golden_records():
        data = record_bytes(record)
        assert decode_record(data) == record
        assert record_hash(record) == hashlib.sha256(data).digest()


def test_every_body_kind_is_in_the_golden_trail():
    kinds = [type(r.body).__struct_config__.tag for r in _golden_records()]
    assert kinds == ["genesis", "decision", "access", "evidence", "key_rotation", "decision"]
    registry = json.loads((GOLDEN / "records.json").read_text())["registry"]["records"]
    registry_kinds = [type(decode_record(v["canonical"].encode()).body).__struct_config__.tag for v in registry]
    assert registry_kinds == ["genesis", "registry", "registry", "decision", "registry"]
    sealed = json.loads((GOLDEN / "records.json").read_text())["sealed"]["records"]
    sealed_kinds = [type(decode_record(v["canonical"].encode()).body).__struct_config__.tag for v in sealed]
    assert sealed_kinds == ["genesis", "decision", "decision", "legal_hold", "legal_hold", "erasure"]
    every = {t.__struct_config__.tag for t in typing.get_args(Body)}
    assert every == set(kinds) | set(registry_kinds) | set(sealed_kinds)
    assert isinstance(_golden_records()[1].body.inputs, PlainInputs)
    assert isinstance(_golden_records()[5].body.inputs, EncryptedInputs)


def test_absent_optional_fields_are_absent_not_null():
    record = _golden_records()[5]
    assert isinstance(record.body, DecisionBody) and record.body.subject_id is None
    data = record_bytes(record)
    assert b"subject_id" not in data and b"null" not in data
    access = msgspec.structs.replace(_golden_records()[2].body, purpose=None)
    assert b"purpose" not in record_bytes(msgspec.structs.replace(_golden_records()[2], body=access))


def test_format_and_tags_are_always_encoded():
    data = record_bytes(_golden_records()[2])
    assert b'"format":"verdict.audit/v1"' in data and b'"kind":"access"' in data
    assert b'"algorithm":"ed25519"' in record_bytes(_golden_records()[0])
    assert b'"algorithm":"AES-256-GCM"' in record_bytes(_golden_records()[5])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="verdict.audit/v3"), "format"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(seq=-1), "seq"),
        (lambda d: d.update(prev_hash="ABC"), "prev_hash"),
        (lambda d: d.update(time="2025-01-01 00:00:00"), "time"),
        (lambda d: d.update(key_id="rsa:1"), "key_id"),
        (lambda d: d["body"].update(kind="mystery"), "kind"),
        (lambda d: d["body"].pop("score"), "score"),
        (lambda d: d["body"]["inputs"].update(kind="zip"), "inputs"),
    ],
)
def test_schema_violations_are_rejected(mutate, message):
    data = json.loads(record_bytes(_golden_records()[1]))
    mutate(data)
    with pytest.raises(RecordError, match=message):
        decode_record(json.dumps(data).encode())


def _explain_bucket_records() -> list[Record]:
    vectors = json.loads((GOLDEN / "records.json").read_text())["explain_bucket"]
    return [decode_record(v["canonical"].encode()) for v in vectors["records"]]


def test_explain_bucket_is_a_runtime_field_on_new_records_and_absent_on_old_ones():
    """golden-1 (spec §3 "Explain bucket"): the explained decision names its bucket in
    ``runtime``, its budget only its evaluations; the not-explained one names none.
    golden-0's decisions, written before the field, re-encode without it."""
    explained, not_explained = (r.body for r in _explain_bucket_records()[1:])
    assert explained.runtime.explain_bucket == 4096 and explained.explanation.budget == {"evaluations": 913}
    assert b'"explain_bucket":4096' in record_bytes(_explain_bucket_records()[1])
    assert not_explained.explanation.method == NOT_EXPLAINED == "none"
    assert not_explained.runtime.explain_bucket is None and not not_explained.reasons
    old = _golden_records()[1]
    assert old.body.runtime.explain_bucket is None and b"explain_bucket" not in record_bytes(old)


def test_explain_bucket_rule_for_old_and_new_records():
    """runtime.explain_bucket, else the legacy explanation.budget.bucket, else the caller's default."""
    new = _explain_bucket_records()[1].body
    oldest = _golden_records()[1].body  # neither: the manifest's bucket applies
    legacy = msgspec.structs.replace(
        oldest, explanation=msgspec.structs.replace(oldest.explanation, budget={"evaluations": 913, "bucket": 512})
    )
    assert explain_bucket(new) == explain_bucket(new, default=7) == 4096
    assert explain_bucket(legacy) == explain_bucket(legacy, default=7) == 512
    assert explain_bucket(oldest) is None and explain_bucket(oldest, default=7) == 7
    not_a_bucket = msgspec.structs.replace(
        oldest, explanation=msgspec.structs.replace(oldest.explanation, budget={"bucket": "4096"})
    )
    assert explain_bucket(not_a_bucket, default=7) == 7


def test_header_helpers_and_constants():
    assert GENESIS_PREV_HASH == "0" * 64
    assert _golden_records()[0].prev_hash == GENESIS_PREV_HASH


# --- segment lines ------------------------------------------------------------------------------


def test_line_encoding_is_the_canonical_json_of_record_and_signature():
    record = _golden_records()[2]
    data = record_bytes(record)
    signature = bytes(range(64))
    line = encode_line(data, signature)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    from verdict.audit.canonical import canonical_bytes

    assert line[:-1] == canonical_bytes({"record": json.loads(data), "signature": base64.b64encode(signature).decode()})
    assert split_line(line[:-1]) == (data, signature)


@pytest.mark.parametrize(
    "line",
    [
        b'{"signature":"x","record":{}}',
        b'{"record":{},"signature":"' + b"A" * 87 + b'="}',
        b'{"record":{},"signature":"' + b"!" * 88 + b'"}',
        b"garbage",
    ],
)
def test_malformed_lines_are_rejected(line):
    with pytest.raises(RecordError):
        split_line(line)


def test_segment_must_end_with_newline():
    assert iter_lines(b"a\nb\n") == [b"a", b"b"]
    with pytest.raises(RecordError, match="truncated"):
        iter_lines(b"a\nb")


def test_access_body_fields():
    body = AccessBody(
        action="replay", actor_key_id="k", target_request_id="r", accessed_at="2025-01-01T00:00:00.000000Z"
    )
    assert msgspec.json.decode(msgspec.json.encode(body), type=AccessBody) == body

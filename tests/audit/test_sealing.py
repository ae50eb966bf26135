"""Sealed personal data, format ``verdict.audit/v2`` (spec §3a), against the golden vectors.

The envelopes are opened here twice: with :mod:`audit.sealing`, and by hand with
``cryptography``'s AES-GCM and the spec's associated data, as an independent
implementation would; both must give the stated plaintext."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.audit.golden import make_golden
from verdict.audit.canonical import canonical_bytes
from verdict.audit.records import (
    DecisionBody,
    ErasureBody,
    LegalHoldBody,
    PlainInputs,
    RecordError,
    SealedInputs,
    decode_record,
    record_bytes,
)
from verdict.audit.sealing import SealError, open_sealed, seal
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import verify_store

GOLDEN = Path(make_golden.__file__).parent
SEALED = json.loads((GOLDEN / "records.json").read_text())["sealed"]
KEYS = {ref: bytes.fromhex(key) for ref, key in SEALED["data_keys"].items()}


def _records():
    return [decode_record(v["canonical"].encode()) for v in SEALED["records"]]


def _by_hand(body: dict) -> dict:
    """Open an envelope as the spec says, without Verdict's code."""
    inputs = body["inputs"]
    aad = b"verdict.audit/v2 sealed\x00" + body["request_id"].encode()
    plain = AESGCM(KEYS[inputs["key_ref"]]).decrypt(
        base64.b64decode(inputs["nonce"]), base64.b64decode(inputs["ciphertext"]), aad
    )
    return json.loads(plain)


def test_golden_envelopes_open_to_the_clear_decisions():
    records = _records()
    subject, own = records[1].body, records[2].body
    assert isinstance(subject, DecisionBody) and isinstance(subject.inputs, SealedInputs)
    assert records[1].format == "verdict.audit/v2" and records[0].format == "verdict.audit/v1"
    assert _by_hand(json.loads(SEALED["records"][1]["canonical"])["body"]) == {
        "attributes": {"age": 29, "credit_amount": 7200, "duration": 36, "purpose": "A41"},
        "reasons": [
            {"text": "Duration of credit: 48 months raised the risk", "value": 48},
            {
                "text": "Kreditzweck \u201eFernseher\u201c erh\u00f6hte das Risiko",
                "value": "A43 (Fernseher \U0001f4fa)",
            },
        ],
        "subject_id": "applicant-\u00f6-77",
    }
    assert _by_hand(json.loads(SEALED["records"][2]["canonical"])["body"]) == {
        "attributes": {"age": 29, "credit_amount": 7200, "duration": 36, "purpose": "A41"},
        "reasons": [],
    }
    opened = open_sealed(subject, KEYS[subject.inputs.key_ref])
    assert opened.subject_id == "applicant-\u00f6-77"
    assert isinstance(opened.inputs, PlainInputs) and opened.inputs.attributes["purpose"] == "A41"
    assert [r.value for r in opened.reasons] == [48, "A43 (Fernseher \U0001f4fa)"]
    # Sealing the opened decision again with the same nonce gives the stored bytes back.
    again = seal(opened, KEYS[subject.inputs.key_ref], subject.inputs.key_ref, nonce=bytes(range(12)))
    assert canonical_bytes(again) == canonical_bytes(subject)
    assert isinstance(own.inputs, SealedInputs) and open_sealed(own, KEYS[own.inputs.key_ref]).subject_id is None


def test_no_personal_field_is_in_clear():
    text = SEALED["records"][1]["canonical"]
    for personal in ("applicant", "A41", "7200", "Fernseher", "48 months"):
        assert personal not in text
    body = json.loads(text)["body"]
    assert "subject_id" not in body and all(set(r) == {"attribute", "label", "direction"} for r in body["reasons"])


def test_holds_and_erasure_name_keys_and_decisions_only():
    hold, release, erasure = (r.body for r in _records()[3:])
    assert isinstance(hold, LegalHoldBody) and (hold.action, release.action) == ("hold", "release")
    assert isinstance(erasure, ErasureBody) and erasure.cause == "request"
    assert erasure.key_refs == ["dk_" + "5" * 32] and erasure.request_ids == ["req-0006"]


def test_an_altered_or_moved_envelope_does_not_open():
    body = _records()[1].body
    key = KEYS[body.inputs.key_ref]
    raw = bytearray(base64.b64decode(body.inputs.ciphertext))
    raw[5] ^= 1
    altered = msgspec.structs.replace(
        body, inputs=msgspec.structs.replace(body.inputs, ciphertext=base64.b64encode(bytes(raw)).decode())
    )
    with pytest.raises(SealError, match="does not authenticate"):
        open_sealed(altered, key)
    with pytest.raises(SealError, match="does not authenticate"):  # the AAD binds it to req-0006
        open_sealed(msgspec.structs.replace(body, request_id="req-0099"), key)
    with pytest.raises(SealError, match="does not authenticate"):
        open_sealed(body, KEYS["dk_" + "7" * 32])


def _mutated(index: int, mutate) -> bytes:
    data = json.loads(SEALED["records"][index]["canonical"])
    mutate(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("index", "mutate", "message"),
    [
        (1, lambda d: d.update(format="verdict.audit/v1"), r"not verdict\.audit/v1"),
        (1, lambda d: d["body"].update(subject_id="x"), "subject_id"),
        (1, lambda d: d["body"]["reasons"][0].update(value=48), "value or text"),
        (1, lambda d: d["body"]["inputs"].update(nonce="AAAA"), "nonce"),
        (1, lambda d: d["body"]["inputs"].update(key_ref="dk_1"), "key_ref"),
        (3, lambda d: d.update(format="verdict.audit/v1"), r"not verdict\.audit/v1"),
        (5, lambda d: d["body"].update(key_refs=[]), "key_refs"),
        (5, lambda d: d["body"].update(request_ids=["b", "a"]), "sorted"),
        (5, lambda d: d["body"].update(cause="whim"), "cause"),
    ],
)
def test_v2_rules_are_enforced_on_decode(index, mutate, message):
    with pytest.raises(RecordError, match=message):
        decode_record(_mutated(index, mutate))


def test_a_plain_decision_cannot_claim_v2():
    golden0 = json.loads((GOLDEN / "records.json").read_text())["records"][1]["canonical"]
    data = json.loads(golden0)
    data["format"] = "verdict.audit/v2"
    with pytest.raises(RecordError, match=r"not verdict\.audit/v2"):
        decode_record(json.dumps(data).encode())


def test_the_trail_verifies_without_keys_and_catches_an_altered_ciphertext(tmp_path):
    shutil.copytree(GOLDEN / "store", tmp_path / "store")
    store_dir = tmp_path / "store"
    assert verify_store(FilesystemStore(store_dir)).ok
    segment = sorted((store_dir / "chains" / "golden-sealed" / "segments").iterdir())[1]
    lines = segment.read_bytes().split(b"\n")
    record = decode_record(lines[0][len(b'{"record":') : lines[0].index(b',"signature":')])
    sealed = record.body.inputs
    raw = bytearray(base64.b64decode(sealed.ciphertext))
    raw[0] ^= 0x80
    forged = base64.b64encode(bytes(raw)).decode()
    lines[0] = lines[0].replace(sealed.ciphertext.encode(), forged.encode())
    assert record_bytes(record) in SEALED["records"][1]["line"].encode()
    segment.chmod(0o644)
    segment.write_bytes(b"\n".join(lines))
    report = verify_store(FilesystemStore(store_dir))
    assert not report.ok
    assert {f.reason for f in report.failures} & {"hash_mismatch", "bad_signature"}


def test_the_documented_opening_sketch_opens_the_golden_envelopes():
    """The Python lines of docs/audit-format.md §3a, run as written."""
    doc = (GOLDEN.parents[2] / "docs" / "audit-format.md").read_text()
    sketch = next(b.split("```", 1)[0] for b in doc.split("```python\n")[1:] if "def open_envelope" in b)
    namespace: dict = {}
    exec(compile(sketch, "audit-format.md", "exec"), namespace)  # the spec's own code
    body = json.loads(SEALED["records"][1]["canonical"])["body"]
    assert namespace["open_envelope"](body, KEYS[body["inputs"]["key_ref"]])["subject_id"] == "applicant-\u00f6-77"

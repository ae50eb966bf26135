"""Builds the golden audit trail in tests/audit/golden (fixed keys, fixed clock).

The committed files pin the format: canonical bytes, hashes, signatures,
segment lines, index entries, key documents and checkpoint notes. The tests
rebuild the trail with the current code and require every byte to match.

Regenerate ONLY for an intended format change (which also needs a new
format string):  .venv/bin/python -m tests.audit.golden.make_golden
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from pathlib import Path

from audit import layout
from audit.canonical import canonical_bytes
from audit.chain import ChainWriter
from audit.records import (
    AccessBody,
    DecisionBody,
    EncryptedInputs,
    EvidenceBody,
    Explanation,
    ModelRef,
    PlainInputs,
    Reason,
    Runtime,
    iter_lines,
    split_line,
)
from audit.signing import RECORD_SIGNATURE_DOMAIN, Ed25519Signer
from audit.stores import FilesystemStore

HERE = Path(__file__).parent
STORE_DIR = HERE / "store"
VECTORS = HERE / "records.json"
CHAIN = "golden-0"
SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
CREATED_A = "2025-01-01T00:00:00.000000Z"
CREATED_B = "2025-06-01T00:00:00.000000Z"
EVIDENCE_DOC = b'{"kind":"immutability_test","result":"pass"}\n'


def signer_a() -> Ed25519Signer:
    return Ed25519Signer.from_seed(SEED_A, CREATED_A)


def signer_b() -> Ed25519Signer:
    return Ed25519Signer.from_seed(SEED_B, CREATED_B)


class FixedClock:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"2025-01-02T03:04:{self.n:02d}.123456Z"


def decision(request_id: str, inputs, *, subject_id: str | None = None) -> DecisionBody:  # noqa: ANN001
    return DecisionBody(
        request_id=request_id,
        subject_id=subject_id,
        request_sha256=hashlib.sha256(request_id.encode()).hexdigest(),
        received_at="2025-01-02T03:04:00.000001Z",
        decided_at="2025-01-02T03:04:00.250000Z",
        model=ModelRef(name="german-credit-mlp", version="1.0.0", sha256=hashlib.sha256(b"model").hexdigest()),
        environment_sha256=hashlib.sha256(b"environment").hexdigest(),
        runtime=Runtime(device="cpu", dtype="float32", bucket=64, threads=1),
        inputs=inputs,
        score=0.7312500000000001,
        decision="decline",
        explanation=Explanation(
            method="shap.PermutationExplainer",
            output_space="probability",
            base_value=0.3,
            contributions={"duration": 0.21, "credit_amount": 1e-7, "age": -0.0, "savings": 0.0, "purpose": 1e21},
            seed=1234567,
            budget={"max_evals": 2048, "evaluations": 2048},
            additivity_error=2.220446049250313e-16,
        ),
        reasons=[
            Reason(
                attribute="duration",
                label="Duration of credit",
                value=48,
                direction="raises_risk",
                text="Duration of credit: 48 months raised the risk",
            ),
            Reason(
                attribute="purpose",
                label="Zweck",
                value="A43 (Fernseher \U0001f4fa)",
                direction="raises_risk",
                text="Kreditzweck \u201eFernseher\u201c erh\u00f6hte das Risiko",
            ),
        ],
    )


def build(root: Path) -> FilesystemStore:
    """Write the golden trail into an empty directory ``root``."""
    store = FilesystemStore(root)
    evidence_sha = hashlib.sha256(EVIDENCE_DOC).hexdigest()
    store.put_once(layout.evidence_key(evidence_sha), EVIDENCE_DOC)
    writer = ChainWriter.open(
        store, CHAIN, signer_a(), created_by="verdict golden vectors", clock=FixedClock(),
        lease=None,  # fixed bytes: a lease holds the real time, pid and a random token
    )
    plain = PlainInputs(attributes={"duration": 48, "credit_amount": 5951.0, "purpose": "A43", "age": 22.5})
    writer.append_batch(
        [
            decision("req-0001", plain, subject_id="applicant-\u00e9-42"),
            AccessBody(
                action="explanation",
                actor_key_id="apikey-compliance-1",
                target_request_id="req-0001",
                accessed_at="2025-01-03T09:00:00.000000Z",
                purpose="GDPR Art. 22 request",
            ),
        ]
    )
    writer.append_batch(
        [
            EvidenceBody(
                evidence_kind="immutability_test",
                object_key=layout.evidence_key(evidence_sha),
                sha256=evidence_sha,
                summary="nightly immutability test: pass",
            )
        ]
    )
    writer.rotate_key(signer_b(), reason="scheduled rotation")
    sealed = EncryptedInputs(
        key_ref="kms:alias/verdict-inputs",
        algorithm="AES-256-GCM",
        nonce=base64.b64encode(bytes(12)).decode(),
        ciphertext=base64.b64encode(b"\x00" * 40).decode(),
        aad="verdict.inputs.v1|golden-0|req-0002",
    )
    writer.append_batch([decision("req-0002", sealed)])
    writer.close()
    shutil.rmtree(root / ".incoming", ignore_errors=True)
    return store


def vectors(root: Path) -> dict:
    """Per record: canonical text, SHA-256, signature input and signature (for auditors)."""
    out = []
    for key in sorted((root / layout.segments_prefix(CHAIN)).iterdir()):
        for line in iter_lines(key.read_bytes()):
            raw, signature = split_line(line)
            digest = hashlib.sha256(raw).digest()
            out.append(
                {
                    "segment": key.relative_to(root).as_posix(),
                    "canonical": raw.decode("utf-8"),
                    "sha256": digest.hex(),
                    "signing_input_hex": (RECORD_SIGNATURE_DOMAIN + digest).hex(),
                    "signature_b64": base64.b64encode(signature).decode(),
                    "line": line.decode("utf-8"),
                }
            )
    return {
        "keys": [
            {"seed_hex": SEED_A.hex(), "document": json.loads(canonical_bytes(signer_a().public_key_document))},
            {"seed_hex": SEED_B.hex(), "document": json.loads(canonical_bytes(signer_b().public_key_document))},
        ],
        "records": out,
    }


def main() -> None:
    if STORE_DIR.exists():
        for path in STORE_DIR.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(STORE_DIR)
    build(STORE_DIR)
    for path in STORE_DIR.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    VECTORS.write_text(json.dumps(vectors(STORE_DIR), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {STORE_DIR} and {VECTORS}", file=sys.stderr)


if __name__ == "__main__":
    main()

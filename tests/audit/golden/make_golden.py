"""Builds the golden audit trail in tests/audit/golden (fixed keys, fixed clock).

The committed files pin the format: canonical bytes, hashes, signatures,
segment lines, index entries, key documents and checkpoint notes. The tests
rebuild the trail with the current code and require every byte to match.

The registry chain (spec §3 ``registry``) is pinned by a second chain,
``golden-registry``, certified by the same root: a registration, a promotion,
a decision pinning its manifest (``manifest_sha256``) and a status change,
with the registry objects they name (and the model blob and environment
manifest golden-0's decisions name). golden-0's bytes are unchanged by it.

Decisions as written since ``runtime.explain_bucket`` became a field (spec §3,
"Explain bucket" and "Not explained") are pinned by a third chain,
``golden-1``: one explained decision carrying the field, one not explained.
golden-0's and golden-registry's decisions keep the older shape byte for byte
(what a record written before the field looks like).

Registry records of packaged models (a registration naming its validation
report, status events naming their status objects) are pinned by a fourth
chain, ``golden-models``; the earlier chains' bytes are unchanged by it.

Sealed personal data (``verdict.audit/v2``, spec §3a) is pinned by a fifth chain,
``golden-sealed``: a sealed decision with a subject, one without, a legal hold and its
release, and an erasure, under fixed data keys and nonces (``sealed.data_keys``).

Explanation fidelity (spec §3 "Fidelity") is pinned by a sixth chain, ``golden-fidelity``:
one decision per explainer algorithm as the gateway writes it (certified sampling with
bounds and ``z``, certified; the legacy shared-order sample, not certified and without
bounds; exact enumeration, zero bounds); the earlier chains' bytes are unchanged by it.

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

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.chain import ChainWriter
import msgspec

from verdict.audit.records import (
    NOT_EXPLAINED,
    AccessBody,
    DecisionBody,
    EncryptedInputs,
    ErasureBody,
    EvidenceBody,
    Explanation,
    Fidelity,
    ModelRef,
    LegalHoldBody,
    ModelVersion,
    PlainInputs,
    Reason,
    RegistryBody,
    Runtime,
    iter_lines,
    split_line,
)
from verdict.audit.sealing import seal
from verdict.audit.signing import RECORD_SIGNATURE_DOMAIN, Ed25519Signer
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import CERTIFICATE_DOMAIN, RootKey, certificate_hash, decode_certificate, issue_certificate
from verdict.gateway.registry_log import append_records

HERE = Path(__file__).parent
STORE_DIR = HERE / "store"
VECTORS = HERE / "records.json"
CHAIN = "golden-0"
SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
CREATED_A = "2025-01-01T00:00:00.000000Z"
CREATED_B = "2025-06-01T00:00:00.000000Z"
EVIDENCE_DOC = b'{"kind":"immutability_test","result":"pass"}\n'
ROOT_SEED = bytes(range(64, 96))
ROOT_CREATED = "2024-12-01T00:00:00.000000Z"
CERTIFIED_AT = "2024-12-31T00:00:00.000000Z"
POLICY = HERE / "trust-policy.json"
"""The trust policy the golden trail is pinned under (spec §5b): its root certified golden-0's keys."""
REGISTRY_CHAIN = "golden-registry"
MODEL_NAME, MODEL_VERSION = "german-credit-mlp", "1.0.0"
MODEL_BLOB = b"model"
"""The artifact golden-0's decisions name (sha256 of these bytes)."""
ENVIRONMENT_DOC = b"environment"
BACKGROUND_BLOB = b"background"
PROMOTED_AT = "2025-01-02T03:05:00.500000Z"
EXPLAIN_BUCKET_CHAIN = "golden-1"
"""Decisions carrying ``runtime.explain_bucket`` (and one not explained)."""
MODELS_CHAIN = "golden-models"
"""Registry records of bring-your-own models: a registration naming its validation
report (``validation_sha256``), a validation status and a revocation naming their
status objects (``status_key``/``status_sha256``)."""
BYO_NAME, BYO_VERSION = "claims-triage", "1.0.0"
SEALED_CHAIN = "golden-sealed"
"""Sealed decisions, a legal hold, its release and an erasure (``verdict.audit/v2``)."""
FIDELITY_CHAIN = "golden-fidelity"
"""Decisions carrying ``explanation.fidelity``, one per explainer algorithm."""
DATA_KEYS = {
    "dk_" + "5" * 32: bytes(range(96, 128)),  # the subject's key (req-0006)
    "dk_" + "7" * 32: bytes(range(128, 160)),  # req-0007's own key (no subject)
}
"""Fixed data keys of golden-sealed (an implementation checks its envelopes open with them)."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MANIFEST_DOC = canonical_bytes({
    "artifact_sha256": _sha(MODEL_BLOB), "background_sha256": _sha(BACKGROUND_BLOB),
    "name": MODEL_NAME, "version": MODEL_VERSION,
})
"""An illustrative manifest (the audit format pins its bytes by hash, not its schema: docs/models.md)."""
MANIFEST_KEY = f"models/manifests/{MODEL_NAME}/{MODEL_VERSION}.json"
ALIAS_KEY = f"models/aliases/{MODEL_NAME}/production/00000000.json"
ALIAS_DOC = canonical_bytes({
    "alias": "production", "name": MODEL_NAME, "promoted_at": PROMOTED_AT, "promoted_by": "golden vectors",
    "sequence": 0, "version": MODEL_VERSION,
})


BYO_MANIFEST_DOC = canonical_bytes({
    "artifact_sha256": _sha(MODEL_BLOB), "background_sha256": _sha(BACKGROUND_BLOB),
    "name": BYO_NAME, "version": BYO_VERSION,
})
"""An illustrative manifest of a packaged model (same blobs as golden-registry's)."""
VALIDATION_DOC = canonical_bytes({
    "format": "verdict.validation/v1", "model": f"{BYO_NAME}:{BYO_VERSION}", "passed": True,
    "checks": [{"name": "batch_invariance", "passed": True, "detail": "bit-identical"}],
})
"""An illustrative validation report (the registry stores it as evidence before the registration record)."""
STATUS_DOCS = [
    (f"models/status/{BYO_NAME}/{BYO_VERSION}/00000000.json", canonical_bytes({
        "at": "2025-01-02T03:07:10.000000Z", "by": "model risk", "name": BYO_NAME, "note": "MRM-2025-17",
        "sequence": 0, "status": "validated", "version": BYO_VERSION,
    })),
    (f"models/status/{BYO_NAME}/{BYO_VERSION}/00000001.json", canonical_bytes({
        "at": "2025-01-02T03:07:20.000000Z", "by": "incident 42", "name": BYO_NAME, "note": "scores drifted",
        "sequence": 1, "status": "revoked", "version": BYO_VERSION,
    })),
]
"""Status objects: a validation status, then a revocation (spec §3 "Status vocabulary")."""


def models_objects() -> list[tuple[str, bytes]]:
    """(store key, bytes) of the objects golden-models' records name, in write order."""
    return [
        (layout.evidence_key(_sha(VALIDATION_DOC)), VALIDATION_DOC),
        (f"models/manifests/{BYO_NAME}/{BYO_VERSION}.json", BYO_MANIFEST_DOC),
        *STATUS_DOCS,
    ]


def registry_objects() -> list[tuple[str, bytes]]:
    """(store key, bytes) of the registry objects the golden trail names, in write order."""
    return [
        (f"models/blobs/sha256/{_sha(MODEL_BLOB)}", MODEL_BLOB),
        (f"models/blobs/sha256/{_sha(BACKGROUND_BLOB)}", BACKGROUND_BLOB),
        (f"environments/sha256/{_sha(ENVIRONMENT_DOC)}", ENVIRONMENT_DOC),
        (MANIFEST_KEY, MANIFEST_DOC),
        (ALIAS_KEY, ALIAS_DOC),
    ]


def signer_a() -> Ed25519Signer:
    return Ed25519Signer.from_seed(SEED_A, CREATED_A)


def signer_b() -> Ed25519Signer:
    return Ed25519Signer.from_seed(SEED_B, CREATED_B)


def root_signer() -> Ed25519Signer:
    return Ed25519Signer.from_seed(ROOT_SEED, ROOT_CREATED)


def root_key() -> RootKey:
    return RootKey(root_signer())


def certificates() -> list[tuple[str, bytes]]:
    """(store key, bytes) of the golden certificates: golden-0's two (key A from seq 0, key B
    from seq 5, rotation at 4), then golden-registry's, golden-1's, golden-models', golden-sealed's
    and golden-fidelity's (key A from seq 0)."""
    out = []
    chains = (
        (CHAIN, 0, signer_a()), (CHAIN, 5, signer_b()), (REGISTRY_CHAIN, 0, signer_a()),
        (EXPLAIN_BUCKET_CHAIN, 0, signer_a()), (MODELS_CHAIN, 0, signer_a()), (SEALED_CHAIN, 0, signer_a()),
        (FIDELITY_CHAIN, 0, signer_a()),
    )
    for chain, from_seq, signer in chains:
        doc = signer.public_key_document
        data = issue_certificate(root_signer(), chain, doc, from_seq, f"verdict/{chain}", issued_at=CERTIFIED_AT)
        out.append((layout.certificate_key(chain, from_seq, doc.key_id), data))
    return out


class FixedClock:
    def __init__(self, minute: int = 4) -> None:
        self.n = 0
        self.minute = minute

    def __call__(self) -> str:
        self.n += 1
        return f"2025-01-02T03:{self.minute:02d}:{self.n:02d}.123456Z"


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
    build_registry(store)
    build_explain_bucket(store)
    build_models(store)
    build_sealed(store)
    build_fidelity(store)
    # Certified after the fact with a fixed issue time (a root at the writer would stamp the real time).
    for key, data in certificates():
        store.put_once(key, data)
    shutil.rmtree(root / ".incoming", ignore_errors=True)
    return store


def build_registry(store: FilesystemStore) -> None:
    """The registry chain: its objects first, then the records naming them (spec §3 ``registry``)."""
    for key, data in registry_objects():
        store.put_once(key, data)
    model = ModelVersion(name=MODEL_NAME, version=MODEL_VERSION)
    writer = ChainWriter.open(
        store, REGISTRY_CHAIN, signer_a(), created_by="verdict golden vectors", clock=FixedClock(minute=5), lease=None,
    )
    append_records(writer, [
        RegistryBody(event="registration", model=model, manifest_sha256=_sha(MANIFEST_DOC),
                     artifact_sha256=_sha(MODEL_BLOB), background_sha256=_sha(BACKGROUND_BLOB),
                     by="golden vectors", at="2025-01-02T03:05:00.250000Z"),
        RegistryBody(event="promotion", model=model, manifest_sha256=_sha(MANIFEST_DOC), alias="production",
                     alias_key=ALIAS_KEY, alias_sha256=_sha(ALIAS_DOC), by="golden vectors", at=PROMOTED_AT),
    ])
    plain = PlainInputs(attributes={"duration": 12, "credit_amount": 1000.0, "purpose": "A40", "age": 35.0})
    writer.append_batch([msgspec.structs.replace(decision("req-0003", plain), manifest_sha256=_sha(MANIFEST_DOC))])
    append_records(writer, [
        RegistryBody(event="status", model=model, manifest_sha256=_sha(MANIFEST_DOC), status="suspended",
                     reason="golden vectors: a status change", by="golden vectors", at="2025-01-02T03:05:30.000000Z"),
    ])
    writer.close()


def build_models(store: FilesystemStore) -> None:
    """golden-models: a registration with its validation report, a validation status
    and a revocation with their status objects (spec §3 ``registry``)."""
    for key, data in models_objects():
        store.put_once(key, data)
    model = ModelVersion(name=BYO_NAME, version=BYO_VERSION)
    writer = ChainWriter.open(
        store, MODELS_CHAIN, signer_a(), created_by="verdict golden vectors", clock=FixedClock(minute=7), lease=None,
    )
    manifest_sha = _sha(BYO_MANIFEST_DOC)
    append_records(writer, [
        RegistryBody(event="registration", model=model, manifest_sha256=manifest_sha,
                     artifact_sha256=_sha(MODEL_BLOB), background_sha256=_sha(BACKGROUND_BLOB),
                     validation_sha256=_sha(VALIDATION_DOC), by="golden vectors", at="2025-01-02T03:07:00.000000Z"),
    ])
    for (key, data), status, reason, by, at in zip(
        STATUS_DOCS,
        ("validated", "revoked"),
        ("MRM-2025-17", "scores drifted"),
        ("model risk", "incident 42"),
        ("2025-01-02T03:07:10.000000Z", "2025-01-02T03:07:20.000000Z"),
        strict=True,
    ):
        append_records(writer, [
            RegistryBody(event="status", model=model, manifest_sha256=manifest_sha, status=status,
                         status_key=key, status_sha256=_sha(data), reason=reason, by=by, at=at),
        ])
    writer.close()


def build_sealed(store: FilesystemStore) -> None:
    """golden-sealed: two sealed decisions (spec §3a), then a legal hold on the subject's
    decision, its release, and the erasure of the subject's key."""
    writer = ChainWriter.open(
        store, SEALED_CHAIN, signer_a(), created_by="verdict golden vectors", clock=FixedClock(minute=8), lease=None,
    )
    subject_key, own_key = DATA_KEYS
    plain = PlainInputs(attributes={"duration": 36, "credit_amount": 7200.0, "purpose": "A41", "age": 29.0})
    with_subject = msgspec.structs.replace(
        decision("req-0006", plain, subject_id="applicant-\u00f6-77"), manifest_sha256=_sha(MANIFEST_DOC)
    )
    not_explained = msgspec.structs.replace(
        decision("req-0007", plain),
        explanation=Explanation(
            method=NOT_EXPLAINED, output_space="probability", base_value=0.0, contributions={}, seed=0
        ),
        reasons=[],
        manifest_sha256=_sha(MANIFEST_DOC),
    )
    writer.append_batch([
        seal(with_subject, DATA_KEYS[subject_key], subject_key, nonce=bytes(range(12))),
        seal(not_explained, DATA_KEYS[own_key], own_key, nonce=bytes(range(12, 24))),
    ])
    writer.append_batch([
        LegalHoldBody(action="hold", key_refs=[subject_key], request_ids=["req-0006"],
                      basis="litigation hold, case 2025-CV-0193", by="legal", at="2025-01-02T03:08:10.000000Z"),
    ])
    writer.append_batch([
        LegalHoldBody(action="release", key_refs=[subject_key], request_ids=["req-0006"],
                      basis="case 2025-CV-0193 closed", by="legal", at="2025-01-02T03:08:20.000000Z"),
        ErasureBody(key_refs=[subject_key], request_ids=["req-0006"], cause="request",
                    basis="GDPR Art. 17(1)(a), ticket DPO-2025-114", by="dpo", at="2025-01-02T03:08:30.000000Z"),
    ])
    writer.close()


def build_explain_bucket(store: FilesystemStore) -> None:
    """golden-1: an explained decision with ``runtime.explain_bucket`` (its budget holds only
    ``evaluations``) and a decision made with explanations switched off (spec §3)."""
    writer = ChainWriter.open(
        store, EXPLAIN_BUCKET_CHAIN, signer_a(), created_by="verdict golden vectors", clock=FixedClock(minute=6),
        lease=None,
    )
    plain = PlainInputs(attributes={"duration": 24, "credit_amount": 2500.0, "purpose": "A43", "age": 41.0})
    explained = msgspec.structs.replace(
        decision("req-0004", plain),
        runtime=Runtime(device="cpu", dtype="float32", bucket=64, threads=1, explain_bucket=4096),
        explanation=Explanation(
            method="interventional-shapley/antithetic-permutations",
            output_space="probability",
            base_value=0.3,
            contributions={"duration": 0.25, "credit_amount": -0.03125, "age": 0.0, "purpose": 0.2125},
            seed=4242,
            budget={"evaluations": 913},
            additivity_error=5.551115123125783e-17,
        ),
        reasons=[
            Reason(
                attribute="duration",
                label="Duration of credit",
                value=24,
                direction="raises_risk",
                text="Duration of credit: 24 months raised the risk",
            ),
        ],
        manifest_sha256=_sha(MANIFEST_DOC),
    )
    not_explained = msgspec.structs.replace(
        decision("req-0005", plain),
        explanation=Explanation(
            method=NOT_EXPLAINED, output_space="probability", base_value=0.0, contributions={}, seed=0
        ),
        reasons=[],
        manifest_sha256=_sha(MANIFEST_DOC),
    )
    writer.append_batch([explained, not_explained])
    writer.close()


def build_fidelity(store: FilesystemStore) -> None:
    """golden-fidelity: one explained decision per explainer algorithm, each with the
    ``explanation.fidelity`` the gateway writes for it (spec §3 "Fidelity")."""
    writer = ChainWriter.open(
        store, FIDELITY_CHAIN, signer_a(), created_by="verdict golden vectors", clock=FixedClock(minute=9),
        lease=None,
    )
    plain = PlainInputs(attributes={"duration": 30, "credit_amount": 4000.0, "purpose": "A40", "age": 27.0})
    contributions = {"duration": 0.25, "credit_amount": -0.03125, "age": 0.0, "purpose": 0.2125}
    shapes = (
        ("req-0008", "interventional-shapley/certified-per-reference-permutations", 4242, Fidelity(
            certified=True, evaluations=2913, pairs=24, z=3.0,
            error_bounds={"duration": 0.0078125, "credit_amount": 0.001953125, "age": 0.0, "purpose": 0.00390625},
        )),
        ("req-0009", "interventional-shapley/antithetic-permutations", 4243,
         Fidelity(certified=False, evaluations=913, pairs=1)),
        ("req-0010", "interventional-shapley/exact-enumeration", 4244, Fidelity(
            certified=True, evaluations=1537, pairs=0, error_bounds=dict.fromkeys(contributions, 0.0),
        )),
    )
    bodies = [
        msgspec.structs.replace(
            decision(request_id, plain),
            runtime=Runtime(device="cpu", dtype="float32", bucket=64, threads=1, explain_bucket=4096),
            explanation=Explanation(
                method=method,
                output_space="probability",
                base_value=0.3,
                contributions=contributions,
                seed=seed,
                budget={"evaluations": fidelity.evaluations},
                additivity_error=5.551115123125783e-17,
                fidelity=fidelity,
            ),
            reasons=[
                Reason(
                    attribute="duration",
                    label="Duration of credit",
                    value=30,
                    direction="raises_risk",
                    text="Duration of credit: 30 months raised the risk",
                ),
            ],
            manifest_sha256=_sha(MANIFEST_DOC),
        )
        for request_id, method, seed, fidelity in shapes
    ]
    writer.append_batch(bodies)
    writer.close()


def _chain_vectors(root: Path, chain: str) -> list[dict]:
    out = []
    for key in sorted((root / layout.segments_prefix(chain)).iterdir()):
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
    return out


def _certificate_vectors(chain: str) -> list[dict]:
    certs = []
    for key, data in certificates():
        if layout.parse_certificate_key(key)[0] != chain:
            continue
        cert = decode_certificate(key, data, root_key().policy().root_keys())
        digest = certificate_hash(cert)
        certs.append({"key": key, "bytes": data.decode(), "certificate_sha256": digest.hex(),
                      "signing_input_hex": (CERTIFICATE_DOMAIN + digest).hex()})
    return certs


def vectors(root: Path) -> dict:
    """Per record: canonical text, SHA-256, signature input and signature (for auditors).

    ``records`` and ``certificates``: golden-0; ``registry``: the registry chain with
    the objects its records (and golden-0's decisions) name; ``explain_bucket``: golden-1;
    ``models``: golden-models with the objects its records name; ``sealed``: golden-sealed
    with its data keys; ``fidelity``: golden-fidelity."""
    return {
        "fidelity": {
            "chain_id": FIDELITY_CHAIN,
            "certificates": _certificate_vectors(FIDELITY_CHAIN),
            "records": _chain_vectors(root, FIDELITY_CHAIN),
        },
        "sealed": {
            "chain_id": SEALED_CHAIN,
            "data_keys": {key_ref: key.hex() for key_ref, key in DATA_KEYS.items()},
            "certificates": _certificate_vectors(SEALED_CHAIN),
            "records": _chain_vectors(root, SEALED_CHAIN),
        },
        "models": {
            "chain_id": MODELS_CHAIN,
            "objects": [{"key": key, "sha256": _sha(data), "bytes": data.decode("utf-8")}
                        for key, data in models_objects()],
            "certificates": _certificate_vectors(MODELS_CHAIN),
            "records": _chain_vectors(root, MODELS_CHAIN),
        },
        "explain_bucket": {
            "chain_id": EXPLAIN_BUCKET_CHAIN,
            "certificates": _certificate_vectors(EXPLAIN_BUCKET_CHAIN),
            "records": _chain_vectors(root, EXPLAIN_BUCKET_CHAIN),
        },
        "registry": {
            "chain_id": REGISTRY_CHAIN,
            "objects": [{"key": key, "sha256": _sha(data), "bytes": data.decode("utf-8")}
                        for key, data in registry_objects()],
            "certificates": _certificate_vectors(REGISTRY_CHAIN),
            "records": _chain_vectors(root, REGISTRY_CHAIN),
        },
        "trust_root": {"seed_hex": ROOT_SEED.hex(), "policy": json.loads(root_key().policy().encode())},
        "certificates": _certificate_vectors(CHAIN),
        "keys": [
            {"seed_hex": SEED_A.hex(), "document": json.loads(canonical_bytes(signer_a().public_key_document))},
            {"seed_hex": SEED_B.hex(), "document": json.loads(canonical_bytes(signer_b().public_key_document))},
        ],
        "records": _chain_vectors(root, CHAIN),
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
    POLICY.write_bytes(root_key().policy().encode())
    print(f"wrote {STORE_DIR} and {VECTORS}", file=sys.stderr)


if __name__ == "__main__":
    main()

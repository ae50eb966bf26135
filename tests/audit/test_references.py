"""Objects the records name (spec §10 step 6a): model blobs, environment manifests,
pinned model manifests, evidence documents, and the registry chain's alias objects.
Real keys, real chains, a real filesystem store; tampering as an intruder would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest

from tests.audit.golden import make_golden
from tests.audit.helpers import decision, overwrite, signer
from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.chain import ChainWriter
from verdict.audit.records import (
    EvidenceBody,
    ModelRef,
    ModelVersion,
    RecordError,
    RegistryBody,
    decode_body,
)
from verdict.audit.references import blob_key, environment_key, manifest_key
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import RootKey
from verdict.audit.verifier import NOTES, REASONS, verify_store
from verdict.gateway.registry_log import RegistryLog

NAME, VERSION = "german-credit-mlp", "1.0.0"
ARTIFACT, BACKGROUND, ENVIRONMENT = b"artifact bytes", b"background bytes", b'{"python":"3.11"}'
MANIFEST = canonical_bytes(
    {
        "artifact_sha256": hashlib.sha256(ARTIFACT).hexdigest(),
        "name": NAME,
        "version": VERSION,
        "decision": {"threshold": 0.1667},
    }
)
ALIAS_KEY = f"models/aliases/{NAME}/production/00000000.json"
ALIAS = canonical_bytes(
    {
        "alias": "production",
        "name": NAME,
        "promoted_at": "2025-01-01T00:00:00.000000Z",
        "promoted_by": "test",
        "sequence": 0,
        "version": VERSION,
    }
)


REGISTRY_BASE = {
    "kind": "registry",
    "model": {"name": NAME, "version": VERSION},
    "manifest_sha256": "a" * 64,
    "by": "cli",
    "at": "2025-01-01T00:00:00.000000Z",
}
"""The fields every registry record body has (a registry record minus its event's own)."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def the_root() -> RootKey:
    return RootKey(signer(90))


def reasons(report) -> set[str]:
    return {f.reason for f in report.failures}


def pinned_decision(request_id: str, *, manifest: bytes | None = MANIFEST):
    body = decision(request_id)
    return msgspec.structs.replace(
        body,
        model=ModelRef(name=NAME, version=VERSION, sha256=sha(ARTIFACT)),
        environment_sha256=sha(ENVIRONMENT),
        manifest_sha256=sha(manifest) if manifest is not None else None,
    )


def put_registry_objects(store: FilesystemStore) -> None:
    for key, data in (
        (blob_key(sha(ARTIFACT)), ARTIFACT),
        (blob_key(sha(BACKGROUND)), BACKGROUND),
        (environment_key(sha(ENVIRONMENT)), ENVIRONMENT),
        (manifest_key(NAME, VERSION), MANIFEST),
        (ALIAS_KEY, ALIAS),
    ):
        store.put_once(key, data)


def record_registry(store: FilesystemStore) -> None:
    """The registry chain, as the registry's event log writes it: after the objects."""
    model = ModelVersion(name=NAME, version=VERSION)
    RegistryLog(store, signer(3), root=the_root()).record(
        [
            RegistryBody(
                event="registration",
                model=model,
                manifest_sha256=sha(MANIFEST),
                artifact_sha256=sha(ARTIFACT),
                background_sha256=sha(BACKGROUND),
                by="test",
                at="2025-01-01T00:00:00.000000Z",
            ),
            RegistryBody(
                event="promotion",
                model=model,
                manifest_sha256=sha(MANIFEST),
                alias="production",
                alias_key=ALIAS_KEY,
                alias_sha256=sha(ALIAS),
                by="test",
                at="2025-01-01T00:00:00.000000Z",
            ),
        ]
    )


@pytest.fixture
def bound(tmp_path):
    """A store with a registry chain: objects, registration + promotion records, 20 decisions pinning them."""
    store = FilesystemStore(tmp_path / "store")
    put_registry_objects(store)
    record_registry(store)
    with ChainWriter.open(store, "gw-0", signer(1), root=the_root(), lease=None) as writer:
        writer.append_batch([pinned_decision(f"r-{i}") for i in range(20)])
    return store


def verify(store):
    return verify_store(store, trust=the_root().policy())


def test_reason_codes_are_in_the_spec_table():
    text = (Path(__file__).parents[2] / "docs" / "audit-format.md").read_text(encoding="utf-8")
    for code in ("missing_object", "object_mismatch", "unrecorded_alias"):
        assert code in REASONS and f"| `{code}` |" in text
    assert "registry_unbound" in NOTES and "`registry_unbound`" in text


def test_registered_and_promoted_model_verifies(bound):
    report = verify(bound)
    assert report.ok, report.failures
    assert not [n for n in report.notes if n.reason == "registry_unbound"]
    registry_chain = next(c for c in report.chains if c.chain_id == "registry")
    assert registry_chain.records == 3 and registry_chain.checkpoints >= 1


@pytest.mark.parametrize(
    "key", [blob_key(sha(ARTIFACT)), environment_key(sha(ENVIRONMENT)), manifest_key(NAME, VERSION)]
)
def test_deleted_object_is_missing(bound, key):
    path = bound.root / key
    path.chmod(0o644)
    path.unlink()
    report = verify(bound)
    assert reasons(report) == {"missing_object"}
    # one failure per distinct object, however many records name it (20 decisions + registry records)
    assert [f.key for f in report.failures] == [key]
    assert "named by" in report.failures[0].message


def test_edited_manifest_is_an_object_mismatch(bound):
    path = bound.root / manifest_key(NAME, VERSION)
    overwrite(path, MANIFEST.replace(b'"threshold":0.1667', b'"threshold":0.9'))
    report = verify(bound)
    assert reasons(report) == {"object_mismatch"}
    (failure,) = report.failures
    assert (
        failure.key == manifest_key(NAME, VERSION) and "22 record(s)" in failure.message
    )  # 20 decisions, 2 registry records


def test_edited_blob_is_a_content_hash_mismatch_once(bound):
    key = blob_key(sha(ARTIFACT))
    overwrite(bound.root / key, b"another model")
    report = verify(bound)
    assert reasons(report) == {"content_hash_mismatch"}  # step 6 re-hashed it; not reported twice
    assert [f.key for f in report.failures] == [key]


def test_alias_written_by_hand_is_unrecorded(bound):
    forged = f"models/aliases/{NAME}/production/00000001.json"
    bound.put_once(forged, ALIAS.replace(b'"sequence":0', b'"sequence":1'))
    report = verify(bound)
    assert reasons(report) == {"unrecorded_alias"}
    assert [f.key for f in report.failures] == [forged]


def test_edited_alias_is_an_object_mismatch(bound):
    overwrite(bound.root / ALIAS_KEY, ALIAS.replace(b'"promoted_by":"test"', b'"promoted_by":"intruder"'))
    assert reasons(verify(bound)) == {"object_mismatch"}


def test_deleted_alias_is_missing(bound):
    path = bound.root / ALIAS_KEY
    path.chmod(0o644)
    path.unlink()
    report = verify(bound)
    assert reasons(report) == {"missing_object"} and report.failures[0].chain_id == "registry"


def test_evidence_document_must_exist_and_match(tmp_path):
    store = FilesystemStore(tmp_path / "store")
    document = b'{"kind":"immutability_test","result":"pass"}'
    store.put_once(layout.evidence_key(sha(document)), document)
    with ChainWriter.open(store, "ev-0", signer(1), root=the_root(), lease=None) as writer:
        writer.append(
            EvidenceBody(
                evidence_kind="immutability_test",
                object_key=layout.evidence_key(sha(document)),
                sha256=sha(document),
                summary="ok",
            )
        )
        writer.append(
            EvidenceBody(
                evidence_kind="immutability_test",
                object_key=layout.evidence_key(sha(document)),
                sha256=sha(b"something else"),
                summary="names another hash",
            )
        )
        writer.append(
            EvidenceBody(
                evidence_kind="replay_report",
                object_key=layout.evidence_key(sha(b"never written")),
                sha256=sha(b"never written"),
                summary="never written",
            )
        )
    report = verify(store)
    # evidence is held to its objects on every store, with or without a registry chain
    assert reasons(report) == {"object_mismatch", "missing_object"}
    assert {(f.reason, f.seq) for f in report.failures} == {("object_mismatch", 2), ("missing_object", 3)}


def test_store_without_registry_chain_notes_missing_objects(tmp_path):
    """A store from before the registry chain: decisions whose objects are elsewhere verify,
    with a note; a pinned manifest that is present is still held to its hash."""
    store = FilesystemStore(tmp_path / "store")
    store.put_once(manifest_key(NAME, VERSION), MANIFEST)
    store.put_once(f"models/aliases/{NAME}/production/00000000.json", ALIAS)
    with ChainWriter.open(store, "gw-0", signer(1), root=the_root(), lease=None) as writer:
        writer.append_batch([decision("old-1"), pinned_decision("new-1")])
    report = verify(store)
    assert report.ok, report.failures
    (note,) = [n for n in report.notes if n.reason == "registry_unbound"]
    assert "5 object(s)" in note.message  # two blobs, two environments, one alias object
    overwrite(store.root / manifest_key(NAME, VERSION), MANIFEST + b" ")
    assert reasons(verify(store)) == {"object_mismatch"}


def test_a_registry_chain_makes_missing_objects_failures(tmp_path):
    store = FilesystemStore(tmp_path / "store")
    with ChainWriter.open(store, "gw-0", signer(1), root=the_root(), lease=None) as writer:
        writer.append_batch([decision("old-1")])
    assert verify(store).ok
    put_registry_objects(store)
    record_registry(store)
    report = verify(store)
    assert reasons(report) == {"missing_object"}
    assert sorted(f.key for f in report.failures) == [environment_key("b" * 64), blob_key("a" * 64)]


def test_registry_bodies_are_checked_per_event():
    base = dict(REGISTRY_BASE)
    ok = dict(base, event="promotion", alias="production", alias_key=ALIAS_KEY, alias_sha256="b" * 64)
    assert isinstance(decode_body(json.dumps(ok).encode()), RegistryBody)
    bad = [
        dict(base, event="registration"),  # no blobs
        dict(base, event="registration", artifact_sha256="c" * 64, background_sha256="d" * 64, status="retired"),
        dict(ok, alias_key="models/aliases/other-model/production/00000000.json"),
        dict(ok, alias_key=f"models/aliases/{NAME}/staging/00000000.json"),
        dict(ok, alias_key="evidence/sha256/" + "e" * 64),
        dict(base, event="status"),
        dict(base, event="status", status="revoked", status_key=f"models/status/{NAME}/{VERSION}/00000000.json"),
        dict(base, event="status", status="revoked", status_sha256="f" * 64),
        dict(
            base,
            event="status",
            status="revoked",
            status_key=f"models/status/other/{VERSION}/00000000.json",
            status_sha256="f" * 64,
        ),
        dict(
            base,
            event="status",
            status="revoked",
            status_key=f"models/status/{NAME}/9.9.9/00000000.json",
            status_sha256="f" * 64,
        ),
        dict(
            base,
            event="promotion",
            alias="production",
            alias_key=ALIAS_KEY,
            alias_sha256="b" * 64,
            validation_sha256="f" * 64,
        ),
        dict(base, event="status", status="validated", validation_sha256="f" * 64),
        dict(base, event="deletion"),
        dict(ok, unknown="x"),
    ]
    for body in bad:
        with pytest.raises(RecordError):
            decode_body(json.dumps(body).encode())


def test_golden_registry_chain_has_every_event_and_a_pinned_decision():
    vectors = json.loads(make_golden.VECTORS.read_text())["registry"]
    bodies = [json.loads(r["canonical"])["body"] for r in vectors["records"]]
    assert [b["kind"] for b in bodies] == ["genesis", "registry", "registry", "decision", "registry"]
    assert [b.get("event") for b in bodies if b["kind"] == "registry"] == ["registration", "promotion", "status"]
    objects = {o["key"]: o for o in vectors["objects"]}
    assert bodies[3]["manifest_sha256"] == objects[make_golden.MANIFEST_KEY]["sha256"]
    for key, data in make_golden.registry_objects():
        assert (make_golden.STORE_DIR / key).read_bytes() == data and objects[key]["sha256"] == sha(data)
    assert vectors["certificates"][0]["key"].startswith("trust/certificates/golden-registry/")


def test_new_registry_fields_decode_on_their_own_events():
    base = dict(REGISTRY_BASE)
    registration = dict(
        base, event="registration", artifact_sha256="c" * 64, background_sha256="d" * 64, validation_sha256="e" * 64
    )
    status = dict(
        base,
        event="status",
        status="revoked",
        status_key=f"models/status/{NAME}/{VERSION}/00000003.json",
        status_sha256="f" * 64,
    )
    assert decode_body(json.dumps(registration).encode()).validation_sha256 == "e" * 64
    assert decode_body(json.dumps(status).encode()).status_key.endswith("00000003.json")


def _golden_models_store(tmp_path: Path) -> FilesystemStore:
    import shutil  # lazy: only the golden-store tests copy a tree

    shutil.copytree(make_golden.STORE_DIR, tmp_path / "store")
    return FilesystemStore(tmp_path / "store")


def test_golden_models_chain_names_its_validation_report_and_status_objects():
    vectors = json.loads(make_golden.VECTORS.read_text())["models"]
    bodies = [json.loads(r["canonical"])["body"] for r in vectors["records"]]
    assert [b.get("event") for b in bodies[1:]] == ["registration", "status", "status"]
    objects = {o["key"]: o for o in vectors["objects"]}
    assert objects[layout.evidence_key(bodies[1]["validation_sha256"])]["sha256"] == bodies[1]["validation_sha256"]
    assert [b["status"] for b in bodies[2:]] == ["validated", "revoked"]
    for body in bodies[2:]:
        assert objects[body["status_key"]]["sha256"] == body["status_sha256"]


def test_an_altered_validation_report_or_status_object_is_reported(tmp_path):
    store = _golden_models_store(tmp_path)
    vectors = json.loads(make_golden.VECTORS.read_text())["models"]
    bodies = [json.loads(r["canonical"])["body"] for r in vectors["records"]]
    root = tmp_path / "store"
    overwrite(root / layout.evidence_key(bodies[1]["validation_sha256"]), b'{"passed":true}')
    overwrite(root / bodies[2]["status_key"], b'{"status":"validated","by":"nobody"}')
    report = verify_store(store)
    failed = {(f.reason, f.key) for f in report.failures}
    assert ("content_hash_mismatch", layout.evidence_key(bodies[1]["validation_sha256"])) in failed
    assert ("object_mismatch", bodies[2]["status_key"]) in failed


def test_a_status_object_no_record_names_is_reported(tmp_path):
    """A store writer who adds a "validated" (or "revoked") status by hand: unrecorded_status."""
    store = _golden_models_store(tmp_path)
    forged = f"models/status/{make_golden.BYO_NAME}/{make_golden.BYO_VERSION}/00000002.json"
    store.put_once(forged, canonical_bytes({"name": make_golden.BYO_NAME, "status": "validated", "sequence": 2}))
    report = verify_store(store)
    assert {(f.reason, f.key) for f in report.failures} == {("unrecorded_status", forged)}
    assert "unrecorded_status" in REASONS


def test_a_promotion_recorded_while_verifying_is_a_note(bound):
    """A live registry: the alias object was listed, its record appended after the listing."""
    later = f"models/aliases/{NAME}/production/00000001.json"
    alias = ALIAS.replace(b'"sequence":0', b'"sequence":1')
    bound.put_once(later, alias)
    recorded: list[bool] = []

    def progress(phase: str, done: int, total: int) -> None:
        if not recorded:
            recorded.append(True)
            RegistryLog(bound, signer(3), root=the_root()).record(
                [
                    RegistryBody(
                        event="promotion",
                        model=ModelVersion(name=NAME, version=VERSION),
                        manifest_sha256=sha(MANIFEST),
                        alias="production",
                        alias_key=later,
                        alias_sha256=sha(alias),
                        by="test",
                        at="2025-01-01T00:00:01.000000Z",
                    )
                ]
            )

    report = verify_store(bound, trust=the_root().policy(), progress=progress)
    assert report.ok, report.failures
    assert any(n.reason == "written_during_verification" and n.key == later for n in report.notes)
    assert verify(bound).ok  # and once listed, the record is simply there

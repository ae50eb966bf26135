"""Registry: content addressing, immutability, tamper refusal, aliases."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from tests.audit.helpers import overwrite, signer
from verdict.audit import layout
from verdict.audit.records import iter_lines, split_line
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store
from verdict.gateway.registry import Registry, RegistryError, TamperedBlob, UnknownModel, blob_key, parse_ref
from verdict.gateway.registry_log import ADOPTED_BY, ADOPTED_REASON, REGISTRY_CHAIN, RegistryLog


@pytest.fixture
def fresh(tmp_path, trained_dirs):
    store = FilesystemStore(tmp_path / "store")
    return Registry(store), trained_dirs["german-credit"]


def test_register_is_idempotent_for_identical_bytes(fresh):
    registry, directory = fresh
    manifest, new = registry.register(directory)
    assert new
    again, new_again = registry.register(directory)
    assert not new_again and again == manifest
    assert registry.versions("german-credit") == ["1.0.0"]


def test_same_version_with_different_bytes_is_refused(fresh, tmp_path):
    registry, directory = fresh
    registry.register(directory)
    other = tmp_path / "other"
    shutil.copytree(directory, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["description"] = "a different model under the same version"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="already registered with different content"):
        registry.register(other)


def test_artifact_not_matching_manifest_is_refused(fresh, tmp_path):
    registry, directory = fresh
    other = tmp_path / "other"
    shutil.copytree(directory, other)
    data = bytearray((other / "model.pt2").read_bytes())
    data[-100] ^= 0x01
    (other / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="hashes to"):
        registry.register(other)


def test_tampered_blob_in_store_is_refused_on_load(fresh):
    from verdict.gateway.runtime import load_model

    registry, directory = fresh
    manifest, _ = registry.register(directory)
    path = registry.store.root / blob_key(manifest.artifact_sha256)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedBlob, match="altered or corrupted"):
        load_model(registry, "german-credit", "1.0.0")


def test_missing_blob_is_reported(fresh):
    registry, directory = fresh
    manifest, _ = registry.register(directory)
    os.unlink(registry.store.root / blob_key(manifest.artifact_sha256))
    with pytest.raises(RegistryError, match="missing from the store"):
        registry.artifact(manifest)


def test_unknown_model_and_version(fresh):
    registry, directory = fresh
    with pytest.raises(UnknownModel, match="no model named 'nope'"):
        registry.manifest("nope")
    registry.register(directory)
    with pytest.raises(UnknownModel, match=r"no version '9.9' \(known: 1.0.0\)"):
        registry.manifest("german-credit", "9.9")


def test_promotion_history_is_append_only(fresh, tmp_path):
    registry, directory = fresh
    registry.register(directory)
    assert registry.alias("german-credit", "production") is None
    first = registry.promote("german-credit", "1.0.0")
    second = registry.promote("german-credit", "1.0.0", by="ops")
    assert (first.sequence, second.sequence) == (0, 1)
    assert registry.alias("german-credit", "production").promoted_by == "ops"
    with pytest.raises(UnknownModel):
        registry.promote("german-credit", "2.0.0")


def test_parse_ref():
    assert parse_ref("german-credit") == ("german-credit", None)
    assert parse_ref("german-credit:1.0.0") == ("german-credit", "1.0.0")
    with pytest.raises(RegistryError):
        parse_ref("a:b:c")


# --- the registry bound into the trail (docs/audit-format.md §3 registry, §10 step 6a) ---------


def _root() -> RootKey:
    return RootKey(signer(90))


def _registry_records(store) -> list[dict]:
    out = []
    for key in store.list_keys(layout.segments_prefix(REGISTRY_CHAIN)):
        for line in iter_lines(store.get(key)):
            record = json.loads(split_line(line)[0])
            if record["body"]["kind"] == "registry":
                out.append(record["body"])
    return out


def _reasons(report) -> set[str]:
    return {f.reason for f in report.failures}


@pytest.fixture
def recorded(tmp_path, trained_dirs):
    store = FilesystemStore(tmp_path / "store")
    return Registry(store, events=RegistryLog(store, signer(3), root=_root())), trained_dirs["german-credit"]


def test_registration_and_promotion_are_recorded_and_verify(recorded):
    registry, directory = recorded
    manifest, _ = registry.register(directory, by="ops")
    registry.register(directory)  # identical: nothing written, nothing recorded
    event = registry.promote("german-credit", "1.0.0", by="ops")
    store = registry.store
    manifest_sha = hashlib.sha256(store.get("models/manifests/german-credit/1.0.0.json")).hexdigest()
    assert registry.manifest_sha256("german-credit", "1.0.0") == manifest_sha
    registration, promotion = _registry_records(store)
    assert registration == {
        "kind": "registry",
        "event": "registration",
        "model": {"name": "german-credit", "version": "1.0.0"},
        "manifest_sha256": manifest_sha,
        "artifact_sha256": manifest.artifact_sha256,
        "background_sha256": manifest.explainer.background_sha256,
        "validation_sha256": registration["validation_sha256"],
        "by": "ops",
        "at": registration["at"],
    }
    report_bytes = store.get(layout.evidence_key(registration["validation_sha256"]))
    assert hashlib.sha256(report_bytes).hexdigest() == registration["validation_sha256"]
    assert json.loads(report_bytes)["passed"] is True and json.loads(report_bytes)["model"] == "german-credit:1.0.0"
    assert registry.validation_report("german-credit", "1.0.0") == report_bytes
    alias_key = "models/aliases/german-credit/production/00000000.json"
    assert promotion["event"] == "promotion" and promotion["alias_key"] == alias_key
    assert promotion["alias_sha256"] == hashlib.sha256(store.get(alias_key)).hexdigest()
    assert promotion["at"] == event.promoted_at and promotion["by"] == "ops"
    report = verify_store(store, trust=_root().policy())
    assert report.ok, report.failures


def test_an_alias_written_by_hand_is_reported(recorded):
    registry, directory = recorded
    registry.register(directory)
    registry.promote("german-credit", "1.0.0")
    forged = Registry(registry.store)  # no event log: what a store writer with the registry code can do
    forged.promote("german-credit", "1.0.0", by="intruder")
    report = verify_store(registry.store, trust=_root().policy())
    assert _reasons(report) == {"unrecorded_alias"}
    assert [f.key for f in report.failures] == ["models/aliases/german-credit/production/00000001.json"]


def test_a_manifest_edited_in_the_store_is_reported(recorded):
    registry, directory = recorded
    registry.register(directory)
    path = registry.store.root / "models/manifests/german-credit/1.0.0.json"
    manifest = json.loads(path.read_bytes())
    manifest["decision"]["threshold"] = 0.9
    overwrite(path, json.dumps(manifest).encode())
    report = verify_store(registry.store, trust=_root().policy())
    assert _reasons(report) == {"object_mismatch"}


def test_existing_registry_objects_are_adopted_when_the_chain_is_created(recorded):
    registry, directory = recorded
    before = Registry(registry.store)  # a registry from before the registry chain
    before.register(directory)
    before.promote("german-credit", "1.0.0", by="old-cli")
    assert {n.reason for n in verify_store(registry.store, trust=_root().policy()).notes} >= {"registry_unbound"}
    registry.promote("german-credit", "1.0.0", by="ops")
    bodies = _registry_records(registry.store)
    assert [(b["event"], b["by"], b.get("reason")) for b in bodies] == [
        ("registration", ADOPTED_BY, ADOPTED_REASON),
        ("promotion", "old-cli", ADOPTED_REASON),
        ("promotion", "ops", None),
    ]
    report = verify_store(registry.store, trust=_root().policy())
    assert report.ok, report.failures
    assert "registry_unbound" not in {n.reason for n in report.notes}


def test_a_log_that_cannot_record_refuses_before_writing(recorded):
    registry, directory = recorded
    registry.register(directory)  # the registry chain is signed by key 3
    other_machine = Registry(registry.store, events=RegistryLog(registry.store, signer(4), root=_root()))
    with pytest.raises(RegistryError, match=r"nothing was written: .* signed by ed25519:"):
        other_machine.promote("german-credit", "1.0.0")
    assert registry.alias("german-credit", "production") is None
    assert verify_store(registry.store, trust=_root().policy()).ok


def test_a_failed_record_fails_the_promotion_loudly(recorded):
    registry, directory = recorded
    registry.register(directory)
    # a policy whose root never certified the registry chain: the writer refuses to extend it
    unanchored = RegistryLog(registry.store, signer(3), policy=RootKey(signer(91)).policy())
    with pytest.raises(RegistryError, match=r"00000000\.json is in the store without a record"):
        Registry(registry.store, events=unanchored).promote("german-credit", "1.0.0")
    report = verify_store(registry.store, trust=_root().policy())
    assert _reasons(report) == {"unrecorded_alias"}


def test_bootstrap_keeps_the_production_version_and_registers_2_0_0_beside_it(verdict_home, trained_dirs):
    """A store whose reference model 1.0.0 is in production keeps serving it: bootstrap registers
    2.0.0 (protected characteristics withheld) and records it, but promotes nothing."""
    from verdict.gateway.bootstrap import REFERENCE_VERSION, ensure_reference_model

    store = FilesystemStore(verdict_home / "store")
    old = Registry(store)
    old.register(trained_dirs["german-credit"])
    old.promote("german-credit", "1.0.0", by="before")
    said: list[str] = []
    manifest = ensure_reference_model(Registry(store), say=said.append)
    assert (manifest.name, manifest.version, REFERENCE_VERSION) == ("german-credit", "1.0.0", "2.0.0")
    records = _registry_records(store)
    assert [(b["event"], b["model"]["version"], b["by"]) for b in records] == [
        ("registration", "1.0.0", ADOPTED_BY),
        ("promotion", "1.0.0", "before"),
        ("registration", "2.0.0", "bootstrap"),
    ]
    assert any("verdict models promote german-credit:2.0.0" in line for line in said)
    assert any("Generated the trust root" in line for line in said)
    withheld = Registry(store).manifest("german-credit", "2.0.0")
    assert {w.name for w in withheld.withheld} == {"personal_status", "age_years", "foreign_worker"}
    assert not {"personal_status", "age_years", "foreign_worker"} & {s.name for s in withheld.inputs}
    policy = RootKey.load(verdict_home / "trust" / "root.pem").policy()
    report = verify_store(store, trust=policy)
    assert report.ok, report.failures
    ensure_reference_model(Registry(store), say=said.append)  # a restart writes and records nothing
    assert len(_registry_records(store)) == 3


def test_cli_register_and_promote_are_recorded(trained_dirs, tmp_path):
    from tests.gateway.conftest import run_verdict

    home = tmp_path / "home"
    env = {"VERDICT_HOME": str(home), "VERDICT_STORE": ""}  # the embedded default store in that home
    registered = run_verdict("models", "register", str(trained_dirs["german-credit"]), env=env)
    assert registered.returncode == 0, registered.stderr
    promoted = run_verdict("models", "promote", "german-credit:1.0.0", env=env)
    assert promoted.returncode == 0, promoted.stderr
    store = FilesystemStore(home / "store")
    assert [(b["event"], b["by"]) for b in _registry_records(store)] == [("registration", "cli"), ("promotion", "cli")]
    report = verify_store(store, trust=RootKey.load(home / "trust" / "root.pem").policy())
    assert report.ok, report.failures


def test_a_gateway_decision_pins_its_manifest(tmp_path, trained_dirs):
    import httpx

    from tests.gateway.conftest import auth
    from tests.support.gateway_server import GatewayServer, prepare_home
    from verdict.audit.reader import read_decision
    from verdict.gateway.datasets import load_dataset

    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"])
    store = FilesystemStore(home / "store")
    with GatewayServer(home).start() as server:
        with httpx.Client(base_url=server.url, headers=auth(tokens["client"]), timeout=60) as client:
            made = client.post(
                "/v1/decisions",
                json={
                    "model": "german-credit",
                    "request_id": "pin-1",
                    "attributes": load_dataset("german-credit").rows[3],
                },
            )
        assert made.status_code == 200, made.text
    body = read_decision(store, "pin-1").record.body
    stored = store.get("models/manifests/german-credit/1.0.0.json")
    assert body.manifest_sha256 == hashlib.sha256(stored).hexdigest()
    report = verify_store(store, trust=RootKey.load(home / "trust" / "root.pem").policy())
    assert report.ok, report.failures

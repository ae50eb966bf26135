"""The data behind the console's trail-health and model pages (issue 20, items 4 and 5).

One real store for the module: a real model registered through the registry (with its
validation report) beside a version from before the registry chain (adopted), two
promotions, status events and a revocation, a decision chain, and two real immutability
tests on the filesystem store (the second after an uncertified chain appeared, so its
``trail_verification`` FAILED). Tampering happens on copies, around our code.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit.helpers import decisions, signer
from tests.support.tamper import Attacker
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.cosignature import cosign, encode_witness_vkey
from verdict.audit.immutability import run_immutability_test
from verdict.audit.records import DecisionBody, ModelRef
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import RootKey, TrustPolicy, WitnessEntry
from verdict.gateway import environment
from verdict.gateway.console.inventory import model_detail, model_inventory
from verdict.gateway.console.trail_health import TrailHealth, trail_health
from verdict.gateway.manifest import ModelCard, WithheldAttribute, decode_manifest, encode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, BACKGROUND_FILE, MANIFEST_FILE
from verdict.gateway.registry import Registry, UnknownModel, blob_key, manifest_key
from verdict.gateway.registry_log import ADOPTED_BY, RegistryLog

MODEL = "german-credit"


@dataclass
class Trail:
    store: FilesystemStore
    registry: Registry
    policy: TrustPolicy
    passed: TrailHealth  # after the first immutability test: everything certified
    failed: TrailHealth  # after an uncertified chain appeared and the second test ran


def _legacy_version(store: FilesystemStore, directory: Path) -> None:
    """Version 0.9.0 as a registry from before validation and the registry chain left it
    (spec §3 "Adoption"): blobs and a manifest with a model card, a protected input and a
    withheld attribute; the registry chain adopts it when it is created."""
    manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
    legacy = msgspec.structs.replace(
        manifest,
        version="0.9.0",
        inputs=tuple(msgspec.structs.replace(s, protected=s.name == "age_years") for s in manifest.inputs),
        card=ModelCard(
            purpose="Consumer credit decisions for the pilot branch",
            owner="Retail credit risk",
            intended_use="Instalment loans up to 20,000 DM",
            limitations="Not for business lending",
            risk_tier="high",
            regulations=("ECOA / Reg B",),
        ),
        withheld=(WithheldAttribute(name="sex", label="Sex", reason="a protected characteristic under ECOA"),),
    )
    store.put_once(blob_key(manifest.artifact_sha256), (directory / ARTIFACT_FILE).read_bytes())
    store.put_once(blob_key(manifest.explainer.background_sha256), (directory / BACKGROUND_FILE).read_bytes())
    store.put_once(manifest_key(MODEL, "0.9.0"), encode_manifest(legacy))


def _decisions(registry: Registry, prefix: str, n: int) -> list[DecisionBody]:
    """Decision records naming this store's real model version and environment manifest."""
    data = environment.encode(environment.capture())
    digest = hashlib.sha256(data).hexdigest()
    if not registry.store.exists(f"environments/sha256/{digest}"):
        registry.store.put_once(f"environments/sha256/{digest}", data)
    manifest = registry.manifest(MODEL, "1.0.0")
    model = ModelRef(name=MODEL, version="1.0.0", sha256=manifest.artifact_sha256)
    pinned = registry.manifest_sha256(MODEL, "1.0.0")
    return [
        msgspec.structs.replace(body, model=model, environment_sha256=digest, manifest_sha256=pinned)
        for body in decisions(prefix, n)
    ]


@pytest.fixture(scope="module")
def trail(tmp_path_factory, trained_dirs) -> Trail:
    store = FilesystemStore(tmp_path_factory.mktemp("console-data") / "store")
    root = RootKey(signer(93))
    _legacy_version(store, trained_dirs[MODEL])
    registry = Registry(store, events=RegistryLog(store, signer(4), root=root))
    registry.register(trained_dirs[MODEL], by="ops")
    registry.promote(MODEL, "0.9.0", by="alice", justification="age kept under the documented exemption")
    registry.set_status(MODEL, "1.0.0", "validated", by="model risk", note="MRM-1")
    registry.promote(MODEL, "1.0.0", by="bob")
    registry.set_status(MODEL, "0.9.0", "revoked", by="incident 7", note="drift")
    with ChainWriter.open(store, "gateway-0", signer(1), root=root, lease=None, checkpoint_every=4) as writer:
        for n in range(4):
            writer.append_batch(_decisions(registry, f"console-{n}", 3))
    first = run_immutability_test(store, signer(5), root=root, trust=root.policy())
    assert first.ok, [(p.name, p.detail) for p in first.report.probes if p.status == "FAILED"]
    passed = trail_health(store, root.policy())
    with ChainWriter.open(store, "gateway-1", signer(2), lease=None) as writer:  # no root: uncertified
        writer.append_batch(_decisions(registry, "stray", 2))
    assert not run_immutability_test(store, signer(5), root=root, trust=root.policy()).ok
    return Trail(store, registry, root.policy(), passed, trail_health(store, root.policy()))


def _chains(health: TrailHealth) -> dict:
    return {chain.chain_id: chain for chain in health.chains}


def _copy(trail: Trail, dest: Path) -> FilesystemStore:
    shutil.copytree(trail.store.root, dest, symlinks=True)
    return FilesystemStore(dest)


# --- trail health ---------------------------------------------------------------------------------


def test_every_chain_with_its_verified_checkpoint(trail):
    health = trail.passed
    assert health.state.ok, health.state.reason
    chains = _chains(health)
    assert list(chains) == ["gateway-0", "registry", "immutability-0"]  # decision chains first
    gateway = chains["gateway-0"]
    assert (gateway.kind, gateway.certified, gateway.length, gateway.length_exact) == ("decisions", True, 13, True)
    checkpoint = gateway.checkpoint
    assert checkpoint is not None and checkpoint.state.ok and gateway.state.ok
    assert checkpoint.size == 13 and gateway.ahead == 0 and gateway.checkpoints >= 3
    assert checkpoint.signed_by == [checkpoint.expected_signer] == [signer(1).key_id]
    assert len(bytes.fromhex(checkpoint.root or "")) == 32
    assert checkpoint.covers_until == gateway.newest_record_at and gateway.created_at <= checkpoint.covers_until
    registry = chains["registry"]
    assert (registry.kind, registry.created_by, registry.state.ok) == ("model registry", "verdict registry", True)
    assert chains["immutability-0"].kind == "immutability evidence"


def test_keys_and_the_trust_policy_in_words(trail):
    health = trail.passed
    windows = {(k.chain_id, k.key_id): k for k in health.keys}
    gateway = windows[("gateway-0", signer(1).key_id)]
    root_id = trail.policy.roots[0].key_id
    assert (gateway.valid_from_seq, gateway.current, gateway.rotated_at_seq) == (0, True, None)
    assert gateway.certified_by == root_id and gateway.origin == "verdict/gateway-0"
    assert {chain for chain, _ in windows} == {"gateway-0", "registry", "immutability-0"}
    assert health.trust.roots == [root_id] and health.trust.quorum == 0 and health.trust.state.ok
    assert "Names no witness" in health.trust.in_words[1]
    assert all(c.witnessed is None for c in health.chains)  # the policy names no witness


def test_the_latest_immutability_evidence_and_verification(trail):
    first = trail.passed.evidence[0]
    assert first.state.ok and first.authentic.ok and first.result == "passed" and first.backend == "filesystem"
    assert {p.name for p in first.probes} >= {"fs_record_overwrite", "fs_canary_rewrite", "trail_verification"}
    assert trail.passed.verification is not None and trail.passed.verification.state.ok
    assert trail.passed.verification.anchored is True and trail.passed.verification.age_s >= 0

    health = trail.failed
    evidence = health.evidence[0]
    assert evidence.authentic.ok and evidence.run_id != first.run_id  # the newest run
    assert not evidence.state.ok and evidence.result == "failed" and evidence.failed == ["trail_verification"]
    probes = {p.name: p for p in evidence.probes}
    assert (probes["trail_verification"].status, probes["trail_verification"].outcome) == ("FAILED", "failed")
    assert probes["trail_consistency"].outcome == "passed"  # the first run's heads are still there
    verification = health.verification
    assert verification is not None and not verification.state.ok and verification.failure_count
    assert "uncertified_chain" in verification.detail
    later = trail_health(trail.store, trail.policy, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert later.evidence[0].age_s >= 3600 and later.verification.age_s == later.evidence[0].age_s


def test_a_chain_the_root_never_certified_is_red(trail):
    chains = _chains(trail.failed)
    stray = chains["gateway-1"]  # found through the evidence: no certificate names it
    assert not stray.certified and not stray.state.ok and "not certified" in stray.state.reason
    assert stray.checkpoint is not None and not stray.checkpoint.state.ok and stray.checkpoint.root is None
    assert chains["gateway-0"].state.ok
    assert not trail.failed.state.ok


def test_a_tampered_checkpoint_turns_its_chain_red(trail, tmp_path):
    copy = _copy(trail, tmp_path / "copy")
    key = layout.checkpoint_key("gateway-0", 13)
    note = copy.get(key)
    lines = note.split(b"\n")
    lines[2] = base64.b64encode(bytes(32))  # another root, the signature kept
    Attacker(copy).overwrite(key, b"\n".join(lines))

    health = trail_health(copy, trail.policy)

    gateway = _chains(health)["gateway-0"]
    assert not gateway.state.ok and not gateway.checkpoint.state.ok
    assert "does not verify" in gateway.checkpoint.state.reason and gateway.checkpoint.signed_by == []
    assert "changed since the last immutability test" in gateway.state.reason
    assert _chains(health)["registry"].state.ok and not health.state.ok


def test_a_truncated_tail_is_red_against_the_last_evidence(trail, tmp_path):
    copy = _copy(trail, tmp_path / "copy")
    attacker = Attacker(copy)
    for key in [
        *copy.list_keys(layout.segments_prefix("gateway-0")),
        *copy.list_keys(layout.checkpoints_prefix("gateway-0")),
    ]:
        if (layout.number_from_key(key) or 0) >= 10:
            attacker.delete(key)  # the last segment and the checkpoints covering it: the chain still verifies

    gateway = _chains(trail_health(copy, trail.policy))["gateway-0"]

    assert gateway.length == 10 and gateway.checkpoint.state.ok
    assert not gateway.state.ok and "shrank from 13 records" in gateway.state.reason


def test_without_a_trust_policy_nothing_is_green(trail):
    health = trail_health(trail.store, None)
    assert not health.state.ok and not health.trust.state.ok and health.keys == []
    assert all(not c.state.ok for c in health.chains) and not health.evidence[0].authentic.ok
    assert health.verification is not None and not health.verification.state.ok


# --- model inventory ------------------------------------------------------------------------------


def test_alias_history_lists_every_promotion_oldest_first(trail):
    history = trail.registry.alias_history(MODEL)
    assert [(p.version, p.promoted_by, p.sequence) for p in history] == [("0.9.0", "alice", 0), ("1.0.0", "bob", 1)]
    assert history[-1] == trail.registry.alias(MODEL, "production")
    assert trail.registry.alias_history("no-such-model") == []


def test_inventory_lists_versions_promotions_and_statuses(trail):
    from verdict.gateway.engine import Engine

    [entry] = model_inventory(trail.registry, Engine(trail.registry), trust=trail.policy)
    assert entry.state.ok, entry.state.reason
    assert (entry.name, entry.production) == (MODEL, "1.0.0")
    assert [(p.version, p.by, p.recorded) for p in entry.promotions] == [
        ("0.9.0", "alice", True),
        ("1.0.0", "bob", True),
    ]
    assert "age kept under the documented exemption" in entry.promotions[0].reason
    assert entry.production_since == entry.promotions[-1].at
    old, new = entry.versions
    assert (old.version, old.production, old.registered_by) == ("0.9.0", False, ADOPTED_BY)
    assert old.revoked is not None and (old.revoked.by, old.revoked.note, old.revoked.recorded) == (
        "incident 7",
        "drift",
        True,
    )
    assert (new.version, new.production, new.registered_by, new.revoked) == ("1.0.0", True, "ops", None)
    assert (new.validation.status, new.validation.by, new.validation.note) == ("validated", "model risk", "MRM-1")
    assert new.serving == old.serving == "not loaded"


def test_detail_of_a_validated_version_has_its_report_and_words(trail):
    detail = model_detail(trail.registry, MODEL, "1.0.0", trust=trail.policy)
    assert detail.state.ok, detail.state.reason
    report = detail.validation_report
    assert report is not None and report.state.ok and report.passed and report.checks
    assert all(c.passed for c in report.checks) and report.report.model == f"{MODEL}:1.0.0"
    assert len(detail.attributes) == 20 and detail.decision.below == "approve"
    words = {s.heading: s.text for s in detail.in_words}
    assert words["Decision"] == (
        'The decision is "approve" when the probability that the applicant is a bad credit risk is below 0.1667, '
        'and "decline" when it is 0.1667 or more.'
    )
    assert words["Attributes"].startswith("Uses 20 attributes: 13 categorical and 7 numeric. None is marked")
    assert detail.serving is None  # no engine asked


def test_detail_of_an_adopted_version_has_its_card_and_no_report(trail):
    detail = model_detail(trail.registry, MODEL, "0.9.0", trust=trail.policy)
    assert detail.state.ok, detail.state.reason
    assert detail.validation_report is None  # registered before validation existed
    assert detail.card.owner == "Retail credit risk" and detail.withheld[0].name == "sex"
    assert [s.status for s in detail.status_history] == ["revoked"] and detail.revoked is not None
    words = {s.heading: s.text for s in detail.in_words}
    assert words["Purpose"] == "Consumer credit decisions for the pilot branch"
    assert words["Left out"].startswith("Leaves out sex")
    assert "is a protected characteristic" in words["Attributes"]
    age = next(a for a in detail.attributes if a.name == "age_years")
    assert age.protected and age.unit
    purpose = next(a for a in detail.attributes if a.name == "purpose")
    assert ("A43", "radio/television") in [(c.code, c.label) for c in purpose.categories]
    with pytest.raises(UnknownModel):
        model_detail(trail.registry, MODEL, "7.0.0", trust=trail.policy)


def test_an_alias_written_by_hand_is_red(trail, tmp_path):
    copy = _copy(trail, tmp_path / "copy")
    Attacker(copy).writable()
    Registry(copy).promote(MODEL, "1.0.0", by="intruder")  # no event log: what a store writer can do

    [entry] = model_inventory(Registry(copy), trust=trail.policy)

    assert not entry.state.ok and "promotion 2 (1.0.0) is named by no verified registry record" in entry.state.reason
    assert [(p.by, p.recorded) for p in entry.promotions][-1] == ("intruder", False)


def test_witness_cosignatures_count_against_the_policy(trail, tmp_path):
    copy = _copy(trail, tmp_path / "copy")
    witness = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    policy = trail.policy.with_witnesses(
        [WitnessEntry(name="examiner", vkey=encode_witness_vkey("examiner", witness.public_key()))], 1
    )
    note = copy.get(layout.checkpoint_key("gateway-0", 13))
    copy.put_once(layout.cosigned_key("gateway-0", 13), note + cosign(note, "examiner", witness, 1767225600).encode())
    [registry_size] = [c.checkpoint.size for c in trail.passed.chains if c.chain_id == "registry"]
    note = copy.get(layout.checkpoint_key("registry", registry_size))
    line = cosign(note, "examiner", witness, 1767225600)
    payload = bytearray(base64.b64decode(line.split(" ")[-1]))
    payload[11] ^= 1  # another timestamp under the same signature
    forged = line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(payload)).decode() + "\n"
    copy.put_once(layout.cosigned_key("registry", registry_size), note + forged.encode())

    health = trail_health(copy, policy)

    chains = _chains(health)
    witnessed = chains["gateway-0"].witnessed
    assert witnessed is not None and witnessed.witnessed and witnessed.state.ok and chains["gateway-0"].state.ok
    assert [(c.witness, c.at) for c in witnessed.cosignatures] == [("examiner", "2026-01-01T00:00:00.000000Z")]
    assert not chains["registry"].witnessed.state.ok and "does not verify" in chains["registry"].state.reason
    assert chains["immutability-0"].witnessed.state.ok and not chains["immutability-0"].witnessed.witnessed
    assert "1 of their cosignatures" in health.trust.in_words[1]

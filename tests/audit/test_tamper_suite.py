"""The tamper suite (issue 15 item 9): what an attacker with write access to the
store can do to a trail a real gateway made, and the reason code the verifier
answers with, on the filesystem store and on S3 Object Lock (moto server).

One real trail for the module: ``verdict serve`` makes 12 decisions and 2
lookups, stops; ``verdict keys rotate`` rotates the signing key; the gateway
starts again for 3 more decisions (tests/support/tamper.py). Each test
tampers with its own copy: a directory copy, or an S3 bucket filled by the
S3 store's own conditional puts (If-None-Match, COMPLIANCE retention) as a
gateway on S3 would have. The attacker then writes around our code: files on disk;
on S3 the calls a principal with s3:PutObject / s3:DeleteObject can make (a
plain PutObject adds a version, a plain DeleteObject adds a delete marker;
deleting a locked version is refused, see test_locked_versions_cannot_be_deleted).

Trail layout (asserted by the fixture): genesis at 0, decisions t-0..t-5 at
1..6, two lookups (access records) at 7..8, t-6..t-11 at 9..14, key_rotation
at 15, t-12..t-14 at 16..18; checkpoints 1, 5, 9, 13, 15, 16 (mandatory,
after the rotation) and 19 (the held one).

What lives outside the store and is checked against it: the trust policy
(the gateway's root), the gateway's held checkpoint
(``home/trust/held/gateway-0.checkpoint``) and the clients' receipts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.tamper import (
    CHAIN,
    Attacker,
    GatewayTrail,
    build_gateway_trail,
    chain_kinds,
    copy_to_filesystem,
    copy_to_s3,
)
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.index import IndexEntry, decode_stored_entry, encode_entry
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.records import KeyDocument, iter_lines, split_line
from verdict.audit.signing import Ed25519Signer, FileKeyStore
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import issue_certificate
from verdict.audit.verifier import VerificationReport, verify_store

FORGED = "gateway-1"
ROTATION = 15
S3_PREFIX = "trail/"  # the prefix of tests.support.s3_fixtures.s3_store_url


@pytest.fixture(scope="module")
def trail(tmp_path_factory, trained_dirs) -> GatewayTrail:
    model_dir = trained_dirs["german-credit"]
    made = build_gateway_trail(tmp_path_factory.mktemp("tamper") / "home", model_dir)
    store = FilesystemStore(made.store_dir)
    kinds = dict(chain_kinds(store))
    assert made.rotation_seq == ROTATION and len(kinds) == 19, kinds
    assert [kinds[s] for s in (7, 8)] == ["access", "access"] and kinds[0] == "genesis"
    assert [made.receipts[f"t-{i}"].seq for i in (0, 5, 6, 11, 12, 14)] == [1, 6, 9, 14, 16, 18]
    sizes = [layout.number_from_key(k) for k in store.list_keys(layout.checkpoints_prefix(CHAIN))]
    assert {1, ROTATION + 1, 19} <= set(sizes), sizes
    return made


@dataclass
class Target:
    kind: str  # "fs" or "s3"
    store: object  # a WormStore
    attacker: Attacker
    trail: GatewayTrail

    @property
    def on_s3(self) -> bool:
        return self.kind == "s3"

    def verify(self, *, held: bool = False, receipts: bool = False) -> VerificationReport:
        return verify_store(
            self.store,
            trust=self.trail.policy,
            held_checkpoints=self.trail.held() if held else (),
            receipts=self.trail.held_receipts() if receipts else (),
        )

    def reasons(self, **kwargs: bool) -> set[str]:
        return {f.reason for f in self.verify(**kwargs).failures}


@pytest.fixture(params=["fs", "s3"])
def target(request, trail, tmp_path) -> Target:
    if request.param == "fs":
        store = copy_to_filesystem(trail, tmp_path / "store")
        made = Target("fs", store, Attacker(store), trail)
    else:
        store = request.getfixturevalue("s3_store")
        copy_to_s3(trail, store)
        attacker = Attacker(
            store, request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket"), S3_PREFIX
        )
        made = Target("s3", store, attacker, trail)
    pristine = made.verify(held=True, receipts=True)
    assert pristine.ok and pristine.anchored, pristine.failures  # the copy, untouched, verifies
    return made


# --- builders of the forgeries ------------------------------------------------------------------


def original_body(target: Target, request_id: str):
    return read_decision(target.store, request_id, trust=target.trail.policy).body


def flipped(body):
    """The same decision with the outcome turned around and another score."""
    decision = "decline" if body.decision == "approve" else "approve"
    return msgspec.structs.replace(body, decision=decision, score=0.01 if body.score > 0.5 else 0.99)


def forge_chain(target: Target, bodies: list) -> Ed25519Signer:
    """A store writer runs our own writer with its own fresh key: key published under keys/,
    chain gateway-1 with genesis, the bodies and checkpoints (1 and the head), no certificate."""
    forger = Ed25519Signer(Ed25519PrivateKey.generate())
    target.attacker.writable()
    with ChainWriter.open(target.store, FORGED, forger, lease=None) as writer:
        writer.append_batch(bodies)
    store = target.store
    assert store.exists(layout.public_key_key(forger.key_id))
    assert store.exists(layout.checkpoint_key(FORGED, 1)) and store.exists(
        layout.checkpoint_key(FORGED, 1 + len(bodies))
    )
    return forger


def latest_version(store, key: str) -> str | None:
    found = [v.version for v in store.list_versions(key) if v.key == key and v.is_latest and not v.is_delete_marker]
    return found[0] if found else None


def entry_for(store, chain_id: str, seq: int, segment_first: int, body) -> bytes:
    """The canonical index entry of record ``seq`` of ``chain_id`` as it stands in the store."""
    segment = layout.segment_key(chain_id, segment_first)
    raw, _ = split_line(iter_lines(store.get(segment))[seq - segment_first])
    return encode_entry(
        IndexEntry(
            request_id=body.request_id,
            chain_id=chain_id,
            seq=seq,
            record_hash=hashlib.sha256(raw).hexdigest(),
            segment_key=segment,
            segment_version=latest_version(store, segment) if store.versioned else None,
            request_sha256=body.request_sha256,
        )
    )


def cut_tail(target: Target, keep: int) -> list[str]:
    """Delete every record from seq ``keep`` on (whole segments), the checkpoints beyond
    ``keep`` and the index entries of the removed decisions; the request ids removed."""
    store, attacker = target.store, target.attacker
    removed = [rid for rid, receipt in target.trail.receipts.items() if receipt.seq >= keep]
    for key in list(store.list_keys(layout.segments_prefix(CHAIN))):
        if layout.number_from_key(key) >= keep:
            attacker.delete(key)
    for key in list(store.list_keys(layout.checkpoints_prefix(CHAIN))):
        if layout.number_from_key(key) > keep:
            attacker.delete(key)
    for request_id in removed:
        attacker.delete(layout.index_key(request_id))
    return removed


# --- 1-3: a store writer's own key and chain -------------------------------------------------------


def test_injected_key_and_chain_are_uncertified(target):
    """1. A fresh key under keys/ and a chain gateway-1 with a forged copy of t-3 (decision
    flipped): it verifies by itself, but no trusted root certified it."""
    forged = flipped(original_body(target, "t-3"))
    forger = forge_chain(target, [forged])
    assert verify_store(target.store).ok  # unanchored (keys taken from the store): a flawless forgery
    report = target.verify(held=True, receipts=True)
    assert "uncertified_chain" in {f.reason for f in report.failures}
    assert {f.chain_id for f in report.failures} == {FORGED}, report.failures  # gateway-0 is untouched
    assert forger.key_id in next(c.keys for c in report.chains if c.chain_id == FORGED)
    # the index still names the genuine record: the forged copy lost the race for the request id
    assert read_decision(target.store, "t-3", trust=target.trail.policy).chain_id == CHAIN


def test_index_hijack_to_a_forged_chain(target):
    """2. The forged chain, then the index entry of t-3 rewritten to point at the forgery."""
    forged = flipped(original_body(target, "t-3"))
    forge_chain(target, [forged])
    key = layout.index_key("t-3")
    target.attacker.overwrite(key, entry_for(target.store, FORGED, 1, 1, forged))
    report = target.verify(held=True, receipts=True)
    assert "uncertified_chain" in {f.reason for f in report.failures}
    if target.on_s3:  # the plain PutObject became a second version of the entry
        assert [f.key for f in report.failures if f.reason == "extra_version"] == [key]
    with pytest.raises(ReadError) as refused:
        read_decision(target.store, "t-3", trust=target.trail.policy)
    assert refused.value.reason == "uncertified_chain"


def test_fabricated_request_ids_are_uncertified(target):
    """3. A wholly new decision under a new request id, on the forged chain."""
    template = original_body(target, "t-7")
    fabricated = msgspec.structs.replace(
        flipped(template), request_id="t-fabricated", request_sha256=hashlib.sha256(b"t-fabricated").hexdigest()
    )
    forge_chain(target, [fabricated])
    assert target.store.exists(layout.index_key("t-fabricated"))  # the forger's writer indexed it
    assert "uncertified_chain" in target.reasons(held=True, receipts=True)
    with pytest.raises(ReadError) as refused:
        read_decision(target.store, "t-fabricated", trust=target.trail.policy)
    assert refused.value.reason == "uncertified_chain"


# --- 4-5: cutting records off ----------------------------------------------------------------------


# 4: t-13, t-14 (17..18) and checkpoint 19, after the rotation; 4: from t-6 on (9..18), across the
# rotation (checkpoints 13, 15, 16 and 19 too); 5: everything after the genesis record (checkpoint 1 kept).
CUTS = [pytest.param(17, id="after-rotation"), pytest.param(9, id="across-rotation"), pytest.param(1, id="to-genesis")]


def _receipt_failures(target: Target) -> dict[str, str]:
    """request id -> reason, for the receipts the verifier rejects."""
    return {
        f.message.split(":")[0]: f.reason
        for f in target.verify(receipts=True).failures
        if f.reason.startswith(("receipt_", "bad_receipt"))
    }


@pytest.mark.parametrize("keep", CUTS)
def test_tail_truncation(target, keep):
    """4, 5. The tail cut off with its checkpoints and index entries (seq ``keep`` on)."""
    removed = cut_tail(target, keep)
    assert removed
    if target.on_s3:
        assert "delete_marker" in target.reasons()
    else:
        # Without anything held outside the store what is left verifies (spec §8a): that is why
        # held checkpoints and receipts exist.
        assert target.verify().ok
    # the clients' receipts: every cut-off decision's receipt is rejected as receipt_missing, and
    # only those; the rotated key's too when the cut removed the rotation record itself (their key
    # is known from its certificate, spec §8a)
    failures = _receipt_failures(target)
    assert set(failures) == set(removed), failures
    assert {failures[rid] for rid in removed} == {"receipt_missing"}, failures
    # the gateway's held checkpoint (size 19, signed by the rotated key)
    assert "below_held_checkpoint" in target.reasons(held=True)


# --- 6: mandatory checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, ROTATION + 1], ids=["size-1", "after-rotation"])
def test_mandatory_checkpoint_deleted(target, size):
    """6. Checkpoint 1 (after genesis) or 16 (the first the rotated key signs)."""
    target.attacker.delete(layout.checkpoint_key(CHAIN, size))
    report = target.verify(held=True, receipts=True)
    missing = [f for f in report.failures if f.reason == "checkpoint_missing"]
    assert missing and missing[0].key == layout.checkpoint_key(CHAIN, size), report.failures
    if target.on_s3:
        assert "delete_marker" in {f.reason for f in report.failures}


# --- 7: index entries that are not exactly canonical ------------------------------------------------------


def _space(data: bytes) -> bytes:
    return data.replace(b',"seq":', b', "seq":', 1)


def _reordered(data: bytes) -> bytes:
    members = json.loads(data)
    return json.dumps(dict(reversed(list(members.items()))), separators=(",", ":")).encode()


def _duplicate(data: bytes) -> bytes:
    members = json.loads(data)
    return b'{"chain_id":"' + members["chain_id"].encode() + b'",' + data[1:]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [(_space, "index_not_canonical"), (_reordered, "index_not_canonical"), (_duplicate, "index_duplicate_member")],
    ids=["space", "reordered", "duplicate-member"],
)
def test_index_entry_not_canonical(target, edit, reason):
    """7. The entry still names the right record; only its bytes change."""
    key = layout.index_key("t-4")
    original = target.store.get(key)
    edited = edit(original)
    assert edited != original and decode_stored_entry(original)
    target.attacker.overwrite(key, edited)
    report = target.verify(held=True, receipts=True)
    assert reason in {f.reason for f in report.failures}
    assert [f.key for f in report.failures if f.reason == reason] == [key]
    if target.on_s3:
        assert "extra_version" in {f.reason for f in report.failures}


# --- 8: the gateway's own key rewrites history ----------------------------------------------------------------


def test_rewrite_with_the_gateways_own_key(target):
    """8. An insider with the current private key (home/keys) cuts t-13, t-14 (17..18) and writes a
    different history after t-12: the same request ids with the outcome flipped, and one more
    decision so the rewritten chain is longer than the held checkpoint. Every signature is valid."""
    trail = target.trail
    signer = FileKeyStore(trail.home / "keys").current()
    replaced = [flipped(original_body(target, rid)) for rid in ("t-13", "t-14")]
    extra = msgspec.structs.replace(flipped(original_body(target, "t-2")), request_id="t-rewrite-extra")
    cut_tail(target, 17)
    target.attacker.writable()
    with ChainWriter.open(target.store, CHAIN, signer, lease=None, policy=None, create=False) as writer:
        results = writer.append_batch(replaced) + writer.append_batch([extra])
    assert [r.seq for r in results] == [17, 18, 19]
    assert all(
        r.record_hash != trail.receipts[rid].record_hash for r, rid in zip(results[:2], ("t-13", "t-14"), strict=True)
    )
    if target.on_s3:
        # a conditional put (If-None-Match) over a delete marker succeeds (moto, as S3): the key's
        # history is then original version, delete marker, forged version
        history = list(target.store.list_versions(layout.segment_key(CHAIN, 17)))
        assert len(history) == 3 and sum(v.is_delete_marker for v in history) == 1
        assert {"delete_marker", "extra_version"} <= target.reasons()
    else:
        assert target.verify().ok  # a valid-looking chain: only what is held outside the store tells
    # the rewritten chain (20 records) is longer than the held checkpoint (19): its root differs
    assert "held_checkpoint_mismatch" in target.reasons(held=True)
    receipts = target.verify(receipts=True).failures
    mismatched = {f.message.split(":")[0] for f in receipts if f.reason == "receipt_mismatch"}
    assert mismatched == {"t-13", "t-14"}, receipts


# --- 9: certificates --------------------------------------------------------------------------------


def _certificate_keys(store) -> list[str]:
    return sorted(store.list_keys(layout.certificates_prefix(CHAIN)))


def test_certificate_signed_by_another_root(target):
    """9a. The chain's creation certificate replaced by one of the attacker's own root (same key,
    same chain, same origin: only the root differs)."""
    genesis_cert, _rotation_cert = _certificate_keys(target.store)
    original = json.loads(target.store.get(genesis_cert))["certificate"]
    key_doc = msgspec.convert(original["key"], type=KeyDocument)
    other_root = Ed25519Signer(Ed25519PrivateKey.generate())
    forged = issue_certificate(other_root, CHAIN, key_doc, 0, original["origin"])
    target.attacker.overwrite(genesis_cert, forged)
    report = target.verify(held=True, receipts=True)
    reasons = {f.reason for f in report.failures}
    assert "untrusted_root" in reasons
    assert [f.key for f in report.failures if f.reason == "untrusted_root"] == [genesis_cert]
    if target.on_s3:
        assert "extra_version" in reasons


def test_rotation_certificate_deleted(target):
    """9b. The certificate of the rotated key (from seq 16) removed."""
    _genesis_cert, rotation_cert = _certificate_keys(target.store)
    assert layout.parse_certificate_key(rotation_cert)[1] == ROTATION + 1
    target.attacker.delete(rotation_cert)
    reasons = target.reasons(held=True, receipts=True)
    assert "uncertified_key" in reasons
    if target.on_s3:
        assert "delete_marker" in reasons


# --- what the attacker cannot do on S3 ---------------------------------------------------------------


def test_locked_versions_cannot_be_deleted(trail, s3_store, s3_client, s3_bucket):
    """Under COMPLIANCE retention a specific version cannot be deleted (moto: AccessDenied, as AWS):
    the attacker is left with delete markers and new versions, which the verifier flags."""
    from botocore.exceptions import ClientError

    key = layout.segment_key(CHAIN, 17)
    version = s3_store.put_once(key, FilesystemStore(trail.store_dir).get(key)).version
    with pytest.raises(ClientError) as denied:
        s3_client.delete_object(Bucket=s3_bucket, Key=S3_PREFIX + key, VersionId=version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert latest_version(s3_store, key) == version

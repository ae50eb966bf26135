"""The AWS KMS Ed25519 signer (audit/kms.py), over real HTTP through boto3.

What is tested where, stated plainly:

* moto 5.2.5 does not implement ``KeySpec=ECC_NIST_EDWARDS25519`` (CreateKey
  answers ValidationException). ``test_against_moto_kms`` runs the whole signer
  against moto when moto accepts that key spec and is skipped, with that reason,
  otherwise. Against moto's real KMS we check that a non-Ed25519 signing key
  (ECC_NIST_P256) is refused with a clear message.
* Everything else runs against ``KmsEmulator`` below: a loopback HTTP server
  speaking the KMS JSON protocol (``X-Amz-Target: TrentService.*``) for
  DescribeKey, GetPublicKey and Sign with real Ed25519 keys, following the AWS
  API reference (ED25519_SHA_512 needs MessageType=RAW, 4096-byte limit,
  DisabledException for a disabled key, DER SubjectPublicKeyInfo public keys).
  boto3 serializes, signs (SigV4, not checked by the emulator) and parses the
  requests exactly as it would against AWS. No test here has run against AWS.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from tests.audit.helpers import decisions
from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.cli import audit_app
from verdict.audit.kms import KmsEd25519Signer, KmsKeyError, KmsKeyRing, KmsSigningError
from verdict.audit.records import KeyRotationBody, decode_record, iter_lines, split_line
from verdict.audit.signing import FileKeyStore, load_published_keys, verify_record_signature
from verdict.audit.stores import FilesystemStore, StoreUnavailable
from verdict.audit.verifier import verify_store

REGION = "us-east-1"
ACCOUNT = "111122223333"


class KmsEmulator:
    """DescribeKey / GetPublicKey / Sign for Ed25519 keys, on 127.0.0.1."""

    def __init__(self) -> None:
        self.keys: dict[str, dict] = {}
        self.aliases: dict[str, str] = {}
        self.calls: list[str] = []
        self.corrupt_signatures = False
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                operation = self.headers.get("X-Amz-Target", "").removeprefix("TrentService.")
                emulator.calls.append(operation)
                status, payload = emulator.handle(operation, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def create_key(self, alias: str | None = None) -> str:
        key_id = str(uuid.uuid4())
        self.keys[key_id] = {
            "private": Ed25519PrivateKey.generate(),
            "arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}",
            "created": dt.datetime.now(dt.UTC).timestamp(),
            "state": "Enabled",
        }
        if alias:
            self.aliases[alias] = key_id
        return key_id

    def _resolve(self, ref: str) -> str | None:
        if ref in self.aliases:
            return self.aliases[ref]
        key_id = ref.rsplit("/", 1)[-1] if ref.startswith("arn:") else ref
        return key_id if key_id in self.keys else None

    def handle(self, operation: str, body: dict) -> tuple[int, dict]:
        key_id = self._resolve(body.get("KeyId", ""))
        if key_id is None:
            return 400, {"__type": "NotFoundException", "message": f"Key '{body.get('KeyId')}' does not exist"}
        key = self.keys[key_id]
        meta = {
            "AWSAccountId": ACCOUNT,
            "KeyId": key_id,
            "Arn": key["arn"],
            "CreationDate": key["created"],
            "Enabled": key["state"] == "Enabled",
            "KeyState": key["state"],
            "KeyUsage": "SIGN_VERIFY",
            "KeySpec": "ECC_NIST_EDWARDS25519",
            "CustomerMasterKeySpec": "ECC_NIST_EDWARDS25519",
            "SigningAlgorithms": ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
        }
        if operation == "DescribeKey":
            return 200, {"KeyMetadata": meta}
        if key["state"] != "Enabled":
            return 400, {"__type": "DisabledException", "message": f"{key['arn']} is disabled."}
        if operation == "GetPublicKey":
            der = key["private"].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            return 200, {
                "KeyId": key["arn"],
                "PublicKey": base64.b64encode(der).decode(),
                "KeySpec": meta["KeySpec"],
                "CustomerMasterKeySpec": meta["KeySpec"],
                "KeyUsage": "SIGN_VERIFY",
                "SigningAlgorithms": meta["SigningAlgorithms"],
            }
        if operation == "Sign":
            message = base64.b64decode(body["Message"])
            if body.get("SigningAlgorithm") != "ED25519_SHA_512" or body.get("MessageType", "RAW") != "RAW":
                return 400, {
                    "__type": "ValidationException",
                    "message": "ED25519_SHA_512 requires MessageType RAW (ED25519_PH_SHA_512 takes a DIGEST)",
                }
            if len(message) > 4096:
                return 400, {"__type": "ValidationException", "message": "Message must be at most 4096 bytes"}
            signature = key["private"].sign(message)
            if self.corrupt_signatures:
                signature = bytes([signature[0] ^ 1]) + signature[1:]
            return 200, {
                "KeyId": key["arn"],
                "Signature": base64.b64encode(signature).decode(),
                "SigningAlgorithm": "ED25519_SHA_512",
            }
        return 400, {"__type": "UnsupportedOperationException", "message": f"{operation} is not emulated"}


@pytest.fixture
def kms(s3_env):
    emulator = KmsEmulator()
    try:
        yield emulator
    finally:
        emulator.close()


def _client(endpoint_url: str):
    return boto3.client(
        "kms", endpoint_url=endpoint_url, region_name=REGION, config=Config(retries={"total_max_attempts": 1})
    )


def _chain_records(store, chain_id: str):
    for key in store.list_keys(layout.segments_prefix(chain_id)):
        for line in iter_lines(store.get(key)):
            yield decode_record(split_line(line)[0])


def test_kms_signer_writes_a_verifiable_chain(kms, tmp_path):
    kms.create_key(alias="alias/verdict-gateway-0")
    signer = KmsEd25519Signer("alias/verdict-gateway-0", client=_client(kms.endpoint_url))
    store = FilesystemStore(tmp_path / "store")
    with ChainWriter.open(store, "gateway-0", signer, checkpoint_every=4) as writer:
        receipts = writer.append_batch(decisions("kms", 6))
    assert {r.key_id for r in receipts} == {signer.key_id}
    assert kms.calls.count("Sign") >= 7 + 2  # one per record (genesis + 6) and per checkpoint
    report = verify_store(store)
    assert report.ok, report.first_failure
    # the published document is stable across restarts (created = the KMS key's CreationDate)
    again = KmsEd25519Signer("alias/verdict-gateway-0", client=_client(kms.endpoint_url))
    assert again.public_key_document == signer.public_key_document
    assert load_published_keys(store)[signer.key_id] == signer.public_key_document
    with ChainWriter.open(store, "gateway-0", again) as writer:  # reopen after a "restart"
        writer.append_batch(decisions("kms-after", 1))
    assert verify_store(store).ok


def test_rotation_file_key_to_kms_to_another_kms_key(kms, tmp_path):
    store = FilesystemStore(tmp_path / "store")
    keystore = FileKeyStore(tmp_path / "keys")
    file_signer, _ = keystore.init()
    with ChainWriter.open(store, "gateway-0", file_signer) as writer:
        writer.append_batch(decisions("file", 3))
    first_id = kms.create_key()
    first = KmsEd25519Signer(kms.keys[first_id]["arn"], client=_client(kms.endpoint_url))  # by ARN
    # opening with the KMS key rotates: the key_rotation record is signed by the old file key
    with ChainWriter.open(store, "gateway-0", first, keyring=keystore) as writer:
        writer.append_batch(decisions("kms1", 2))
    second = KmsEd25519Signer(kms.create_key(), client=_client(kms.endpoint_url))
    with ChainWriter.open(store, "gateway-0", second, keyring=KmsKeyRing([first])) as writer:
        writer.append_batch(decisions("kms2", 2))
    # old keys retired (a KMS key disabled or even deleted): the trail still verifies offline
    for key in kms.keys.values():
        key["state"] = "Disabled"
    report = verify_store(store)
    assert report.ok, report.first_failure
    records = list(_chain_records(store, "gateway-0"))
    rotations = [(r.seq, r.key_id, r.body.new_key.key_id) for r in records if isinstance(r.body, KeyRotationBody)]
    assert rotations == [(4, file_signer.key_id, first.key_id), (7, first.key_id, second.key_id)]
    assert [c.keys for c in report.chains] == [[file_signer.key_id, first.key_id, second.key_id]]


def test_wrong_or_disabled_keys_are_refused_with_the_reason(kms, moto_server):
    moto = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    p256 = moto.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(KmsKeyError, match="KeySpec ECC_NIST_P256; Verdict signs with Ed25519 keys"):
        KmsEd25519Signer(p256, client=moto)
    with pytest.raises(KmsKeyError, match="NotFoundException"):
        KmsEd25519Signer("alias/missing", client=moto)
    disabled = kms.create_key()
    kms.keys[disabled]["state"] = "Disabled"
    with pytest.raises(KmsKeyError, match="is Disabled"):
        KmsEd25519Signer(disabled, client=_client(kms.endpoint_url))


def test_kms_outage_fails_closed_and_recovers(kms, tmp_path):
    key_id = kms.create_key()
    signer = KmsEd25519Signer(key_id, client=_client(kms.endpoint_url))
    store = FilesystemStore(tmp_path / "store")
    writer = ChainWriter.open(store, "gateway-0", signer)
    try:
        writer.append_batch(decisions("before", 1))
        segments = list(store.list_keys(layout.segments_prefix("gateway-0")))
        kms.keys[key_id]["state"] = "Disabled"
        with pytest.raises(KmsSigningError, match="DisabledException") as caught:
            writer.append_batch(decisions("during", 2))
        assert isinstance(caught.value, StoreUnavailable)  # the gateway answers 503, retry later
        assert list(store.list_keys(layout.segments_prefix("gateway-0"))) == segments  # nothing written
        kms.keys[key_id]["state"] = "Enabled"
        writer.append_batch(decisions("after", 1))
    finally:
        writer.close()
    assert verify_store(store).ok


def test_a_signature_that_does_not_verify_never_reaches_the_trail(kms):
    signer = KmsEd25519Signer(kms.create_key(), client=_client(kms.endpoint_url))
    message = b"verdict.audit.record.v1\x00" + bytes(32)
    assert verify_record_signature(_public(signer), bytes(32), signer.sign(message))
    kms.corrupt_signatures = True
    with pytest.raises(KmsSigningError, match="does not verify under its own public key"):
        signer.sign(message)
    with pytest.raises(ValueError, match="4096"):
        signer.sign(b"x" * 4097)


def test_immutability_evidence_signed_by_kms(kms, verdict_home, monkeypatch, tmp_path):
    kms.create_key(alias="alias/verdict-immutability")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms.endpoint_url)
    FilesystemStore(verdict_home / "store")
    result = CliRunner().invoke(
        audit_app,
        [
            "immutability-test",
            "--unanchored",
            "--kms-key-id",
            "alias/verdict-immutability",
            "--json",
            str(tmp_path / "ev.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    filed = json.loads((tmp_path / "ev.json").read_text())["filed"]
    expected = KmsEd25519Signer("alias/verdict-immutability", client=_client(kms.endpoint_url)).key_id
    assert filed["receipt"]["key_id"] == expected
    assert not (verdict_home / "keys").exists()  # no local key was created


def test_against_moto_kms(moto_server, s3_env, tmp_path):
    client = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    try:
        key_id = client.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    except client.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "ValidationException"
        pytest.skip(
            "moto (5.2.5) rejects KeySpec ECC_NIST_EDWARDS25519 at CreateKey (ValidationException); "
            "the signer is tested against the loopback KMS emulator in this file instead"
        )
    signer = KmsEd25519Signer(key_id, client=client)
    store = FilesystemStore(tmp_path / "store")
    with ChainWriter.open(store, "gateway-0", signer) as writer:
        writer.append_batch(decisions("moto", 3))
    assert verify_store(store).ok


def _public(signer):
    from verdict.audit.signing import check_key_document

    return check_key_document(signer.public_key_document)


def test_a_kms_trust_root_certifies_and_the_exported_policy_verifies(kms, verdict_home, monkeypatch, tmp_path):
    """Production's root (docs/operations.md §5.4): VERDICT_TRUST_ROOT=kms:<alias>, the same rule
    for the gateway and every tool; its policy, exported once, verifies the chain it certified."""
    from tests.audit.helpers import decisions
    from tests.audit.helpers import signer as file_signer
    from verdict.audit.chain import ChainWriter
    from verdict.audit.trust import configured_root, load_policy
    from verdict.audit.trust_cli import trust_app
    from verdict.audit.verifier import verify_store

    kms.create_key(alias="alias/verdict-trust-root")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms.endpoint_url)
    monkeypatch.setenv("VERDICT_TRUST_ROOT", "kms:alias/verdict-trust-root")
    root = configured_root()
    store = FilesystemStore(tmp_path / "store")
    with ChainWriter.open(store, "gateway-0", file_signer(3), root=root) as writer:
        writer.append_batch(decisions("k", 3))
    result = CliRunner().invoke(trust_app, ["export", "--out", str(tmp_path / "policy.json")])
    assert result.exit_code == 0, result.output
    policy = load_policy(tmp_path / "policy.json")
    assert policy.roots[0].key_id == root.key_id
    report = verify_store(store, trust=policy)
    assert report.ok and report.anchored and report.certificates == 1, report.failures
    assert not (verdict_home / "trust").exists()  # no file root was made

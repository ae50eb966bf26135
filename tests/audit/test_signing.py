"""Signing keys: ids, documents, file permissions, publication, domain separation."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from verdict.audit import layout
from verdict.audit.checkpoint import Checkpoint, decode_vkey, open_checkpoint, sign_checkpoint
from verdict.audit.signing import (
    RECORD_SIGNATURE_DOMAIN,
    Ed25519Signer,
    FileKeyStore,
    KeyDocumentError,
    KeyStoreError,
    Signer,
    check_key_document,
    checkpoint_signer,
    encode_key_document,
    key_id_for,
    load_published_keys,
    make_key_document,
    publish_key,
    sign_record_hash,
    verify_record_signature,
)
from verdict.audit.stores import FilesystemStore

SEED = bytes(range(32))


def test_key_id_is_sha256_prefix_of_raw_public_key():
    key = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    raw = base64.b64decode(make_key_document(key, "2025-01-01T00:00:00.000000Z").public_key)
    assert len(raw) == 32
    assert key_id_for(key) == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def test_key_document_fields_and_vkey():
    signer = Ed25519Signer.from_seed(SEED, "2025-01-01T00:00:00.000000Z")
    doc = signer.public_key_document
    data = msgspec.json.decode(encode_key_document(doc))
    assert sorted(data) == ["algorithm", "created", "key_id", "public_key", "vkey"]
    assert data["algorithm"] == "ed25519"
    name, public_key = decode_vkey(doc.vkey)
    assert name == doc.key_id
    assert check_key_document(doc) == public_key


@pytest.mark.parametrize(
    "change",
    [
        {"key_id": "ed25519:0000000000000000"},
        {"public_key": base64.b64encode(bytes(31)).decode()},
        {"vkey": Ed25519Signer.from_seed(bytes(32), "2025-01-01T00:00:00.000000Z").public_key_document.vkey},
    ],
)
def test_inconsistent_key_documents_are_rejected(change):
    doc = Ed25519Signer.from_seed(SEED, "2025-01-01T00:00:00.000000Z").public_key_document
    with pytest.raises(KeyDocumentError):
        check_key_document(msgspec.structs.replace(doc, **change))


def test_record_signature_is_domain_separated():
    signer = Ed25519Signer.from_seed(SEED, "2025-01-01T00:00:00.000000Z")
    digest = hashlib.sha256(b"record").digest()
    signature = sign_record_hash(signer, digest)
    public_key = check_key_document(signer.public_key_document)
    assert verify_record_signature(public_key, digest, signature)
    public_key.verify(signature, RECORD_SIGNATURE_DOMAIN + digest)
    assert RECORD_SIGNATURE_DOMAIN == b"verdict.audit.record.v1\x00"
    # a signature over the bare hash is not a record signature
    assert not verify_record_signature(public_key, digest, Ed25519PrivateKey.from_private_bytes(SEED).sign(digest))
    assert not verify_record_signature(public_key, hashlib.sha256(b"other").digest(), signature)


def test_signer_protocol_and_checkpoint_signing_through_a_signer():
    signer = Ed25519Signer.from_seed(SEED, "2025-01-01T00:00:00.000000Z")
    assert isinstance(signer, Signer)
    note = sign_checkpoint(Checkpoint("verdict/test", 3, bytes(32)), [checkpoint_signer(signer)])
    verified = open_checkpoint(note, {signer.key_id: check_key_document(signer.public_key_document)})
    assert verified.checkpoint.size == 3 and verified.signed_by == (signer.key_id,)


def test_file_key_store_permissions_and_current(tmp_path):
    keystore = FileKeyStore(tmp_path / "keys")
    signer, created = keystore.init()
    assert created
    assert stat.S_IMODE(os.stat(keystore.directory).st_mode) == 0o700
    pem = keystore.directory / layout.private_key_filename(signer.key_id)
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again, created_again = keystore.init()
    assert not created_again and again.key_id == signer.key_id
    second = keystore.create()
    assert keystore.current_key_id() == signer.key_id
    keystore.set_current(second.key_id)
    assert keystore.current().key_id == second.key_id
    assert sorted(keystore.key_ids()) == sorted([signer.key_id, second.key_id])
    message = b"x"
    check_key_document(second.public_key_document).verify(keystore.load(second.key_id).sign(message), message)


def test_group_readable_private_key_is_refused(tmp_path):
    keystore = FileKeyStore(tmp_path / "keys")
    signer, _ = keystore.init()
    pem = keystore.directory / layout.private_key_filename(signer.key_id)
    os.chmod(pem, 0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        keystore.current()


def test_missing_key_store_says_what_to_run(tmp_path):
    with pytest.raises(KeyStoreError, match="verdict keys init"):
        FileKeyStore(tmp_path / "none").current()


def test_publish_is_idempotent_and_refuses_a_different_document(tmp_path):
    store = FilesystemStore(tmp_path / "store")
    signer = Ed25519Signer.from_seed(SEED, "2025-01-01T00:00:00.000000Z")
    ref = publish_key(store, signer.public_key_document)
    assert ref.key == layout.public_key_key(signer.key_id) == f"keys/ed25519_{signer.key_id[8:]}.json"
    publish_key(store, signer.public_key_document)
    other_doc = Ed25519Signer.from_seed(SEED, "2026-01-01T00:00:00.000000Z").public_key_document
    with pytest.raises(KeyDocumentError, match="different document"):
        publish_key(store, other_doc)
    assert load_published_keys(store) == {signer.key_id: signer.public_key_document}

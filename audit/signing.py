"""Record signatures, signing keys and public key documents.

Signature input (domain-separated, so a record signature can never be
replayed as any other kind of Ed25519 signature, e.g. a checkpoint note,
whose text never contains a NUL byte)::

    b"verdict.audit.record.v1\\x00" || record_hash   (24 + 32 bytes)

Keys: private keys live in ``<data_dir>/keys`` as PKCS#8 PEM files (mode
0600 in a 0700 directory) next to their public key document; a ``current``
file names the key new records are signed with. Public key documents are
published in the store (``keys/ed25519_<hex>.json``) so a verifier needs no
secret and no running service.

The :class:`Signer` protocol is all the chain writer needs, so a KMS/HSM
signer can replace the file-based one without touching the format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from verdict.audit import ed25519, layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.checkpoint import CheckpointError, decode_vkey, encode_vkey
from verdict.audit.config import data_dir
from verdict.audit.durable import fsync_directory, unlink_if_present, write_file
from verdict.audit.records import KeyDocument, utc_now
from verdict.audit.stores.base import ObjectExists, ObjectRef, WormStore

__all__ = [
    "RECORD_SIGNATURE_DOMAIN",
    "DocumentedSigner",
    "Ed25519Signer",
    "FileKeyStore",
    "KeyDocumentError",
    "KeyStoreError",
    "Signer",
    "check_key_document",
    "checkpoint_signer",
    "decode_key_document",
    "encode_key_document",
    "key_id_for",
    "load_published_keys",
    "make_key_document",
    "publish_key",
    "record_signing_input",
    "sign_record_hash",
    "verify_record_signature",
]

RECORD_SIGNATURE_DOMAIN = b"verdict.audit.record.v1\x00"
_CURRENT = "current"
_key_doc_decoder = msgspec.json.Decoder(KeyDocument)


class KeyDocumentError(ValueError):
    """A public key document is malformed or inconsistent (id, key and vkey disagree)."""


class KeyStoreError(Exception):
    """The local private key directory is missing, unsafe or inconsistent."""


# --- key ids and documents -------------------------------------------------------------


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """ "ed25519:" + first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    return "ed25519:" + hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def make_key_document(public_key: Ed25519PublicKey, created: str | None = None) -> KeyDocument:
    key_id = key_id_for(public_key)
    return KeyDocument(
        key_id=key_id,
        public_key=base64.b64encode(_raw(public_key)).decode("ascii"),
        created=created or utc_now(),
        vkey=encode_vkey(key_id, public_key),
    )


def encode_key_document(doc: KeyDocument) -> bytes:
    return canonical_bytes(doc)


def decode_key_document(data: bytes) -> KeyDocument:
    try:
        return _key_doc_decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise KeyDocumentError(f"not a key document: {exc}") from None


def check_key_document(doc: KeyDocument) -> Ed25519PublicKey:
    """Return the document's public key after checking that key id, key and vkey agree."""
    try:
        raw = base64.b64decode(doc.public_key, validate=True)
    except (binascii.Error, ValueError):
        raise KeyDocumentError(f"key {doc.key_id}: public_key is not base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode("ascii") != doc.public_key:
        raise KeyDocumentError(f"key {doc.key_id}: public_key must be canonical base64 of 32 bytes")
    public_key = Ed25519PublicKey.from_public_bytes(raw)
    if key_id_for(public_key) != doc.key_id:
        raise KeyDocumentError(f"key id {doc.key_id} does not match its public key ({key_id_for(public_key)})")
    try:
        name, vkey_key = decode_vkey(doc.vkey)
    except CheckpointError as exc:
        raise KeyDocumentError(f"key {doc.key_id}: bad vkey: {exc}") from None
    if name != doc.key_id or _raw(vkey_key) != raw:
        raise KeyDocumentError(f"key {doc.key_id}: vkey names another key or key name ({name})")
    return public_key


# --- record signatures ---------------------------------------------------------------------


def record_signing_input(record_hash: bytes) -> bytes:
    if len(record_hash) != 32:
        raise ValueError(f"record hash must be 32 bytes, got {len(record_hash)}")
    return RECORD_SIGNATURE_DOMAIN + record_hash


def sign_record_hash(signer: Signer, record_hash: bytes) -> bytes:
    return signer.sign(record_signing_input(record_hash))


def verify_record_signature(public_key: Ed25519PublicKey | bytes, record_hash: bytes, signature: bytes) -> bool:
    """``public_key``: a key object or its 32 raw bytes (the verifier's hot path)."""
    raw = public_key if isinstance(public_key, bytes) else _raw(public_key)
    return ed25519.verify(raw, signature, RECORD_SIGNATURE_DOMAIN + record_hash)


# --- signers -----------------------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """What the chain writer signs with: an Ed25519 key it may not hold itself (KMS/HSM)."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_key_document(self) -> KeyDocument: ...

    def sign(self, message: bytes) -> bytes:
        """Raw Ed25519 signature (64 bytes) over ``message``."""
        ...


class DocumentedSigner:
    """What every Signer shares: its key id and public document come from the
    document it was built with (file keys and KMS keys alike)."""

    _document: KeyDocument

    @property
    def key_id(self) -> str:
        return self._document.key_id

    @property
    def public_key_document(self) -> KeyDocument:
        return self._document


class Ed25519Signer(DocumentedSigner):
    """A Signer holding an Ed25519 private key in memory."""

    def __init__(self, private_key: Ed25519PrivateKey, document: KeyDocument | None = None) -> None:
        self._key = ed25519.SigningKey(private_key.private_bytes_raw())
        doc = document or make_key_document(private_key.public_key())
        check_key_document(doc)
        if doc.key_id != key_id_for(private_key.public_key()):
            raise KeyDocumentError(f"document {doc.key_id} does not describe this private key")
        self._document = doc

    @classmethod
    def from_seed(cls, seed: bytes, created: str) -> Ed25519Signer:
        """A deterministic key (tests and golden vectors only)."""
        key = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(key, make_key_document(key.public_key(), created))

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Ed25519Signer({self.key_id})"


class _SignerKey(Ed25519PrivateKey):
    """Presents a Signer as the Ed25519PrivateKey that audit.checkpoint signs with,
    so checkpoints work with any Signer (the private bytes are never needed)."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self._public = check_key_document(signer.public_key_document)

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._signer.sign(bytes(data))

    def private_bytes(self, *args: object, **kwargs: object) -> bytes:
        raise TypeError("a Signer does not expose its private key")

    def private_bytes_raw(self) -> bytes:
        raise TypeError("a Signer does not expose its private key")

    def __copy__(self) -> _SignerKey:
        return self

    def __deepcopy__(self, memo: object) -> _SignerKey:
        return self


def checkpoint_signer(signer: Signer) -> tuple[str, Ed25519PrivateKey]:
    """The (key name, key) pair for audit.checkpoint.sign_checkpoint; the note key name is the key id."""
    return signer.key_id, _SignerKey(signer)


# --- publication in the store ----------------------------------------------------------------


def publish_key(store: WormStore, doc: KeyDocument) -> ObjectRef:
    """Write ``keys/<id>.json`` once; an identical existing document is fine."""
    check_key_document(doc)
    key = layout.public_key_key(doc.key_id)
    data = encode_key_document(doc)
    try:
        return store.put_once(key, data)
    except ObjectExists:
        existing = store.get(key)
        if existing != data:
            raise KeyDocumentError(
                f"{key} already holds a different document for {doc.key_id}; refusing to sign with this key"
            ) from None
        return ObjectRef(key=key)


def load_published_keys(store: WormStore) -> dict[str, KeyDocument]:
    """Every well-formed published key document by key id (malformed ones raise)."""
    found: dict[str, KeyDocument] = {}
    for key in store.list_keys(layout.KEYS_PREFIX):
        key_id = layout.key_id_from_store_key(key)
        doc = decode_key_document(store.get(key))
        if key_id != doc.key_id:
            raise KeyDocumentError(f"{key} holds the document of {doc.key_id}")
        check_key_document(doc)
        found[doc.key_id] = doc
    return found


# --- local key files ---------------------------------------------------------------------------


class FileKeyStore:
    """Private keys as files under ``<data_dir>/keys`` (0700), one PEM (0600) per key."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).absolute()

    @classmethod
    def default(cls) -> FileKeyStore:
        return cls(data_dir() / "keys")

    def _ensure_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)

    def _pem_path(self, key_id: str) -> Path:
        return self.directory / layout.private_key_filename(key_id)

    def _doc_path(self, key_id: str) -> Path:
        return self._pem_path(key_id).with_suffix(".json")

    def create(self) -> Ed25519Signer:
        """Generate a key and write it (PEM 0600 + public document); does not make it current."""
        self._ensure_directory()
        private_key = Ed25519PrivateKey.generate()
        doc = make_key_document(private_key.public_key())
        pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        _write_new(self._pem_path(doc.key_id), pem, 0o600)
        _write_new(self._doc_path(doc.key_id), encode_key_document(doc) + b"\n", 0o644)
        fsync_directory(self.directory)
        return Ed25519Signer(private_key, doc)

    def load(self, key_id: str) -> Ed25519Signer:
        pem_path = self._pem_path(key_id)
        try:
            mode = pem_path.stat().st_mode & 0o777
        except FileNotFoundError:
            raise KeyStoreError(f"no private key {key_id} in {self.directory}") from None
        if mode & 0o077:
            raise KeyStoreError(
                f"private key file {pem_path} is accessible by group/others (mode {mode:04o}); run chmod 600 on it"
            )
        private_key = load_pem_private_key(pem_path.read_bytes(), password=None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise KeyStoreError(f"{pem_path} is not an Ed25519 private key")
        doc = decode_key_document(self._doc_path(key_id).read_bytes().strip())
        if doc.key_id != key_id or key_id_for(private_key.public_key()) != key_id:
            raise KeyStoreError(f"{pem_path} and its public document do not describe key {key_id}")
        return Ed25519Signer(private_key, doc)

    def current_key_id(self) -> str | None:
        try:
            text = (self.directory / _CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def current(self) -> Ed25519Signer:
        key_id = self.current_key_id()
        if key_id is None:
            raise KeyStoreError(f"no current signing key in {self.directory}; run `verdict keys init`")
        return self.load(key_id)

    def set_current(self, key_id: str) -> None:
        """Atomically point ``current`` at ``key_id`` (write a temp file, fsync, rename)."""
        self.load(key_id)  # must exist and be usable
        tmp = self.directory / f".{_CURRENT}.tmp"
        unlink_if_present(tmp)
        _write_new(tmp, (key_id + "\n").encode(), 0o600)
        os.replace(tmp, self.directory / _CURRENT)
        fsync_directory(self.directory)

    def init(self) -> tuple[Ed25519Signer, bool]:
        """The current key, creating one if there is none; returns (signer, created)."""
        if self.current_key_id() is not None:
            return self.current(), False
        signer = self.create()
        self.set_current(signer.key_id)
        return signer, True

    def key_ids(self) -> Iterator[str]:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("ed25519_*.pem")):
            yield "ed25519:" + path.stem.removeprefix("ed25519_")

    def documents(self) -> list[KeyDocument]:
        return [decode_key_document(self._doc_path(k).read_bytes().strip()) for k in self.key_ids()]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    write_file(path, data, exclusive=True, mode=mode)

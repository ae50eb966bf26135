"""Key-encryption keys: what protects the data keys at rest (docs/compliance.md).

Why a second layer: the data keys (one per data subject) live in the keyring
database, the one mutable store in the system, which is backed up and copied
like any database. Each is stored only *wrapped* by a key-encryption key
(KEK) that never enters that database: a local key file outside the store on
the embedded default, an AWS KMS key in production (``GenerateDataKey`` makes
a data key and returns it wrapped; ``Decrypt`` unwraps it). A stolen keyring
database without the KEK reveals nothing; a KEK without the database unwraps
nothing, because erased keys are no longer in it.

Each wrapped key is bound to its key ref (AES-GCM associated data locally,
the KMS encryption context ``verdict:key_ref``), so a wrapped key copied to
another row does not unwrap.

Failures: :class:`KekUnavailable` (KMS unreachable, throttled: a store-like
outage, the gateway answers 503 and records nothing) and :class:`KekError`
(the KEK does not unwrap this key: the wrong KEK, or the row was altered).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from verdict.audit.stores import StoreUnavailable

__all__ = ["KekError", "KekUnavailable", "KeyWrapper", "KmsKek", "LocalKek"]

_WRAP_AAD = b"verdict.data-key.v1\x00"
_KEY_BYTES = 32


class KekError(Exception):
    """The key-encryption key cannot unwrap a data key, or cannot be loaded."""


class KekUnavailable(StoreUnavailable):
    """The key-encryption key's service (KMS) did not answer; retry later."""


class KeyWrapper(Protocol):
    """Makes data keys and unwraps them; ``kek_id`` names the KEK in the keyring."""

    @property
    def kek_id(self) -> str: ...

    def new_key(self, key_ref: str) -> tuple[bytes, bytes]:
        """A fresh 32-byte data key and its wrapped form."""
        ...

    def unwrap(self, key_ref: str, wrapped: bytes) -> bytes: ...


class LocalKek:
    """A 32-byte KEK in a file (mode 0600) outside the store: the embedded default.

    Wrapped form: 12-byte nonce || AES-256-GCM(KEK, nonce, data key, AAD = domain || key ref)."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != _KEY_BYTES:
            raise KekError(f"a key-encryption key is {_KEY_BYTES} bytes, got {len(kek)}")
        self._aead = AESGCM(kek)
        self._kek_id = "local:" + hashlib.sha256(b"verdict.kek-id\x00" + kek).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[LocalKek, bool]:
        """The KEK in ``path``, created (0600, fsynced) if there is none; (kek, created)."""
        try:
            return cls._load(path), False
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # unique per call: two threads of one process (same pid), or a tmp file left by a
        # killed process whose pid was reused, must not collide on O_EXCL
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(8).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, os.urandom(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a KEK another process created meanwhile
        except FileExistsError:
            return cls._load(path), False
        finally:
            tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return cls._load(path), True

    @classmethod
    def _load(cls, path: Path) -> LocalKek:
        """The KEK in ``path``; FileNotFoundError if there is none, KekError (naming the
        file) if it cannot be read or is not a 32-byte key."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise KekError(f"cannot read the key-encryption key {path}: {exc}") from None
        try:
            return cls(data)
        except KekError as exc:
            raise KekError(f"{path}: {exc}") from None

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def new_key(self, key_ref: str) -> tuple[bytes, bytes]:
        key, nonce = os.urandom(_KEY_BYTES), os.urandom(12)
        return key, nonce + self._aead.encrypt(nonce, key, _WRAP_AAD + key_ref.encode())

    def unwrap(self, key_ref: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + key_ref.encode())
        except (InvalidTag, ValueError):
            raise KekError(f"the key-encryption key {self._kek_id} does not unwrap {key_ref}") from None


class KmsKek:
    """An AWS KMS symmetric key as the KEK: ``GenerateDataKey`` (AES_256) and ``Decrypt``,
    with the encryption context ``{"verdict:key_ref": key_ref}``. The KEK never leaves KMS;
    one KMS call per new data key and per key not yet in the keyring's memory."""

    def __init__(self, key_id: str, client: Any) -> None:
        self._key_id = key_id
        self._client = client

    @classmethod
    def connect(cls, key_id: str, *, region: str | None = None, endpoint_url: str | None = None) -> KmsKek:
        import boto3  # lazy: only deployments with a KMS KEK need boto3's KMS client
        from botocore.config import Config  # lazy: as above

        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
        return cls(key_id, boto3.client("kms", region_name=region, endpoint_url=endpoint_url, config=config))

    @property
    def kek_id(self) -> str:
        return f"kms:{self._key_id}"

    def new_key(self, key_ref: str) -> tuple[bytes, bytes]:
        answer = self._call(
            "GenerateDataKey",
            lambda: self._client.generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext={"verdict:key_ref": key_ref}
            ),
        )
        key = answer["Plaintext"]
        if len(key) != _KEY_BYTES:
            raise KekError(f"KMS returned a {len(key)}-byte data key for {key_ref}")
        return key, answer["CiphertextBlob"]

    def unwrap(self, key_ref: str, wrapped: bytes) -> bytes:
        answer = self._call(
            "Decrypt",
            lambda: self._client.decrypt(
                CiphertextBlob=wrapped, KeyId=self._key_id, EncryptionContext={"verdict:key_ref": key_ref}
            ),
        )
        key = answer["Plaintext"]
        if len(key) != _KEY_BYTES:
            raise KekError(f"KMS unwrapped a {len(key)}-byte data key for {key_ref}")
        return key

    def _call(self, operation: str, call: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # lazy: botocore only with KMS

        try:
            return call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {
                "InvalidCiphertextException",
                "IncorrectKeyException",
                "AccessDeniedException",
                "NotFoundException",
                "DisabledException",
                "KMSInvalidStateException",
                "ValidationException",
            }:
                raise KekError(f"KMS {operation} on {self._key_id}: {code}: {exc}") from None
            raise KekUnavailable(f"KMS {operation} on {self._key_id} failed: {exc}") from None
        except BotoCoreError as exc:
            raise KekUnavailable(f"KMS {operation} on {self._key_id} failed: {exc}") from None

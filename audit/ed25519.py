"""Ed25519 on the hot paths: one signature per record written, one check per
record verified.

Why a second library next to pyca/cryptography: on the machines we measured,
libsodium (through PyNaCl, also maintained by pyca) signs in ~45 us and
verifies in ~65-80 us where OpenSSL takes ~63 and ~145 us. Signature checks
are most of what ``verdict audit verify`` does, and signing is a fixed cost of
every batch the gateway commits, so this halves both.

Ed25519 (RFC 8032) is deterministic: both libraries produce the same 64
signature bytes for the same key and message (tests/audit/test_ed25519.py
checks it), so nothing in the audit format depends on which one signed.
libsodium's check is the stricter one (it also rejects small-order public
keys and non-canonical encodings), which suits a fail-closed verifier.

Keys stay pyca/cryptography objects everywhere else (PEM files, KMS, key
documents); this module only takes raw bytes.
"""

from __future__ import annotations

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

__all__ = ["SIGNATURE_BYTES", "SigningKey", "verify"]

SIGNATURE_BYTES = 64


class SigningKey:
    """An Ed25519 private key as libsodium holds it (seed || public key)."""

    __slots__ = ("_secret",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        _public, self._secret = crypto_sign_seed_keypair(seed)

    def sign(self, message: bytes) -> bytes:
        return crypto_sign(message, self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:
        return "SigningKey(<secret>)"


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by
    ``public_key`` (32 raw bytes); False for any malformed or wrong input."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != 32:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except BadSignatureError:
        return False
    return True

"""libsodium (audit.ed25519) and OpenSSL (pyca/cryptography) must agree bit for
bit: the audit format must not depend on which library signed a record."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.audit import ed25519
from verdict.audit.signing import RECORD_SIGNATURE_DOMAIN, Ed25519Signer, verify_record_signature


def _openssl_accepts(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300))
def test_same_signature_bytes_as_openssl(seed: bytes, message: bytes) -> None:
    reference = Ed25519PrivateKey.from_private_bytes(seed)
    signature = ed25519.SigningKey(seed).sign(message)
    assert signature == reference.sign(message)
    public_raw = reference.public_key().public_bytes_raw()
    assert ed25519.verify(public_raw, signature, message)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(min_size=1, max_size=100),
    flip=st.integers(min_value=0, max_value=8 * 64 - 1),
    target=st.sampled_from(["signature", "message"]),
)
def test_rejects_every_single_bit_change_like_openssl(seed: bytes, message: bytes, flip: int, target: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public_raw = key.public_key().public_bytes_raw()
    signature = bytearray(key.sign(message))
    data = bytearray(message)
    if target == "signature":
        signature[flip // 8] ^= 1 << (flip % 8)
    else:
        data[(flip // 8) % len(data)] ^= 1 << (flip % 8)
    assert ed25519.verify(public_raw, bytes(signature), bytes(data)) is False
    assert _openssl_accepts(public_raw, bytes(signature), bytes(data)) is False


def test_wrong_key_and_malformed_inputs_are_false_not_errors() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signature = a.sign(b"m")
    assert not ed25519.verify(b.public_key().public_bytes_raw(), signature, b"m")
    assert not ed25519.verify(a.public_key().public_bytes_raw(), signature[:63], b"m")
    assert not ed25519.verify(a.public_key().public_bytes_raw()[:31], signature, b"m")
    assert not ed25519.verify(bytes(32), bytes(64), b"m")  # small-order key, zero signature


def test_record_signature_helpers_use_the_same_bytes() -> None:
    signer = Ed25519Signer.from_seed(bytes(range(32)), "2026-01-01T00:00:00.000000Z")
    digest = bytes(range(32, 64))
    signature = signer.sign(RECORD_SIGNATURE_DOMAIN + digest)
    reference = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert signature == reference.sign(RECORD_SIGNATURE_DOMAIN + digest)
    assert verify_record_signature(reference.public_key(), digest, signature)
    assert verify_record_signature(reference.public_key().public_bytes_raw(), digest, signature)
    assert not verify_record_signature(reference.public_key(), bytes(32), signature)


def test_signing_key_repr_hides_the_secret() -> None:
    assert repr(ed25519.SigningKey(bytes(32))) == "SigningKey(<secret>)"

"""Witness cosignatures on checkpoints: C2SP ``tlog-cosignature``, Ed25519 ``cosignature/v1``.

Why: a checkpoint signed only by the gateway proves nothing against the
gateway itself; it could show one tree to an auditor and another to a
regulator (a split view). A witness that remembers the last tree it saw and
cosigns a new one only if it extends the old one turns "the gateway says"
into "the gateway and N independent parties saw the same, append-only log".

Spec followed: c2sp.org/tlog-cosignature v1.0.1, Ed25519 type only (the
Ed25519 text is unchanged at C2SP commit 5ba5ee8, July 2026, which adds an
ML-DSA-44 type we do not implement). Concretely:

* key ID = SHA-256(name || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4];
  verifier key (vkey) = ``<name>+<hex key ID>+base64(0x04 || public key)``;
* signed message = ``"cosignature/v1\\n" "time <t>\\n"`` || checkpoint body
  (the note text up to and including its final newline, extension lines
  included, signature lines excluded);
* signature line = ``— <name> base64(key ID || uint64 big-endian t || 64-byte signature)``.

The message does not commit to the witness's name, so one key must never
serve two witness names (the spec's rule; we cannot enforce it here).

Notes are parsed with the same strict signed-note parser as
``audit.checkpoint`` (shared private helpers), so a note one module accepts
the other accepts too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The underscored names are audit.checkpoint's own strict signed-note rules (em dash, canonical
# base64, key-name charset, at most 100 lines); it has no public note parser to use instead.
from verdict.audit.checkpoint import (
    CheckpointError,
    _check_key_name,
    _decode_note_text,
    _parse_signature_block,
    decode_note_vkey,
    encode_note_vkey,
    note_key_hash,
    parse_body,
)

__all__ = [
    "MAX_TIMESTAMP",
    "SIGNATURE_TYPE",
    "CosignatureError",
    "cosign",
    "cosignature_message",
    "decode_witness_vkey",
    "encode_witness_vkey",
    "note_body",
    "verify_cosignatures",
    "witness_key_hash",
]

SIGNATURE_TYPE = 0x04  # signed-note signature type of an Ed25519 cosignature/v1
MAX_TIMESTAMP = 2**63 - 1  # "It MUST NOT exceed 2^63 - 1"
_TYPE_BYTE = bytes([SIGNATURE_TYPE])
_KEY_HASH_SIZE = 4
_TIMESTAMP_SIZE = 8
_ED25519_SIGNATURE_SIZE = 64
_PAYLOAD_SIZE = _KEY_HASH_SIZE + _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE
_SIG_PREFIX = "\u2014 "  # EM DASH, space


class CosignatureError(ValueError):
    """A cosignature, witness key or note is malformed, or a known witness's cosignature fails to verify."""


# --- keys ------------------------------------------------------------------------------------


def _check_name(name: object) -> str:
    try:
        _check_key_name(name, "witness name")
    except CheckpointError as exc:
        raise CosignatureError(str(exc)) from None
    return name  # type: ignore[return-value]


def witness_key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID of a cosignature/v1 key: type byte 0x04, so it never equals the log-key ID."""
    _check_name(name)
    return note_key_hash(name, public_key, SIGNATURE_TYPE)


def encode_witness_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """``<name>+<hex key ID>+base64(0x04 || key)``: what a trust policy lists for this witness."""
    _check_name(name)
    return encode_note_vkey(name, public_key, SIGNATURE_TYPE)


def decode_witness_vkey(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """Parse and self-check a witness vkey (type 0x04 only), so a mistyped key fails at configuration."""
    try:
        return decode_note_vkey(vkey, SIGNATURE_TYPE)
    except CheckpointError as exc:
        raise CosignatureError(f"witness vkey: {exc}") from None


# --- notes -----------------------------------------------------------------------------------


def note_body(note_or_body: bytes) -> bytes:
    """The checkpoint body of a signed note (text before the blank line), or the body itself.

    A body never contains a blank line, so "has one" tells the two apart.
    The body must be a canonical checkpoint: a witness states something about
    a tree, not about arbitrary text.
    """
    if not isinstance(note_or_body, bytes):
        raise CosignatureError(f"checkpoint must be bytes, got {type(note_or_body).__name__}")
    split = note_or_body.rfind(b"\n\n")
    body = note_or_body if split < 0 else note_or_body[: split + 1]
    try:
        parse_body(body)
    except CheckpointError as exc:
        raise CosignatureError(f"not a checkpoint: {exc}") from None
    return body


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """The exact bytes a witness signs for ``body`` at ``timestamp``."""
    _check_timestamp(timestamp)
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def _check_timestamp(timestamp: object) -> None:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise CosignatureError(f"cosignature timestamp must be an int, got {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} is outside 0..2**63-1")


def cosign(checkpoint_note_or_body: bytes, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """One cosignature line (ending in a newline) by witness ``name`` on the checkpoint.

    ``timestamp`` (POSIX seconds) must be positive: tlog-witness forbids a
    witness from omitting the time, and a cosignature is a statement about
    what was the largest tree *as of* that time.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError(f"expected an Ed25519PrivateKey, got {type(private_key).__name__}")
    body = note_body(checkpoint_note_or_body)
    _check_timestamp(timestamp)
    if timestamp == 0:
        raise CosignatureError("a witness cosignature must carry a time (timestamp 0 is refused)")
    signature = private_key.sign(cosignature_message(body, timestamp))
    payload = witness_key_hash(name, private_key.public_key()) + timestamp.to_bytes(8, "big") + signature
    return f"{_SIG_PREFIX}{name} {base64.b64encode(payload).decode('ascii')}\n"


def _witness_keys(
    witnesses: Mapping[str, Ed25519PublicKey] | Iterable[str],
) -> dict[tuple[str, bytes], tuple[str, Ed25519PublicKey]]:
    pairs = list(witnesses.items()) if isinstance(witnesses, Mapping) else [decode_witness_vkey(v) for v in witnesses]
    return {(name, witness_key_hash(name, key)): (name, key) for name, key in pairs}


def verify_cosignatures(
    note: bytes,
    witnesses: Mapping[str, Ed25519PublicKey] | Iterable[str],
    *,
    not_after: int | None = None,
) -> dict[str, int]:
    """The known witnesses whose cosignature on ``note`` verifies: ``{name: timestamp}``.

    ``witnesses`` is ``{name: public key}`` or a list of witness vkeys. Lines
    by other keys (the log's own, unknown witnesses) are ignored; a line that
    claims a known witness (name and key ID) but does not verify raises
    CosignatureError, because it means the note was forged or altered. With
    ``not_after`` (POSIX seconds), a cosignature dated later is refused too
    (the spec lets verifiers refuse timestamps in the future). The caller
    applies its own quorum to the result.
    """
    keys = _witness_keys(witnesses)
    text = _note_text(note)
    split = text.rfind("\n\n")
    if split < 0:
        raise CosignatureError("signed note has no blank line between the text and the signatures")
    body = note_body(note[: note.rfind(b"\n\n") + 1])  # the very bytes received
    try:
        lines = _parse_signature_block(text[split + 2 :])
    except CheckpointError as exc:
        raise CosignatureError(str(exc)) from None
    verified: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        known = keys.get((line.name, line.key_hash))
        if known is None:
            continue
        timestamp = _verify_line(body, line.key_hash + line.signature, known[1], f"line {number} ({line.name})")
        if not_after is not None and timestamp > not_after:
            raise CosignatureError(
                f"cosignature line {number} ({line.name}) is dated {timestamp}, after {not_after} (in the future)"
            )
        verified[line.name] = max(timestamp, verified.get(line.name, 0))
    return verified


def _note_text(note: bytes) -> str:
    try:
        return _decode_note_text(note, "signed note")
    except CheckpointError as exc:
        raise CosignatureError(str(exc)) from None


def _verify_line(body: bytes, payload: bytes, key: Ed25519PublicKey, where: str) -> int:
    if len(payload) != _PAYLOAD_SIZE:
        raise CosignatureError(
            f"cosignature {where} is {len(payload)} bytes, a cosignature/v1 is {_PAYLOAD_SIZE} "
            "(key ID, timestamp, Ed25519 signature)"
        )
    timestamp = int.from_bytes(payload[_KEY_HASH_SIZE : _KEY_HASH_SIZE + _TIMESTAMP_SIZE], "big")
    if timestamp > MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature {where} has timestamp {timestamp}, above 2**63-1")
    try:
        key.verify(payload[_KEY_HASH_SIZE + _TIMESTAMP_SIZE :], cosignature_message(body, timestamp))
    except InvalidSignature:
        raise CosignatureError(
            f"cosignature {where} does not verify: the checkpoint was altered or the cosignature forged"
        ) from None
    return timestamp

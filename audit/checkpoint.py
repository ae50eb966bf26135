"""Signed Merkle checkpoints: C2SP ``tlog-checkpoint`` inside a C2SP ``signed-note``.

Why: a Merkle root is only evidence once someone has committed to it. A
checkpoint is the writer's signed statement "chain <origin> had <size>
records with root <root>"; an auditor holding two checkpoints and a
consistency proof knows nothing was rewritten or cut off in between.

Why this format: it is the one the Go checksum database, Sigstore and the
transparency-log witness ecosystem use, so third parties can verify and
cosign our checkpoints with existing tools, and an auditor can re-implement
the check from two short public specs (c2sp.org/tlog-checkpoint,
c2sp.org/signed-note). The tests pin the bytes against the Go reference
implementation's published example.

Parsing is strict (one canonical byte form per checkpoint) because a
checkpoint's bytes are what get signed and stored: two encodings of one
statement would make "is this the same checkpoint?" ambiguous.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "VerifiedCheckpoint",
    "decode_note_vkey",
    "decode_vkey",
    "encode_note_vkey",
    "encode_vkey",
    "format_body",
    "key_hash",
    "note_key_hash",
    "open_checkpoint",
    "parse_body",
    "sign_checkpoint",
]

ROOT_SIZE = 32
MAX_SIGNATURES = 100  # the Go reference implementation's limit, against CPU-exhaustion notes
_MAX_TREE_SIZE = 2**64 - 1  # sizes are uint64 in every other implementation
_ALG_ED25519 = b"\x01"
_KEY_HASH_SIZE = 4
_ED25519_SIGNATURE_SIZE = 64
_SIG_PREFIX = "\u2014 "  # EM DASH, space
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_KEY_HASH_HEX = re.compile(r"[0-9a-f]{8}")
_CONTROL_CHAR = re.compile(r"[\x00-\x09\x0b-\x1f]")


class CheckpointError(ValueError):
    """A checkpoint or signed note is malformed or fails verification; the message says how."""


class Checkpoint(msgspec.Struct, frozen=True):
    """A tree head: ``size`` records of chain ``origin`` hash to Merkle ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


class VerifiedCheckpoint(msgspec.Struct, frozen=True):
    """A checkpoint together with the trusted key names whose signatures verified."""

    checkpoint: Checkpoint
    signed_by: tuple[str, ...]


# --- checkpoint body ---------------------------------------------------------------


def format_body(cp: Checkpoint) -> bytes:
    """The exact bytes that get signed; refuses any checkpoint parse_body would reject."""
    _check_origin(cp.origin)
    _check_size(cp.size)
    _check_root(cp.root)
    _check_extensions(cp.extensions)
    lines = [cp.origin, str(cp.size), base64.b64encode(cp.root).decode("ascii"), *cp.extensions]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def parse_body(body: bytes) -> Checkpoint:
    """Parse checkpoint text; accepts only the canonical form format_body produces."""
    text = _decode_note_text(body, "checkpoint body")
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(
            f"checkpoint body has {len(lines)} line(s), needs at least 3 (origin, tree size, root hash)"
        )
    origin, size_text, root_text, *extensions = lines
    _check_origin(origin)
    cp = Checkpoint(origin, _parse_size(size_text), _parse_root(root_text), tuple(extensions))
    _check_extensions(cp.extensions)
    return cp


def _check_origin(origin: object) -> None:
    if not isinstance(origin, str) or not origin:
        raise CheckpointError(f"checkpoint origin (line 1) must be a non-empty string, got {origin!r}")
    if not origin.isprintable():
        raise CheckpointError(f"checkpoint origin (line 1) has a non-printable character: {origin!r}")


def _check_size(size: object) -> None:
    if not isinstance(size, int) or isinstance(size, bool):
        raise CheckpointError(f"checkpoint tree size must be an int, got {type(size).__name__}")
    if not 0 <= size <= _MAX_TREE_SIZE:
        raise CheckpointError(f"checkpoint tree size {size} is outside 0..2**64-1")


def _check_root(root: object) -> None:
    if not isinstance(root, bytes) or len(root) != ROOT_SIZE:
        got = f"{len(root)} bytes" if isinstance(root, bytes) else type(root).__name__
        raise CheckpointError(f"checkpoint root hash must be {ROOT_SIZE} bytes, got {got}")


def _check_extensions(extensions: object) -> None:
    if not isinstance(extensions, (tuple, list)):
        kind = type(extensions).__name__
        raise CheckpointError(f"checkpoint extensions must be a tuple of str, got {kind}")
    for line_no, ext in enumerate(extensions, start=4):
        where = f"checkpoint extension line {line_no}"
        if not isinstance(ext, str) or not ext:
            raise CheckpointError(f"{where} must be a non-empty string, got {ext!r}")
        if not ext.isprintable():
            raise CheckpointError(f"{where} has a non-printable character: {ext!r}")


def _parse_size(text: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise CheckpointError(
            f"checkpoint tree size (line 2) must be decimal digits without leading zeros, got {text!r}"
        )
    size = int(text)
    _check_size(size)
    return size


def _parse_root(text: str) -> bytes:
    root = _decode_base64(text)
    if root is None:
        raise CheckpointError(f"checkpoint root hash (line 3) is not canonical standard base64: {text!r}")
    _check_root(root)
    return root


# --- shared text rules ---------------------------------------------------------------


def _decode_note_text(data: bytes, what: str) -> str:
    """UTF-8 without control characters other than newline, as signed-note requires."""
    if not isinstance(data, bytes):
        raise CheckpointError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    control = _CONTROL_CHAR.search(text)
    if control:
        raise CheckpointError(
            f"{what} has control character U+{ord(control.group()):04X} at character {control.start()}; "
            "only newline is allowed"
        )
    return text


def _decode_base64(text: str) -> bytes | None:
    """Standard, padded, canonical base64 only: one signature or hash has one spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _check_key_name(name: object, what: str) -> None:
    # No spaces: names end at the first space in a signature line; no "+": it delimits vkeys.
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{what} must be a non-empty string, got {name!r}")
    if "+" in name or " " in name or not name.isprintable():
        raise CheckpointError(f"{what} {name!r} must not contain whitespace, '+' or control characters")


# --- keys --------------------------------------------------------------------------------


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"expected an Ed25519PublicKey, got {type(public_key).__name__}")
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key id in signature lines; binds the name so one key cannot pose as another name."""
    return note_key_hash(name, public_key, _ALG_ED25519[0])


def encode_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The signed-note verifier key string, the form auditors and witnesses configure."""
    return encode_note_vkey(name, public_key, _ALG_ED25519[0])


def decode_vkey(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """Parse and self-check a verifier key, so a mistyped key fails here, not at verification."""
    return decode_note_vkey(vkey, _ALG_ED25519[0])


def note_key_hash(name: str, public_key: Ed25519PublicKey, signature_type: int) -> bytes:
    """signed-note key ID: SHA-256(name || 0x0A || type || key)[:4]. Type 0x01 is an Ed25519 note
    signature (a log's key), 0x04 an Ed25519 cosignature/v1 (a witness's, c2sp.org/tlog-cosignature)."""
    _check_key_name(name, "key name")
    material = name.encode("utf-8") + b"\n" + bytes([signature_type]) + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:_KEY_HASH_SIZE]


def encode_note_vkey(name: str, public_key: Ed25519PublicKey, signature_type: int) -> str:
    """``<name>+<hex key ID>+base64(type || key)``."""
    key_material = bytes([signature_type]) + _raw_public_key(public_key)
    key_id = note_key_hash(name, public_key, signature_type).hex()
    return f"{name}+{key_id}+{base64.b64encode(key_material).decode('ascii')}"


def decode_note_vkey(vkey: str, signature_type: int) -> tuple[str, Ed25519PublicKey]:
    """Parse and self-check a vkey of ``signature_type``; CheckpointError names what is wrong."""
    if not isinstance(vkey, str):
        raise CheckpointError(f"verifier key must be a string, got {type(vkey).__name__}")
    parts = vkey.split("+", 2)  # the base64 key may itself contain "+"
    if len(parts) != 3:
        raise CheckpointError(f"verifier key must be '<name>+<key hash>+<key>', got {vkey!r}")
    name, hash_hex, key_b64 = parts
    _check_key_name(name, "verifier key name")
    if not _KEY_HASH_HEX.fullmatch(hash_hex):
        raise CheckpointError(f"verifier key hash must be 8 lower-case hex digits, got {hash_hex!r}")
    material = _decode_base64(key_b64)
    if material is None:
        raise CheckpointError(f"verifier key material is not canonical standard base64: {key_b64!r}")
    if material[:1] != bytes([signature_type]):
        found = material[:1].hex() or "missing"
        what = {1: "Ed25519", 4: "Ed25519 cosignature/v1"}.get(signature_type, "")
        raise CheckpointError(
            f"verifier key {name!r} has signature type {found}, only {signature_type:02x} ({what}) is supported here"
        )
    if len(material) != 1 + 32:
        raise CheckpointError(f"Ed25519 verifier key must be 32 bytes, got {len(material) - 1}")
    public_key = Ed25519PublicKey.from_public_bytes(material[1:])
    expected = note_key_hash(name, public_key, signature_type).hex()
    if hash_hex != expected:
        raise CheckpointError(
            f"verifier key hash {hash_hex} does not match name {name!r} and key (expected {expected})"
        )
    return name, public_key


# --- signed notes ----------------------------------------------------------------------


def sign_checkpoint(cp: Checkpoint, signers: Sequence[tuple[str, Ed25519PrivateKey]]) -> bytes:
    """The complete signed note: body, blank line, one signature line per signer."""
    return _sign_note(format_body(cp), signers)


def open_checkpoint(
    note: bytes, trusted: Mapping[str, Ed25519PublicKey], *, origin: str | None = None
) -> VerifiedCheckpoint:
    """Verify a signed checkpoint against trusted keys (by name) and parse it.

    Signatures by unknown keys are skipped (others, e.g. witnesses, may
    cosign), but every line that claims to be from a trusted key must verify:
    a bad one means the note was forged or altered after signing.
    """
    body, signed_by = _open_note(note, trusted)
    cp = parse_body(body)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin is {cp.origin!r}, expected {origin!r}")
    return VerifiedCheckpoint(cp, signed_by)


def _sign_note(text: bytes, signers: Sequence[tuple[str, Ed25519PrivateKey]]) -> bytes:
    """Generic signed-note signing, apart from checkpoints so it is tested on the Go reference note."""
    _check_note_text(text)
    if not signers:
        raise CheckpointError("at least one signer is required")
    if len(signers) > MAX_SIGNATURES:
        raise CheckpointError(f"{len(signers)} signers, at most {MAX_SIGNATURES} are allowed")
    lines = []
    seen: set[tuple[str, bytes]] = set()
    for name, private_key in signers:
        if not isinstance(private_key, Ed25519PrivateKey):
            kind = type(private_key).__name__
            raise TypeError(f"signer {name!r}: expected an Ed25519PrivateKey, got {kind}")
        kh = key_hash(name, private_key.public_key())
        if (name, kh) in seen:
            raise CheckpointError(f"signer {name!r} with key hash {kh.hex()} is listed twice")
        seen.add((name, kh))
        signature = base64.b64encode(kh + private_key.sign(text)).decode("ascii")
        lines.append(f"{_SIG_PREFIX}{name} {signature}\n")
    return text + b"\n" + "".join(lines).encode("utf-8")


def _check_note_text(text: bytes) -> None:
    """A note text that would not survive _open_note must never be signed."""
    decoded = _decode_note_text(text, "note text")
    if not decoded.endswith("\n"):
        raise CheckpointError("note text must end with a newline")
    if "\n\n" in decoded or decoded.startswith("\n"):
        raise CheckpointError("note text must not contain a blank line")


class _SignatureLine(msgspec.Struct, frozen=True):
    name: str
    key_hash: bytes
    signature: bytes


def _open_note(note: bytes, trusted: Mapping[str, Ed25519PublicKey]) -> tuple[bytes, tuple[str, ...]]:
    """Generic signed-note opening (returns text, trusted signers), testable on the Go reference note."""
    text = _decode_note_text(note, "signed note")
    split = text.rfind("\n\n")  # signature lines are never blank, so the last blank line is the split
    if split < 0:
        raise CheckpointError("signed note has no blank line between the text and the signatures")
    lines = _parse_signature_block(text[split + 2 :])
    body = note[: note.rfind(b"\n\n") + 1]  # verify the very bytes received, not a re-encoding
    return body, _verify_signatures(body, lines, trusted)


def _parse_signature_block(block: str) -> list[_SignatureLine]:
    if not block:
        raise CheckpointError("signed note has no signature lines after the blank line")
    if not block.endswith("\n"):
        raise CheckpointError("signed note's last signature line does not end with a newline")
    raw_lines = block[:-1].split("\n")
    if len(raw_lines) > MAX_SIGNATURES:
        raise CheckpointError(f"signed note has {len(raw_lines)} signature lines, at most {MAX_SIGNATURES} are allowed")
    return [_parse_signature_line(line, number) for number, line in enumerate(raw_lines, start=1)]


def _parse_signature_line(line: str, number: int) -> _SignatureLine:
    where = f"signature line {number}"
    if not line.startswith(_SIG_PREFIX):
        raise CheckpointError(f"{where} does not start with an em dash (U+2014) and a space: {line!r}")
    name, space, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not space:
        raise CheckpointError(f"{where} has no space between the key name and the signature")
    _check_key_name(name, f"{where}: key name")
    blob = _decode_base64(b64)
    if blob is None:
        raise CheckpointError(f"{where} ({name}): signature is not canonical standard base64")
    if len(blob) <= _KEY_HASH_SIZE:
        raise CheckpointError(
            f"{where} ({name}): signature is {len(blob)} bytes, too short for a key hash and a signature"
        )
    return _SignatureLine(name, blob[:_KEY_HASH_SIZE], blob[_KEY_HASH_SIZE:])


def _verify_signatures(
    body: bytes, lines: Sequence[_SignatureLine], trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[str, ...]:
    keys = {(name, key_hash(name, key)): key for name, key in trusted.items()}
    signed_by: list[str] = []
    for number, line in enumerate(lines, start=1):
        key = keys.get((line.name, line.key_hash))
        if key is None:
            continue  # an unknown key (a witness, another verifier's key): not ours to judge
        _verify_one(body, line, key, number)
        if line.name not in signed_by:
            signed_by.append(line.name)
    if not signed_by:
        seen = ", ".join(f"{line.name}+{line.key_hash.hex()}" for line in lines)
        raise CheckpointError(f"signed note has no signature from a trusted key (signed by: {seen})")
    return tuple(signed_by)


def _verify_one(body: bytes, line: _SignatureLine, key: Ed25519PublicKey, number: int) -> None:
    where = f"signature line {number} by trusted key {line.name}+{line.key_hash.hex()}"
    if len(line.signature) != _ED25519_SIGNATURE_SIZE:
        raise CheckpointError(
            f"{where}: Ed25519 signature must be {_ED25519_SIGNATURE_SIZE} bytes, got {len(line.signature)}"
        )
    try:
        key.verify(line.signature, body)
    except InvalidSignature:
        raise CheckpointError(f"{where} does not verify: the note was forged or altered after signing") from None

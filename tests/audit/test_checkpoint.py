"""audit.checkpoint: byte-exact format, interop with the Go reference, strict rejection."""

from __future__ import annotations

import base64
import hashlib
import re

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    VerifiedCheckpoint,
    _open_note,
    _sign_note,
    decode_vkey,
    encode_vkey,
    format_body,
    key_hash,
    open_checkpoint,
    parse_body,
    sign_checkpoint,
)

WRITER = "verdict-writer-0"
WRITER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WITNESS = "witness.example"
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
TRUSTED = {WRITER: WRITER_KEY.public_key()}
ORIGIN = "verdict.example/chain/writer-0"
ROOT = hashlib.sha256(b"verdict golden checkpoint").digest()
EMPTY_ROOT = hashlib.sha256(b"").digest()
CHECKPOINT = Checkpoint(ORIGIN, 1234, ROOT)
EM_DASH = "\u2014".encode()

# --- golden vectors: Ed25519 is deterministic, so these bytes must never change ------

GOLDEN_VKEY = "verdict-writer-0+0540b810+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
WITNESS_VKEY = "witness.example+7d950c07+ASmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X"
GOLDEN_BODY = b"verdict.example/chain/writer-0\n1234\nHKk0qrLE8DNd7etOv4rU5w3TmNkyXhX7rXGVBd7OIeA=\n"
GOLDEN_NOTE = (
    b"verdict.example/chain/writer-0\n"
    b"1234\n"
    b"HKk0qrLE8DNd7etOv4rU5w3TmNkyXhX7rXGVBd7OIeA=\n"
    b"\n"
    b"\xe2\x80\x94 verdict-writer-0 "
    b"BUC4EE0//N4LsY05E5rKSrfIRsdJOlflJnXjLxrUfZb/oUDgSESuVhuIv3vbSsSa4kg+2koQxVkg+OcXrnCX7nGaEg4=\n"
)
GOLDEN_COSIGNED_NOTE = (
    b"verdict.example/chain/writer-0\n"
    b"0\n"
    b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    b"ext one\n"
    b"\n"
    b"\xe2\x80\x94 verdict-writer-0 "
    b"BUC4EP48ZKMdpfNqFmWpa2VBK+MB3alD0BbG/wAXJTRZMJ2ZCoMJu+ZDDwV3GEi/Pw2QvhqOq998Luv3Bc6gn3cAHwU=\n"
    b"\xe2\x80\x94 witness.example "
    b"fZUMB8USzCORxT5WkLOvKfAjQbUNuSeaTNObCmz3PGK4kVhOwjb8GSSs/oBsjCCgYwXxW7D8wyc6DR3Pm1UZ4EEVyg0=\n"
)


def test_golden_checkpoint_note():
    assert format_body(CHECKPOINT) == GOLDEN_BODY
    assert sign_checkpoint(CHECKPOINT, [(WRITER, WRITER_KEY)]) == GOLDEN_NOTE
    assert open_checkpoint(GOLDEN_NOTE, TRUSTED, origin=ORIGIN) == VerifiedCheckpoint(CHECKPOINT, (WRITER,))


def test_golden_cosigned_checkpoint_with_extension():
    cp = Checkpoint(ORIGIN, 0, EMPTY_ROOT, ("ext one",))
    assert sign_checkpoint(cp, [(WRITER, WRITER_KEY), (WITNESS, WITNESS_KEY)]) == GOLDEN_COSIGNED_NOTE
    trusted = dict([decode_vkey(GOLDEN_VKEY), decode_vkey(WITNESS_VKEY)])
    assert open_checkpoint(GOLDEN_COSIGNED_NOTE, trusted) == VerifiedCheckpoint(cp, (WRITER, WITNESS))


def test_golden_vkey_and_key_hash():
    public = WRITER_KEY.public_key()
    assert encode_vkey(WRITER, public) == GOLDEN_VKEY
    name, decoded = decode_vkey(GOLDEN_VKEY)
    assert name == WRITER and decoded == public
    # The key hash, computed here independently of the module:
    raw = base64.b64decode(GOLDEN_VKEY.split("+", 2)[2])[1:]
    assert key_hash(WRITER, public) == hashlib.sha256(WRITER.encode() + b"\n\x01" + raw).digest()[:4]
    assert key_hash(WRITER, public).hex() == "0540b810"


# --- interop: the example in golang.org/x/mod/sumdb/note (the reference implementation) ---

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
GO_ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
).encode()


def _go_signing_key() -> Ed25519PrivateKey:
    material = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert material[0] == 1  # Ed25519
    return Ed25519PrivateKey.from_private_bytes(material[1:])


def test_signing_reproduces_the_go_reference_note_byte_for_byte():
    assert _sign_note(GO_TEXT, [("PeterNeumann", _go_signing_key())]) == GO_TEXT + b"\n" + GO_PETER_SIG
    assert encode_vkey("PeterNeumann", _go_signing_key().public_key()) == GO_VKEY


def test_opening_go_reference_notes():
    peter, enoch = decode_vkey(GO_VKEY), decode_vkey(GO_ENOCH_VKEY)
    note = GO_TEXT + b"\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert _open_note(note, dict([peter])) == (GO_TEXT, ("PeterNeumann",))
    assert _open_note(note, dict([peter, enoch])) == (GO_TEXT, ("PeterNeumann", "EnochRoot"))
    with pytest.raises(CheckpointError, match="no signature from a trusted key"):
        _open_note(note, {})
    repeated = GO_TEXT + b"\n" + GO_PETER_SIG * 2 + GO_ENOCH_SIG * 2
    assert _open_note(repeated, dict([peter])) == (GO_TEXT, ("PeterNeumann",))
    with pytest.raises(CheckpointError, match="does not verify"):
        _open_note(GO_TEXT.replace(b"cryptography", b"cryptographY") + b"\n" + GO_PETER_SIG, dict([peter]))


def test_go_reference_vkey_manglings_are_rejected():
    """As in the Go tests: every proper substring and every one-byte change must fail."""
    assert decode_vkey(GO_VKEY)[0] == "PeterNeumann"
    mangled = {GO_VKEY[i:j] for i in range(len(GO_VKEY) + 1) for j in range(i + 1, len(GO_VKEY) + 1)}
    mangled |= {GO_VKEY[:i] + chr(ord(GO_VKEY[i]) + 1) + GO_VKEY[i + 1 :] for i in range(len(GO_VKEY))}
    mangled |= {
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong key length
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    }
    mangled.discard(GO_VKEY)
    for vkey in mangled:
        with pytest.raises(CheckpointError):
            decode_vkey(vkey)


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann+c74f20a3", "must be '<name>\\+<key hash>\\+<key>'"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "must not contain whitespace"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 lower-case hex digits"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match name"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not canonical standard base64"),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "only 01 \\(Ed25519\\)"),
        ("PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + bytes(33)).decode(), "must be 32 bytes, got 33"),
    ],
)
def test_decode_vkey_reasons(vkey, message):
    with pytest.raises(CheckpointError, match=message):
        decode_vkey(vkey)


# --- round trip -----------------------------------------------------------------------

printable_text = st.text(
    st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S")) | st.just(" "), min_size=1, max_size=40
)
checkpoints = st.builds(
    Checkpoint,
    origin=printable_text,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(printable_text, max_size=3).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(cp=checkpoints)
def test_round_trip(cp):
    body = format_body(cp)
    assert parse_body(body) == cp
    note = sign_checkpoint(cp, [(WRITER, WRITER_KEY), (WITNESS, WITNESS_KEY)])
    assert note.startswith(body + b"\n")
    assert open_checkpoint(note, TRUSTED, origin=cp.origin) == VerifiedCheckpoint(cp, (WRITER,))


def test_checkpoint_survives_msgspec_json():
    cp = Checkpoint(ORIGIN, 7, ROOT, ("a", "b"))
    assert msgspec.json.decode(msgspec.json.encode(cp), type=Checkpoint) == cp


# --- rejection: structure of the signed note -----------------------------------------------


def _replace(old: bytes, new: bytes) -> bytes:
    assert old in GOLDEN_NOTE
    return GOLDEN_NOTE.replace(old, new)


SIG_LINE = GOLDEN_NOTE[len(GOLDEN_BODY) + 1 :]
SIG_B64 = SIG_LINE.split(b" ")[2].rstrip(b"\n")


def _sig_line(name: str, blob: bytes) -> bytes:
    return EM_DASH + f" {name} ".encode() + base64.b64encode(blob) + b"\n"


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (GOLDEN_BODY + SIG_LINE, "no blank line between the text and the signatures"),
        (GOLDEN_BODY + b"\n", "no signature lines after the blank line"),
        (GOLDEN_NOTE[:-1], "last signature line does not end with a newline"),
        (GOLDEN_NOTE + b"unexpected line\n", "signature line 2 does not start with an em dash"),
        (_replace(EM_DASH, b"--"), "signature line 1 does not start with an em dash"),
        (_replace(EM_DASH + b" ", EM_DASH), "signature line 1 does not start with an em dash"),
        (_replace(b" verdict-writer-0 ", b" verdict-writer-0"), "signature line 1 has no space"),
        (_replace(b"verdict-writer-0 BUC4", b"verdict+writer-0 BUC4"), "must not contain whitespace, '\\+'"),
        (_replace(b"verdict-writer-0 BUC4", b"Bad Name BUC4"), "signature is not canonical standard base64"),
        (_replace(SIG_B64, SIG_B64[:-1]), "signature is not canonical standard base64"),
        (_replace(SIG_B64, SIG_B64[:-4] + b"!!!="), "signature is not canonical standard base64"),
        (_replace(SIG_B64, b"BUC4EA=="), "signature line 1 \\(verdict-writer-0\\): signature is 4 bytes, too short"),
        (
            _replace(SIG_B64, b"BUC4EHg="),
            "trusted key verdict-writer-0\\+0540b810: Ed25519 signature must be 64 bytes, got 1",
        ),
        (GOLDEN_NOTE + _sig_line("x", b"abcd"), "signature line 2 \\(x\\): signature is 4 bytes, too short"),
        (GOLDEN_NOTE + SIG_LINE * 100, "101 signature lines, at most 100"),
        (b"\xff" + GOLDEN_NOTE, "signed note is not valid UTF-8 \\(byte 0\\)"),
        (_replace(b"1234", b"12\t34"), "control character U\\+0009 at character 33"),
        (_replace(b"1234\n", b"1234\r\n"), "control character U\\+000D"),
    ],
)
def test_malformed_notes_are_rejected(note, message):
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(note, TRUSTED)


# --- rejection: signatures ------------------------------------------------------------------


def test_signature_by_an_untrusted_key_alone_is_rejected():
    note = sign_checkpoint(CHECKPOINT, [("mallory", OTHER_KEY)])
    with pytest.raises(CheckpointError, match="no signature from a trusted key \\(signed by: mallory\\+"):
        open_checkpoint(note, TRUSTED)


def test_trusted_name_with_another_key_counts_as_unknown():
    """A rotated or impostor key under a trusted name does not match the key hash, so it is not trusted."""
    note = sign_checkpoint(CHECKPOINT, [(WRITER, OTHER_KEY)])
    with pytest.raises(CheckpointError, match="no signature from a trusted key"):
        open_checkpoint(note, TRUSTED)


def test_unknown_signatures_are_ignored():
    """Witness cosignatures and other algorithms (any length) must not break verification."""
    cosignature = _sig_line("witness2.example", b"\x12\x34\x56\x78" + bytes(72))
    note = GOLDEN_NOTE + sign_checkpoint(CHECKPOINT, [(WITNESS, WITNESS_KEY)])[len(GOLDEN_BODY) + 1 :] + cosignature
    assert open_checkpoint(note, TRUSTED) == VerifiedCheckpoint(CHECKPOINT, (WRITER,))


def test_forged_signature_from_a_trusted_name_and_key_hash_is_rejected():
    """The key hash is public, so an attacker can claim a trusted key; the signature must still verify."""
    forged = base64.b64encode(key_hash(WRITER, WRITER_KEY.public_key()) + OTHER_KEY.sign(GOLDEN_BODY))
    with pytest.raises(CheckpointError, match="trusted key verdict-writer-0\\+0540b810 does not verify"):
        open_checkpoint(_replace(SIG_B64, forged), TRUSTED)


def test_a_bad_trusted_signature_is_fatal_even_next_to_a_good_one():
    bad = _sig_line(WRITER, key_hash(WRITER, WRITER_KEY.public_key()) + bytes(64))
    with pytest.raises(CheckpointError, match=r"signature line 2 by trusted key .* does not verify"):
        open_checkpoint(GOLDEN_NOTE + bad, TRUSTED)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"\n1234\n", b"\n1235\n"),  # tampered size
        (b"\n1234\n", b"\n123\n"),  # a truncated log claiming fewer records
        (b"HKk0", b"HKk1"),  # tampered root
        (b"writer-0\n", b"writer-1\n"),  # another chain's origin
    ],
)
def test_tampered_checkpoint_is_rejected(old, new):
    with pytest.raises(CheckpointError, match="does not verify: the note was forged or altered"):
        open_checkpoint(_replace(old, new), TRUSTED)


def test_origin_must_match_when_given():
    with pytest.raises(
        CheckpointError, match=re.escape("checkpoint origin is 'verdict.example/chain/writer-0', expected 'x'")
    ):
        open_checkpoint(GOLDEN_NOTE, TRUSTED, origin="x")


def test_signed_but_malformed_body_is_rejected():
    """Strict parsing applies after verification too: a validly signed non-canonical body is refused."""
    body = GOLDEN_BODY.replace(b"\n1234\n", b"\n01234\n")
    note = _sign_note(body, [(WRITER, WRITER_KEY)])
    with pytest.raises(CheckpointError, match="without leading zeros, got '01234'"):
        open_checkpoint(note, TRUSTED)


# --- rejection: checkpoint body -------------------------------------------------------------

ROOT_B64 = base64.b64encode(ROOT).decode()


def _body(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_body(ORIGIN, "1234", ROOT_B64)[:-1], "checkpoint body must end with a newline"),
        (_body(ORIGIN, "1234"), "checkpoint body has 2 line\\(s\\), needs at least 3"),
        (b"", "checkpoint body must end with a newline"),
        (_body("", "1234", ROOT_B64), "origin \\(line 1\\) must be a non-empty string"),
        (_body("a\u2028b", "1234", ROOT_B64), "origin \\(line 1\\) has a non-printable character"),
        (_body(ORIGIN, "", ROOT_B64), "tree size \\(line 2\\) must be decimal digits without leading zeros, got ''"),
        (_body(ORIGIN, "007", ROOT_B64), "without leading zeros, got '007'"),
        (_body(ORIGIN, "-1", ROOT_B64), "got '-1'"),
        (_body(ORIGIN, "+1", ROOT_B64), "got '\\+1'"),
        (_body(ORIGIN, "1_000", ROOT_B64), "got '1_000'"),
        (_body(ORIGIN, " 12", ROOT_B64), "got ' 12'"),
        (_body(ORIGIN, "\u0661", ROOT_B64), "got '\u0661'"),  # ARABIC-INDIC DIGIT ONE: int() would take it
        (_body(ORIGIN, str(2**64), ROOT_B64), "tree size 18446744073709551616 is outside 0..2\\*\\*64-1"),
        (_body(ORIGIN, "1", ROOT_B64[:-1]), "root hash \\(line 3\\) is not canonical standard base64"),
        (_body(ORIGIN, "1", ROOT_B64.replace("=", "")), "root hash \\(line 3\\) is not canonical"),
        (_body(ORIGIN, "1", "HKk0qrLE8DNd7etOv4rU5w3TmNkyXhX7rXGVBd7OIeB="), "not canonical"),  # padding bits set
        (_body(ORIGIN, "1", base64.urlsafe_b64encode(EMPTY_ROOT).decode()), "not canonical"),  # URL-safe
        (_body(ORIGIN, "1", base64.b64encode(ROOT[:31]).decode()), "root hash must be 32 bytes, got 31 bytes"),
        (_body(ORIGIN, "1", ROOT_B64, ""), "extension line 4 must be a non-empty string"),
        (_body(ORIGIN, "1", ROOT_B64, "ok", "\u00a0"), "extension line 5 has a non-printable character"),
        (b"\xc0\x80\n1\n" + ROOT_B64.encode() + b"\n", "checkpoint body is not valid UTF-8 \\(byte 0\\)"),
        (_body(ORIGIN, "1", ROOT_B64).replace(b"\n", b"\r\n"), "control character U\\+000D"),
    ],
)
def test_parse_body_rejects(body, message):
    with pytest.raises(CheckpointError, match=message):
        parse_body(body)


def test_parse_body_accepts_size_zero_and_the_largest_size():
    assert parse_body(_body(ORIGIN, "0", ROOT_B64)).size == 0
    assert parse_body(_body(ORIGIN, str(2**64 - 1), ROOT_B64)).size == 2**64 - 1


@pytest.mark.parametrize(
    ("cp", "message"),
    [
        (Checkpoint("", 1, ROOT), "origin \\(line 1\\) must be a non-empty string"),
        (Checkpoint("a\nb", 1, ROOT), "origin \\(line 1\\) has a non-printable character"),
        (Checkpoint(ORIGIN, -1, ROOT), "tree size -1 is outside"),
        (Checkpoint(ORIGIN, 2**64, ROOT), "tree size 18446744073709551616 is outside"),
        (Checkpoint(ORIGIN, True, ROOT), "tree size must be an int, got bool"),
        (Checkpoint(ORIGIN, 1, ROOT[:31]), "root hash must be 32 bytes, got 31 bytes"),
        (Checkpoint(ORIGIN, 1, ROOT.hex()), "root hash must be 32 bytes, got str"),
        (Checkpoint(ORIGIN, 1, ROOT, ("",)), "extension line 4 must be a non-empty string"),
        (Checkpoint(ORIGIN, 1, ROOT, ("a\nb",)), "extension line 4 has a non-printable character"),
        (Checkpoint(ORIGIN, 1, ROOT, "abc"), "extensions must be a tuple of str, got str"),
    ],
)
def test_format_body_refuses_what_parse_body_would_reject(cp, message):
    with pytest.raises(CheckpointError, match=message):
        format_body(cp)
    with pytest.raises(CheckpointError, match=message):
        sign_checkpoint(cp, [(WRITER, WRITER_KEY)])


# --- signing errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signers", "message"),
    [
        ([], "at least one signer is required"),
        ([("a b", WRITER_KEY)], "key name 'a b' must not contain whitespace"),
        ([("a+b", WRITER_KEY)], "key name 'a\\+b' must not contain whitespace, '\\+'"),
        ([("", WRITER_KEY)], "key name must be a non-empty string"),
        (
            [(WRITER, WRITER_KEY), (WRITER, WRITER_KEY)],
            "signer 'verdict-writer-0' with key hash 0540b810 is listed twice",
        ),
        ([(f"k{i}", WRITER_KEY) for i in range(101)], "101 signers, at most 100"),
    ],
)
def test_sign_checkpoint_rejects_bad_signers(signers, message):
    with pytest.raises(CheckpointError, match=message):
        sign_checkpoint(CHECKPOINT, signers)


def test_sign_checkpoint_rejects_a_non_ed25519_key():
    with pytest.raises(TypeError, match="expected an Ed25519PrivateKey, got bytes"):
        sign_checkpoint(CHECKPOINT, [(WRITER, bytes(32))])


def test_open_checkpoint_rejects_a_non_ed25519_trusted_key():
    with pytest.raises(TypeError, match="expected an Ed25519PublicKey, got bytes"):
        open_checkpoint(GOLDEN_NOTE, {WRITER: bytes(32)})


def test_hundred_signatures_are_allowed():
    note = GOLDEN_NOTE + GOLDEN_NOTE[len(GOLDEN_BODY) + 1 :] * 99
    assert open_checkpoint(note, TRUSTED).signed_by == (WRITER,)

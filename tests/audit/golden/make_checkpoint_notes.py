"""Builds tests/audit/golden/checkpoint_notes.json: signed-note variants of the
golden trail's checkpoint 5 (docs/audit-format.md §8).

Why: C2SP signed-note lets a note carry extension lines and signatures from
keys a verifier does not know (witness cosignatures). Verdict never writes
either, so the golden trail cannot show that a verifier accepts them; these
vectors do, and one altered note shows the signature covers the whole text.

Ed25519 is deterministic, so the file is reproducible; the tests rebuild it
and require identical bytes:  .venv/bin/python -m tests.audit.golden.make_checkpoint_notes
"""

from __future__ import annotations

import base64
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from verdict.audit import layout
from verdict.audit.checkpoint import Checkpoint, encode_vkey, key_hash, parse_body, sign_checkpoint
from verdict.audit.signing import checkpoint_signer
from tests.audit.golden.make_golden import CHAIN, HERE, STORE_DIR, signer_b

VECTORS = HERE / "checkpoint_notes.json"
SIZE = 5  # after the rotation at seq 4: signed by key B
WITNESS_NAME = "witness.example/w1"
WITNESS_SEED = bytes(range(64, 96))
IMPOSTOR_SEED = bytes(range(96, 128))  # signs under key B's *name*, with another key
EXTENSION = "example.com/verdict-extension opaque text"


def golden_note() -> bytes:
    return (STORE_DIR / layout.checkpoint_key(CHAIN, SIZE)).read_bytes()


def _signature_line(name: str, key: Ed25519PrivateKey, text: bytes) -> bytes:
    blob = key_hash(name, key.public_key()) + key.sign(text)
    return f"\u2014 {name} {base64.b64encode(blob).decode('ascii')}\n".encode()


def _text(note: bytes) -> bytes:
    return note[: note.rfind(b"\n\n") + 1]


def notes() -> list[dict[str, str]]:
    golden = golden_note()
    text = _text(golden)
    cp = parse_body(text)
    witness = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    impostor = Ed25519PrivateKey.from_private_bytes(IMPOSTOR_SEED)
    chain_key_name = signer_b().key_id
    with_extension = sign_checkpoint(Checkpoint(cp.origin, cp.size, cp.root, (EXTENSION,)), [checkpoint_signer(signer_b())])
    cosigned = golden + _signature_line(WITNESS_NAME, witness, text) + _signature_line(chain_key_name, impostor, text)
    altered = with_extension.replace(EXTENSION.encode(), EXTENSION.replace("opaque", "altered").encode())
    only_unknown = text + b"\n" + _signature_line(WITNESS_NAME, witness, text)
    return [
        {"name": "extension_line", "expect": "accept",
         "why": "an extension line after the root line is part of the signed text and otherwise ignored",
         "note": with_extension.decode()},
        {"name": "unknown_signers", "expect": "accept",
         "why": "the golden note plus a witness cosignature and a line with the chain key's name but another "
                "key hash: both are signatures of unknown keys and are ignored",
         "note": cosigned.decode()},
        {"name": "altered_text", "expect": "reject",
         "why": "extension_line with its extension line changed after signing: the chain key's signature fails",
         "note": altered.decode()},
        {"name": "no_chain_signature", "expect": "reject",
         "why": "only a signature of an unknown key: at least one valid signature by the chain's key is required",
         "note": only_unknown.decode()},
    ]


def vectors() -> dict:
    return {
        "about": "Signed-note variants of chains/golden-0/checkpoints/00000000000000000005 "
                 "(docs/audit-format.md §8). Built by tests/audit/golden/make_checkpoint_notes.py.",
        "chain_key_vkey": signer_b().public_key_document.vkey,
        "witness_vkey": encode_vkey(WITNESS_NAME, Ed25519PrivateKey.from_private_bytes(WITNESS_SEED).public_key()),
        "notes": notes(),
    }


def main() -> None:
    VECTORS.write_text(json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}", file=sys.stderr)


if __name__ == "__main__":
    main()

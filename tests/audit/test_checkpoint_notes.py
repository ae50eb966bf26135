"""Checkpoint notes follow C2SP signed-note / tlog-checkpoint (docs/audit-format.md §8):
extension lines and signatures by unknown keys are accepted (and ignored), the
signature covers the whole note text, and one valid signature by the chain's
key for that size is required. Vectors: tests/audit/golden/checkpoint_notes.json."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.audit.golden import make_checkpoint_notes as vectors_module
from tests.audit.golden.make_golden import CHAIN, POLICY, STORE_DIR
from verdict.audit import layout
from verdict.audit.checkpoint import CheckpointError, decode_vkey, open_checkpoint, parse_body
from verdict.audit.stores import FilesystemStore
from verdict.audit.verifier import verify_store

VECTORS = json.loads(vectors_module.VECTORS.read_text("utf-8"))
NOTES = {v["name"]: v for v in VECTORS["notes"]}
GOLDEN_TEXT = vectors_module.golden_note().split(b"\n\n")[0] + b"\n"


def by_expectation(expect):
    return [pytest.param(v["note"].encode(), id=v["name"]) for v in VECTORS["notes"] if v["expect"] == expect]


def test_vectors_file_is_reproducible():
    assert vectors_module.vectors() == VECTORS


@pytest.mark.parametrize("note", by_expectation("accept"))
def test_accepted_by_the_checkpoint_library(note):
    name, key = decode_vkey(VECTORS["chain_key_vkey"])
    verified = open_checkpoint(note, {name: key}, origin=f"verdict/{CHAIN}")
    golden = parse_body(GOLDEN_TEXT)
    assert (verified.checkpoint.size, verified.checkpoint.root) == (golden.size, golden.root)
    assert verified.signed_by == (name,)


@pytest.mark.parametrize("note", by_expectation("reject"))
def test_rejected_by_the_checkpoint_library(note):
    name, key = decode_vkey(VECTORS["chain_key_vkey"])
    with pytest.raises(CheckpointError):
        open_checkpoint(note, {name: key}, origin=f"verdict/{CHAIN}")


@pytest.mark.parametrize("note", by_expectation("accept"))
def test_signed_bytes_by_hand(note):
    """What §8 says, without audit.checkpoint: the signed bytes are the note text up
    to the last blank line (each text line with its newline); a signature line is
    "— " name " " base64(SHA-256(name || 0x0A || 0x01 || public key)[:4] || signature)."""
    name, vkey_hash, material = VECTORS["chain_key_vkey"].split("+", 2)
    raw_key = base64.b64decode(material)[1:]
    keyhash = hashlib.sha256(name.encode() + b"\n\x01" + raw_key).digest()[:4]
    assert keyhash.hex() == vkey_hash
    text, _, signatures = note.rpartition(b"\n\n")
    text += b"\n"
    ours = [
        base64.b64decode(line.split(" ")[2])
        for line in signatures.decode().splitlines()
        if line.split(" ")[1] == name and base64.b64decode(line.split(" ")[2])[:4] == keyhash
    ]
    assert len(ours) == 1
    Ed25519PublicKey.from_public_bytes(raw_key).verify(ours[0][4:], text)  # raises if not


@pytest.fixture
def golden_copy(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(STORE_DIR, root)
    return root


def replace_checkpoint(root, note: bytes):
    path = root / layout.checkpoint_key(CHAIN, vectors_module.SIZE)
    path.chmod(0o644)
    path.write_bytes(note)
    return FilesystemStore(root)


@pytest.mark.parametrize("note", by_expectation("accept"))
def test_verifier_accepts(golden_copy, note):
    report = verify_store(replace_checkpoint(golden_copy, note))
    assert report.ok, report.failures


@pytest.mark.parametrize("note", by_expectation("reject"))
def test_verifier_rejects(golden_copy, note):
    report = verify_store(replace_checkpoint(golden_copy, note))
    key = layout.checkpoint_key(CHAIN, vectors_module.SIZE)
    assert [(f.reason, f.key) for f in report.failures] == [("bad_checkpoint_signature", key)]


def run_documented_sketch(root):
    """The independent Python verifier of docs/audit-format.md §11, on ``root``."""
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "audit-format.md").read_text()
    script = root.parent / "verify.py"
    script.write_text(next(b.split("```", 1)[0] for b in doc.split("```python\n")[1:] if "sys.argv" in b))
    return subprocess.run(
        [sys.executable, str(script), str(root), CHAIN, str(POLICY)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("note", by_expectation("accept"))
def test_documented_sketch_accepts(golden_copy, note):
    replace_checkpoint(golden_copy, note)
    result = run_documented_sketch(golden_copy)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("note", by_expectation("reject"))
def test_documented_sketch_rejects(golden_copy, note):
    replace_checkpoint(golden_copy, note)
    assert run_documented_sketch(golden_copy).returncode != 0


def test_documented_sketch_requires_mandatory_checkpoints(golden_copy):
    (golden_copy / layout.checkpoint_key(CHAIN, vectors_module.SIZE)).unlink()
    result = run_documented_sketch(golden_copy)
    assert result.returncode != 0 and "mandatory checkpoints missing: [5]" in result.stderr

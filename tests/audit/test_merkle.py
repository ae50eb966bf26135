"""audit.merkle against the published RFC 6962 vectors, reference roots and properties.

The vectors are the ones transparency-dev/merkle (Trillian, Sigstore) is
tested with; passing them is what lets an auditor check our proofs with
their tools.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.audit.merkle import (
    EMPTY_ROOT,
    MerkleAccumulator,
    MerkleTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _vector_dir() -> Path:
    configured = os.environ.get("VERDICT_TESTVECTORS")
    if configured:
        return Path(configured)
    return PROJECT_ROOT.parent / "shared" / "testvectors" / "rfc6962"


VECTOR_DIR = _vector_dir()
VECTOR_FILES = sorted(VECTOR_DIR.rglob("*.json")) if VECTOR_DIR.is_dir() else []


def _vectors_unavailable() -> None:
    reason = f"RFC 6962 test vectors not found in {VECTOR_DIR} (set VERDICT_TESTVECTORS)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the vectors")
    pytest.skip(reason)


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _proof(vector: dict) -> list[bytes]:
    return [_b64(h) for h in vector["proof"] or []]


def _run_vector(vector: dict) -> None:
    """Feed one vector to the verifier; raises ProofError if it rejects."""
    if "leafIdx" in vector:
        verify_inclusion(
            _b64(vector["leafHash"]), vector["leafIdx"], vector["treeSize"], _proof(vector), _b64(vector["root"])
        )
    else:
        verify_consistency(
            vector["size1"], vector["size2"], _proof(vector), _b64(vector["root1"]), _b64(vector["root2"])
        )


def test_vector_directory_has_inclusion_and_consistency_files():
    if not VECTOR_FILES:
        _vectors_unavailable()
    relative = [p.relative_to(VECTOR_DIR).as_posix() for p in VECTOR_FILES]
    assert len(VECTOR_FILES) > 0
    assert any(r.startswith("inclusion/") for r in relative)
    assert any(r.startswith("consistency/") for r in relative)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.relative_to(VECTOR_DIR).as_posix()) for p in VECTOR_FILES]
    or [pytest.param(None, id="no-vectors-found")],
)
def test_rfc6962_vector(path):
    if path is None:
        _vectors_unavailable()
    vector = json.loads(path.read_text())
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            _run_vector(vector)
    else:
        _run_vector(vector)


# --- reference tree (RFC 6962 test data used by CT, Trillian and transparency-dev) ---

REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
REFERENCE_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
REFERENCE_LEAF_HASHES = [leaf_hash(d) for d in REFERENCE_LEAVES]


def test_empty_root_is_sha256_of_nothing():
    assert bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MerkleAccumulator().root() == EMPTY_ROOT


def test_leaf_and_node_hash_use_domain_prefixes():
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = bytes(32), bytes(range(32))
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size):
    assert root_from_leaf_hashes(REFERENCE_LEAF_HASHES[:size]) == REFERENCE_ROOTS[size - 1]


def test_generated_proofs_equal_vector_proofs():
    """Our generator must emit the very proofs the vectors contain, not merely valid ones."""
    if not VECTOR_FILES:
        _vectors_unavailable()
    compared = 0
    for path in VECTOR_FILES:
        vector = json.loads(path.read_text())
        if vector["wantErr"]:
            continue
        if "leafIdx" in vector:
            size, root = vector["treeSize"], _b64(vector["root"])
        else:
            size, root = vector["size2"], _b64(vector["root2"])
        if not 0 < size <= 8 or root != REFERENCE_ROOTS[size - 1]:
            continue  # a vector over some other tree
        leaves = REFERENCE_LEAF_HASHES[:size]
        if "leafIdx" in vector:
            generated = inclusion_proof(leaves, vector["leafIdx"])
            tree = MerkleTree()
            for leaf in REFERENCE_LEAF_HASHES:  # a larger tree than the proof's: PATH(m, D[0:size]) of its prefix
                tree.append(leaf)
            assert tree.inclusion_proof(vector["leafIdx"], size) == generated
        else:
            generated = consistency_proof(leaves, vector["size1"])
        assert generated == _proof(vector), path.relative_to(VECTOR_DIR).as_posix()
        compared += 1
    assert compared > 0


# --- strictness, with the reason checked ---------------------------------------------

H = bytes(range(32))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((H, 8, 8, [], H), "leaf index 8 is outside a tree of size 8"),
        ((H, 0, 0, [], EMPTY_ROOT), "leaf index 0 is outside a tree of size 0"),
        ((H, -1, 8, [], H), "index must be >= 0"),
        ((H, True, 8, [], H), "index must be an int"),
        ((H, 5, 8, [H, H], H), "must have 3 hashes, got 2"),
        ((H, 0, 1, [H], H), "must have 0 hashes, got 1"),
        ((H[:31], 0, 1, [], H), "leaf hash must be 32 bytes, got 31"),
        ((H, 0, 2, [H + b"\x00"], H), r"proof\[0\] must be 32 bytes, got 33"),
        ((H, 0, 1, [], b""), "root must be 32 bytes, got 0"),
        ((H, 0, 1, [], EMPTY_ROOT), "leads to root .*, expected e3b0c442"),
    ],
)
def test_verify_inclusion_rejects(args, message):
    with pytest.raises(ProofError, match=message):
        verify_inclusion(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 1, [], H, H), "size1 2 is larger than size2 1"),
        ((0, 1, [H], EMPTY_ROOT, H), "size1 is 0, so the proof must be empty, got 1 hashes"),
        ((0, 1, [], H, H), "not the empty-tree root, but size1 is 0"),
        ((0, 0, [], H, H), "not the empty-tree root, but size1 is 0"),
        ((3, 3, [H], H, H), r"sizes are equal \(3\), so the proof must be empty"),
        ((3, 3, [], H, EMPTY_ROOT), "two different roots for the same size 3"),
        ((1, 2, [], H, H), "must have 1 hashes, got 0"),
        ((3, 7, [H], H, H), "must have 4 hashes, got 1"),
        ((1, 2, [H], H[:12], H), "root1 must be 32 bytes, got 12"),
        ((1, 2, [H], H, "x" * 32), "root2 must be bytes, got str"),
        ((-1, 2, [], H, H), "size1 must be >= 0"),
    ],
)
def test_verify_consistency_rejects(args, message):
    with pytest.raises(ProofError, match=message):
        verify_consistency(*args)


def test_verify_consistency_accepts_any_tree_after_the_empty_tree():
    verify_consistency(0, 5, [], EMPTY_ROOT, REFERENCE_ROOTS[4])
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)


def test_consistency_mismatch_names_the_root():
    proof = consistency_proof(REFERENCE_LEAF_HASHES, 3)
    with pytest.raises(ProofError, match=r"leads to old root .* expected root1"):
        verify_consistency(3, 8, proof, REFERENCE_ROOTS[3], REFERENCE_ROOTS[7])
    with pytest.raises(ProofError, match=r"leads to new root .* expected root2"):
        verify_consistency(3, 8, proof, REFERENCE_ROOTS[2], REFERENCE_ROOTS[6])


def test_generation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="index 8 is outside a tree of 8 leaves"):
        inclusion_proof(REFERENCE_LEAF_HASHES, 8)
    with pytest.raises(ValueError, match="old_size 9 is larger than the tree"):
        consistency_proof(REFERENCE_LEAF_HASHES, 9)
    with pytest.raises(ValueError, match=r"leaf_hashes\[1\] must be 32 bytes, got 3"):
        root_from_leaf_hashes([H, b"abc"])
    with pytest.raises(ValueError, match="left child must be 32 bytes"):
        node_hash(b"", H)
    assert consistency_proof(REFERENCE_LEAF_HASHES, 0) == []
    assert consistency_proof(REFERENCE_LEAF_HASHES, 8) == []


def test_root_from_inclusion_proof_returns_the_implied_root():
    proof = inclusion_proof(REFERENCE_LEAF_HASHES[:7], 6)
    assert root_from_inclusion_proof(REFERENCE_LEAF_HASHES[6], 6, 7, proof) == REFERENCE_ROOTS[6]


def test_large_tree_has_no_recursion_problem():
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100_000)]
    root = root_from_leaf_hashes(leaves)
    acc = MerkleAccumulator()
    for leaf in leaves:
        acc.append(leaf)
    assert acc.root() == root
    for index in (0, 65_535, 65_536, 99_999):
        verify_inclusion(leaves[index], index, len(leaves), inclusion_proof(leaves, index), root)
    old = root_from_leaf_hashes(leaves[:70_001])
    verify_consistency(70_001, 100_000, consistency_proof(leaves, 70_001), old, root)


# --- properties ------------------------------------------------------------------------


def _leaves(n: int, salt: bytes) -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _prefix_roots(leaves: list[bytes]) -> list[bytes]:
    """roots[m] = MTH(leaves[:m]), computed via the accumulator (checked separately)."""
    acc, roots = MerkleAccumulator(), [EMPTY_ROOT]
    for leaf in leaves:
        acc.append(leaf)
        roots.append(acc.root())
    return roots


def _flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


sizes = st.integers(min_value=1, max_value=300)
salts = st.binary(max_size=8)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@PROPERTY_SETTINGS
@given(n=sizes, salt=salts)
def test_every_inclusion_proof_verifies(n, salt):
    leaves = _leaves(n, salt)
    root = root_from_leaf_hashes(leaves)
    tree = MerkleTree()
    for leaf in [*leaves, *_leaves(3, salt + b"more")]:  # grown past n: proofs of the size-n prefix
        tree.append(leaf)
    for index in range(n):
        proof = inclusion_proof(leaves, index)
        verify_inclusion(leaves[index], index, n, proof, root)
        assert tree.inclusion_proof(index, n) == proof


@PROPERTY_SETTINGS
@given(n=st.integers(min_value=0, max_value=300), salt=salts)
def test_every_consistency_proof_to_the_full_tree_verifies(n, salt):
    leaves = _leaves(n, salt)
    roots = _prefix_roots(leaves)
    for m in range(n + 1):
        verify_consistency(m, n, consistency_proof(leaves, m), roots[m], roots[n])


@PROPERTY_SETTINGS
@given(data=st.data(), salt=salts)
def test_consistency_proof_between_any_two_sizes_verifies(data, salt):
    n = data.draw(st.integers(min_value=0, max_value=300), label="n")
    m = data.draw(st.integers(min_value=0, max_value=n), label="m")
    leaves = _leaves(n, salt)
    verify_consistency(
        m, n, consistency_proof(leaves, m), root_from_leaf_hashes(leaves[:m]), root_from_leaf_hashes(leaves)
    )


@PROPERTY_SETTINGS
@given(data=st.data(), salt=salts, bit=st.integers(min_value=0))
def test_flipped_bit_breaks_inclusion(data, salt, bit):
    n = data.draw(sizes, label="n")
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    leaves = _leaves(n, salt)
    root = root_from_leaf_hashes(leaves)
    proof = inclusion_proof(leaves, index)
    target = data.draw(st.integers(min_value=-2, max_value=len(proof) - 1), label="target")
    leaf, bad_root = leaves[index], root
    if target == -2:
        bad_root = _flip(root, bit)
    elif target == -1:
        leaf = _flip(leaf, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, n, proof, bad_root)


@PROPERTY_SETTINGS
@given(data=st.data(), salt=salts, bit=st.integers(min_value=0))
def test_flipped_bit_breaks_consistency(data, salt, bit):
    n = data.draw(sizes, label="n")
    m = data.draw(st.integers(min_value=1, max_value=n), label="m")  # size 0 is consistent with any root
    leaves = _leaves(n, salt)
    root1, root2 = root_from_leaf_hashes(leaves[:m]), root_from_leaf_hashes(leaves)
    proof = consistency_proof(leaves, m)
    target = data.draw(st.integers(min_value=-2, max_value=len(proof) - 1), label="target")
    if target == -2:
        root1 = _flip(root1, bit)
    elif target == -1:
        root2 = _flip(root2, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(ProofError):
        verify_consistency(m, n, proof, root1, root2)


@PROPERTY_SETTINGS
@given(n=st.integers(min_value=0, max_value=300), salt=salts)
def test_accumulator_root_matches_tree_hash_at_every_size(n, salt):
    leaves = _leaves(n, salt)
    acc = MerkleAccumulator()
    assert acc.root() == EMPTY_ROOT
    for i, leaf in enumerate(leaves, start=1):
        acc.append(leaf)
        assert acc.size == i
        assert len(acc.state()) == i.bit_count()
        assert acc.root() == root_from_leaf_hashes(leaves[:i])


@PROPERTY_SETTINGS
@given(data=st.data(), salt=salts)
def test_accumulator_resumes_from_state(data, salt):
    n = data.draw(st.integers(min_value=0, max_value=300), label="n")
    cut = data.draw(st.integers(min_value=0, max_value=n), label="cut")
    leaves = _leaves(n, salt)
    original = MerkleAccumulator()
    for leaf in leaves[:cut]:
        original.append(leaf)
    resumed = MerkleAccumulator.from_state(original.size, original.state())
    assert resumed.root() == original.root()
    for leaf in leaves[cut:]:
        original.append(leaf)
        resumed.append(leaf)
        assert (resumed.size, resumed.state(), resumed.root()) == (original.size, original.state(), original.root())


def test_accumulator_state_is_a_copy():
    acc = MerkleAccumulator()
    acc.append(H)
    acc.state().append(H)
    assert acc.state() == [H]


@pytest.mark.parametrize(
    ("size", "hashes", "message"),
    [
        (3, [H], "a tree of size 3 has 2 subtree roots, got 1"),
        (0, [H], "a tree of size 0 has 0 subtree roots, got 1"),
        (1, [H[:5]], r"hashes\[0\] must be 32 bytes, got 5"),
        (-1, [], "size must be >= 0"),
    ],
)
def test_accumulator_from_state_rejects(size, hashes, message):
    with pytest.raises(ValueError, match=message):
        MerkleAccumulator.from_state(size, hashes)


def test_accumulator_append_rejects_bad_hash():
    with pytest.raises(ValueError, match="leaf hash must be 32 bytes, got 4"):
        MerkleAccumulator().append(b"abcd")

"""RFC 6962 / RFC 9162 Merkle trees over a chain's record hashes.

Why: a hash chain proves order but cannot prove that a tail was not cut off,
and checking one record against it means reading the whole chain. A Merkle
tree over the same record hashes, with signed roots (checkpoints), gives
both: an inclusion proof shows one record is in a signed tree with log2(n)
hashes, and a consistency proof shows a later tree extends an earlier one
(nothing rewritten, nothing dropped).

Why this exact construction: it is the one Certificate Transparency,
Trillian, Sigstore and the Go checksum database use, so an auditor can check
our proofs with off-the-shelf tools and this module is tested against their
published vectors. Leaf ``i`` of a chain's tree is ``leaf_hash(record_hash)``
of the record with sequence number ``i`` (genesis is leaf 0).

Verification is strict on purpose: every hash must be 32 bytes, indexes and
sizes must be in range and a proof must have exactly the length the tree
shape dictates, so that a malformed proof is reported as malformed rather
than as a confusing root mismatch (or, worse, accepted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleAccumulator",
    "MerkleTree",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""MTH of the empty tree (RFC 6962 section 2.1): SHA-256 of no bytes."""


class ProofError(ValueError):
    """A proof does not verify; the message says precisely which check failed."""


# --- hashing -----------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Hash a leaf with a 0x00 prefix so that no leaf can pose as an inner node."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two children with a 0x01 prefix (second-preimage resistance, RFC 6962 2.1)."""
    _require_hash("left child", left, ValueError)
    _require_hash("right child", right, ValueError)
    return _node(left, right)


def _node(left: bytes, right: bytes) -> bytes:
    """node_hash without the checks, for loops whose inputs are already checked."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --- argument checks -----------------------------------------------------------


def _require_hash(name: str, value: object, error: type[ValueError]) -> None:
    """A hash of another length can never be a SHA-256 output, so it is malformed input."""
    if not isinstance(value, bytes):
        raise error(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise error(f"{name} must be {HASH_SIZE} bytes, got {len(value)}")


def _require_hashes(name: str, values: Sequence[bytes], error: type[ValueError]) -> None:
    for i, value in enumerate(values):
        _require_hash(f"{name}[{i}]", value, error)


def _require_size(name: str, value: object, error: type[ValueError]) -> None:
    # bool is an int subclass; True as a tree size is always a caller bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise error(f"{name} must be >= 0, got {value}")


def _split(n: int) -> int:
    """Largest power of two strictly below n (n >= 2): where RFC 6962 cuts a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1


# --- tree hash and proof generation (RFC 6962 section 2.1) ---------------------


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaves that are already leaf-hashed (what a chain stores per record)."""
    _require_hashes("leaf_hashes", leaf_hashes, ValueError)
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def _subtree_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]); recursion depth is log2(hi - lo), so large trees are fine."""
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return _node(_subtree_root(leaves, lo, lo + k), _subtree_root(leaves, lo + k, hi))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 2.1.1, ordered leaf-side first as verifiers expect."""
    _require_hashes("leaf_hashes", leaf_hashes, ValueError)
    _require_size("index", index, ValueError)
    if index >= len(leaf_hashes):
        raise ValueError(f"index {index} is outside a tree of {len(leaf_hashes)} leaves")
    proof: list[bytes] = []
    lo, hi = 0, len(leaf_hashes)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(_subtree_root(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree_root(leaf_hashes, lo, lo + k))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) of RFC 6962 2.1.2; empty when old_size is 0 or n."""
    _require_hashes("leaf_hashes", leaf_hashes, ValueError)
    _require_size("old_size", old_size, ValueError)
    if old_size > len(leaf_hashes):
        raise ValueError(f"old_size {old_size} is larger than the tree ({len(leaf_hashes)} leaves)")
    if old_size == 0:
        return []  # every tree extends the empty tree; there is nothing to prove
    return _subproof(leaf_hashes, old_size)


def _subproof(leaves: Sequence[bytes], m: int) -> list[bytes]:
    """SUBPROOF(m, D[n], true), unrolled: each step descends into one half."""
    proof: list[bytes] = []
    lo, hi = 0, len(leaves)
    m_is_whole_old_tree = True  # the RFC's flag b
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_subtree_root(leaves, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree_root(leaves, lo, lo + k))
            lo, m, m_is_whole_old_tree = lo + k, m - k, False
    if not m_is_whole_old_tree:
        proof.append(_subtree_root(leaves, lo, hi))
    proof.reverse()
    return proof


# --- inclusion verification (RFC 9162 section 2.1.3.2) -------------------------


def _inclusion_proof_length(index: int, tree_size: int) -> int:
    """Hashes on the path: levels where index and the last leaf diverge, plus left borders."""
    inner = (index ^ (tree_size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion_proof(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf_hash`` at ``index``; raises ProofError if malformed."""
    _require_size("tree_size", tree_size, ProofError)
    _require_size("index", index, ProofError)
    if index >= tree_size:
        raise ProofError(f"leaf index {index} is outside a tree of size {tree_size}")
    _require_hash("leaf hash", leaf_hash, ProofError)
    _require_hashes("proof", proof, ProofError)
    want = _inclusion_proof_length(index, tree_size)
    if len(proof) != want:
        raise ProofError(
            f"inclusion proof for leaf {index} in a tree of size {tree_size} must have {want} hashes, got {len(proof)}"
        )
    return _walk_inclusion_path(leaf_hash, index, tree_size, proof)


def _walk_inclusion_path(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2 steps 2-5, literally, so it can be audited against the RFC."""
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Accept only if ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` with ``root``."""
    _require_hash("root", root, ProofError)
    computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if computed != root:
        raise ProofError(
            f"inclusion proof for leaf {index} in a tree of size {tree_size} leads to root "
            f"{computed.hex()}, expected {root.hex()}"
        )


# --- consistency verification (RFC 9162 section 2.1.4.2) -----------------------


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Accept only if the tree (size2, root2) is an append-only extension of (size1, root1)."""
    _require_size("size1", size1, ProofError)
    _require_size("size2", size2, ProofError)
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}: a log never shrinks")
    if size1 == size2:
        # RFC 9162 2.1.4.2 step 1: equal sizes need an empty proof and equal
        # roots, nothing else (the shared vector with placeholder roots pins
        # this). Root lengths are enforced where checkpoints are parsed.
        _verify_same_tree(size1, proof, root1, root2)
        return
    _require_hash("root1", root1, ProofError)
    _require_hash("root2", root2, ProofError)
    _require_hashes("proof", proof, ProofError)
    if size1 == 0:
        _verify_extends_empty_tree(proof, root1)
    else:
        _verify_extension(size1, size2, proof, root1, root2)


def _verify_same_tree(size: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    if proof:
        raise ProofError(f"sizes are equal ({size}), so the proof must be empty, got {len(proof)} hashes")
    if size == 0 and root1 != EMPTY_ROOT:
        raise ProofError(f"root1 {root1.hex()} is not the empty-tree root, but size1 is 0")
    if root1 != root2:
        raise ProofError(
            f"two different roots for the same size {size}: {root1.hex()} and {root2.hex()} (a forked log)"
        )


def _verify_extends_empty_tree(proof: Sequence[bytes], root1: bytes) -> None:
    if proof:
        raise ProofError(f"size1 is 0, so the proof must be empty, got {len(proof)} hashes")
    if root1 != EMPTY_ROOT:
        raise ProofError(f"root1 {root1.hex()} is not the empty-tree root, but size1 is 0")


def _consistency_proof_length(size1: int, size2: int) -> int:
    """Proof length for 0 < size1 < size2; the old root is omitted when size1 is a power of two."""
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    seed = 0 if _is_power_of_two(size1) else 1
    return seed + inner - _trailing_zeros(size1) + border


def _verify_extension(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    want = _consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise ProofError(
            f"consistency proof from size {size1} to size {size2} must have {want} hashes, got {len(proof)}"
        )
    old, new = _walk_consistency_path(size1, size2, proof, root1)
    if old != root1:
        raise ProofError(
            f"consistency proof from size {size1} to {size2} leads to old root {old.hex()}, "
            f"expected root1 {root1.hex()}"
        )
    if new != root2:
        raise ProofError(
            f"consistency proof from size {size1} to {size2} leads to new root {new.hex()}, "
            f"expected root2 {root2.hex()}"
        )


def _walk_consistency_path(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> tuple[bytes, bytes]:
    """RFC 9162 2.1.4.2 steps 1-7, literally; returns (old root, new root) the proof implies."""
    if not proof:
        raise ProofError("consistency proof is empty, but size1 < size2")
    path = [root1, *proof] if _is_power_of_two(size1) else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    return fr, sr


# --- incremental tree ------------------------------------------------------------


class MerkleAccumulator:
    """The root of a growing tree in O(log n) memory, so a writer never re-reads its chain.

    State is the compact range [0, size): the roots of the perfect subtrees
    that the binary digits of ``size`` describe, largest (leftmost) first.
    Appending a leaf merges equal-sized subtrees like a binary counter carry;
    the RFC 6962 root is these roots folded from the right.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        _require_hash("leaf hash", leaf_hash, ValueError)
        self._hashes.append(leaf_hash)
        carry = self._size
        while carry & 1:
            right = self._hashes.pop()
            self._hashes[-1] = _node(self._hashes[-1], right)
            carry >>= 1
        self._size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            root = _node(left, root)
        return root

    def state(self) -> list[bytes]:
        """A copy of the subtree roots; persist it with ``size`` to resume later."""
        return list(self._hashes)

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> MerkleAccumulator:
        """Resume from ``state()``; the hash count must match the set bits of ``size``."""
        _require_size("size", size, ValueError)
        _require_hashes("hashes", hashes, ValueError)
        if len(hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} subtree roots, got {len(hashes)}")
        acc = cls()
        acc._size = size
        acc._hashes = list(hashes)
        return acc

    def __repr__(self) -> str:
        return f"MerkleAccumulator(size={self._size}, root={self.root().hex()})"


class MerkleTree:
    """All complete-subtree hashes of a growing tree, so any RFC 6962 subtree root
    (and so any proof) costs O(log n) instead of re-hashing the leaves.

    About 64 bytes per leaf. The verifier keeps one per chain; the witness
    submitter keeps one to prove consistency from whatever size a witness saw."""

    def __init__(self) -> None:
        self.levels: list[bytearray] = [bytearray()]
        self.size = 0

    def append(self, leaf: bytes) -> None:
        self.levels[0] += leaf
        index, level = self.size, 0
        while index & 1:
            data = self.levels[level]
            right = data[-32:]
            left = data[-64:-32]
            if level + 1 == len(self.levels):
                self.levels.append(bytearray())
            self.levels[level + 1] += hashlib.sha256(b"\x01" + left + right).digest()
            index >>= 1
            level += 1
        self.size += 1

    def leaves(self, n: int) -> list[bytes]:
        data = self.levels[0]
        return [bytes(data[i * 32 : i * 32 + 32]) for i in range(n)]

    def _complete(self, lo: int, width: int) -> bytes:
        level = width.bit_length() - 1
        i = lo >> level
        return bytes(self.levels[level][i * 32 : i * 32 + 32])

    def subtree_root(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self._complete(lo, n)
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.subtree_root(lo, lo + k), self.subtree_root(lo + k, hi))

    def leaf(self, index: int) -> bytes:
        return bytes(self.levels[0][index * 32 : index * 32 + 32])

    def inclusion_proof(self, index: int, n: int) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:n]) (same proof as inclusion_proof), in O(log^2 n)."""
        if not 0 <= index < n <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of size {n} (this one holds {self.size})")
        proof: list[bytes] = []
        lo, hi = 0, n
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                proof.append(self.subtree_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.subtree_root(lo, lo + k))
                lo += k
        proof.reverse()  # deepest sibling first, as PATH lists them
        return proof

    def consistency_proof(self, m: int, n: int) -> list[bytes]:
        """RFC 6962 PROOF(m, D[0:n]) (same algorithm as consistency_proof)."""
        if m == 0 or m == n:
            return []
        proof: list[bytes] = []
        lo, hi, whole = 0, n, True
        while m != hi - lo:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if m <= k:
                proof.append(self.subtree_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.subtree_root(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            proof.append(self.subtree_root(lo, hi))
        proof.reverse()
        return proof

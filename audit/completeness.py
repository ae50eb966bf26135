"""Completeness: what was once in the chain must still be there (spec §8a).

Why a module of its own: signatures prove records genuine but cannot prove
that none were cut off. Only statements held *outside* the store can:
checkpoints cosigned by witnesses, checkpoints someone kept, receipts clients
kept. This module checks such statements against a chain the caller has
walked (the verifier, the gateway at start), through the small
:class:`ChainFacts` view, so the rules exist once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verdict.audit import merkle
from verdict.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_body
from verdict.audit.cosignature import CosignatureError, verify_cosignatures
from verdict.audit.signing import verify_record_signature
from verdict.audit.trust import TrustPolicy

__all__ = [
    "ChainFacts",
    "ChainLeaves",
    "HeldReceipt",
    "Problem",
    "check_held_checkpoint",
    "check_receipt",
    "note_checkpoint",
    "note_origin",
    "parse_receipts",
    "witnesses_of",
]

Problem = tuple[str, str]
"""(reason code, message)."""


class ChainFacts(Protocol):
    """What completeness checks need to know about a walked chain."""

    # Read-only: the checks only read them (a walker may derive them, as properties).
    @property
    def chain_id(self) -> str: ...

    @property
    def origin(self) -> str | None: ...

    @property
    def size(self) -> int: ...

    def root_at(self, size: int) -> bytes: ...

    def signing_key(self, size: int) -> tuple[str, Ed25519PublicKey] | None:
        """(key id, public key) that signs record ``size`` / a checkpoint of that size, if known and trusted."""
        ...


class ChainLeaves(ChainFacts, Protocol):
    """A walked chain whose leaf hashes are at hand too: what receipts are checked against."""

    def leaf_at(self, seq: int) -> bytes: ...


class HeldReceipt(msgspec.Struct, frozen=True):
    """A receipt as the API returns it (``receipt`` in a decision response)."""

    chain_id: str
    seq: int
    record_hash: str
    signature: str
    key_id: str


_receipt_decoder = msgspec.json.Decoder(HeldReceipt)


def parse_receipts(data: bytes) -> list[HeldReceipt]:
    """JSON lines: each a receipt, or an object holding one under ``receipt``. ValueError if unreadable."""
    receipts: list[HeldReceipt] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            if isinstance(value, dict) and isinstance(value.get("receipt"), dict):
                value = value["receipt"]
            receipts.append(msgspec.convert(value, HeldReceipt))
        except (ValueError, msgspec.MsgspecError) as exc:
            raise ValueError(f"line {number}: not a receipt ({exc})") from None
    return receipts


def note_checkpoint(note: bytes) -> Checkpoint | None:
    """The checkpoint a note states, read without verifying anything (to find its chain and size)."""
    split = note.rfind(b"\n\n")
    try:
        return parse_body(note[: split + 1]) if split >= 0 else None
    except CheckpointError:
        return None


def note_origin(note: bytes) -> str | None:
    cp = note_checkpoint(note)
    return cp.origin if cp is not None else None


def witnesses_of(
    note: bytes, policy: TrustPolicy | None, verify: Callable[[bytes, Sequence[str]], Mapping[str, int]] | None = None
) -> tuple[set[str], Problem | None]:
    """The policy witnesses whose cosignature on ``note`` verifies, and a problem if one is bad."""
    if policy is None or not policy.witnesses:
        return set(), None

    try:
        good = (verify or verify_cosignatures)(note, [w.vkey for w in policy.witnesses])
    except CosignatureError as exc:
        return set(), ("bad_cosignature", str(exc))
    return set(good), None


def check_held_checkpoint(chain: ChainFacts, note: bytes, *, witnessed: bool, where: str) -> list[Problem]:
    """A checkpoint held outside the store (or cosigned by enough witnesses) against the chain."""
    stated = note_checkpoint(note)
    if stated is None:
        return [("bad_held_checkpoint", f"{where}: not a checkpoint note (C2SP tlog-checkpoint)")]
    size = stated.size
    signer = chain.signing_key(size)
    if signer is None:
        return [
            (
                "bad_held_checkpoint",
                f"{where}: no trusted key of chain {chain.chain_id} signs a checkpoint of size {size}",
            )
        ]
    key_id, public_key = signer
    try:
        cp = open_checkpoint(note, {key_id: public_key}, origin=chain.origin).checkpoint
    except CheckpointError as exc:
        return [("bad_held_checkpoint", f"{where}: {exc} (expected a signature by {key_id})")]
    below, mismatch = (
        ("below_witnessed_size", "witnessed_root_mismatch")
        if witnessed
        else ("below_held_checkpoint", "held_checkpoint_mismatch")
    )
    what = "a witnessed checkpoint" if witnessed else "a held checkpoint"
    if chain.size < cp.size:
        return [
            (
                below,
                f"{where}: chain {chain.chain_id} holds {chain.size} records, but {what} "
                f"of size {cp.size} was signed: the chain was truncated",
            )
        ]
    if chain.root_at(cp.size) != cp.root:
        return [
            (
                mismatch,
                f"{where}: chain {chain.chain_id}'s root at size {cp.size} differs from {what}: "
                "records it covers were rewritten",
            )
        ]
    return []


def check_receipt(chain: ChainLeaves | None, receipt: HeldReceipt, where: str) -> list[Problem]:
    """A client's receipt: signed by the chain's key at its seq, and its record still there, unchanged."""
    if chain is None:
        return [("receipt_missing", f"{where}: chain {receipt.chain_id} (record {receipt.seq}) is not in the store")]
    signer = chain.signing_key(receipt.seq)
    try:
        digest = bytes.fromhex(receipt.record_hash)
        signature = base64.b64decode(receipt.signature, validate=True)
    except (ValueError, binascii.Error):
        return [("bad_receipt", f"{where}: record_hash or signature is not well-formed")]
    if (
        signer is None
        or signer[0] != receipt.key_id
        or len(digest) != 32
        or not verify_record_signature(signer[1], digest, signature)
    ):
        expected = signer[0] if signer else "no trusted key"
        return [("bad_receipt", f"{where}: the signature is not by the chain's key at seq {receipt.seq} ({expected})")]
    if receipt.seq >= chain.size:
        return [
            (
                "receipt_missing",
                f"{where}: chain {chain.chain_id} holds {chain.size} records; "
                f"record {receipt.seq} of the receipt was cut off",
            )
        ]
    if chain.leaf_at(receipt.seq) != merkle.leaf_hash(digest):
        return [
            (
                "receipt_mismatch",
                f"{where}: record {receipt.seq} of chain {chain.chain_id} is not the "
                "record the receipt was given for: it was rewritten",
            )
        ]
    return []


def check_all(
    chains: Mapping[str, ChainLeaves],
    origins: Mapping[str, str],
    held: Iterable[tuple[str, bytes]],
    receipts: Iterable[tuple[str, HeldReceipt]],
    policy: TrustPolicy | None,
) -> list[tuple[str, str, str | None]]:
    """Every held note and receipt; returns (reason, message, chain_id). ``origins``: origin -> chain id."""
    out: list[tuple[str, str, str | None]] = []
    for where, note in held:
        origin = note_origin(note)
        chain_id = origins.get(origin or "")
        if chain_id is None or chain_id not in chains:
            out.append(
                (
                    "bad_held_checkpoint",
                    f"{where}: origin {origin!r} is no chain of this store "
                    "under the trust policy (was the whole chain removed?)",
                    chain_id,
                )
            )
            continue
        witnesses, problem = witnesses_of(note, policy)
        if problem is not None:
            out.append((*problem, chain_id))
        witnessed = policy is not None and policy.witness_quorum > 0 and len(witnesses) >= policy.witness_quorum
        out.extend(
            (r, m, chain_id) for r, m in check_held_checkpoint(chains[chain_id], note, witnessed=witnessed, where=where)
        )
    for where, receipt in receipts:
        out.extend((r, m, receipt.chain_id) for r, m in check_receipt(chains.get(receipt.chain_id), receipt, where))
    return out

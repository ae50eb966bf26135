"""What can stop a chain writer: one exception family (``ChainError``), one class per cause.

Why a module of its own: the writer (:mod:`audit.chain`) and its lease
(:mod:`audit.lease`) both raise these, and the lease must not import the
writer that imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lease module imports this one
    from verdict.audit.lease import Holder

__all__ = [
    "ChainBehindHeld",
    "ChainConflict",
    "ChainCorrupt",
    "ChainError",
    "ChainNotAnchored",
    "KeyMismatch",
    "LeaseHeld",
    "LeaseLost",
]


class ChainError(Exception):
    """The writer cannot continue; the message says why and what to do."""


class ChainConflict(ChainError):
    """Another writer owns this chain (a segment key we were about to write exists)."""


class LeaseHeld(ChainConflict):
    """Another writer holds this chain's lease: this one refuses to start."""

    def __init__(self, message: str, *, holder: Holder | None = None, expires_at: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLost(ChainConflict):
    """Another writer took this chain's lease over: this writer stopped for good."""


class ChainNotAnchored(ChainError):
    """The chain's keys are not certified by the trust root (spec §5a): its
    verifiers would reject everything written to it, so nothing is."""


class ChainBehindHeld(ChainError):
    """The stored chain is shorter than, or differs from, a checkpoint kept outside
    the store (the writer's own, a witness's): it was truncated or rewritten."""


class ChainCorrupt(ChainError):
    """The stored chain does not verify, so the writer refuses to extend it."""


class KeyMismatch(ChainError):
    """The signer is not the key the chain expects next."""

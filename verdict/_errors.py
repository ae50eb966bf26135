"""The errors of the public API: one base class, a few kinds a caller acts on differently.

Why our own: the machinery below raises its layers' errors (store, chain,
reader, HTTP problems); a caller of the Python API should catch one family,
:class:`VerdictError`, and tell apart only what needs a different reaction:
no trust policy given, a decision refused (and not made), a record that does
not verify, a store that cannot be reached.
"""

from __future__ import annotations

__all__ = [
    "DecisionErased",
    "DecisionRefused",
    "RecordNotVerified",
    "StoreUnavailable",
    "TrustPolicyRequired",
    "VerdictError",
]


class VerdictError(Exception):
    """Base class of every error the public API raises on purpose."""


class TrustPolicyRequired(VerdictError):
    """Verifying needs a trust policy, or an explicit ``unanchored=True``.

    Without a policy, keys are trusted because they are in the store, which
    anyone who can write to the store controls: the API, like ``verdict audit
    verify``, never answers OK on that basis unless asked to in so many words.
    """


class DecisionRefused(VerdictError):
    """No decision was made (and none recorded); ``reason`` is a stable code.

    Codes: ``invalid-request``, ``invalid-attributes`` (``fields`` maps each
    attribute to what is wrong with it), ``unknown-model``,
    ``request-id-conflict`` (the id was used for another request), and
    ``audit-unavailable`` (the record could not be made durable, so the
    decision was not made: retry with the same ``request_id``).
    """

    def __init__(self, reason: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.fields = dict(fields or {})


class RecordNotVerified(VerdictError):
    """A logged decision was not found or does not verify; ``reason`` is the
    reader's stable code (``not_found``, ``bad_signature``, ``uncertified_key``, ...;
    docs/audit-format.md §10)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DecisionErased(VerdictError):
    """The logged decision's personal data was erased (GDPR Art. 17 or the end of retention:
    its subject's data key was destroyed). The record still verifies; ``erasure`` names the
    signed erasure record (chain_id, seq, record_hash, erased_at, cause)."""

    def __init__(self, message: str, erasure: dict[str, object]) -> None:
        super().__init__(message)
        self.erasure = dict(erasure)


class StoreUnavailable(VerdictError):
    """The store could not be opened or read (a bad URL, a missing bucket, a network failure)."""

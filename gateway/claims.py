"""Single flight: one request id is decided by one batch at a time in a process.

Why: the request index is only written once a decision's record is durable,
so two batches in the pipeline at once (one being scored while the previous
one commits) could both find a request id unclaimed, both score it, and both
sign a record, the second of which no client ever receives. Claiming the id
here, before it is scored, keeps a losing duplicate off the chain: a later
request with the same id waits for the owner's outcome and is answered from
it (the same body: the logged decision again; another body: a conflict).

Between processes (replicas) the shared write-once index remains the arbiter
(docs/audit-format.md §7); this only closes the race inside one process.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, NamedTuple

__all__ = ["ClaimOutcome", "RequestClaims"]


class ClaimOutcome(NamedTuple):
    """What the owner of a claim ended with: its request body's sha256 and its
    answer (a response, a ServiceError refusing it, or None if it never got one)."""

    request_sha256: str
    answer: Any


class RequestClaims:
    """The request ids this process is deciding right now, each with a future
    that resolves to the owner's :class:`ClaimOutcome`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, Future[ClaimOutcome]] = {}

    def claim(self, request_id: str) -> Future[ClaimOutcome] | None:
        """Claim ``request_id``: None if the caller now owns it (and must
        :meth:`release` it), else the current owner's future to wait on."""
        with self._lock:
            owner = self._owners.get(request_id)
            if owner is not None:
                return owner
            self._owners[request_id] = Future()
            return None

    def release(self, request_id: str, outcome: ClaimOutcome) -> None:
        """End the caller's claim and hand its outcome to every waiter."""
        with self._lock:
            owner = self._owners.pop(request_id, None)
        if owner is not None and not owner.done():
            owner.set_result(outcome)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)

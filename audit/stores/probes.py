"""The interface between the immutability test and a store backend's probes.

Why an interface: what an insider can do to a trail depends on where it lives
(chmod and rename on a directory, PutObjectRetention on a bucket), so each
backend brings its own probes, kept beside it (``filesystem_probes``,
``s3_probes``). What a run needs from them is the same for every backend: a
``kind`` for the report and a stream of :class:`ProbeResult`. What the probes
need from the run (throwaway canary chains, the verifier's opinion, a real
record to try refused operations on) comes in a :class:`ProbeContext`, so
this module and the probe modules depend on the store layer only and never on
the chain writer or the verifier.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import msgspec

from verdict.audit.stores.base import StoreError, WormStore

__all__ = [
    "CANARY_MARK",
    "CANARY_PREFIX",
    "ENFORCED",
    "EVIDENT",
    "FAILED",
    "SKIPPED",
    "Canary",
    "ProbeContext",
    "ProbeError",
    "ProbeFactory",
    "ProbeResult",
    "StoreProbes",
    "UnsupportedStoreProbes",
    "probe",
    "since",
]

ENFORCED = "enforced"
EVIDENT = "evident"
FAILED = "FAILED"
SKIPPED = "skipped"

CANARY_PREFIX = "canary/"
CANARY_MARK = b"immutability-canary-original"
_TAMPER_MARK = b"immutability-canary-TAMPERED"
assert len(CANARY_MARK) == len(_TAMPER_MARK)  # a tampered canary keeps its length: only the content differs


class ProbeResult(msgspec.Struct, frozen=True):
    name: str
    target: str
    """"bucket", "canary", "record", "trail" or "filesystem"."""
    operation: str
    """What was tried, in the backend's own terms."""
    required: str
    """The status this store must show: "enforced" or "evident"."""
    status: str
    """"enforced", "evident", "FAILED" or "skipped"."""
    detail: str
    """One line for humans: what happened and what it means."""
    evidence: dict[str, Any] = {}
    """What the store answered, object keys, versions, lock states, verifier findings."""
    elapsed_s: float = 0.0


class Canary:
    """A throwaway signed chain (genesis + one record + checkpoints) in its own
    sub-store: ``key`` is the segment holding the record, ``data`` its bytes
    (and ``version`` the version written, on versioned backends)."""

    def __init__(self, store: WormStore, key: str, data: bytes, version: str | None) -> None:
        self.store = store
        self.key = key
        self.data = data
        self.version = version

    @property
    def tampered(self) -> bytes:
        """The segment with one record's content changed (same length): what a forger writes."""
        return self.data.replace(CANARY_MARK, _TAMPER_MARK)


class ProbeContext(Protocol):
    """What a run of the immutability test lends a backend's probes."""

    run_id: str
    notes: list[str]
    """Free-text notes for the report (append only)."""

    def write_canary(self, store: WormStore) -> Canary:
        """Write a canary chain into ``store`` through its normal write path."""
        ...

    def verifier_flags(self, store: WormStore) -> tuple[bool, list[str]]:
        """(the verifier flags something in ``store``, its first findings)."""
        ...

    def pick_record(self, store: WormStore) -> tuple[str, str | None, bytes] | None:
        """A real record's segment to try refused operations on: key, version, bytes."""
        ...

    def trail_keys(self, store: WormStore) -> Iterator[str]:
        """Every key of the trail, without this test's canaries."""
        ...


class StoreProbes(Protocol):
    """A backend's immutability probes for one store and one run."""

    kind: str
    """The backend's name in the report ("filesystem", "s3")."""

    def run(self) -> Iterator[ProbeResult]:
        """Run every probe, yielding each result as it completes."""
        ...

    def cleanup(self) -> None:
        """Release what the probes made (sub-stores, canary files); called even after a failure."""
        ...


ProbeFactory = Callable[[WormStore, ProbeContext], StoreProbes | None]
"""Builds a backend's probes for a store (None: not a store these probes understand)."""


class UnsupportedStoreProbes:
    """For a store no registered backend can probe: one FAILED result, since
    nothing is known about what it protects."""

    kind = "unknown"

    def run(self) -> Iterator[ProbeResult]:
        yield ProbeResult(
            "backend_supported",
            "bucket",
            "identify the store backend",
            ENFORCED,
            FAILED,
            "no registered store backend has immutability probes for this store; its protections are unknown",
        )

    def cleanup(self) -> None:
        return None


class ProbeError(Exception):
    """The probe could not reach a conclusion (the backend failed, not refused)."""


def since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def probe(name: str, target: str, operation: str, required: str) -> Callable:
    """Decorator for a probe method returning (status, detail, evidence): times
    it and turns an unexpected backend error into a FAILED result, so one
    broken probe never hides the others."""

    def wrap(fn: Callable[..., tuple[str, str, dict[str, Any]]]) -> Callable[..., ProbeResult]:
        def run(*args: Any) -> ProbeResult:
            started = time.perf_counter()
            try:
                status, detail, evidence = fn(*args)
            except (ProbeError, StoreError, OSError) as exc:
                status, detail, evidence = FAILED, f"could not complete the probe: {type(exc).__name__}: {exc}", {}
            return ProbeResult(name, target, operation, required, status, detail, evidence, since(started))

        run.probe_name = name  # type: ignore[attr-defined]
        return run

    return wrap

"""Retention and legal holds on the stored objects themselves (S3 Object Lock).

Why: the data keyring decides when personal data is *erased* (crypto-shredding
at the end of retention, :mod:`audit.personal_data`), but the records must also
be *kept* that long: a segment holding a decision of a model whose records are
kept five years must be locked at least five years. The store writes every
object with its own retention (``retention_days`` of the store URL);
:func:`extend_for_decisions` lengthens a segment's COMPLIANCE retention to the
longest ``decided_at + retention`` of the decisions in it, and
:func:`check_retention` is the immutability test's check that the dates on
stored objects match the policy. Legal holds (:func:`set_legal_holds`) put an
Object Lock legal hold on every segment holding a held subject's decision.

Only stores with Object Lock (:class:`ObjectLockControl`) take part; on the
filesystem store nothing here applies (retention there is the sweep's alone).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from verdict.audit import layout
from verdict.audit.index import RequestIndex
from verdict.audit.personal_data import RetentionPolicy
from verdict.audit.records import DecisionBody, decode_record, iter_lines, parse_time, split_line
from verdict.audit.stores import WormStore
from verdict.audit.stores.probes import ENFORCED, FAILED, ProbeResult

__all__ = ["ObjectLockControl", "check_retention", "extend_for_decisions", "set_legal_holds"]

_CHECKED_SEGMENTS_PER_CHAIN = 200
"""The immutability test checks at most this many segments per chain (the newest)."""


@runtime_checkable
class ObjectLockControl(Protocol):
    """A store whose objects carry Object Lock retention and legal holds (S3)."""

    def retention(self, key: str, version: str | None = None) -> Any: ...

    def extend_retention(self, key: str, until: _dt.datetime, version: str | None = None) -> bool: ...

    def set_legal_hold(self, key: str, on: bool, version: str | None = None) -> None: ...


def _required(policy: RetentionPolicy, bodies: Iterable[DecisionBody]) -> _dt.datetime | None:
    dates = [parse_time(policy.retain_until(b.model.name, b.decided_at)) for b in bodies]
    return max(dates) if dates else None


def extend_for_decisions(
    store: WormStore, policy: RetentionPolicy, written: Sequence[tuple[str, str | None, DecisionBody]]
) -> int:
    """Lengthen the retention of each segment in ``written`` ((segment key, version, decision)
    of a committed batch) to what its decisions' models require; the number lengthened."""
    if not isinstance(store, ObjectLockControl):
        return 0
    by_segment: dict[tuple[str, str | None], list[DecisionBody]] = {}
    for key, version, body in written:
        by_segment.setdefault((key, version), []).append(body)
    extended = 0
    for (key, version), bodies in by_segment.items():
        until = _required(policy, bodies)
        if until is not None and store.extend_retention(key, until, version):
            extended += 1
    return extended


def set_legal_holds(store: WormStore, request_ids: Iterable[str], on: bool, keep: Iterable[str] = ()) -> int:
    """Set (or clear) the Object Lock legal hold on every segment holding one of
    ``request_ids``; clearing leaves alone the segments that also hold a decision in
    ``keep`` (another subject still on hold). The number of segments changed."""
    if not isinstance(store, ObjectLockControl):
        return 0
    index = RequestIndex(store)

    def segments(ids: Iterable[str]) -> set[tuple[str, str | None]]:
        found = set()
        for request_id in ids:
            entry = index.get(request_id)
            if entry is not None:
                found.add((entry.segment_key, entry.segment_version))
        return found

    targets = segments(request_ids) - (segments(keep) if not on else set())
    for key, version in sorted(targets, key=lambda kv: (kv[0], kv[1] or "")):
        store.set_legal_hold(key, on, version)
    return len(targets)


def check_retention(store: WormStore, policy: RetentionPolicy) -> ProbeResult | None:
    """The immutability test's retention check: every decision segment (the newest
    :data:`_CHECKED_SEGMENTS_PER_CHAIN` per chain) is locked in COMPLIANCE mode at
    least until its decisions' ``decided_at + retention``. None on a store without
    Object Lock."""
    if not isinstance(store, ObjectLockControl):
        return None
    short: list[dict[str, str]] = []
    checked = 0
    by_chain: dict[str, list[str]] = {}
    for key in store.list_keys(layout.CHAINS_PREFIX):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "segments":
            by_chain.setdefault(parts[1], []).append(key)
    for chain_keys in by_chain.values():
        keys = sorted(chain_keys)[-_CHECKED_SEGMENTS_PER_CHAIN:]
        for key in keys:
            bodies = [
                r.body
                for r in (decode_record(split_line(line)[0]) for line in iter_lines(store.get(key)))
                if isinstance(r.body, DecisionBody)
            ]
            required = _required(policy, bodies)
            if required is None:
                continue
            checked += 1
            lock = store.retention(key)
            until = lock.retain_until
            if lock.mode != "COMPLIANCE" or until is None or until < required:
                short.append(
                    {"key": key, "mode": str(lock.mode), "retain_until": str(until), "required": str(required)}
                )
    policy_text = ",".join(f"{k}={v}" for k, v in sorted(policy.days.items()))
    return ProbeResult(
        name="retention_matches_policy",
        target="trail",
        operation=f"HeadObject on decision segments vs retention policy {policy_text}",
        required=ENFORCED,
        status=FAILED if short else ENFORCED,
        detail=(
            f"{len(short)} of {checked} decision segment(s) are locked for less than the retention policy requires"
            if short
            else f"all {checked} decision segment(s) checked are locked (COMPLIANCE) at least as long as the policy requires"
        ),
        evidence={"short": short[:20], "checked": checked},
    )

"""The trail side of the immutability test: the trail without canaries, its
verification, its consistency with the previous evidence, and canary chains.

Why apart from the probes: none of this depends on the backend. Every
backend's probes get canaries, the verifier's opinion and a real record to
try through :class:`TrailContext` (an ``audit.stores.probes.ProbeContext``),
and every run ends with the same two trail checks, ``trail_verification``
and ``trail_consistency``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from verdict.audit import layout
from verdict.audit.chain import ChainWriter
from verdict.audit.immutability_report import ChainState, CheckpointState, TrailState
from verdict.audit.records import (
    AccessBody,
    EvidenceBody,
    RecordError,
    decode_header,
    decode_record,
    iter_lines,
    split_line,
    utc_now,
)
from verdict.audit.signing import Ed25519Signer
from verdict.audit.stores.base import ObjectMissing, ObjectRef, ObjectVersion, StoreError, WormStore
from verdict.audit.stores.probes import (
    CANARY_MARK,
    CANARY_PREFIX,
    ENFORCED,
    FAILED,
    Canary,
    ProbeResult,
    since,
)
from verdict.audit.trust import TrustPolicy
from verdict.audit.verifier import verify_store

__all__ = [
    "CANARY_CHAIN",
    "EVIDENCE_KIND",
    "ProgressFn",
    "TrailContext",
    "TrailView",
    "consistency",
    "finding",
    "pick_record",
    "previous_evidence",
    "verifier_verdict",
    "verify_trail",
    "write_canary",
]

EVIDENCE_KIND = "immutability_test"
CANARY_CHAIN = "canary"

ProgressFn = Callable[[str, int, int], None]


class TrailView:
    """The store without ``canary/`` (this test's own throwaway objects), read-only."""

    def __init__(self, store: WormStore) -> None:
        self._store = store
        self.url = store.url
        self.versioned = store.versioned

    def put_once(self, key: str, data: bytes) -> ObjectRef:
        raise StoreError("the trail view is read-only")

    def put_many_once(self, items: Sequence[tuple[str, bytes]]) -> list[ObjectRef]:
        raise StoreError("the trail view is read-only")

    def prestage(self, items: Sequence[tuple[str, bytes]]) -> None:
        raise StoreError("the trail view is read-only")

    def get(self, key: str, version: str | None = None) -> bytes:
        return self._store.get(key, version)

    def exists(self, key: str) -> bool:
        return self._store.exists(key)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        return (k for k in self._store.list_keys(prefix) if not k.startswith(CANARY_PREFIX))

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        return (v for v in self._store.list_versions(prefix) if not v.key.startswith(CANARY_PREFIX))


def verify_trail(
    store: WormStore, progress: ProgressFn | None, trust: TrustPolicy | None
) -> tuple[TrailState | None, ProbeResult]:
    started = time.perf_counter()
    view = TrailView(store)
    try:
        report = verify_store(view, progress=progress, trust=trust)
    except StoreError as exc:
        return None, ProbeResult(
            "trail_verification",
            "trail",
            "verify_store over every chain, checkpoint, index entry and object version",
            ENFORCED,
            FAILED,
            f"the verifier could not read the store: {exc}",
            elapsed_s=since(started),
        )
    chains = []
    for summary in report.chains:
        checkpoint = None
        if summary.last_checkpoint_size:
            key = layout.checkpoint_key(summary.chain_id, summary.last_checkpoint_size)
            try:
                data = store.get(key)
                versions = [v for v in store.list_versions(key) if v.key == key and v.is_latest]
                checkpoint = CheckpointState(
                    size=summary.last_checkpoint_size,
                    key=key,
                    sha256=hashlib.sha256(data).hexdigest(),
                    version=versions[0].version if versions else None,
                )
            except (ObjectMissing, StoreError):
                checkpoint = None
        chains.append(ChainState(summary.chain_id, summary.records, summary.head_hash, checkpoint))
    first = report.first_failure
    trail = TrailState(
        ok=report.ok,
        records=report.records,
        objects=report.objects,
        failure_count=report.failure_count,
        chains=chains,
        first_failure=finding(first) if first else None,
        notes=len(report.notes),
        elapsed_s=round(report.elapsed, 3),
    )
    evidence = {
        "chains": len(report.chains),
        "records": report.records,
        "segments": report.segments,
        "checkpoints": report.checkpoints,
        "index_entries": report.index_entries,
        "objects": report.objects,
        "failure_count": report.failure_count,
        "failures": [finding(f) for f in report.failures[:20]],
        "notes": [finding(n) for n in report.notes[:20]],
        "anchored": report.anchored,
        "trust_roots": report.trust_roots,
    }
    anchoring = (
        "anchored to the trust root"
        if report.anchored
        else "UNANCHORED (no trust policy: any store writer could have produced this trail)"
    )
    if report.ok and report.records == 0:
        status, detail = ENFORCED, f"the store holds no records ({report.objects} objects): nothing to verify"
    elif report.ok:
        status, detail = (
            ENFORCED,
            (
                f"{report.records} records in {len(report.chains)} chain(s), {report.checkpoints} checkpoints, "
                f"{report.index_entries} index entries: every hash, link, signature, checkpoint and version verifies; "
                f"{anchoring}"
            ),
        )
    else:
        status, detail = FAILED, f"{report.failure_count} verification failure(s); first: {finding(first)}"
    return trail, ProbeResult(
        "trail_verification",
        "trail",
        "verify_store over every chain, checkpoint, index entry and object version",
        ENFORCED,
        status,
        detail,
        evidence,
        since(started),
    )


def finding(f: Any) -> str:
    where = ", ".join(
        str(x) for x in (f.chain_id and f"chain {f.chain_id}", f.seq is not None and f"seq {f.seq}", f.key) if x
    )
    return f"[{f.reason}]" + (f" ({where})" if where else "") + f": {f.message}"


def previous_evidence(store: WormStore, chain_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """The last immutability evidence document on the evidence chain, if any."""
    try:
        segments = list(store.list_keys(layout.segments_prefix(chain_id)))
    except StoreError:
        return None, None
    for key in reversed(segments):
        try:
            lines = iter_lines(store.get(key))
        except (RecordError, StoreError):
            continue
        for line in reversed(lines):
            try:
                record = decode_record(split_line(line)[0])
            except RecordError:
                continue
            body = record.body
            if isinstance(body, EvidenceBody) and body.evidence_kind == EVIDENCE_KIND:
                try:
                    data = store.get(body.object_key)
                except StoreError as exc:
                    return body.object_key, {"_unreadable": str(exc)}
                if hashlib.sha256(data).hexdigest() != body.sha256:
                    return body.object_key, {"_unreadable": "document does not hash to the sha256 in its record"}
                try:
                    return body.object_key, msgspec.json.decode(data)
                except msgspec.DecodeError as exc:
                    return body.object_key, {"_unreadable": f"not JSON: {exc}"}
    return None, None


def consistency(
    store: WormStore, previous_key: str | None, previous: dict[str, Any] | None, trail: TrailState | None
) -> ProbeResult:
    started = time.perf_counter()
    op = "compare the trail with the chain heads and checkpoints recorded by the previous immutability evidence"
    if previous is None:
        return ProbeResult(
            "trail_consistency",
            "trail",
            op,
            ENFORCED,
            ENFORCED,
            "no earlier immutability evidence on this chain: this run records the baseline",
            elapsed_s=since(started),
        )
    if "_unreadable" in previous:
        return ProbeResult(
            "trail_consistency",
            "trail",
            op,
            ENFORCED,
            FAILED,
            f"the previous evidence {previous_key} cannot be used: {previous['_unreadable']}",
            {"previous_evidence": previous_key},
            since(started),
        )
    if trail is None:
        return ProbeResult(
            "trail_consistency",
            "trail",
            op,
            ENFORCED,
            FAILED,
            "the trail could not be read",
            {"previous_evidence": previous_key},
            since(started),
        )
    current = {c.chain_id: c for c in trail.chains}
    problems: list[str] = []
    checked = []
    for old in (previous.get("trail") or {}).get("chains", []):
        chain_id, records = old["chain_id"], int(old["records"])
        now = current.get(chain_id)
        if now is None:
            problems.append(f"chain {chain_id} ({records} records at {previous.get('finished')}) is gone")
            continue
        if now.records < records:
            problems.append(f"chain {chain_id} shrank from {records} to {now.records} records")
            continue
        if records and old.get("head_hash"):
            got = _record_hash_at(store, chain_id, records - 1)
            if got != old["head_hash"]:
                problems.append(f"chain {chain_id}: record {records - 1} was {old['head_hash']}, now {got}")
        cp = old.get("last_checkpoint")
        if cp:
            try:
                data = store.get(cp["key"], cp.get("version"))
                digest = hashlib.sha256(data).hexdigest()
            except (ObjectMissing, StoreError) as exc:
                digest = f"unreadable ({exc})"
            if digest != cp["sha256"]:
                problems.append(f"checkpoint {cp['key']} was sha256 {cp['sha256']}, now {digest}")
        checked.append(f"{chain_id}@{records}")
    evidence = {
        "previous_evidence": previous_key,
        "previous_run": previous.get("run_id"),
        "checked": checked,
        "problems": problems,
    }
    if problems:
        return ProbeResult(
            "trail_consistency", "trail", op, ENFORCED, FAILED, "; ".join(problems[:5]), evidence, since(started)
        )
    return ProbeResult(
        "trail_consistency",
        "trail",
        op,
        ENFORCED,
        ENFORCED,
        f"{len(checked)} chain(s) still extend what run {previous.get('run_id')} recorded: same heads, same checkpoints",
        evidence,
        since(started),
    )


def _record_hash_at(store: WormStore, chain_id: str, seq: int) -> str | None:
    try:
        firsts = [(layout.number_from_key(k), k) for k in store.list_keys(layout.segments_prefix(chain_id))]
        candidates = [(f, k) for f, k in firsts if f is not None and f <= seq]
        if not candidates:
            return None
        _, key = max(candidates)
        for line in iter_lines(store.get(key)):
            raw, _ = split_line(line)
            if decode_header(raw).seq == seq:
                return hashlib.sha256(raw).hexdigest()
    except (RecordError, StoreError, ValueError):
        return None
    return None


# --- canaries ---------------------------------------------------------------------------------


def write_canary(store: WormStore, run_id: str) -> Canary:
    """A canary chain written through ``store``'s own write path (the path real
    records take), so an attack on it shows what the store does to records."""
    signer = Ed25519Signer(Ed25519PrivateKey.generate())  # throwaway: signs nothing but this canary
    writer = ChainWriter.open(store, CANARY_CHAIN, signer, created_by="verdict immutability canary")
    try:
        writer.append(
            AccessBody(
                action="immutability-canary",
                actor_key_id="immutability-test",
                target_request_id=f"canary-{run_id}",
                accessed_at=utc_now(),
                purpose=CANARY_MARK.decode(),
            )
        )
    finally:
        writer.close()
    key = layout.segment_key(CANARY_CHAIN, 1)
    versions = [v for v in store.list_versions(key) if v.key == key and not v.is_delete_marker]
    version = versions[0].version if versions else None
    return Canary(store, key, store.get(key, version), version)


def verifier_verdict(store: WormStore) -> tuple[bool, list[str]]:
    """(the verifier flags something, its first findings) for a canary sub-store."""
    try:
        report = verify_store(store, workers=1)
    except StoreError as exc:
        return True, [f"store error while verifying: {exc}"]
    return (not report.ok), [finding(f) for f in report.failures[:6]]


def pick_record(store: WormStore) -> tuple[str, str | None, bytes] | None:
    """The newest segment of a gateway chain (else of any chain): key, version, bytes."""
    view = TrailView(store)
    chains: dict[str, str] = {}
    for key in view.list_keys(layout.CHAINS_PREFIX):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "segments" and layout.number_from_key(key) is not None:
            chains[parts[1]] = max(chains.get(parts[1], key), key)
    if not chains:
        return None
    preferred = sorted(c for c in chains if not c.startswith("immutability")) or sorted(chains)
    chain = next((c for c in preferred if c.startswith("gateway")), preferred[0])
    key = chains[chain]
    versions = [v for v in store.list_versions(key) if v.key == key and v.is_latest and not v.is_delete_marker]
    version = versions[0].version if versions else None
    return key, version, store.get(key, version)


class TrailContext:
    """What a run lends a backend's probes (audit.stores.probes.ProbeContext)."""

    def __init__(self, run_id: str, notes: list[str]) -> None:
        self.run_id = run_id
        self.notes = notes

    def write_canary(self, store: WormStore) -> Canary:
        return write_canary(store, self.run_id)

    def verifier_flags(self, store: WormStore) -> tuple[bool, list[str]]:
        return verifier_verdict(store)

    def pick_record(self, store: WormStore) -> tuple[str, str | None, bytes] | None:
        return pick_record(store)

    def trail_keys(self, store: WormStore) -> Iterator[str]:
        return TrailView(store).list_keys("")

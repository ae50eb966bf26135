"""The scheduled immutability test: try to break the trail, say what the store did, file signed evidence.

``verdict audit immutability-test`` (and :func:`run_immutability_test`) attacks
the configured store the way an insider with the service's credentials would,
and reports, probe by probe, one of:

``enforced``
    the store refused the operation (nothing changed; checked afterwards);
``evident``
    the store allowed it, the original bytes are still retrievable, and the
    verifier (:func:`audit.verifier.verify_store`) flags the change;
``FAILED``
    the store allowed it and the original is lost, a lock was weakened, or the
    verifier did not notice; or a required bucket setting is missing;
``skipped``
    only for probes on real records whose canary twin did not show that the
    operation is refused (running them could destroy evidence, see below);
    a skip never happens in a run without a FAILED probe.

Every probe declares what it *requires*: on an S3 Object Lock bucket,
deleting a locked version, bypassing governance, shortening retention and
changing or removing the lock mode must be ``enforced``; an unconditional new
version or a delete marker only has to be ``evident`` (Object Lock permits
both; the index pins VersionIds and the verifier flags them; the bucket policy
in deploy/terraform denies them outright). The filesystem store is documented
as tamper-*evident*, so there everything only has to be ``evident`` and the
report says which protections are actually enforced (file modes, the
``chattr +i`` immutable attribute where the kernel permits it).

Why canaries, and why real records only with refused operations
--------------------------------------------------------------------
A probe that *succeeds* in altering a record destroys the very evidence the
trail exists to keep. So every operation that might succeed is tried only on
throwaway canary objects: for each such probe a tiny, real, signed chain
(genesis, one record, checkpoints; a throwaway key) is written through the
store's normal write path under ``canary/<run-id>/<probe>/``, attacked, and
then verified with the real verifier, so "evident" is demonstrated, not
assumed. Real records are probed only with operations that must be refused,
and only after the same operation was refused on a canary and the record's
lock is COMPLIANCE with a retain-until date in the future; the overwrite probe
on a real record writes the record's *own bytes*, so even a store that wrongly
accepted it would not change any content. Retention probes on real records
ask for the smallest possible change (one second) and are rolled back if a
store ever accepts them.

Canary objects under ``canary/`` are not part of the audit format: the final
trail verification here does not look at them (their extra versions and
delete markers are this test's own doing and are reported per probe). On S3
they stay locked like everything else (a few KB per run); on the filesystem
they are removed after the run.

The result is one JSON document (``verdict.immutability/v1``) stored
content-addressed at ``evidence/sha256/<hex>`` and an ``evidence`` record on
its own chain (``immutability-0`` by default; never a gateway chain), signed
with the given signer. The next run compares the trail against the chain
heads and checkpoints recorded in this document (``trail_consistency``), so a
truncated or rewritten tail is noticed even where the store could not stop it.
"""

from __future__ import annotations

import array
import datetime as _dt
import errno
import fcntl
import getpass
import hashlib
import os
import platform
import re
import secrets
import shutil
import socket
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from verdict.audit import layout
from verdict.audit.chain import ChainError, ChainWriter, KeyRing, Receipt
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
from verdict.audit.signing import Ed25519Signer, KeyDocumentError, Signer
from verdict.audit.stores.base import (
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    ObjectVersion,
    StoreError,
    StoreUnavailable,
    WormStore,
)
from verdict.audit.stores.filesystem import FilesystemStore
from verdict.audit.trust import RootKey, TrustPolicy

__all__ = [
    "CANARY_PREFIX",
    "DEFAULT_CHAIN_ID",
    "ENFORCED",
    "EVIDENCE_KIND",
    "EVIDENT",
    "FAILED",
    "FORMAT",
    "SKIPPED",
    "ChainState",
    "ImmutabilityReport",
    "Outcome",
    "ProbeResult",
    "TrailState",
    "TrailView",
    "junit_xml",
    "open_store_for_probing",
    "run_immutability_test",
]

FORMAT = "verdict.immutability/v1"
EVIDENCE_KIND = "immutability_test"
DEFAULT_CHAIN_ID = "immutability-0"
CANARY_PREFIX = "canary/"
CANARY_CHAIN = "canary"

ENFORCED = "enforced"
EVIDENT = "evident"
FAILED = "FAILED"
SKIPPED = "skipped"

_EVIDENCE_CHAIN = re.compile(r"immutability[A-Za-z0-9_.\-]{0,52}")
_CANARY_MARK = b"immutability-canary-original"
_TAMPER_MARK = b"immutability-canary-TAMPERED"
assert len(_CANARY_MARK) == len(_TAMPER_MARK)

# Linux FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (_IOR/_IOW('f', 1|2, long) on 64-bit) and FS_IMMUTABLE_FL.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x00000010


# --- results -----------------------------------------------------------------------------------


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


class CheckpointState(msgspec.Struct, frozen=True):
    size: int
    key: str
    sha256: str
    version: str | None = None


class ChainState(msgspec.Struct, frozen=True):
    chain_id: str
    records: int
    head_hash: str | None
    last_checkpoint: CheckpointState | None = None


class TrailState(msgspec.Struct, frozen=True):
    ok: bool
    records: int
    objects: int
    failure_count: int
    chains: list[ChainState]
    first_failure: str | None = None
    notes: int = 0
    elapsed_s: float = 0.0


class ImmutabilityReport(msgspec.Struct, frozen=True):
    """The evidence document, stored at ``evidence/sha256/<sha256 of its bytes>``."""

    format: str
    run_id: str
    started: str
    finished: str
    store: str
    backend: str
    evidence_chain: str
    host: str
    user: str
    software: str
    result: str
    """"passed" (no FAILED probe) or "failed"."""
    counts: dict[str, int]
    failed: list[str]
    probes: list[ProbeResult]
    trail: TrailState | None
    canary_prefix: str
    previous_evidence: str | None = None
    notes: list[str] = []


class FiledEvidence(msgspec.Struct, frozen=True):
    object_key: str
    sha256: str
    receipt: Receipt


class Outcome(msgspec.Struct, frozen=True):
    report: ImmutabilityReport
    filed: FiledEvidence | None
    filing_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.report.result == "passed" and self.filed is not None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> bytes:
        data = msgspec.to_builtins(self.report)
        data["filed"] = msgspec.to_builtins(self.filed) if self.filed is not None else None
        data["filing_error"] = self.filing_error
        return msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n"


class _ProbeError(Exception):
    """The probe could not reach a conclusion (the backend failed, not refused)."""


# --- opening the store -----------------------------------------------------------------------


def open_store_for_probing(url: str) -> WormStore:
    """Open a store for the immutability test.

    Unlike :func:`audit.stores.open_store`, an S3 bucket that lacks Object Lock
    or versioning is opened anyway: reporting exactly that is this test's job.
    """
    from urllib.parse import urlparse

    if urlparse(url).scheme == "s3":
        from verdict.audit.stores.s3 import S3ObjectLockStore

        class _UncheckedS3(S3ObjectLockStore):
            def check_bucket(self) -> None:  # the probes check (and report) it instead
                return None

        return _UncheckedS3.from_url(url)
    from verdict.audit.stores import open_store

    return open_store(url)


# --- the run ---------------------------------------------------------------------------------


ProgressFn = Callable[[str, int, int], None]


def run_immutability_test(
    store: WormStore,
    signer: Signer,
    *,
    keyring: KeyRing | None = None,
    chain_id: str = DEFAULT_CHAIN_ID,
    run_id: str | None = None,
    say: Callable[[ProbeResult], None] | None = None,
    progress: ProgressFn | None = None,
    root: RootKey | None = None,
    trust: TrustPolicy | None = None,
) -> Outcome:
    """Probe ``store``, verify the trail, file the evidence; see the module docs.

    ``root`` certifies the evidence chain (spec §5a); ``trust`` is the policy
    the trail is verified against (default: the root's). Without either the
    verification is unanchored, and the evidence says so.

    ``signer`` signs the evidence record on ``chain_id`` (created on first use;
    ``keyring`` lets the chain writer rotate from an older key, as the gateway
    does). ``say`` is called with each probe result as it completes.
    """
    if not _EVIDENCE_CHAIN.fullmatch(chain_id):
        raise ValueError(
            f"evidence chain id {chain_id!r} must start with 'immutability' (1-64 characters of [A-Za-z0-9_.-]); "
            f"the test never writes to a gateway chain"
        )
    layout.check_chain_id(chain_id)
    started = utc_now()
    run_id = run_id or _new_run_id()
    notes: list[str] = []
    results: list[ProbeResult] = []

    def record(result: ProbeResult) -> None:
        results.append(result)
        if say is not None:
            say(result)

    writer: ChainWriter | None = None
    writer_error: str | None = None
    try:
        # Opened first: on a new store this writes the evidence chain's genesis, so
        # there is always at least one real record to probe.
        writer = ChainWriter.open(
            store,
            chain_id,
            signer,
            keyring=keyring,
            created_by="verdict audit immutability-test",
            root=root,
            policy=trust,  # under a policy but without the root: refused unless certified beforehand
        )
    except StoreUnavailable:
        raise  # nothing can be probed either: the caller reports the store as unreachable
    except (StoreError, ChainError, KeyDocumentError, RecordError) as exc:
        writer_error = f"cannot open evidence chain {chain_id!r}: {type(exc).__name__}: {exc}"
        notes.append(writer_error)

    backend = _backend_for(store, run_id, notes)
    try:
        try:
            for result in backend.run():
                record(result)
        finally:
            backend.cleanup()
        trail, verify_result = _verify_trail(store, progress, trust or (root.policy() if root else None))
        record(verify_result)
        previous_key, previous = _previous_evidence(store, chain_id)
        record(_consistency(store, previous_key, previous, trail))
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except (StoreError, ChainError):
                pass
        raise

    counts = {status: sum(1 for r in results if r.status == status) for status in (ENFORCED, EVIDENT, FAILED, SKIPPED)}
    failed = [r.name for r in results if r.status == FAILED]
    report = ImmutabilityReport(
        format=FORMAT,
        run_id=run_id,
        started=started,
        finished=utc_now(),
        store=store.url,
        backend=backend.kind,
        evidence_chain=chain_id,
        host=socket.gethostname(),
        user=_user(),
        software=_software(),
        result="failed" if failed else "passed",
        counts=counts,
        failed=failed,
        probes=results,
        trail=trail,
        canary_prefix=f"{CANARY_PREFIX}{run_id}/",
        previous_evidence=previous_key,
        notes=notes,
    )
    if writer is None:
        return Outcome(report=report, filed=None, filing_error=writer_error)
    try:
        filed = _file_evidence(store, writer, report)
    except (StoreError, ChainError) as exc:
        return Outcome(report=report, filed=None, filing_error=f"{type(exc).__name__}: {exc}")
    finally:
        try:
            writer.close()
        except (StoreError, ChainError):
            pass  # the evidence record is durable; a missing final checkpoint is written by the next run
    return Outcome(report=report, filed=filed)


def _file_evidence(store: WormStore, writer: ChainWriter, report: ImmutabilityReport) -> FiledEvidence:
    document = encode_report(report)
    digest = hashlib.sha256(document).hexdigest()
    key = layout.evidence_key(digest)
    try:
        store.put_once(key, document)
    except ObjectExists:
        if store.get(key) != document:  # same address must mean same bytes
            raise StoreError(f"{key} exists with other content") from None
    c = report.counts
    summary = (
        f"immutability test {report.run_id} on {report.store}: {c[ENFORCED]} enforced, {c[EVIDENT]} evident, "
        f"{c[FAILED]} FAILED"
        + (f" ({', '.join(report.failed)})" if report.failed else "")
        + (f", {c[SKIPPED]} skipped" if c[SKIPPED] else "")
    )
    result = writer.append(EvidenceBody(evidence_kind=EVIDENCE_KIND, object_key=key, sha256=digest, summary=summary))
    assert isinstance(result, Receipt)  # evidence bodies are never indexed
    return FiledEvidence(object_key=key, sha256=digest, receipt=result)


def encode_report(report: ImmutabilityReport) -> bytes:
    """The stored bytes of an evidence document (sorted keys, 2-space indent, final newline)."""
    data = msgspec.json.encode(msgspec.to_builtins(report), order="sorted")
    return msgspec.json.format(data, indent=2) + b"\n"


def _new_run_id() -> str:
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def _user() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "?"
    return f"{name} (uid {os.geteuid()})"


def _software() -> str:
    try:
        from importlib.metadata import version

        ours = version("verdict-gateway")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        ours = "source"
    return f"verdict {ours}; python {platform.python_version()}; {platform.system()} {platform.release()}"


# --- the trail (canaries hidden) ---------------------------------------------------------------


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


def _verify_trail(
    store: WormStore, progress: ProgressFn | None, trust: TrustPolicy | None
) -> tuple[TrailState | None, ProbeResult]:
    from verdict.audit.verifier import verify_store

    started = time.perf_counter()
    view = TrailView(store)
    try:
        report = verify_store(view, progress=progress, trust=trust)  # type: ignore[arg-type]
    except StoreError as exc:
        return None, ProbeResult(
            "trail_verification",
            "trail",
            "verify_store over every chain, checkpoint, index entry and object version",
            ENFORCED,
            FAILED,
            f"the verifier could not read the store: {exc}",
            elapsed_s=_since(started),
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
        first_failure=_finding(first) if first else None,
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
        "failures": [_finding(f) for f in report.failures[:20]],
        "notes": [_finding(n) for n in report.notes[:20]],
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
        status, detail = FAILED, f"{report.failure_count} verification failure(s); first: {_finding(first)}"
    return trail, ProbeResult(
        "trail_verification",
        "trail",
        "verify_store over every chain, checkpoint, index entry and object version",
        ENFORCED,
        status,
        detail,
        evidence,
        _since(started),
    )


def _finding(f: Any) -> str:
    where = ", ".join(
        str(x) for x in (f.chain_id and f"chain {f.chain_id}", f.seq is not None and f"seq {f.seq}", f.key) if x
    )
    return f"[{f.reason}]" + (f" ({where})" if where else "") + f": {f.message}"


def _previous_evidence(store: WormStore, chain_id: str) -> tuple[str | None, dict[str, Any] | None]:
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


def _consistency(
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
            elapsed_s=_since(started),
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
            _since(started),
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
            _since(started),
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
            "trail_consistency", "trail", op, ENFORCED, FAILED, "; ".join(problems[:5]), evidence, _since(started)
        )
    return ProbeResult(
        "trail_consistency",
        "trail",
        op,
        ENFORCED,
        ENFORCED,
        f"{len(checked)} chain(s) still extend what run {previous.get('run_id')} recorded: same heads, same checkpoints",
        evidence,
        _since(started),
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


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


# --- canaries ------------------------------------------------------------------------------------


class _Canary:
    """A throwaway signed chain (genesis + one record + checkpoints) in its own sub-store."""

    def __init__(self, store: WormStore, key: str, data: bytes, version: str | None) -> None:
        self.store = store
        self.key = key
        self.data = data
        self.version = version

    @property
    def tampered(self) -> bytes:
        return self.data.replace(_CANARY_MARK, _TAMPER_MARK)


def _write_canary(store: WormStore, run_id: str) -> _Canary:
    signer = Ed25519Signer(Ed25519PrivateKey.generate())  # throwaway: signs nothing but this canary
    writer = ChainWriter.open(store, CANARY_CHAIN, signer, created_by="verdict immutability canary")
    try:
        writer.append(
            AccessBody(
                action="immutability-canary",
                actor_key_id="immutability-test",
                target_request_id=f"canary-{run_id}",
                accessed_at=utc_now(),
                purpose=_CANARY_MARK.decode(),
            )
        )
    finally:
        writer.close()
    key = layout.segment_key(CANARY_CHAIN, 1)
    versions = [v for v in store.list_versions(key) if v.key == key and not v.is_delete_marker]
    version = versions[0].version if versions else None
    return _Canary(store, key, store.get(key, version), version)


def _verifier_verdict(store: WormStore) -> tuple[bool, list[str]]:
    """(the verifier flags something, its first findings) for a canary sub-store."""
    from verdict.audit.verifier import verify_store

    try:
        report = verify_store(store, workers=1)
    except StoreError as exc:
        return True, [f"store error while verifying: {exc}"]
    return (not report.ok), [_finding(f) for f in report.failures[:6]]


# --- backends ----------------------------------------------------------------------------------


class _Backend:
    kind = "unknown"

    def run(self) -> Iterator[ProbeResult]:
        yield ProbeResult(
            "backend_supported",
            "bucket",
            "identify the store backend",
            ENFORCED,
            FAILED,
            "the immutability test knows file:// and s3:// stores only; this store's protections are unknown",
        )

    def cleanup(self) -> None:
        return None


def _backend_for(store: WormStore, run_id: str, notes: list[str]) -> _Backend:
    if isinstance(store, FilesystemStore):
        return _FilesystemBackend(store, run_id, notes)
    try:
        from verdict.audit.stores.s3 import S3ObjectLockStore
    except ImportError:  # boto3 missing: cannot be an S3 store
        return _Backend()
    if isinstance(store, S3ObjectLockStore):
        return _S3Backend(store, run_id, notes)
    return _Backend()


def _probe(name: str, target: str, operation: str, required: str) -> Callable:
    """Decorator: time the probe and turn an unexpected error into a FAILED result."""

    def wrap(fn: Callable[..., tuple[str, str, dict[str, Any]]]) -> Callable[..., ProbeResult]:
        def run(*args: Any) -> ProbeResult:
            started = time.perf_counter()
            try:
                status, detail, evidence = fn(*args)
            except (_ProbeError, StoreError, OSError) as exc:
                status, detail, evidence = FAILED, f"could not complete the probe: {type(exc).__name__}: {exc}", {}
            return ProbeResult(name, target, operation, required, status, detail, evidence, _since(started))

        run.probe_name = name  # type: ignore[attr-defined]
        return run

    return wrap


# --- S3 ------------------------------------------------------------------------------------------


class _S3Backend(_Backend):
    kind = "s3"

    def __init__(self, store: Any, run_id: str, notes: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.store = store
        self.client = store.client
        self.bucket = store.bucket
        self.run_id = run_id
        self.notes = notes
        self._client_error = ClientError
        self._boto_error = BotoCoreError
        self._plain_writes: str | None = None  # why canaries are written without lock headers, if they are
        self.canary_results: dict[str, str] = {}
        self._substores: list[Any] = []
        self._first_lock: dict[str, Any] | None = None

    # -- helpers

    def _full(self, store: Any, key: str) -> str:
        return f"{store.prefix}/{key}" if store.prefix else key

    def _substore(self, name: str) -> Any:
        from verdict.audit.stores.s3 import S3ObjectLockStore

        prefix = "/".join(p for p in (self.store.prefix, f"{CANARY_PREFIX}{self.run_id}", name) if p)
        sub = S3ObjectLockStore(
            self.bucket,
            prefix,
            client=self.client,
            retention_days=self.store.retention_days,
            max_concurrency=4,
            check_bucket=False,
        )
        self._substores.append(sub)
        return sub

    def _canary(self, name: str) -> _Canary:
        sub = self._substore(name)
        if self._plain_writes is None:
            try:
                return _write_canary(sub, self.run_id)
            except StoreUnavailable:
                raise  # a transient failure is not a refusal: the probe reports it
            except StoreError as exc:
                # The store's own write path is refused (e.g. a bucket without Object
                # Lock rejects lock headers). Attack plain objects instead, so the report
                # shows what this bucket would let an insider do, and say so.
                self._plain_writes = str(exc)
                self.notes.append(
                    "canaries were written WITHOUT Object Lock headers because the store's write path was refused: "
                    f"{exc}"
                )
                sub = self._substore(name + "-plain")
        return _write_canary(_PlainS3Writes(sub, self.client), self.run_id)

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        """(accepted, what the server said); a refusal is a 4xx; 5xx and network errors raise."""
        try:
            response = fn(**kwargs)
        except self._client_error as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            said = {"http_status": status, "code": error.get("Code"), "message": error.get("Message")}
            if status >= 500 or status == 0:
                raise _ProbeError(f"server error {status} {error.get('Code')}: {error.get('Message')}") from None
            return False, said
        except self._boto_error as exc:
            raise _ProbeError(f"{type(exc).__name__}: {exc}") from None
        said = {k: _plain(v) for k, v in response.items() if k not in ("ResponseMetadata", "Body")}
        said["http_status"] = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return True, said

    def _lock(self, store: Any, key: str, version: str | None) -> dict[str, Any]:
        try:
            r = store.retention(key, version)
        except ObjectMissing:
            return {"exists": False}
        return {"exists": True, "mode": r.mode, "retain_until": _plain(r.retain_until), "legal_hold": r.legal_hold}

    def _intact(self, canary: _Canary) -> bool:
        try:
            return canary.store.get(canary.key, canary.version) == canary.data
        except (ObjectMissing, StoreError):
            return False

    def _head(self, canary: _Canary) -> dict[str, Any]:
        return self._lock(canary.store, canary.key, canary.version)

    def _locked_compliance(self, lock: dict[str, Any]) -> bool:
        until = lock.get("retain_until")
        return lock.get("mode") == "COMPLIANCE" and until is not None and _parse_dt(until) > _dt.datetime.now(_dt.UTC)

    # -- the run

    def run(self) -> Iterator[ProbeResult]:
        yield from self._bucket_checks()
        for probe in (
            self.canary_overwrite,
            self.canary_new_version,
            self.canary_delete_marker,
            self.canary_delete_version,
            self.canary_delete_bypass,
            self.canary_shorten_retention,
            self.canary_change_lock_mode,
            self.canary_remove_retention,
        ):
            result = probe()
            self.canary_results[result.name] = result.status
            yield result
            if result.name == "canary_overwrite":
                yield self._lock_on_write()
        yield from self._record_probes()

    def _lock_on_write(self) -> ProbeResult:
        op = "HeadObject of a canary written through the store's write path: ObjectLockMode and retain-until"
        lock = self._first_lock
        days = self.store.retention_days
        evidence = {"lock": lock, "store_retention_days": days, "plain_writes": self._plain_writes}
        if self._plain_writes is not None:
            return ProbeResult(
                "store_lock_on_write",
                "canary",
                op,
                ENFORCED,
                FAILED,
                f"the store's write path is refused by this bucket: {self._plain_writes}",
                evidence,
            )
        if lock is None or not self._locked_compliance(lock):
            return ProbeResult(
                "store_lock_on_write",
                "canary",
                op,
                ENFORCED,
                FAILED,
                f"a freshly written object is not locked in COMPLIANCE mode: {lock}",
                evidence,
            )
        remaining = _parse_dt(lock["retain_until"]) - _dt.datetime.now(_dt.UTC)
        if remaining < _dt.timedelta(days=days) - _dt.timedelta(hours=1):
            return ProbeResult(
                "store_lock_on_write",
                "canary",
                op,
                ENFORCED,
                FAILED,
                f"retention is only {remaining} where the store asks for {days} days",
                evidence,
            )
        return ProbeResult(
            "store_lock_on_write",
            "canary",
            op,
            ENFORCED,
            ENFORCED,
            f"every write is locked: COMPLIANCE until {lock['retain_until']} ({days} days)",
            evidence,
        )

    def cleanup(self) -> None:
        for sub in self._substores:
            sub.close()

    def _bucket_checks(self) -> Iterator[ProbeResult]:
        started = time.perf_counter()
        try:
            report = self.store.bucket_protection_report()
        except StoreError as exc:
            for name in ("bucket_versioning", "bucket_object_lock", "bucket_default_retention"):
                yield ProbeResult(
                    name,
                    "bucket",
                    "read the bucket configuration",
                    ENFORCED,
                    FAILED,
                    f"cannot read the bucket configuration: {exc}",
                    elapsed_s=_since(started),
                )
            return
        facts = msgspec.to_builtins(report)
        yield ProbeResult(
            "bucket_versioning",
            "bucket",
            "GetBucketVersioning",
            ENFORCED,
            ENFORCED if report.versioning_status == "Enabled" else FAILED,
            "versioning is Enabled: an overwrite adds a version, the original stays readable by VersionId"
            if report.versioning_status == "Enabled"
            else f"versioning is {report.versioning_status or 'not enabled'}: an overwrite replaces the original bytes",
            facts,
            _since(started),
        )
        yield ProbeResult(
            "bucket_object_lock",
            "bucket",
            "GetObjectLockConfiguration",
            ENFORCED,
            ENFORCED if report.object_lock_enabled else FAILED,
            "Object Lock is enabled on the bucket"
            if report.object_lock_enabled
            else "Object Lock is NOT enabled: nothing stops a version from being deleted (it can only be enabled at bucket creation)",
            facts,
            _since(started),
        )
        period = (
            f"{report.default_retention_days} days"
            if report.default_retention_days
            else (f"{report.default_retention_years} years" if report.default_retention_years else "no period")
        )
        ok = report.default_retention_mode == "COMPLIANCE" and bool(
            report.default_retention_days or report.default_retention_years
        )
        yield ProbeResult(
            "bucket_default_retention",
            "bucket",
            "GetObjectLockConfiguration (default retention rule)",
            ENFORCED,
            ENFORCED if ok else FAILED,
            f"default retention COMPLIANCE, {period}: objects written without lock headers are locked too"
            if ok
            else f"default retention is {report.default_retention_mode or 'not set'} ({period}): a write without lock "
            f"headers would not be locked in COMPLIANCE mode",
            facts,
            _since(started),
        )
        yield self._bucket_policy()

    @_probe(
        "bucket_policy",
        "bucket",
        "GetBucketPolicy: deny statements for unconditional puts, deletes, retention changes and governance bypass",
        EVIDENT,
    )
    def _bucket_policy(self) -> tuple[str, str, dict[str, Any]]:
        import json

        accepted, said = self._call(self.client.get_bucket_policy, Bucket=self.bucket)
        if not accepted:
            return (
                EVIDENT,
                (
                    f"no bucket policy ({said.get('code')}): unconditional overwrites and delete markers are allowed and only "
                    f"evident (see the canary probes); deploy/terraform adds the policy that denies them"
                ),
                said,
            )
        try:
            policy = json.loads(said.get("Policy") or "{}")
        except ValueError:
            return EVIDENT, "the bucket policy is not JSON", said
        denied = set()
        for statement in policy.get("Statement", []):
            if statement.get("Effect") != "Deny":
                continue
            actions = statement.get("Action")
            for action in [actions] if isinstance(actions, str) else actions or []:
                denied.add(action)
        wanted = {
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutObjectRetention",
            "s3:BypassGovernanceRetention",
        }
        missing = sorted(
            wanted - denied - ({"s3:DeleteObject", "s3:DeleteObjectVersion"} if "s3:*" in denied else set())
        )
        evidence = {"deny_actions": sorted(denied), "missing": missing}
        if missing:
            return EVIDENT, f"the bucket policy has no Deny for {', '.join(missing)}", evidence
        return (
            ENFORCED,
            (
                "the bucket policy denies unconditional puts, deletes, retention changes and governance bypass "
                "(whether the endpoint evaluates bucket policies is shown by the canary probes)"
            ),
            evidence,
        )

    # -- canary probes

    @_probe(
        "canary_overwrite",
        "canary",
        "PutObject with If-None-Match: * on an existing key (the store's write path)",
        ENFORCED,
    )
    def canary_overwrite(self) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary("canary_overwrite")
        evidence: dict[str, Any] = {
            "key": self._full(canary.store, canary.key),
            "version": canary.version,
            "lock": self._head(canary),
        }
        self._first_lock = evidence["lock"]
        try:
            ref = canary.store.put_once(canary.key, canary.tampered)
        except ObjectExists as exc:
            evidence["refused"] = str(exc)
            evidence["original_intact"] = self._intact(canary)
            if evidence["original_intact"]:
                return ENFORCED, "412 PreconditionFailed: the existing object was not touched", evidence
            return FAILED, "the write was refused but the original can no longer be read back", evidence
        evidence["accepted_version"] = ref.version
        return (
            FAILED,
            "the conditional write was ACCEPTED over an existing object (If-None-Match not honoured)",
            self._aftermath(canary, evidence),
        )

    @_probe(
        "canary_new_version", "canary", "PutObject without If-None-Match over an existing key (tampered bytes)", EVIDENT
    )
    def canary_new_version(self) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary("canary_new_version")
        full = self._full(canary.store, canary.key)
        accepted, said = self._call(self.client.put_object, Bucket=self.bucket, Key=full, Body=canary.tampered)
        evidence = {"key": full, "version": canary.version, "server": said}
        if not accepted:
            evidence["original_intact"] = self._intact(canary)
            return ENFORCED, f"refused ({said.get('code')}): unconditional overwrites are denied", evidence
        return self._judge_allowed(canary, evidence, "a new version was written over the record")

    @_probe("canary_delete_marker", "canary", "DeleteObject without VersionId (adds a delete marker)", EVIDENT)
    def canary_delete_marker(self) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary("canary_delete_marker")
        full = self._full(canary.store, canary.key)
        accepted, said = self._call(self.client.delete_object, Bucket=self.bucket, Key=full)
        evidence = {"key": full, "version": canary.version, "server": said}
        if not accepted:
            evidence["original_intact"] = self._intact(canary)
            return ENFORCED, f"refused ({said.get('code')}): deletes are denied", evidence
        return self._judge_allowed(canary, evidence, "the key was deleted (delete marker)")

    @_probe("canary_delete_version", "canary", "DeleteObject with the VersionId of a locked version", ENFORCED)
    def canary_delete_version(self) -> tuple[str, str, dict[str, Any]]:
        return self._delete_version("canary_delete_version", bypass=False)

    @_probe(
        "canary_delete_bypass",
        "canary",
        "DeleteObject with the VersionId and x-amz-bypass-governance-retention: true",
        ENFORCED,
    )
    def canary_delete_bypass(self) -> tuple[str, str, dict[str, Any]]:
        return self._delete_version("canary_delete_bypass", bypass=True)

    def _delete_version(self, name: str, *, bypass: bool) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary(name)
        full = self._full(canary.store, canary.key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "VersionId": canary.version or "null"}
        if bypass:
            kwargs["BypassGovernanceRetention"] = True
        before = self._head(canary)
        accepted, said = self._call(self.client.delete_object, **kwargs)
        evidence = {"key": full, "version": canary.version, "lock_before": before, "server": said}
        if not accepted:
            evidence["original_intact"] = self._intact(canary)
            if not evidence["original_intact"]:
                return FAILED, "refused, but the version can no longer be read back", evidence
            return ENFORCED, f"refused ({said.get('code')}): the locked version cannot be deleted", evidence
        evidence["original_intact"] = self._intact(canary)
        detected, findings = _verifier_verdict(canary.store)
        evidence["verifier_findings"] = findings
        return (
            FAILED,
            (
                "the version was DELETED"
                + (" with the governance-bypass header" if bypass else "")
                + f" (lock before: {before.get('mode')} until {before.get('retain_until')}); the original bytes are gone"
                + ("; the verifier notices the gap" if detected else "; the verifier did NOT notice")
            ),
            evidence,
        )

    @_probe(
        "canary_shorten_retention",
        "canary",
        "PutObjectRetention: COMPLIANCE with an earlier retain-until date",
        ENFORCED,
    )
    def canary_shorten_retention(self) -> tuple[str, str, dict[str, Any]]:
        earlier = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        return self._retention_change(
            "canary_shorten_retention",
            {"Mode": "COMPLIANCE", "RetainUntilDate": earlier},
            "COMPLIANCE retention was SHORTENED (to a date in the past)",
            consequence_bypass=False,
        )

    @_probe("canary_change_lock_mode", "canary", "PutObjectRetention: switch COMPLIANCE to GOVERNANCE", ENFORCED)
    def canary_change_lock_mode(self) -> tuple[str, str, dict[str, Any]]:
        return self._retention_change(
            "canary_change_lock_mode",
            {"Mode": "GOVERNANCE"},
            "the lock was switched from COMPLIANCE to GOVERNANCE",
            consequence_bypass=True,
        )

    @_probe(
        "canary_remove_retention", "canary", "PutObjectRetention with an empty retention (remove the lock)", ENFORCED
    )
    def canary_remove_retention(self) -> tuple[str, str, dict[str, Any]]:
        return self._retention_change(
            "canary_remove_retention", {}, "the retention was REMOVED", consequence_bypass=False
        )

    def _retention_change(
        self, name: str, retention: dict[str, Any], what: str, *, consequence_bypass: bool
    ) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary(name)
        full = self._full(canary.store, canary.key)
        before = self._head(canary)
        evidence: dict[str, Any] = {"key": full, "version": canary.version, "lock_before": before}
        if not self._locked_compliance(before):
            return (
                FAILED,
                (
                    f"the canary written through the store's write path is not locked in COMPLIANCE mode "
                    f"({before.get('mode')} until {before.get('retain_until')}): there is no lock to protect records"
                ),
                evidence,
            )
        if retention.get("Mode") == "GOVERNANCE":
            retention = {"Mode": "GOVERNANCE", "RetainUntilDate": _parse_dt(before["retain_until"])}
        accepted, said = self._call(
            self.client.put_object_retention,
            Bucket=self.bucket,
            Key=full,
            VersionId=canary.version or "null",
            Retention=retention,
        )
        evidence["server"] = said
        evidence["lock_after"] = self._head(canary)
        if not accepted:
            if evidence["lock_after"] != before:
                return FAILED, "refused, yet the lock changed", evidence
            return ENFORCED, f"refused ({said.get('code')}): the COMPLIANCE lock cannot be weakened", evidence
        # Show what the weakened lock allows: delete the canary version.
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "VersionId": canary.version or "null"}
        if consequence_bypass:
            kwargs["BypassGovernanceRetention"] = True
        deleted, delete_said = self._call(self.client.delete_object, **kwargs)
        evidence["then_delete_version"] = {
            "bypass_header": consequence_bypass,
            "accepted": deleted,
            "server": delete_said,
        }
        return (
            FAILED,
            (
                f"{what}: {before.get('mode')} until {before.get('retain_until')} became "
                f"{evidence['lock_after'].get('mode')} until {evidence['lock_after'].get('retain_until')}"
                + ("; the version could then be DELETED" if deleted else "; deleting the version was still refused")
            ),
            evidence,
        )

    def _judge_allowed(self, canary: _Canary, evidence: dict[str, Any], what: str) -> tuple[str, str, dict[str, Any]]:
        self._aftermath(canary, evidence)
        if evidence["original_intact"] and evidence["verifier_detects"]:
            return (
                EVIDENT,
                f"allowed: {what}; the original version is still readable by its VersionId and the verifier flags it",
                evidence,
            )
        if not evidence["original_intact"]:
            return FAILED, f"allowed: {what}, and the ORIGINAL BYTES ARE GONE (no versioning?)", evidence
        return FAILED, f"allowed: {what}, and the verifier did NOT notice", evidence

    def _aftermath(self, canary: _Canary, evidence: dict[str, Any]) -> dict[str, Any]:
        evidence["original_intact"] = self._intact(canary)
        try:
            evidence["versions_now"] = [
                {"version": v.version, "delete_marker": v.is_delete_marker, "latest": v.is_latest}
                for v in canary.store.list_versions(canary.key)
                if v.key == canary.key
            ]
        except StoreError as exc:
            evidence["versions_now"] = f"unreadable: {exc}"
        detected, findings = _verifier_verdict(canary.store)
        evidence["verifier_detects"] = detected
        evidence["verifier_findings"] = findings
        return evidence

    # -- real records (refused operations only)

    def _record_probes(self) -> Iterator[ProbeResult]:
        target = _pick_record(self.store)
        if target is None:
            for name in (
                "record_overwrite",
                "record_delete_version",
                "record_delete_bypass",
                "record_shorten_retention",
                "record_change_lock_mode",
            ):
                yield ProbeResult(
                    name,
                    "record",
                    "(no record to probe)",
                    ENFORCED,
                    SKIPPED,
                    "the store holds no audit record to probe (the evidence chain could not be created either)",
                )
            return
        key, version, data = target
        yield self.record_overwrite(key, version, data)
        lock = self._lock(self.store, key, version)
        yield self._gated(
            "record_delete_version", "canary_delete_version", key, version, lock, self._record_delete(bypass=False)
        )
        yield self._gated(
            "record_delete_bypass", "canary_delete_bypass", key, version, lock, self._record_delete(bypass=True)
        )
        yield self._gated(
            "record_shorten_retention", "canary_shorten_retention", key, version, lock, self._record_shorten
        )
        yield self._gated("record_change_lock_mode", "canary_change_lock_mode", key, version, lock, self._record_mode)

    @_probe(
        "record_overwrite",
        "record",
        "PutObject with If-None-Match: * of the record's own bytes on its key (the store's write path)",
        ENFORCED,
    )
    def record_overwrite(self, key: str, version: str | None, data: bytes) -> tuple[str, str, dict[str, Any]]:
        evidence: dict[str, Any] = {"key": self._full(self.store, key), "version": version}
        try:
            ref = self.store.put_once(key, data)
        except ObjectExists as exc:
            evidence["refused"] = str(exc)
            return ENFORCED, "412 PreconditionFailed: the record's key cannot be written again", evidence
        evidence["returned_version"] = ref.version
        if version is not None and ref.version == version:
            # botocore retried the PUT, S3 answered 412, and the store recognised the existing
            # version as holding exactly these bytes: the existing object was returned, not replaced.
            return ENFORCED, "412 PreconditionFailed (after a retry): the existing version was left as it was", evidence
        return (
            FAILED,
            (
                "the conditional write was ACCEPTED on a real record's key (identical bytes were written, so no "
                "content changed, but the key now has another version)"
            ),
            evidence,
        )

    def _gated(
        self,
        name: str,
        twin: str,
        key: str,
        version: str | None,
        lock: dict[str, Any],
        attack: Callable[[str, str, str | None, dict[str, Any]], tuple[bool, dict[str, Any]]],
    ) -> ProbeResult:
        started = time.perf_counter()
        operation = {
            "record_delete_version": "DeleteObject with the record's VersionId",
            "record_delete_bypass": "DeleteObject with the record's VersionId and the governance-bypass header",
            "record_shorten_retention": "PutObjectRetention: the record's retain-until date minus one second",
            "record_change_lock_mode": "PutObjectRetention: GOVERNANCE instead of COMPLIANCE, same date",
        }[name]
        full = self._full(self.store, key)
        evidence: dict[str, Any] = {"key": full, "version": version, "lock": lock, "canary_twin": twin}
        if self.canary_results.get(twin) != ENFORCED:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                SKIPPED,
                f"not run on a real record: the same operation was not refused on a canary ({twin}: "
                f"{self.canary_results.get(twin)}), so it could destroy evidence",
                evidence,
                _since(started),
            )
        if not self._locked_compliance(lock):
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                f"the record is not locked in COMPLIANCE mode with a future date ({lock.get('mode')} until "
                f"{lock.get('retain_until')})",
                evidence,
                _since(started),
            )
        try:
            accepted, said = attack(full, key, version, lock)
        except (_ProbeError, StoreError) as exc:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                f"could not complete the probe: {exc}",
                evidence,
                _since(started),
            )
        evidence.update(said)
        if accepted:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                "ACCEPTED on a real record although refused on its canary",
                evidence,
                _since(started),
            )
        evidence["lock_after"] = self._lock(self.store, key, version)
        if evidence["lock_after"] != lock:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                "refused, yet the record's lock changed",
                evidence,
                _since(started),
            )
        return ProbeResult(
            name,
            "record",
            operation,
            ENFORCED,
            ENFORCED,
            f"refused ({said['server'].get('code')}) on a real record; its lock is unchanged",
            evidence,
            _since(started),
        )

    def _record_delete(self, *, bypass: bool) -> Callable[..., tuple[bool, dict[str, Any]]]:
        def attack(full: str, key: str, version: str | None, lock: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "VersionId": version or "null"}
            if bypass:
                kwargs["BypassGovernanceRetention"] = True
            accepted, said = self._call(self.client.delete_object, **kwargs)
            return accepted, {"server": said}

        return attack

    def _record_shorten(
        self, full: str, key: str, version: str | None, lock: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        until = _parse_dt(lock["retain_until"])
        accepted, said = self._call(
            self.client.put_object_retention,
            Bucket=self.bucket,
            Key=full,
            VersionId=version or "null",
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - _dt.timedelta(seconds=1)},
        )
        out: dict[str, Any] = {"server": said}
        if accepted:  # never expected after the canary gate: put the date back (extending is always allowed)
            _, restored = self._call(
                self.client.put_object_retention,
                Bucket=self.bucket,
                Key=full,
                VersionId=version or "null",
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            )
            out["restored"] = restored
        return accepted, out

    def _record_mode(
        self, full: str, key: str, version: str | None, lock: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        until = _parse_dt(lock["retain_until"])
        accepted, said = self._call(
            self.client.put_object_retention,
            Bucket=self.bucket,
            Key=full,
            VersionId=version or "null",
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
        )
        out: dict[str, Any] = {"server": said}
        if accepted:
            _, restored = self._call(
                self.client.put_object_retention,
                Bucket=self.bucket,
                Key=full,
                VersionId=version or "null",
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            )
            out["restored"] = restored
        return accepted, out


class _PlainS3Writes:
    """Canary writes WITHOUT lock headers (If-None-Match only), for buckets that refuse
    the store's own write path; reads and listings go through the S3 store."""

    def __init__(self, store: Any, client: Any) -> None:
        self._store = store
        self._client = client
        self.url = store.url + " (plain writes)"
        self.prefix = store.prefix
        self.versioned = store.versioned

    def put_once(self, key: str, data: bytes) -> ObjectRef:
        from botocore.exceptions import ClientError

        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            response = self._client.put_object(Bucket=self._store.bucket, Key=full, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise ObjectExists(key, "If-None-Match refused the write") from None
            raise StoreError(f"plain PutObject {full}: {exc}") from None
        version = response.get("VersionId")
        return ObjectRef(key=key, version=None if version in (None, "null") else version)

    def put_many_once(self, items: Sequence[tuple[str, bytes]]) -> list[ObjectRef]:
        refs, conflict = [], None
        for key, data in items:
            try:
                refs.append(self.put_once(key, data))
            except ObjectExists as exc:
                conflict = conflict or exc
        if conflict is not None:
            raise conflict
        return refs

    def prestage(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Ignored, as on the S3 store."""

    def get(self, key: str, version: str | None = None) -> bytes:
        return self._store.get(key, None if version in (None, "null") else version)

    def exists(self, key: str) -> bool:
        return self._store.exists(key)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        return self._store.list_keys(prefix)

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        return self._store.list_versions(prefix)

    def retention(self, key: str, version: str | None = None) -> Any:
        return self._store.retention(key, None if version in (None, "null") else version)


def _pick_record(store: WormStore) -> tuple[str, str | None, bytes] | None:
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


def _parse_dt(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.UTC).isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- filesystem ----------------------------------------------------------------------------------


class _FilesystemBackend(_Backend):
    kind = "filesystem"

    def __init__(self, store: FilesystemStore, run_id: str, notes: list[str]) -> None:
        self.store = store
        self.run_id = run_id
        self.notes = notes
        self.canary_root = store.root / CANARY_PREFIX.rstrip("/") / run_id
        self._sealed: list[Path] = []
        self._trail_sealed = False

    def run(self) -> Iterator[ProbeResult]:
        target = _pick_record(self.store)
        if target is None:
            yield ProbeResult(
                "fs_record_overwrite",
                "record",
                "(no record to probe)",
                ENFORCED,
                SKIPPED,
                "the store holds no audit record to probe (the evidence chain could not be created either)",
            )
        else:
            yield self.fs_record_overwrite(target[0], target[2])
        yield self.fs_record_modes()
        immutable = self.fs_immutable_attribute()
        yield immutable
        self._trail_sealed = immutable.status == ENFORCED
        yield self.fs_canary_rewrite()
        yield self.fs_canary_replace()
        yield self.fs_canary_delete()

    # -- helpers

    def _trail_files(self) -> list[Path]:
        # Writer leases (audit-format §9a) are coordination objects, not evidence: this
        # run's own evidence writer writes one after the trail may have been sealed.
        return [self.store.root / key for key in TrailView(self.store).list_keys("") if "/leases/" not in key]

    def _canary(self, name: str) -> tuple[_Canary, Path]:
        sub = FilesystemStore(self.canary_root / name)
        canary = _write_canary(sub, self.run_id)
        path = sub.root / canary.key
        if self._trail_sealed:  # mirror the trail's protection, or the canary proves nothing about it
            for key in sub.list_keys(""):
                _set_immutable(sub.root / key, True)
                self._sealed.append(sub.root / key)
        return canary, path

    def _judge(self, canary: _Canary, done: str, evidence: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        detected, findings = _verifier_verdict(canary.store)
        evidence["verifier_detects"] = detected
        evidence["verifier_findings"] = findings
        if detected:
            return (
                EVIDENT,
                f"allowed: {done}; the verifier flags it (the filesystem store is tamper-evident, not tamper-proof)",
                evidence,
            )
        return FAILED, f"allowed: {done}, and the verifier did NOT notice", evidence

    def _who(self) -> dict[str, Any]:
        return {"euid": os.geteuid(), "root": os.geteuid() == 0}

    # -- probes

    @_probe(
        "fs_record_overwrite",
        "record",
        "the store's write path (link(2), fails if the name exists) on a real "
        "record's key, with the record's own bytes",
        ENFORCED,
    )
    def fs_record_overwrite(self, key: str, data: bytes) -> tuple[str, str, dict[str, Any]]:
        evidence: dict[str, Any] = {"key": key}
        try:
            self.store.put_once(key, data)
        except ObjectExists as exc:
            evidence["refused"] = str(exc)
            return ENFORCED, "the store refuses to write an existing key (link(2) EEXIST)", evidence
        return FAILED, "the store's write path wrote an existing key", evidence

    @_probe("fs_record_modes", "filesystem", "stat every trail file: no write permission bits", ENFORCED)
    def fs_record_modes(self) -> tuple[str, str, dict[str, Any]]:
        files = self._trail_files()
        writable, owners = [], set()
        for path in files:
            st = path.stat()
            owners.add(st.st_uid)
            if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                writable.append(f"{path.relative_to(self.store.root)} ({stat.filemode(st.st_mode)})")
        evidence = {"files": len(files), "writable": writable[:10], "owners": sorted(owners), **self._who()}
        if writable:
            return FAILED, f"{len(writable)} trail file(s) have write permission bits", evidence
        return (
            ENFORCED,
            (
                f"all {len(files)} trail files are read-only (0444): other non-root users cannot change them; the owner "
                f"(uid {', '.join(map(str, sorted(owners))) or '-'}) and root can chmod or unlink them (see the canary probes)"
            ),
            evidence,
        )

    @_probe(
        "fs_immutable_attribute",
        "filesystem",
        "FS_IOC_GETFLAGS on every trail file; FS_IOC_SETFLAGS (chattr +i, then -i) on a scratch file",
        EVIDENT,
    )
    def fs_immutable_attribute(self) -> tuple[str, str, dict[str, Any]]:
        files = self._trail_files()
        flagged, unsupported = 0, None
        for path in files:
            try:
                if _get_flags(path) & _FS_IMMUTABLE_FL:
                    flagged += 1
            except OSError as exc:
                unsupported = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
                break
        self.canary_root.mkdir(parents=True, exist_ok=True)
        scratch = self.canary_root / "immutable-scratch"
        scratch.write_bytes(b"scratch\n")
        try:
            _set_immutable(scratch, True)
            _set_immutable(scratch, False)
            permitted, why = True, "permitted (the process has CAP_LINUX_IMMUTABLE and the filesystem supports it)"
        except OSError as exc:
            permitted = False
            why = f"not permitted here: {errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
            if exc.errno == errno.EPERM:
                why += "; it needs CAP_LINUX_IMMUTABLE (root on the host, not a default container capability)"
        finally:
            scratch.unlink(missing_ok=True)
        evidence = {
            "files": len(files),
            "immutable": flagged,
            "set_flag": why,
            "read_flags_error": unsupported,
            **self._who(),
        }
        if files and flagged == len(files):
            return (
                ENFORCED,
                f"all {len(files)} trail files carry the immutable attribute (chattr +i): even their owner cannot change or delete them",
                evidence,
            )
        return (
            EVIDENT,
            (
                f"{flagged} of {len(files)} trail files carry the immutable attribute; setting it is {why}. Without it the "
                f"service's uid or root can change or delete files: only the chain, signatures and checkpoints reveal it"
            ),
            evidence,
        )

    @_probe(
        "fs_canary_rewrite", "canary", "chmod u+w and rewrite a segment file in place (as this process's uid)", EVIDENT
    )
    def fs_canary_rewrite(self) -> tuple[str, str, dict[str, Any]]:
        canary, path = self._canary("fs_canary_rewrite")
        evidence: dict[str, Any] = {"key": canary.key, "sealed": self._trail_sealed, **self._who()}
        try:
            os.chmod(path, 0o644)
            with open(path, "r+b") as fh:
                fh.write(canary.tampered)
        except OSError as exc:
            evidence["refused"] = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
            return ENFORCED, f"refused by the filesystem ({evidence['refused']})", evidence
        return self._judge(canary, "the segment was rewritten in place", evidence)

    @_probe("fs_canary_replace", "canary", "write a forged file and rename(2) it over a segment", EVIDENT)
    def fs_canary_replace(self) -> tuple[str, str, dict[str, Any]]:
        canary, path = self._canary("fs_canary_replace")
        evidence: dict[str, Any] = {"key": canary.key, "sealed": self._trail_sealed, **self._who()}
        forged = path.with_name(path.name + ".forged")
        try:
            forged.write_bytes(canary.tampered)
            os.replace(forged, path)
        except OSError as exc:
            forged.unlink(missing_ok=True)
            evidence["refused"] = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
            return ENFORCED, f"refused by the filesystem ({evidence['refused']})", evidence
        return self._judge(canary, "the segment was replaced by a forged file", evidence)

    @_probe("fs_canary_delete", "canary", "unlink(2) a segment file", EVIDENT)
    def fs_canary_delete(self) -> tuple[str, str, dict[str, Any]]:
        canary, path = self._canary("fs_canary_delete")
        evidence: dict[str, Any] = {"key": canary.key, "sealed": self._trail_sealed, **self._who()}
        try:
            os.unlink(path)
        except OSError as exc:
            evidence["refused"] = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
            return ENFORCED, f"refused by the filesystem ({evidence['refused']})", evidence
        return self._judge(canary, "the segment was deleted", evidence)

    def cleanup(self) -> None:
        for path in self._sealed:
            try:
                _set_immutable(path, False)
            except OSError:
                pass
        try:
            shutil.rmtree(self.canary_root)
            parent = self.canary_root.parent
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        except OSError as exc:
            self.notes.append(f"canary directory {self.canary_root} could not be removed: {exc}")


def _get_flags(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        return buf[0]
    finally:
        os.close(fd)


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        buf[0] = (buf[0] | _FS_IMMUTABLE_FL) if on else (buf[0] & ~_FS_IMMUTABLE_FL)
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, buf, False)
    finally:
        os.close(fd)


# --- JUnit -------------------------------------------------------------------------------------------


def junit_xml(outcome: Outcome) -> bytes:
    """One <testcase> per probe (plus the evidence filing); FAILED → <failure>, skipped → <skipped>."""
    report = outcome.report
    cases = list(report.probes)
    total_time = sum(p.elapsed_s for p in cases)
    failures = sum(1 for p in cases if p.status == FAILED) + (0 if outcome.filed else 1)
    skipped = sum(1 for p in cases if p.status == SKIPPED)
    suites = ET.Element(
        "testsuites",
        name="verdict-immutability",
        tests=str(len(cases) + 1),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{total_time:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"immutability[{report.backend}]",
        tests=str(len(cases) + 1),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{total_time:.3f}",
        timestamp=report.started,
        hostname=report.host,
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", report.run_id),
        ("store", report.store),
        ("result", report.result),
        ("evidence_chain", report.evidence_chain),
        ("evidence_object", outcome.filed.object_key if outcome.filed else ""),
        (
            "evidence_record",
            f"{outcome.filed.receipt.chain_id}/{outcome.filed.receipt.seq} {outcome.filed.receipt.record_hash}"
            if outcome.filed
            else "",
        ),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for probe in cases:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"immutability.{report.backend}.{probe.target}",
            name=probe.name,
            time=f"{probe.elapsed_s:.3f}",
        )
        body = msgspec.json.format(
            msgspec.json.encode(
                {
                    "operation": probe.operation,
                    "required": probe.required,
                    "status": probe.status,
                    "evidence": probe.evidence,
                }
            ),
            indent=2,
        )
        if probe.status == FAILED:
            failure = ET.SubElement(case, "failure", message=probe.detail, type="FAILED")
            failure.text = body.decode()
        elif probe.status == SKIPPED:
            ET.SubElement(case, "skipped", message=probe.detail)
        out = ET.SubElement(case, "system-out")
        out.text = f"{probe.status}: {probe.detail}\n" + body.decode()
    case = ET.SubElement(
        suite, "testcase", classname=f"immutability.{report.backend}.evidence", name="evidence_filed", time="0"
    )
    if outcome.filed is None:
        failure = ET.SubElement(
            case, "failure", message=f"the evidence was not filed: {outcome.filing_error}", type="FAILED"
        )
        failure.text = outcome.filing_error or ""
    else:
        out = ET.SubElement(case, "system-out")
        out.text = (
            f"{outcome.filed.object_key} recorded at {outcome.filed.receipt.chain_id} seq "
            f"{outcome.filed.receipt.seq} ({outcome.filed.receipt.record_hash}), key {outcome.filed.receipt.key_id}"
        )
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"

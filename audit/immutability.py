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

Where the parts live: this module runs the test and files the evidence; the
trail checks and canary chains are in ``audit.immutability_trail``, the report
and its JSON and JUnit renderings in ``audit.immutability_report``; each
backend's probes sit beside its store (``audit.stores.filesystem_probes``,
``audit.stores.s3_probes``) and are found through the backend registry
(``audit.stores.registry``) by the store URL's scheme.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import os
import platform
import re
import secrets
import socket
from collections.abc import Callable
from importlib.metadata import version

from verdict.audit import layout
from verdict.audit.chain import ChainError, ChainWriter, KeyRing, Receipt
from verdict.audit.immutability_report import (
    FORMAT,
    ChainState,
    FiledEvidence,
    ImmutabilityReport,
    Outcome,
    ProbeResult,
    TrailState,
    encode_report,
    junit_xml,
)
from verdict.audit.immutability_trail import (
    EVIDENCE_KIND,
    ProgressFn,
    TrailContext,
    TrailView,
    consistency,
    previous_evidence,
    verify_trail,
)
from verdict.audit.object_retention import check_retention
from verdict.audit.personal_data import RetentionPolicy
from verdict.audit.records import EvidenceBody, RecordError, utc_now
from verdict.audit.signing import KeyDocumentError, Signer
from verdict.audit.stores.base import ObjectExists, StoreError, StoreUnavailable, WormStore
from verdict.audit.stores.probes import (
    CANARY_PREFIX,
    ENFORCED,
    EVIDENT,
    FAILED,
    SKIPPED,
    StoreProbes,
    UnsupportedStoreProbes,
)
from verdict.audit.stores.registry import find_backend, open_store_unchecked
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
    "encode_report",
    "junit_xml",
    "open_store_for_probing",
    "run_immutability_test",
]

DEFAULT_CHAIN_ID = "immutability-0"

_EVIDENCE_CHAIN = re.compile(r"immutability[A-Za-z0-9_.\-]{0,52}")


# --- opening the store -----------------------------------------------------------------------


def open_store_for_probing(url: str) -> WormStore:
    """Open a store for the immutability test.

    Unlike :func:`audit.stores.open_store`, a store that is unfit for a trail
    (an S3 bucket without Object Lock or versioning) is opened anyway:
    reporting exactly that is this test's job.
    """
    return open_store_unchecked(url)


def probes_for(store: WormStore, run_id: str, notes: list[str]) -> StoreProbes:
    """The registered backend's probes for ``store`` (by its URL's scheme), or
    a single FAILED probe where no backend can probe it."""
    backend = find_backend(store.url)
    found = None
    if backend is not None and backend.probes is not None:
        found = backend.probes(store, TrailContext(run_id, notes))
    return found if found is not None else UnsupportedStoreProbes()


# --- the run ---------------------------------------------------------------------------------


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
    retention: RetentionPolicy | None = None,
) -> Outcome:
    """Probe ``store``, verify the trail, file the evidence; see the module docs.

    ``root`` certifies the evidence chain (spec §5a); ``trust`` is the policy
    the trail is verified against (default: the root's). Without either the
    verification is unanchored, and the evidence says so.

    ``signer`` signs the evidence record on ``chain_id`` (created on first use;
    ``keyring`` lets the chain writer rotate from an older key, as the gateway
    does). ``say`` is called with each probe result as it completes.
    ``retention``: the deployment's retention policy; on a store with Object Lock, the
    decision segments' retain-until dates are checked against it (``retention_matches_policy``).
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

    backend = probes_for(store, run_id, notes)
    try:
        try:
            for result in backend.run():
                record(result)
        finally:
            backend.cleanup()
        trail, verify_result = verify_trail(store, progress, trust or (root.policy() if root else None))
        record(verify_result)
        retained = check_retention(store, retention) if retention is not None else None
        if retained is not None:
            record(retained)
        previous_key, previous = previous_evidence(store, chain_id)
        record(consistency(store, previous_key, previous, trail))
    except BaseException:
        if writer is not None:
            with contextlib.suppress(StoreError, ChainError):
                writer.close()
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
        # On a failure here the evidence record is durable; a missing final checkpoint is written by the next run.
        with contextlib.suppress(StoreError, ChainError):
            writer.close()
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
        ours = version("verdict-gateway")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        ours = "source"
    return f"verdict {ours}; python {platform.python_version()}; {platform.system()} {platform.release()}"

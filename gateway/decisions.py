"""Making decisions: score, explain, audit, answer. No HTTP in here.

The order is the contract: a decision is scored and explained, its record is
appended durably to the audit chain, and only then is a response built, from
the record itself, so the client sees exactly what was logged. A repeated
request id with the same body gets the logged decision back; with a
different body, a conflict. Any failure to make the record durable fails the
whole decision closed (AuditUnavailable), never a decision without a record.
What goes wrong is said with the domain errors of gateway.service_errors;
the HTTP layer alone turns them into problems.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry.trace import SpanContext

from verdict.audit import records as rec
from verdict.audit.canonical import canonical_bytes
from verdict.audit.chain import ChainError, ChainWriter, Receipt
from verdict.audit.data_keys import KeyringError
from verdict.audit.index import IndexConflict, IndexEntry, RequestIndex
from verdict.audit.key_wrapping import KekError
from verdict.audit.object_retention import extend_for_decisions
from verdict.audit.personal_data import PersonalData, RetentionPolicy
from verdict.audit.reader import ReadError, read_decision
from verdict.audit.sealing import SealError
from verdict.audit.stores import StoreError
from verdict.audit.trust import TrustPolicy
from verdict.gateway import request_context, tracing
from verdict.gateway.api_models import DecisionRequest, DecisionResponse, ModelOut, ReasonOut, ReceiptOut
from verdict.gateway.claims import ClaimOutcome, RequestClaims
from verdict.gateway.engine import Engine, LoadedVersion, decide_rows, decision_body
from verdict.gateway.explanation import seed_for
from verdict.gateway.fail_closed import FailClosedLog
from verdict.gateway.metrics import GatewayMetrics
from verdict.gateway.registry import RegistryError, UnknownModel
from verdict.gateway.schema import validate_attributes
from verdict.gateway.sealed_reads import open_decision
from verdict.gateway.service_errors import (
    AuditUnavailable,
    InferIdConflict,
    ModelOutputInvalid,
    ModelUnavailable,
    RequestIdConflict,
    ServiceError,
    UnknownModelVersion,
)

_log = logging.getLogger(__name__)

__all__ = [
    "AuditLane",
    "DecisionGroup",
    "DecisionService",
    "PendingDecision",
    "request_sha256",
    "response_from_record",
]


def request_sha256(request: DecisionRequest) -> str:
    """Identity of a request body for idempotency: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_bytes(request)).hexdigest()


@dataclass(frozen=True, eq=False)
class DecisionGroup:
    """Requests submitted together (an Open Inference Protocol infer call), decided whole or
    not at all. ``infer_id``: the call's id when it named its rows ``<id>.<i>``: then its rows
    are either all new or all already decided (a retry); a mix means other rows under a used id."""

    infer_id: str | None = None


@dataclass(frozen=True)
class PendingDecision:
    request_id: str
    subject_id: str | None
    model: str
    version: str
    attributes: dict[str, Any]
    request_sha256: str
    received_at: str
    trace: SpanContext | None = field(default=None, compare=False)
    """The span of the request this decision came in with (None: tracing off): the batch
    spans that score, explain and record it link to it (gateway.tracing)."""
    group: DecisionGroup | None = field(default=None, compare=False)
    """The infer call this decision is a row of (None: a request of its own)."""


class AuditLane:
    """The one chain writer of this process, with its health and metrics.

    Decisions (batched) and access records (lookups) both append through it,
    from several threads at once: the writer itself serialises segment writes
    (sequence numbers stay contiguous) and overlaps one batch's index round
    with the next batch's segment write, so no lock is taken here.
    """

    def __init__(
        self, writer: ChainWriter | None, metrics: GatewayMetrics, health: FailClosedLog | None = None
    ) -> None:
        self.writer = writer
        self._metrics = metrics
        self.health = health if health is not None else FailClosedLog(_log)  # each fail-closed state logged once
        self.stopped = False  # a permanent chain error (e.g. another writer owns the chain)
        self.last_error: str | None = None
        self.consecutive_failures = 0  # failed appends since the last one that succeeded (readiness)
        self.last_failure_at = 0.0  # time.monotonic() of the latest failed append

    def append(self, bodies: Sequence[Any]) -> list[Receipt | IndexConflict]:
        if self.writer is None:
            raise StoreError("audit is switched off in this process (unsafe benchmark mode)")
        started = time.perf_counter()
        try:
            results = self.writer.append_batch(list(bodies))
        except (StoreError, ChainError) as exc:
            self._failed(exc)
            raise
        self._succeeded()
        self._metrics.audit_append.observe(time.perf_counter() - started)
        self._metrics.chain_length.labels(self.writer.chain_id).set(self.writer.size)
        return results

    def _failed(self, exc: StoreError | ChainError) -> None:
        """A store failure counts towards unreadiness; a chain error stops the writer for good.
        The first failure of either kind is logged (ERROR, once: gateway.fail_closed)."""
        self.last_error = str(exc)
        chain = self.writer.chain_id if self.writer is not None else None
        if isinstance(exc, ChainError):
            self.stopped = True
            self.health.failing(
                "chain_writer",
                "chain_writer_stopped",
                f"the chain writer of {chain} stopped for good: every decision fails closed (503) until this "
                f"process is restarted (docs/operations.md §9.4)",
                chain=chain,
                error=f"{type(exc).__name__}: {exc}",
            )
        else:
            self.consecutive_failures += 1
            self.last_failure_at = time.monotonic()
            self.health.failing(
                "audit_append",
                "audit_append_failing",
                f"an audit append to {chain} failed: decisions fail closed (503) until the store takes appends "
                f"again (docs/operations.md §9.1)",
                chain=chain,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _succeeded(self) -> None:
        failures, self.consecutive_failures = self.consecutive_failures, 0
        self.last_error = None
        if self.health.is_failing("audit_append"):
            self.health.recovered(
                "audit_append",
                "audit_append_recovered",
                f"audit appends succeed again after {failures} failed one(s)",
                chain=self.writer.chain_id if self.writer is not None else None,
                failures=failures,
            )

    def checkpoint_if_due(self) -> str | None:
        """Write a signed checkpoint if one is due (N records or T seconds since
        the last), with or without traffic; returns its key. Called by the
        gateway's checkpoint timer, so an idle chain's tail does not stay
        uncovered (lookups "verified_pending_checkpoint", replay
        "not_checkpointed") until the next decision arrives."""
        if self.writer is None or self.stopped:
            return None
        try:
            return self.writer.maybe_checkpoint()
        except (StoreError, ChainError) as exc:
            self._failed(exc)
            raise


def response_from_record(body: rec.DecisionBody, receipt: ReceiptOut, *, replay: bool = False) -> DecisionResponse:
    """The API response, built only from what was logged."""
    contributions = body.explanation.contributions
    return DecisionResponse(
        request_id=body.request_id,
        model=ModelOut(name=body.model.name, version=body.model.version, sha256=body.model.sha256),
        score=body.score,
        decision=body.decision,
        reasons=[
            ReasonOut(
                attribute=r.attribute,
                label=r.label,
                value=str(r.value),
                direction=r.direction,
                contribution=contributions.get(r.attribute, 0.0),
                text=r.text or "",
            )
            for r in body.reasons
        ],
        base_value=body.explanation.base_value,
        contributions=dict(contributions),
        receipt=receipt,
        decided_at=body.decided_at,
        idempotent_replay=replay,
    )


def _written_at(result: Receipt | IndexConflict) -> tuple[str, str | None]:
    """The segment (key, version) a record was written to: a superseded duplicate (its request
    id claimed elsewhere meanwhile) is in its segment all the same, and must be kept as long."""
    if isinstance(result, Receipt):
        return result.segment_key, result.segment_version
    where = result.duplicate
    assert where is not None, "a conflict from the chain writer names where its duplicate was written"
    return where.segment_key, where.segment_version


def _receipt_out(receipt: Receipt) -> ReceiptOut:
    return ReceiptOut(
        chain_id=receipt.chain_id,
        seq=receipt.seq,
        record_hash=receipt.record_hash,
        signature=receipt.signature,
        key_id=receipt.key_id,
    )


@dataclass
class ComputedBatch:
    """A batch between the two stages: outcomes known so far, and the record
    bodies still to be appended (or the store error that stops the batch)."""

    batch: Sequence[PendingDecision]
    outcomes: list[DecisionResponse | ServiceError | None]
    fresh: list[int] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    owned: list[int] = field(default_factory=list)  # items whose request id this batch claimed
    waiting: list[tuple[int, Future[ClaimOutcome]]] = field(default_factory=list)  # ids an earlier batch owns
    clear: list[rec.DecisionBody] = field(default_factory=list)  # the decisions in clear, for the answers
    bodies: list[rec.DecisionBody] = field(default_factory=list)  # as recorded (sealed when sealing is on), stage 2
    error: StoreError | ChainError | None = None
    trace: SpanContext | None = None  # the compute stage's span: the commit continues its trace


class DecisionService:
    def __init__(
        self,
        models: Engine,
        lane: AuditLane,
        index: RequestIndex | None,
        environment_sha256: str,
        metrics: GatewayMetrics,
        *,
        retry_after_s: int = 5,
        explain: bool = True,
        clock: Callable[[], str] = rec.utc_now,
        claim_wait_s: float = 30.0,
        trust: TrustPolicy | None = None,
        personal: PersonalData | None = None,
        retention: RetentionPolicy | None = None,
        health: FailClosedLog | None = None,
    ) -> None:
        self.models, self.lane, self.index = models, lane, index
        self.health = health if health is not None else lane.health  # the keyring's state, logged once
        self.retention = retention  # lengthens each segment's Object Lock retention to its models' (S3)
        self.personal = personal  # seals each decision's personal data (spec §3a); None: recorded in clear
        self.trust = trust  # a repeated request is answered from its record only if its key is certified
        self.store = models.registry.store  # one store holds models, chains and index
        self.environment_sha256 = environment_sha256
        self.metrics, self.retry_after_s, self.explain, self.clock = metrics, retry_after_s, explain, clock
        self.claims = RequestClaims()
        self.claim_wait_s = claim_wait_s

    # -- event-loop side: cheap checks, no store writes ------------------
    def prepare(self, request: DecisionRequest) -> PendingDecision:
        """Validate a request against its model's schema (raises UnknownModelVersion,
        ModelNotPromoted, ModelVersionRevoked, ModelUnavailable for a version known to
        be unready, AuditUnavailable when the registry cannot be read, InputValidationError)."""
        trace = tracing.current_span_context()  # the request's span, before validate's own
        with tracing.span("verdict.validate", model=request.model):
            try:
                manifest = self.models.serving_manifest(request.model, request.version)
            except ModelUnavailable:
                self.metrics.failures.labels("model_unavailable").inc()
                raise
            except UnknownModel as exc:
                raise UnknownModelVersion(request.model, request.version, str(exc)) from None
            except (RegistryError, StoreError) as exc:
                raise AuditUnavailable(f"model registry unavailable: {exc}", self.retry_after_s) from None
            request_context.annotate(model=manifest.name, version=manifest.version)
            attributes = validate_attributes(manifest.inputs, request.attributes)
        return PendingDecision(
            request_id=request.request_id or f"req-{uuid.uuid4()}",
            subject_id=request.subject_id,
            model=manifest.name,
            version=manifest.version,
            attributes=attributes,
            request_sha256=request_sha256(request),
            received_at=self.clock(),
            trace=trace,
        )

    # -- worker-thread side ------------------------------------------------
    def decide_batch(self, batch: Sequence[PendingDecision]) -> list[DecisionResponse | ServiceError]:
        """Decide a micro-batch; one outcome per input, in order, never an exception."""
        return self.commit_batch(self.compute_batch(batch))

    def compute_batch(self, batch: Sequence[PendingDecision]) -> ComputedBatch:
        """Stage 1 (CPU): claim the batch's request ids, answer known ones, score
        and explain the rest. Nothing is written; the batcher overlaps this
        with the previous batch's commit. Claims taken here are released by
        commit_batch (or here, if this stage fails)."""
        with tracing.batch_span("verdict.batch.compute", (item.trace for item in batch), batch_size=len(batch)):
            return self._compute(batch)

    def _compute(self, batch: Sequence[PendingDecision]) -> ComputedBatch:
        computed = ComputedBatch(batch=batch, outcomes=[None] * len(batch), trace=tracing.current_span_context())
        try:
            self._claim_and_answer_known(computed)
            self._refuse_torn_groups(computed)
            if computed.fresh:
                fresh, computed.fresh = computed.fresh, []
                for i, made in zip(fresh, self._score_and_explain([batch[i] for i in fresh]), strict=True):
                    if isinstance(made, ServiceError):  # refused (model unavailable, output invalid): no record
                        computed.outcomes[i] = made
                    else:
                        computed.fresh.append(i)
                        computed.clear.append(made)
        except (StoreError, ChainError) as exc:
            computed.error = exc
        except BaseException:
            self._release_claims(computed)
            raise
        return computed

    def commit_batch(self, computed: ComputedBatch) -> list[DecisionResponse | ServiceError]:
        """Stage 2 (I/O): append the batch's records durably, then answer from them.
        Never raises: a store failure answers every open request with AuditUnavailable."""
        with tracing.batch_span(
            "verdict.audit.commit",
            (item.trace for item in computed.batch),
            parent=computed.trace,
            batch_size=len(computed.batch),
        ):
            return self._commit(computed)

    def _commit(self, computed: ComputedBatch) -> list[DecisionResponse | ServiceError]:
        outcomes = computed.outcomes
        try:
            if computed.error is not None:
                raise computed.error
            if computed.fresh:
                # Sealed here, on the I/O stage (the keyring's durable transaction overlaps the
                # next batch's scoring), and always before the append: keys first, then records.
                computed.bodies = self._sealed(computed.clear)
                self._record_fresh(computed.batch, computed.fresh, computed.bodies, computed.clear, outcomes)
            self._answer_duplicates(computed.batch, computed.duplicates, outcomes)
        except (StoreError, ChainError) as exc:
            self.metrics.failures.labels("audit_unavailable").inc()
            refused = AuditUnavailable(f"the decision was not recorded, so it was not made: {exc}", self.retry_after_s)
            waiting = {i for i, _ in computed.waiting}  # answered below, from their owner's outcome
            outcomes = [o if o is not None or i in waiting else refused for i, o in enumerate(outcomes)]
        finally:
            computed.outcomes = outcomes
            self._release_claims(computed)
        self._answer_waiting(computed.batch, computed.waiting, outcomes)
        # Every path above answers every request; were one left unanswered, it fails closed (no record, no decision).
        return [
            o
            if o is not None
            else AuditUnavailable("the decision was not recorded, so it was not made", self.retry_after_s)
            for o in outcomes
        ]

    def _claim_and_answer_known(self, computed: ComputedBatch) -> None:
        """Claim each request id for this batch and answer ids already decided
        (idempotency). Sets ``fresh`` (still to decide), ``owned`` (claimed
        here), ``waiting`` (owned by an earlier batch still in the pipeline:
        answered from its outcome once it commits) and ``duplicates``:
        (copy, original) pairs for an id repeated inside this batch, decided
        once and answered from that first decision.
        """
        batch, first_of = computed.batch, {}
        for i, item in enumerate(batch):
            if item.request_id in first_of:
                continue
            owner = self.claims.claim(item.request_id)
            if owner is not None:
                computed.waiting.append((i, owner))
                continue
            first_of[item.request_id] = i
            computed.owned.append(i)
            entry = self.index.get(item.request_id) if self.index is not None else None
            if entry is None:
                computed.fresh.append(i)
            else:
                computed.outcomes[i] = self._from_index(item, entry)
        computed.duplicates = [
            (i, first_of[item.request_id])
            for i, item in enumerate(batch)
            if item.request_id in first_of and first_of[item.request_id] != i
        ]

    @staticmethod
    def _refuse_torn_groups(computed: ComputedBatch) -> None:
        """A group is decided whole or not at all: when one of its rows is a request-id conflict,
        or (rows named by the call's id) some are already decided and others not, its new rows
        are refused with it, before anything is scored, so a refused call records nothing."""
        members: dict[int, tuple[DecisionGroup, list[int]]] = {}
        for i, item in enumerate(computed.batch):
            if item.group is not None:
                members.setdefault(id(item.group), (item.group, []))[1].append(i)
        refused: dict[int, ServiceError] = {}
        fresh = set(computed.fresh)
        for group, rows in members.values():
            new = [i for i in rows if i in fresh]
            conflict: ServiceError | None = next(
                (o for i in rows if isinstance(o := computed.outcomes[i], RequestIdConflict)), None
            )
            if conflict is None and group.infer_id is not None and new and len(new) < len(rows):
                conflict = InferIdConflict(group.infer_id, "other rows")
            if conflict is not None:
                refused.update(dict.fromkeys(new, conflict))
        if refused:
            computed.fresh = [i for i in computed.fresh if i not in refused]
            for i, error in refused.items():
                computed.outcomes[i] = error

    def _release_claims(self, computed: ComputedBatch) -> None:
        for i in computed.owned:
            item = computed.batch[i]
            self.claims.release(item.request_id, ClaimOutcome(item.request_sha256, computed.outcomes[i]))
        computed.owned = []

    def _answer_waiting(
        self, batch: Sequence[PendingDecision], waiting: list[tuple[int, Future[ClaimOutcome]]], outcomes: list
    ) -> None:
        """Answer requests whose id an earlier batch owned, from that batch's outcome.

        The earlier batch was handed to the commit executor first (the batcher
        submits commits in order), so its commit has started or finished: the
        wait is bounded by one commit. If it ended without a decision (a store
        failure), the index says whether another process decided the id;
        otherwise the client gets the owner's AuditUnavailable and retries.
        """
        for i, owner in waiting:
            item = batch[i]
            try:
                first = owner.result(timeout=self.claim_wait_s)
            except FutureTimeout:
                outcomes[i] = AuditUnavailable(
                    f"request_id {item.request_id!r} is still being decided by an earlier "
                    f"request; retry with the same request_id",
                    self.retry_after_s,
                )
                continue
            if isinstance(first.answer, DecisionResponse):
                if first.request_sha256 == item.request_sha256:
                    outcomes[i] = msgspec.structs.replace(first.answer, idempotent_replay=True)
                else:
                    self.metrics.failures.labels("conflict").inc()
                    outcomes[i] = RequestIdConflict(item.request_id)
                continue
            try:
                entry = self.index.get(item.request_id) if self.index is not None else None
                outcomes[i] = (
                    self._from_index(item, entry)
                    if entry is not None
                    else (
                        first.answer
                        if isinstance(first.answer, ServiceError)
                        else AuditUnavailable(
                            f"the earlier request with request_id {item.request_id!r} ended without a decision; "
                            f"retry with the same request_id",
                            self.retry_after_s,
                        )
                    )
                )
            except StoreError as exc:
                outcomes[i] = AuditUnavailable(f"the decision could not be read back: {exc}", self.retry_after_s)

    def _from_index(self, item: PendingDecision, entry: IndexEntry) -> DecisionResponse | ServiceError:
        if entry.request_sha256 != item.request_sha256:
            self.metrics.failures.labels("conflict").inc()
            return RequestIdConflict(item.request_id)
        try:
            # prove=False: hash and signature are checked, without re-reading the chain for an inclusion proof
            verified = read_decision(self.store, item.request_id, prove=False, trust=self.trust)
        except ReadError as exc:
            raise StoreError(f"the original decision for {item.request_id!r} cannot be read back: {exc}") from exc
        receipt = ReceiptOut(
            chain_id=verified.chain_id,
            seq=verified.seq,
            record_hash=verified.record_hash,
            signature=verified.signature,
            key_id=verified.key_id,
        )
        try:
            body = open_decision(self.personal, verified.body, self.retry_after_s)
        except ServiceError as exc:  # erased since (410), or its keyring unreachable (503)
            return exc
        return response_from_record(body, receipt, replay=True)

    def _retain(self, written: list[tuple[str, str | None, rec.DecisionBody]]) -> None:
        """Lock the batch's segment as long as its models' retention requires (S3 Object Lock;
        nothing on the filesystem store). The records are already durable: a failure here is
        logged and counted, and the immutability test reports the short lock."""
        if self.retention is None or not written:
            return
        try:
            extend_for_decisions(self.store, self.retention, written)
        except StoreError as exc:
            self.metrics.failures.labels("retention_extend").inc()
            _log.error("could not lengthen the retention of %s: %s", written[0][0], exc)

    def _sealed(self, clear: list[rec.DecisionBody]) -> list[rec.DecisionBody]:
        """The bodies to record: sealed under their subjects' keys (the keys and index rows
        durable first), or as they are when sealing is off. A keyring that cannot answer
        fails the batch closed, like a store that cannot (StoreError)."""
        if self.personal is None or not clear:
            return list(clear)
        try:
            with tracing.span("verdict.audit.seal", records=len(clear)):
                sealed = self.personal.seal_all(clear, now=self.clock())
        except StoreError:
            raise
        except (KeyringError, KekError, SealError, sqlite3.Error) as exc:
            self.health.failing(
                "keyring",
                "keyring_unavailable",
                "the data keyring cannot seal decisions: they fail closed (503) until it can (docs/operations.md §12)",
                error=f"{type(exc).__name__}: {exc}",
            )
            raise StoreError(f"the data keyring could not seal the decisions: {exc}") from exc
        if self.health.is_failing("keyring"):
            self.health.recovered("keyring", "keyring_recovered", "the data keyring seals decisions again")
        return sealed

    def _record_fresh(
        self,
        batch: Sequence[PendingDecision],
        fresh: list[int],
        bodies: list[rec.DecisionBody],
        clear: list[rec.DecisionBody],
        outcomes: list,
    ) -> None:
        if self.lane.writer is None:  # unsafe benchmark mode: no audit
            for i, body in zip(fresh, clear, strict=True):
                outcomes[i] = response_from_record(body, ReceiptOut("unaudited", -1, "", "", ""))
            return
        with tracing.span("verdict.audit.append", records=len(bodies)):
            results = self.lane.append(bodies)
        self._retain([(*_written_at(r), b) for r, b in zip(results, clear, strict=True)])
        for i, body, result in zip(fresh, clear, results, strict=True):  # one result per body
            if isinstance(result, IndexConflict):  # another replica (or an earlier batch) claimed the id meanwhile
                outcomes[i] = self._from_index(batch[i], result.existing)
            else:
                outcomes[i] = response_from_record(body, _receipt_out(result))
                self.metrics.decisions.labels(body.model.name, body.decision).inc()

    @staticmethod
    def _answer_duplicates(batch: Sequence[PendingDecision], duplicates: list[tuple[int, int]], outcomes: list) -> None:
        for dup, first in duplicates:
            original = outcomes[first]
            if isinstance(original, DecisionResponse):
                same = batch[dup].request_sha256 == batch[first].request_sha256
                outcomes[dup] = (
                    msgspec.structs.replace(original, idempotent_replay=True)
                    if same
                    else RequestIdConflict(batch[dup].request_id)
                )
            else:
                outcomes[dup] = original

    def _score_and_explain(self, items: list[PendingDecision]) -> list[rec.DecisionBody | ServiceError]:
        """Group by model version, run each group through the engine's one pipeline (score
        at the manifest's buckets, explain unless switched off, decide, word the reasons:
        the code replay re-runs), then build the record bodies. A group whose version
        cannot serve gets its error, not a body; so does each request whose score is
        outside the model's output space, and only it (the others' bits do not depend on
        it: rows never interact at a fixed bucket)."""
        made: dict[int, rec.DecisionBody | ServiceError] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault((item.model, item.version), []).append(i)
        for (name, version), members in groups.items():
            try:
                loaded = self.models.loaded(name, version)
            except ServiceError as exc:  # unavailable, revoked since prepare: the whole group, nothing recorded
                if isinstance(exc, ModelUnavailable):
                    self.metrics.failures.labels("model_unavailable").inc(len(members))
                made.update(dict.fromkeys(members, exc))
                continue
            except UnknownModel as exc:
                made.update(dict.fromkeys(members, UnknownModelVersion(name, version, str(exc))))
                continue
            made.update(self._decide_group(loaded, [(i, items[i]) for i in members]))
        return [made[i] for i in range(len(items))]

    def _stage(self, model: str, version: str) -> Callable[[str], AbstractContextManager[None]]:
        """Times the engine's stages of one batch group (``score``, ``explain``): a span each
        (``verdict.score``, ``verdict.explain``) and ``verdict_<stage>_seconds{model, version}``."""
        histograms = {
            "score": self.metrics.score_seconds.labels(model, version),
            "explain": self.metrics.explain_seconds.labels(model, version),
        }

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            with tracing.span(f"verdict.{name}", model=model, version=version):
                started = time.perf_counter()
                try:
                    yield
                finally:
                    histograms[name].observe(time.perf_counter() - started)

        return stage

    def _decide_group(
        self, loaded: LoadedVersion, members: list[tuple[int, PendingDecision]]
    ) -> dict[int, rec.DecisionBody | ServiceError]:
        made: dict[int, rec.DecisionBody | ServiceError] = {}
        manifest = loaded.runtime.manifest
        stage = self._stage(manifest.name, manifest.version)
        for attempt in range(2):  # a second pass only without the rows whose scores were refused
            try:
                decided = decide_rows(
                    loaded.runtime,
                    [item.attributes for _, item in members],
                    [seed_for(item.request_id) for _, item in members],
                    explainer=loaded.explainer if self.explain else None,
                    stage=stage,
                )
            except ModelOutputInvalid as exc:
                refused = dict(exc.rows)
                for k, (i, _) in enumerate(members):
                    if k in refused or attempt:  # a model whose rows interact after all: refuse them all
                        one = [(k, refused[k])] if k in refused else exc.rows
                        made[i] = ModelOutputInvalid(manifest.name, manifest.version, exc.space, one)
                        self.metrics.failures.labels("model_output_invalid").inc()
                        self.metrics.model_output_invalid.labels(manifest.name, manifest.version).inc()
                members = [member for k, member in enumerate(members) if k not in refused and not attempt]
                if not members:
                    return made
                continue
            decided_at = self.clock()
            for (i, item), outcome in zip(members, decided.outcomes, strict=True):
                made[i] = decision_body(
                    item,
                    loaded.runtime,
                    outcome,
                    decided,
                    decided_at=decided_at,
                    environment_sha256=self.environment_sha256,
                    manifest_sha256=loaded.manifest_sha256,
                )
            return made
        return made

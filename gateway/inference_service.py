"""Open Inference Protocol v2 semantics, shared by its REST routes and its gRPC service.

Why here and not in either transport: an infer call must be the very same
decisions ``/v1/decisions`` makes (validated by the same code, scored,
explained and recorded by the same batcher and audit lane, answered from the
record), and its refusals the same domain errors; REST and gRPC differ only in
how bytes become tensors and errors become status codes.

An infer call with N rows is N decisions submitted to the micro-batcher as
one group: they are decided and committed together (one durable append, up to
``max_batch`` rows), and the call answers only when all are recorded. An id
already used for other rows refuses the whole group before anything is
scored. A row refused later (its model output outside the declared space,
the trail unavailable) refuses the call with that row's error; rows already
recorded stay recorded and a retry with the same ids returns them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, TypeVarTuple

from verdict import __version__
from verdict.audit.stores import StoreError
from verdict.gateway import request_context
from verdict.gateway.api_models import DecisionResponse
from verdict.gateway.batcher import MicroBatcher
from verdict.gateway.decisions import DecisionGroup, PendingDecision
from verdict.gateway.inference_tensors import (
    OUTPUTS,
    InputTensor,
    OutputTensor,
    TensorError,
    TensorMetadata,
    decision_requests,
    input_metadata,
    output_metadata,
    output_tensors,
    row_attributes,
    tensor_errors,
)
from verdict.gateway.manifest import Manifest
from verdict.gateway.registry import RegistryError, UnknownModel
from verdict.gateway.schema import FieldError, InputValidationError
from verdict.gateway.service import Services
from verdict.gateway.service_errors import (
    AuditUnavailable,
    DecisionTimeout,
    InferIdConflict,
    ServiceError,
    UnknownModelVersion,
)

__all__ = [
    "EXTENSIONS",
    "PLATFORM",
    "SERVER_NAME",
    "InferRequest",
    "InferResult",
    "InferenceService",
    "ModelMetadata",
]

SERVER_NAME = "verdict"
PLATFORM = "verdict_torch_export"
EXTENSIONS = ("binary_tensor_data", "parameters")
"""The protocol extensions served (``GET /v2``, ServerMetadata)."""

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True)
class InferRequest:
    """An infer call as either transport decoded it."""

    model: str
    version: str | None
    inputs: Sequence[InputTensor]
    id: str | None = None
    parameters: Mapping[str, Any] | None = None
    outputs: Sequence[str] | None = None  # the outputs asked for (None: all)


@dataclass(frozen=True)
class InferResult:
    model: str
    version: str
    id: str | None
    decisions: list[DecisionResponse]
    outputs: list[OutputTensor]


class InferenceService:
    """The protocol's operations over this gateway's services (no transport in here)."""

    def __init__(
        self,
        services: Services,
        batcher: MicroBatcher[PendingDecision, Any, DecisionResponse | ServiceError],
        executor: concurrent.futures.Executor,
    ) -> None:
        self.services, self.batcher, self.executor = services, batcher, executor

    def _run(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> asyncio.Future[_T]:
        """Blocking work (registry and index reads) off the event loop, in a copy of the call's
        context (its request id on log lines, its span the parent of validation's)."""
        return request_context.off_loop(self.executor, fn, *args)

    # -- health and metadata ---------------------------------------------------------------
    def server_metadata(self) -> tuple[str, str, tuple[str, ...]]:
        return SERVER_NAME, __version__, EXTENSIONS

    async def server_ready(self) -> bool:
        return (await self._run(self.services.readiness)).ready

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        manifest = await self._run(self._manifest, name, version)
        versions = await self._run(self.services.models.registry.versions, name)
        return ModelMetadata(
            name=manifest.name,
            versions=list(versions),
            platform=PLATFORM,
            inputs=input_metadata(manifest),
            outputs=output_metadata(manifest),
        )

    async def model_ready(self, name: str, version: str | None) -> bool:
        """Whether this replica serves the version now (None: the production version)."""
        manifest = await self._run(self._manifest, name, version)
        return (manifest.name, manifest.version) in self.services.models.loaded_versions()

    def _manifest(self, name: str, version: str | None, *, serving: bool = False) -> Manifest:
        """The version's manifest; ``serving``: refusing what a decision request would be
        refused up front (revoked, unready)."""
        models = self.services.models
        try:
            return models.serving_manifest(name, version) if serving else models.manifest(name, version)
        except UnknownModel as exc:
            raise UnknownModelVersion(name, version, str(exc)) from None
        except (RegistryError, StoreError) as exc:
            raise AuditUnavailable(f"model registry unavailable: {exc}", self.services.settings.retry_after_s) from None

    # -- infer -----------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResult:
        """Decide every row (raises TensorError for a bad tensor or parameter, the domain
        errors of ``/v1/decisions`` otherwise)."""
        if request.outputs is not None:
            for name in request.outputs:
                if name not in OUTPUTS:
                    raise TensorError(name, "unknown_output", f"is not an output of this model; outputs: {OUTPUTS}")
        manifest, pending = await self._run(self._prepare, request)
        settings = self.services.settings
        try:
            outcomes = await asyncio.wait_for(self.batcher.submit_group(pending), settings.request_timeout_s)
        except TimeoutError:
            self.services.metrics.failures.labels("timeout").inc()
            raise DecisionTimeout(settings.request_timeout_s, settings.retry_after_s) from None
        decisions = []
        for outcome in outcomes:
            if isinstance(outcome, ServiceError):
                raise outcome
            decisions.append(outcome)
        infer_id = pending[0].group.infer_id if pending[0].group else None
        if infer_id is not None and all(d.idempotent_replay for d in decisions):
            await self._run(self._check_more_rows, infer_id, len(decisions))
        request_context.annotate(
            model=manifest.name,
            version=manifest.version,
            rows=len(decisions),
            decisions=dict(Counter(d.decision for d in decisions)),
            idempotent_replays=sum(d.idempotent_replay for d in decisions),
        )
        outputs = output_tensors(manifest, decisions)
        if request.outputs is not None:
            asked = set(request.outputs)
            outputs = [t for t in outputs if t.name in asked]
        return InferResult(manifest.name, manifest.version, request.id, decisions, outputs)

    def _prepare(self, request: InferRequest) -> tuple[Manifest, list[PendingDecision]]:
        """Validate every row exactly as ``/v1/decisions`` validates a body, and make the rows
        one group: the batch decides it whole or refuses it whole (an id already used for other
        rows: gateway.decisions), with no index read here on the way in."""
        decisions = self.services.decisions
        manifest = self._manifest(request.model, request.version, serving=True)
        _, rows = row_attributes(manifest, request.inputs)
        requests = decision_requests(
            request.model, request.version, rows, request.inputs, request.parameters or {}, request.id
        )
        pending: list[PendingDecision] = []
        errors: list[tuple[int, FieldError]] = []
        for i, one in enumerate(requests):
            try:
                pending.append(decisions.prepare(one))
            except InputValidationError as exc:
                errors.extend((i, e) for e in exc.errors)
        if errors:
            raise tensor_errors(errors)
        named = {t.name for t in request.inputs} | set(request.parameters or {})
        group = DecisionGroup(request.id if request.id and "request_id" not in named else None)
        return manifest, [replace(p, group=group) for p in pending]

    def _check_more_rows(self, infer_id: str, rows: int) -> None:
        """A retry answered wholly from the record: refuse it if the id first named more rows
        (one index read, on retries only; fewer or other rows were refused by the batch)."""
        index = self.services.decisions.index
        try:
            if index is not None and index.get(f"{infer_id}.{rows}") is not None:
                raise InferIdConflict(infer_id, f"more than {rows} row(s)")
        except StoreError as exc:
            raise AuditUnavailable(
                f"the audit index cannot be read: {exc}", self.services.settings.retry_after_s
            ) from None

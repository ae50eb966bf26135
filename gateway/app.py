"""The HTTP layer: routes, wiring and lifecycle. Logic lives in the services.

The services raise domain errors (gateway.service_errors); a route lets them
through, and gateway.problems' one table turns each into its problem.

Start-up order is fail-closed: the store must open, the signing key must
load and the chain writer must recover the durable head before the app
accepts a request; /readyz reports each of these.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, TypeVar, TypeVarTuple

import msgspec
from litestar import Litestar, MediaType, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader, State
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from verdict.gateway import observability
from verdict.gateway.api_models import (
    MODEL_NAME_PATTERN,
    MODEL_VERSION_PATTERN,
    DecisionRequest,
    DecisionResponse,
    ErasureDone,
    ErasureRequest,
    Health,
    ModelListing,
    Readiness,
    ReceiptOut,
    SignedReplayReport,
    ValidationStatus,
    VersionState,
)
from verdict.gateway.auth import authenticated_key
from verdict.gateway.batcher import MicroBatcher
from verdict.gateway.console.routes import console_router
from verdict.gateway.console.sessions import SessionStore
from verdict.gateway.decisions import AuditLane
from verdict.gateway.engine import Engine
from verdict.gateway.inference_http import inference_router
from verdict.gateway.inference_service import InferenceService
from verdict.gateway.lookups import ExplanationView, RecordView, SubjectDecisionsView
from verdict.gateway.manifest import Manifest
from verdict.gateway.observability import route_label
from verdict.gateway.openapi_contract import contract_config, guarded
from verdict.gateway.problems import exception_handlers, problem_responses
from verdict.gateway.registry import UnknownModel
from verdict.gateway.replay_reads import read_replay
from verdict.gateway.request_body import check_json_body
from verdict.gateway.request_context import off_loop
from verdict.gateway.schema import InputValidationError
from verdict.gateway.service import Services
from verdict.gateway.service_errors import (
    AuditUnavailable,
    DecisionErased,
    DecisionTimeout,
    InputsSealed,
    ModelNotPromoted,
    ModelOutputInvalid,
    ModelUnavailable,
    ModelVersionRevoked,
    NoSubjectRecords,
    NotExplained,
    RecordInvalid,
    ReplayNotFinished,
    ReplaysUnavailable,
    RequestIdConflict,
    ServiceError,
    SubjectAccessUnavailable,
    SubjectRequestInvalid,
    SubjectUnderHold,
    UnknownDecision,
    UnknownModelVersion,
)
from verdict.replay.service import (
    ReplayBusy,
    ReplayRequest,
    ReplayRequestError,
    ReplayService,
    ReplayStatus,
    UnknownReplay,
)

__all__ = ["create_app"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def _services(request: Request) -> Services:
    return request.app.state.services


def _run(request: Request, fn: Callable[[*_Ts], _T], *args: *_Ts) -> asyncio.Future[_T]:
    return off_loop(request.app.state.io_pool, fn, *args)


@post(
    "/v1/decisions",
    **guarded("score"),
    status_code=200,
    tags=["decisions"],
    summary="Make an audited, explained decision",
    responses=problem_responses(
        UnknownModelVersion,
        ModelNotPromoted,
        RequestIdConflict,
        InputsSealed,
        ModelVersionRevoked,
        DecisionErased,
        InputValidationError,
        RecordInvalid,
        ModelOutputInvalid,
        AuditUnavailable,
        DecisionTimeout,
        ModelUnavailable,
    ),
)
async def create_decision(request: Request, data: DecisionRequest) -> DecisionResponse:
    services = _services(request)
    pending = await _run(request, services.decisions.prepare, data)
    try:
        outcome = await asyncio.wait_for(request.app.state.batcher.submit(pending), services.settings.request_timeout_s)
    except TimeoutError:
        services.metrics.failures.labels("timeout").inc()
        raise DecisionTimeout(services.settings.request_timeout_s, services.settings.retry_after_s) from None
    if isinstance(outcome, ServiceError):  # the batch's answer for this request: refused, not a decision
        raise outcome
    return outcome


_LOOKUP_ERRORS = problem_responses(UnknownDecision, InputsSealed, DecisionErased, RecordInvalid, AuditUnavailable)
"""What a lookup of one decision can answer besides the record: gateway.lookups."""


@get(
    "/v1/decisions/{request_id:str}",
    **guarded("explain"),
    tags=["lookups"],
    summary="The verified audit record of a decision",
    responses=_LOOKUP_ERRORS,
)
async def get_decision(request: Request, request_id: str) -> RecordView:
    return await _run(request, _services(request).lookups.record, request_id, authenticated_key(request).key_id)


@get(
    "/v1/decisions/{request_id:str}/explanation",
    **guarded("explain"),
    tags=["lookups"],
    summary="GDPR / adverse-action explanation of a logged decision",
    responses=_LOOKUP_ERRORS,
)
async def get_explanation(request: Request, request_id: str) -> ExplanationView:
    return await _run(request, _services(request).lookups.explanation, request_id, authenticated_key(request).key_id)


@get(
    "/v1/decisions/{request_id:str}/explanation.png",
    **guarded("explain"),
    tags=["lookups"],
    summary="Waterfall chart of a logged decision's contributions",
    media_type="image/png",
    responses=problem_responses(
        UnknownDecision, NotExplained, InputsSealed, DecisionErased, RecordInvalid, AuditUnavailable
    ),
)
async def get_explanation_png(request: Request, request_id: str) -> Response[bytes]:
    data = await _run(
        request, _services(request).lookups.explanation_chart, request_id, authenticated_key(request).key_id, "png"
    )
    return Response(content=data, media_type="image/png")


@get("/v1/models", **guarded("score"), tags=["models"], summary="Registered models")
async def list_models(request: Request) -> list[ModelListing]:
    """Each model's versions, its production version, and whether this replica serves
    each version (a version that failed to load says why)."""
    models = _services(request).models

    def collect() -> list[ModelListing]:
        registry, loaded, unready = models.registry, set(models.loaded_versions()), models.unready()
        out = []
        for name in registry.names():
            promoted = registry.alias(name, "production")
            versions = registry.versions(name)
            states = {}
            for version in versions:
                revoked = models.revocation(name, version)
                if revoked is not None:
                    states[version] = VersionState(
                        "revoked",
                        f"revoked by {revoked.by} at {revoked.at}" + (f": {revoked.note}" if revoked.note else ""),
                    )
                elif (name, version) in loaded:
                    states[version] = VersionState("loaded")
                elif f"{name}:{version}" in unready:
                    states[version] = VersionState("unready", unready[f"{name}:{version}"])
                else:
                    states[version] = VersionState("not_loaded")
            validation = {}
            for version in versions:
                event = registry.validation_status(name, version)
                if event is not None:
                    validation[version] = ValidationStatus(event.status, event.at, event.by, event.note or None)
            out.append(
                ModelListing(
                    name=name,
                    versions=versions,
                    production=promoted.version if promoted else None,
                    states=states,
                    validation=validation,
                )
            )
        return out

    return await _run(request, collect)


SubjectIdParam = Annotated[str, Parameter(min_length=1, max_length=128, description="The data subject's id")]


@get(
    "/v1/subjects/{subject_id:str}/decisions",
    **guarded("explain"),
    tags=["subjects"],
    summary="Every decision about a data subject, explained and verified (GDPR Art. 15)",
    responses=problem_responses(
        UnknownDecision, InputsSealed, DecisionErased, RecordInvalid, AuditUnavailable, SubjectAccessUnavailable
    ),
)
async def get_subject_decisions(request: Request, subject_id: SubjectIdParam) -> SubjectDecisionsView:
    return await _run(
        request, _services(request).lookups.subject_decisions, subject_id, authenticated_key(request).key_id
    )


@delete(
    "/v1/subjects/{subject_id:str}",
    **guarded("admin"),
    status_code=200,
    tags=["subjects"],
    summary="Erase a data subject's personal data by destroying their key (GDPR Art. 17)",
    responses=problem_responses(
        NoSubjectRecords, SubjectUnderHold, SubjectRequestInvalid, AuditUnavailable, SubjectAccessUnavailable
    ),
)
async def erase_subject(request: Request, subject_id: SubjectIdParam, data: ErasureRequest) -> ErasureDone:
    subjects = _services(request).subjects
    if subjects is None:
        raise SubjectAccessUnavailable()
    actor = authenticated_key(request).key_id
    done = await _run(request, subjects.erase, subject_id, data.basis, actor)
    receipt = done.receipt
    assert receipt is not None  # an erasure made here was recorded here
    return ErasureDone(
        erased_decisions=list(done.body.request_ids),
        key_refs=list(done.body.key_refs),
        basis=done.body.basis,
        by=done.body.by,
        erased_at=done.body.at,
        record=ReceiptOut(receipt.chain_id, receipt.seq, receipt.record_hash, receipt.signature, receipt.key_id),
    )


# Checked at the edge: a name outside the registry's alphabet can never be
# registered (400 naming the parameter), and must never reach the store as a key.
ModelName = Annotated[str, Parameter(pattern=MODEL_NAME_PATTERN, description="A registered model name")]
ModelVersion = Annotated[str, Parameter(pattern=MODEL_VERSION_PATTERN, description="A registered version of the model")]


_MANIFEST = {200: ResponseSpec(Manifest, description="The manifest as registered", generate_examples=False)}


@get(
    "/v1/models/{name:str}",
    **guarded("score"),
    tags=["models"],
    summary="A model's production manifest",
    responses=_MANIFEST
    | problem_responses(UnknownModelVersion, ModelNotPromoted, ModelVersionRevoked, ModelUnavailable),
)
async def get_model(request: Request, name: ModelName) -> Response[bytes]:
    return await _manifest_response(request, name, None)


@get(
    "/v1/models/{name:str}/versions/{version:str}",
    **guarded("score"),
    tags=["models"],
    summary="A model version's manifest",
    responses=_MANIFEST | problem_responses(UnknownModelVersion, ModelUnavailable),
)
async def get_model_version(request: Request, name: ModelName, version: ModelVersion) -> Response[bytes]:
    return await _manifest_response(request, name, version)


async def _manifest_response(request: Request, name: str, version: str | None) -> Response[bytes]:
    try:
        manifest = await _run(request, _services(request).models.manifest, name, version)
    except UnknownModel as exc:
        raise UnknownModelVersion(name, version, str(exc)) from None
    return Response(content=msgspec.json.encode(manifest), media_type=MediaType.JSON)


def _replays(request: Request) -> ReplayService:
    service = _services(request).replays
    if service is None:
        raise ReplaysUnavailable()
    return service


@post(
    "/v1/replays",
    **guarded("replay"),
    status_code=202,
    tags=["replays"],
    summary="Start a replay of logged decisions (examiners)",
    responses=problem_responses(ReplayRequestError, ReplayBusy, ReplaysUnavailable),
    response_headers=[
        ResponseHeader(name="Location", description="The new replay's URL", documentation_only=True, required=True)
    ],
)
async def start_replay(request: Request, data: ReplayRequest) -> Response[ReplayStatus]:
    status = await _run(request, _replays(request).start_replay, data, authenticated_key(request).key_id)
    return Response(content=status, status_code=202, headers={"Location": f"/v1/replays/{status.replay_id}"})


@get(
    "/v1/replays/{replay_id:str}",
    **guarded("replay"),
    tags=["replays"],
    summary="Replay status and summary",
    responses=problem_responses(UnknownReplay, AuditUnavailable, ReplaysUnavailable),
)
async def get_replay(request: Request, replay_id: str) -> ReplayStatus:
    return await _replay_read(request, replay_id, "status")


@get(
    "/v1/replays/{replay_id:str}/report.json",
    **guarded("replay"),
    tags=["replays"],
    summary="The signed JSON replay report",
    media_type=MediaType.JSON,
    responses={200: ResponseSpec(SignedReplayReport, description="The signed report", generate_examples=False)}
    | problem_responses(UnknownReplay, ReplayNotFinished, AuditUnavailable, ReplaysUnavailable),
)
async def get_replay_report(request: Request, replay_id: str) -> Response[bytes]:
    return Response(content=await _replay_read(request, replay_id, "report.json"), media_type=MediaType.JSON)


@get(
    "/v1/replays/{replay_id:str}/report.html",
    **guarded("replay"),
    tags=["replays"],
    summary="The replay report for an examiner",
    media_type=MediaType.HTML,
    responses=problem_responses(UnknownReplay, ReplayNotFinished, AuditUnavailable, ReplaysUnavailable),
)
async def get_replay_report_html(request: Request, replay_id: str) -> Response[str]:
    return Response(content=await _replay_read(request, replay_id, "report.html"), media_type=MediaType.HTML)


async def _replay_read(request: Request, replay_id: str, resource: str):  # noqa: ANN202
    """Scoped to the key that started the replay (or admin) and recorded: gateway.replay_reads."""
    services = _services(request)
    return await _run(
        request, read_replay, _replays(request), services.lookups, replay_id, authenticated_key(request), resource
    )


@get("/healthz", tags=["operations"], summary="Liveness", include_in_schema=True)
async def healthz() -> Health:
    return Health()


@get(
    "/readyz",
    tags=["operations"],
    summary="Readiness: models loaded, store writable, signer ready",
    responses={503: ResponseSpec(Readiness, description="Not ready: the failing checks", generate_examples=False)},
)
async def readyz(request: Request) -> Response[Readiness]:
    """Ready while at least one model serves; ``unready_models`` names the versions that
    failed to load, with the reason (their requests get 503 model-unavailable)."""
    readiness = await _run(request, _services(request).readiness)
    ready = readiness.ready
    return Response(
        content=Readiness(
            status="ready" if ready else "not_ready",
            checks=readiness.checks,
            unready_models=readiness.unready_models,
        ),
        status_code=200 if ready else 503,
        headers={} if ready else {"Retry-After": str(_services(request).settings.retry_after_s)},
    )


@get("/metrics", tags=["operations"], summary="Prometheus metrics", media_type="text/plain")
async def metrics(request: Request) -> Response[bytes]:
    return Response(content=generate_latest(_services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _observe(services: Services):  # noqa: ANN202
    """Request count and latency per route template (``/v1/decisions/{request_id}``; one
    ``unmatched`` label for every path no route matched), recorded when the response starts."""

    async def before_send_hook(message, scope) -> None:  # noqa: ANN001
        if message["type"] == "http.response.start":
            label = route_label(scope)
            started = scope.get("state", {}).get("verdict_started")
            services.metrics.requests.labels(scope.get("method", ""), label, str(message["status"])).inc()
            if started is not None:
                services.metrics.latency.labels(label).observe(time.perf_counter() - started)

    return before_send_hook


async def _annotate_response(response: Response) -> Response:
    """Litestar's ``after_request``: a decision's model, version, outcome and request id (the
    audit key) go on the request's access line, and the ``verdict.respond`` span starts
    (encoding and sending the answer; gateway.observability ends it with the last byte)."""
    content = response.content
    if isinstance(content, DecisionResponse):
        observability.annotate(
            model=content.model.name,
            version=content.model.version,
            decision=content.decision,
            decision_request_id=content.request_id,
            idempotent_replay=content.idempotent_replay,
        )
    observability.responding()
    return response


async def _checkpoint_timer(lane: AuditLane, pool: concurrent.futures.Executor, interval_s: float) -> None:
    """Checkpoint the chain's tail within ``interval_s`` of its newest record,
    traffic or not (the writer only checks on its next append otherwise).
    Ticks at a quarter of the interval (at most every 5 s); a failure is
    logged and counted by the lane (readiness), and the next tick tries again."""
    tick = max(0.05, min(5.0, interval_s / 4))
    loop = asyncio.get_running_loop()
    while not lane.stopped:
        await asyncio.sleep(tick)
        try:
            await loop.run_in_executor(pool, lane.checkpoint_if_due)
        except Exception as exc:  # noqa: BLE001 - the store or chain error is on the lane; keep ticking
            _log.warning("checkpoint of chain %s failed: %s", lane.writer.chain_id if lane.writer else "?", exc)


async def _model_retry_timer(models: Engine, pool: concurrent.futures.Executor) -> None:
    """Load again, when due, the production versions that failed to load (a store that did
    not answer at start-up must not leave a model unready for good, and a replica whose
    only model failed gets no request that would retry it). Ticks at a quarter of the
    engine's retry interval (at most every 5 s); the engine decides what is due."""
    tick = max(0.05, min(5.0, models.load_retry_s / 4))
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(tick)
        if not models.unready():
            continue
        try:
            await loop.run_in_executor(pool, models.retry_unready)
        except Exception as exc:  # noqa: BLE001 - the engine records each version's failure; keep ticking
            _log.warning("retrying unready models failed: %s", exc)


def create_app(services: Services) -> Litestar:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="verdict-decide")
    commit_pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=services.settings.commit_threads, thread_name_prefix="verdict-commit"
    )
    io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="verdict-io")
    batcher: MicroBatcher = MicroBatcher(
        services.decisions.compute_batch,
        services.decisions.commit_batch,
        max_batch=services.settings.max_batch,
        max_wait_s=services.settings.max_wait_ms / 1000,
        executor=pool,
        finish_executor=commit_pool,
        max_finishing=services.settings.commit_threads + 1,
        on_batch=services.metrics.batch_size.observe,
    )
    services.metrics.queue_depth.set_function(lambda: batcher.queued)
    services.metrics.in_flight.set_function(lambda: batcher.in_flight)

    inference = InferenceService(services, batcher, io_pool)  # the Open Inference Protocol, REST and gRPC
    timer: list[asyncio.Task] = []

    grpc_server: list = []

    async def start() -> None:
        batcher.start()
        # The console's first pages find the chains read and the monitoring summary folded.
        threading.Thread(target=services.lookups.warm, name="verdict-leaves", daemon=True).start()
        if services.monitor is not None:
            services.monitor.refresh_in_background(0)
        if services.settings.grpc_port:
            # The protocol's message names would clash with a client's copy of them in the same process.
            # lazy: grpc and the generated messages only in a process that serves gRPC
            from verdict.gateway.inference_grpc import InferenceGrpcServer

            server = InferenceGrpcServer(
                inference,
                services.apikeys,
                services.settings.host,
                services.settings.grpc_port,
                services.settings.max_body_bytes,
            )
            await server.start()
            grpc_server.append(server)
        timer.append(
            asyncio.get_running_loop().create_task(_model_retry_timer(services.models, io_pool), name="model-retry")
        )
        if services.lane.writer is not None:
            timer.append(
                asyncio.get_running_loop().create_task(
                    _checkpoint_timer(services.lane, io_pool, services.settings.checkpoint_interval_s),
                    name="checkpoints",
                )
            )

    async def stop() -> None:
        for server in grpc_server:
            await server.stop()
        for task in timer:
            task.cancel()
        await asyncio.gather(*timer, return_exceptions=True)
        await batcher.stop()
        pool.shutdown(wait=True)
        commit_pool.shutdown(wait=True)
        io_pool.shutdown(wait=True)
        if services.replays is not None:
            services.replays.close()
        if services.lane.writer is not None:
            services.lane.writer.close()  # the shutdown checkpoint, handed to the witnesses
        if services.witnessing is not None:
            await asyncio.get_running_loop().run_in_executor(None, services.witnessing.close)

    async def before_request(request: Request) -> None:
        request.scope.setdefault("state", {})["verdict_started"] = time.perf_counter()
        await check_json_body(request)  # after the guards, before the body is decoded or anything is scored

    return Litestar(
        route_handlers=[
            create_decision,
            get_decision,
            get_explanation,
            get_explanation_png,
            get_subject_decisions,
            erase_subject,
            list_models,
            get_model,
            get_model_version,
            start_replay,
            get_replay,
            get_replay_report,
            get_replay_report_html,
            healthz,
            readyz,
            metrics,
            inference_router(),
            console_router(),
        ],
        exception_handlers=exception_handlers,
        state=State(
            {
                "services": services,
                "apikeys": services.apikeys,
                "batcher": batcher,
                "io_pool": io_pool,
                "inference": inference,
                "console_sessions": SessionStore(
                    services.apikeys,
                    idle_s=services.settings.console_idle_s,
                    max_age_s=services.settings.console_max_age_s,
                ),
            }
        ),
        on_startup=[start],
        on_shutdown=[stop],
        before_request=before_request,
        after_request=_annotate_response,
        before_send=[_observe(services)],
        logging_config=None,  # `verdict serve` configures the process's logging (gateway.log_setup)
        request_max_body_size=services.settings.max_body_bytes,
        openapi_config=contract_config(title="Verdict gateway", version="1", path="/schema"),
        debug=False,
    )

"""The Open Inference Protocol v2 over REST: ``/v2`` routes, thin over gateway.inference_service.

Why a router of its own: the protocol's clients (tritonclient, the kserve
client, load balancers' probes) expect its error body, ``{"error": "..."}``,
not problem+json, so every error under these routes goes through this
router's handlers (same statuses as ``/v1``: gateway.problems' table). Health
and server metadata are open, like ``/healthz``; model metadata, readiness and
infer need an API key with the ``score`` scope, like ``/v1/decisions``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from verdict.gateway.api_models import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from verdict.gateway.inference_rest import HEADER_LENGTH, InferResponseJson, decode_infer_request, encode_infer_response
from verdict.gateway.inference_service import InferenceService
from verdict.gateway.inference_tensors import TensorError, TensorMetadata
from verdict.gateway.openapi_contract import guarded
from verdict.gateway.problems import PROBLEMS
from verdict.gateway.service_errors import ServiceError

__all__ = ["ErrorJson", "inference_router"]

_log = logging.getLogger(__name__)


class ErrorJson(msgspec.Struct):
    """The protocol's error body: one sentence naming what was wrong (the tensor and the rule)."""

    error: str


class LiveJson(msgspec.Struct):
    live: bool


class ReadyJson(msgspec.Struct):
    ready: bool


class ServerMetadataJson(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class TensorMetadataJson(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataJson(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataJson]
    outputs: list[TensorMetadataJson]


ModelName = Annotated[str, Parameter(pattern=MODEL_NAME_PATTERN, description="A registered model name")]


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(ErrorJson, description="The protocol's error body") for status in statuses}


def _inference(request: Request) -> InferenceService:
    return request.app.state.inference


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(content=ErrorJson(message), status_code=status, media_type=MediaType.JSON, headers=headers)


def _tensor_error(request: Request, exc: TensorError) -> Response:
    return _error(400, str(exc))


def _mapped(request: Request, exc: Exception) -> Response:
    """A domain or guard error with the status (and Retry-After, WWW-Authenticate) /v1 gives it."""
    kind = next(PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS)
    detail = exc.detail if isinstance(exc, (ServiceError, HTTPException)) else str(exc)
    return _error(kind.status, str(detail), kind.headers(exc))


def _validation(request: Request, exc: ValidationException) -> Response:
    messages = exc.extra if isinstance(exc.extra, list) else []
    where = "; ".join(f"{m.get('key', '?')}: {m.get('message', '')}" for m in messages if isinstance(m, dict))
    return _error(400, f"a URL parameter breaks a rule: {where or exc.detail}")


def _http(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    return _error(status, str(exc.detail) if status < 500 else "the server could not complete the request")


def _unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "internal error: the request failed; no decision was returned")


_HANDLERS: dict[type[Exception] | int, Any] = {
    TensorError: _tensor_error,
    ValidationException: _validation,
    **dict.fromkeys(PROBLEMS, _mapped),
    HTTPException: _http,
    Exception: _unexpected,
}


def _tensors(items: list[TensorMetadata]) -> list[TensorMetadataJson]:
    return [TensorMetadataJson(t.name, t.datatype, list(t.shape)) for t in items]


@get("/", summary="Server metadata: name, version, supported protocol extensions", responses=_errors(500))
async def server_metadata(request: Request) -> ServerMetadataJson:
    name, version, extensions = _inference(request).server_metadata()
    return ServerMetadataJson(name, version, list(extensions))


@get("/health/live", summary="Liveness (always true while the process answers)", responses=_errors(500))
async def server_live() -> LiveJson:
    return LiveJson(True)


@get(
    "/health/ready",
    summary="Readiness: models loaded, store writable, signer ready (400 while not ready)",
    responses={400: ResponseSpec(ReadyJson, description="Not ready"), **_errors(500)},
)
async def server_ready(request: Request) -> Response[ReadyJson]:
    ready = await _inference(request).server_ready()
    return Response(ReadyJson(ready), status_code=200 if ready else 400)


_GUARDED = guarded("score")
_MODEL_ERRORS = _errors(400, 401, 403, 404, 409, 410, 500, 503)
_INFER_RESPONSES = {
    200: ResponseSpec(
        InferResponseJson,
        description="The outputs (JSON); with binary outputs asked for, this JSON header followed by their bytes "
        "(application/octet-stream, header Inference-Header-Content-Length)",
    ),
    **_errors(400, 401, 403, 404, 409, 410, 413, 500, 502, 503),
}
_INFER_DOC = (
    "One decision per row, each scored, explained and recorded exactly as POST /v1/decisions records it. "
    "The body is the protocol's JSON, optionally followed by raw tensor bytes (binary tensor data "
    "extension: header Inference-Header-Content-Length). See docs/api.md, 'Open Inference Protocol'."
)
_MODEL_ROUTE: dict[str, Any] = {"responses": _MODEL_ERRORS, **_GUARDED}
_INFER_ROUTE: dict[str, Any] = {
    "description": _INFER_DOC,
    "status_code": 200,
    "responses": _INFER_RESPONSES,
    **_GUARDED,
}


def _paths(tail: str) -> list[str]:
    """A model route without a version (the production version serves) and with one."""
    return [f"/models/{{model_name:str}}{tail}", f"/models/{{model_name:str}}/versions/{{model_version:str}}{tail}"]


OptionalVersion = Annotated[
    str | None, Parameter(pattern=MODEL_VERSION_PATTERN, description="A registered version (absent: production)")
]


@get(_paths(""), summary="Model metadata (the version named, else the production version)", **_MODEL_ROUTE)
async def model_metadata(
    request: Request, model_name: ModelName, model_version: OptionalVersion = None
) -> ModelMetadataJson:
    meta = await _inference(request).model_metadata(model_name, model_version)
    return ModelMetadataJson(meta.name, meta.versions, meta.platform, _tensors(meta.inputs), _tensors(meta.outputs))


@get(_paths("/ready"), summary="Whether this replica serves the version (400 while not)", **_MODEL_ROUTE)
async def model_ready(
    request: Request, model_name: ModelName, model_version: OptionalVersion = None
) -> Response[ReadyJson]:
    ready = await _inference(request).model_ready(model_name, model_version)
    return Response(ReadyJson(ready), status_code=200 if ready else 400)


@post(_paths("/infer"), summary="Audited, explained decisions for N rows", **_INFER_ROUTE)
async def infer(request: Request, model_name: ModelName, model_version: OptionalVersion = None) -> Response[bytes]:
    body = await request.body()
    infer_request, binary = decode_infer_request(model_name, model_version, body, request.headers.get(HEADER_LENGTH))
    result = await _inference(request).infer(infer_request)
    content, json_length = encode_infer_response(result, binary)
    if json_length is None:
        return Response(content=content, media_type=MediaType.JSON)
    return Response(content=content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})


def inference_router() -> Router:
    """The ``/v2`` routes with the protocol's error body."""
    return Router(
        path="/v2",
        route_handlers=[
            server_metadata,
            server_live,
            server_ready,
            model_metadata,
            model_ready,
            infer,
        ],
        exception_handlers=_HANDLERS,
        tags=["open inference protocol v2"],
    )

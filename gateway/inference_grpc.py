"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService``.

Why in the gateway process, on its event loop: an infer call over gRPC must
be the same decisions as over REST, through the same micro-batcher and the
same audit lane (one writer per chain), so the grpc.aio server runs beside
uvicorn on the same loop and calls gateway.inference_service directly.

Auth is the HTTP API's: ``authorization: Bearer <key>`` in the call's
metadata, the ``score`` scope for model metadata, readiness and infer
(liveness, readiness and server metadata are open). Errors are gRPC status
codes with the same sentence REST puts in ``{"error": ...}``; a 503's
Retry-After travels as the trailing metadata ``retry-after``. Outputs are
returned in ``raw_output_contents``, as Triton does (what its clients read).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from verdict.gateway import observability, request_context
from verdict.gateway.api_models import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from verdict.gateway.apikeys import ApiKeyStore
from verdict.gateway.inference_service import InferenceService, InferRequest
from verdict.gateway.inference_tensors import InputTensor, TensorError, TensorMetadata, decode_raw, encode_raw
from verdict.gateway.oip import open_inference_grpc_pb2 as pb
from verdict.gateway.problems import PROBLEMS
from verdict.gateway.service_errors import RequestIdConflict

__all__ = ["RPCS", "SERVICE", "InferenceGrpcServer"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    410: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    502: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
"""HTTP status of an error (gateway.problems) -> gRPC status code."""

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which ``InferTensorContents`` field carries each datatype (FP16 has none: raw only)."""

SERVICE = "inference.GRPCInferenceService"
RPCS: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}
"""The service's RPCs (all unary) and their messages, as the .proto declares them. Registered
here rather than through grpc_tools' generated servicer base, whose every method is a stub."""
_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(MODEL_VERSION_PATTERN)


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail)
        self.code, self.detail, self.trailing = code, detail, trailing


def _status_of(exc: BaseException) -> _Refused:
    if isinstance(exc, TensorError):
        return _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    kind = next((PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS), None)
    if kind is None:
        _log.error("unexpected error in a gRPC call", exc_info=exc)
        return _Refused(grpc.StatusCode.INTERNAL, "internal error: the request failed; no decision was returned")
    code = grpc.StatusCode.ALREADY_EXISTS if isinstance(exc, RequestIdConflict) else _CODES[kind.status]
    detail = getattr(exc, "detail", None) or str(exc)
    headers = kind.headers(exc)
    trailing = tuple((k.lower(), v) for k, v in headers.items() if k.lower() == "retry-after")
    return _Refused(code, str(detail), trailing)


def _model(name: str, version: str) -> tuple[str, str | None]:
    """The model and version a call names, checked like the REST path parameters: a name
    outside the registry's alphabet must never reach the store as a key."""
    if not _NAME.search(name):
        raise TensorError("model_name", "pattern", f"must match {MODEL_NAME_PATTERN}")
    if version and not _VERSION.search(version):
        raise TensorError("model_version", "pattern", f"must match {MODEL_VERSION_PATTERN}")
    return name, version or None


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def _inputs(request: pb.ModelInferRequest) -> list[InputTensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise TensorError(
            "raw_input_contents", "binary_data", f"holds {len(raw)} tensor(s) for {len(request.inputs)} input(s)"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            tensors.append(decode_raw(tensor.name, tensor.datatype, shape, raw[i]))
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None:
            raise TensorError(tensor.name, "datatype", f"{tensor.datatype!r} cannot be sent in contents")
        values = list(getattr(tensor.contents, field))
        others = [f for f in set(_CONTENTS.values()) - {field} if len(getattr(tensor.contents, f))]
        if others:
            raise TensorError(tensor.name, "datatype", f"a {tensor.datatype} tensor's data must be in {field}")
        if tensor.datatype == "BOOL":
            values = [bool(v) for v in values]
        tensors.append(InputTensor(tensor.name, tensor.datatype, tuple(shape), values))
    return tensors


def _tensor_metadata(items: list[TensorMetadata]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape) for t in items]


class _Servicer:
    """One coroutine per RPC of the service, each registered by :data:`RPCS`."""

    def __init__(self, inference: InferenceService, apikeys: ApiKeyStore) -> None:
        self.inference, self.apikeys = inference, apikeys

    def _authorize(self, context: grpc.aio.ServicerContext, scope: str = "score") -> None:
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("send an API key as the metadata 'authorization: Bearer <key>'")
        key = self.apikeys.authenticate(token.strip())
        if key is None:
            raise NotAuthorizedException("the API key is not valid")
        if scope not in key.scopes and "admin" not in key.scopes:
            raise PermissionDeniedException(f"this API key lacks the '{scope}' scope (it has: {', '.join(key.scopes)})")

    async def _answer(self, context: grpc.aio.ServicerContext, rpc: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one RPC as an observed call (request id, server span, access line: gateway.observability);
        every error becomes a status, none escapes as UNKNOWN."""
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        with observability.incoming("RPC", f"{SERVICE}/{rpc}", metadata, protocol="grpc") as observed:
            context.set_trailing_metadata(((request_context.REQUEST_ID_HEADER, observed.request_id),))
            try:
                answer = await call()
                observed.status = "OK"
                return answer
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                refused = _status_of(exc)
            observed.status = refused.code.name
            context.set_trailing_metadata(((request_context.REQUEST_ID_HEADER, observed.request_id), *refused.trailing))
            await context.abort(refused.code, refused.detail)
        raise AssertionError("abort() raises")  # pragma: no cover

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._answer(context, "ServerLive", call)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=await self.inference.server_ready())

        return await self._answer(context, "ServerReady", call)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> pb.ServerMetadataResponse:
            name, version, extensions = self.inference.server_metadata()
            return pb.ServerMetadataResponse(name=name, version=version, extensions=list(extensions))

        return await self._answer(context, "ServerMetadata", call)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> pb.ModelReadyResponse:
            self._authorize(context)
            name, version = _model(request.name, request.version)
            return pb.ModelReadyResponse(ready=await self.inference.model_ready(name, version))

        return await self._answer(context, "ModelReady", call)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> pb.ModelMetadataResponse:
            self._authorize(context)
            meta = await self.inference.model_metadata(*_model(request.name, request.version))
            return pb.ModelMetadataResponse(
                name=meta.name,
                versions=meta.versions,
                platform=meta.platform,
                inputs=_tensor_metadata(meta.inputs),
                outputs=_tensor_metadata(meta.outputs),
            )

        return await self._answer(context, "ModelMetadata", call)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> pb.ModelInferResponse:
            self._authorize(context)
            name, version = _model(request.model_name, request.model_version)
            request_context.annotate(model=name)
            result = await self.inference.infer(
                InferRequest(
                    model=name,
                    version=version,
                    inputs=_inputs(request),
                    id=request.id or None,
                    parameters={k: _parameter(v) for k, v in request.parameters.items()},
                    outputs=[o.name for o in request.outputs] or None,
                )
            )
            return pb.ModelInferResponse(
                model_name=result.model,
                model_version=result.version,
                id=request.id,
                outputs=[
                    pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
                    for t in result.outputs
                ],
                raw_output_contents=[encode_raw(t) for t in result.outputs],
            )

        return await self._answer(context, "ModelInfer", call)


class InferenceGrpcServer:
    """The gRPC listener, started and stopped with the HTTP app (same loop, same services)."""

    def __init__(self, inference: InferenceService, apikeys: ApiKeyStore, host: str, port: int, max_bytes: int) -> None:
        self._server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", max_bytes), ("grpc.so_reuseport", 0)]
        )
        servicer = _Servicer(inference, apikeys)
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, name),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (request, response) in RPCS.items()
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen for gRPC on {address}")

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace_s: float = 5.0) -> None:
        await self._server.stop(grace_s)

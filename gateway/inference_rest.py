"""The Open Inference Protocol's REST body: JSON tensors and the binary tensor data extension.

Why not Litestar's body decoding: an infer body may be a JSON header followed
by raw tensor bytes (``Inference-Header-Content-Length`` says where the JSON
ends), which no JSON decoder can take; and every malformed body must be
refused with the protocol's ``{"error": ...}`` naming the tensor and the rule,
before anything is decided. Encoding mirrors it: outputs asked for as binary
(``binary_data`` per output, or ``binary_data_output`` for all) follow the JSON
header as raw bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from verdict.gateway.inference_service import InferRequest, InferResult
from verdict.gateway.inference_tensors import DATATYPES, InputTensor, TensorError, decode_raw, encode_raw

__all__ = [
    "HEADER_LENGTH",
    "BinaryOutputs",
    "InferInputJson",
    "InferOutputJson",
    "InferRequestJson",
    "InferResponseJson",
    "decode_infer_request",
    "encode_infer_response",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_DIMENSIONS = 8

Parameter = bool | int | float | str


class RequestedOutputJson(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    parameters: dict[str, Parameter] | None = None


class InferInputJson(msgspec.Struct, forbid_unknown_fields=True):
    """One input tensor: ``data`` row-major (flat or nested), or its bytes after the
    JSON header (``parameters.binary_data_size``)."""

    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Parameter] | None = None


class InferRequestJson(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[InferInputJson]
    id: str | None = None
    parameters: dict[str, Parameter] | None = None
    outputs: list[RequestedOutputJson] | None = None


class InferOutputJson(msgspec.Struct, omit_defaults=True):
    """One output tensor: ``data`` (flat, row-major) unless it was sent as binary."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Parameter] | None = None


class InferResponseJson(msgspec.Struct, omit_defaults=True):
    model_name: str
    model_version: str
    outputs: list[InferOutputJson]
    id: str | None = None


def _flatten(data: Any, name: str) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item, name)
    elif isinstance(data, dict):
        raise TensorError(name, "data", "elements must be numbers, booleans or strings, not objects")
    else:
        yield data


def _json_tensor(tensor: InferInputJson) -> InputTensor:
    if tensor.data is None:
        raise TensorError(tensor.name, "data", "has neither data nor parameters.binary_data_size")
    values = list(_flatten(tensor.data, tensor.name))
    if tensor.datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise TensorError(tensor.name, "datatype", "BYTES data must be JSON strings")
        values = [v.encode("utf-8") for v in values]
    return InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), values)


def _check_declaration(tensor: InferInputJson) -> None:
    if tensor.datatype not in DATATYPES:
        raise TensorError(
            tensor.name, "datatype", f"{tensor.datatype!r} is not a datatype of the protocol ({sorted(DATATYPES)})"
        )
    if not 1 <= len(tensor.shape) <= MAX_DIMENSIONS or any(d < 0 for d in tensor.shape):
        raise TensorError(tensor.name, "shape", f"must list 1..{MAX_DIMENSIONS} non-negative dimensions")


@dataclass(frozen=True)
class BinaryOutputs:
    """Which outputs the caller asked for as raw bytes: all of them (request parameter
    ``binary_data_output``), or each by its own ``binary_data`` parameter (which wins)."""

    everything: bool = False
    each: Mapping[str, bool] = field(default_factory=dict)

    def wanted(self, name: str) -> bool:
        return self.each.get(name, self.everything)


def decode_infer_request(
    model: str, version: str | None, body: bytes, header_length: str | None
) -> tuple[InferRequest, BinaryOutputs]:
    """An infer call from its HTTP body, and how its outputs are to be encoded (raises
    TensorError naming what is wrong)."""
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise TensorError(HEADER_LENGTH, "header", "must be a whole number of bytes") from None
        if not 0 < length <= len(body):
            raise TensorError(HEADER_LENGTH, "header", f"must be 1..{len(body)} (the body's length), got {length}")
        head, rest = body[:length], body[length:]
    try:
        decoded = msgspec.json.decode(head, type=InferRequestJson)
    except msgspec.ValidationError as exc:
        raise TensorError("body", "schema", f"breaks the infer request schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TensorError("body", "json", f"is not JSON: {exc}") from None
    tensors: list[InputTensor] = []
    offset = 0
    for tensor in decoded.inputs:
        _check_declaration(tensor)
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            tensors.append(_json_tensor(tensor))
            continue
        if tensor.data is not None:
            raise TensorError(tensor.name, "binary_data", "has both data and parameters.binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(rest):
            raise TensorError(
                tensor.name,
                "binary_data",
                f"binary_data_size {size!r} is beyond the {len(rest) - offset} byte(s) left after the JSON header",
            )
        tensors.append(decode_raw(tensor.name, tensor.datatype, tensor.shape, rest[offset : offset + size]))
        offset += size
    if offset != len(rest):
        raise TensorError("body", "binary_data", f"{len(rest) - offset} byte(s) after the tensors belong to no input")
    parameters = dict(decoded.parameters or {})
    binary = BinaryOutputs(
        everything=parameters.pop("binary_data_output", False) is True,
        each={
            o.name: (o.parameters or {})["binary_data"] is True
            for o in decoded.outputs or ()
            if "binary_data" in (o.parameters or {})
        },
    )
    request = InferRequest(
        model=model,
        version=version,
        inputs=tensors,
        id=decoded.id or None,
        parameters=parameters,
        outputs=[o.name for o in decoded.outputs] if decoded.outputs is not None else None,
    )
    return request, binary


def encode_infer_response(result: InferResult, binary_outputs: BinaryOutputs) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs: list[InferOutputJson] = []
    binary: list[bytes] = []
    for tensor in result.outputs:
        if binary_outputs.wanted(tensor.name):
            raw = encode_raw(tensor)
            binary.append(raw)
            outputs.append(
                InferOutputJson(
                    tensor.name, tensor.datatype, list(tensor.shape), parameters={"binary_data_size": len(raw)}
                )
            )
            continue
        values = tensor.values
        data: list[Any] = (
            [v.decode("utf-8") for v in values] if isinstance(values, list) else values.reshape(-1).tolist()
        )
        outputs.append(InferOutputJson(tensor.name, tensor.datatype, list(tensor.shape), data=data))
    head = msgspec.json.encode(InferResponseJson(result.model, result.version, outputs, id=result.id))
    if not binary:
        return head, None
    return head + b"".join(binary), len(head)

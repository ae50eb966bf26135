"""Open Inference Protocol v2 tensors <-> Verdict attributes and decisions.

Why a module of its own, with no HTTP or gRPC in it: REST (JSON and binary
tensors) and gRPC carry the same tensors, and both must turn them into the
very same decision requests a ``/v1/decisions`` call makes (same record, same
bits), and refuse a bad tensor with the same sentence naming the tensor and
the rule. The transports only decode bytes into :class:`InputTensor` and
encode :class:`OutputTensor`.

The mapping (docs/api.md "Open Inference Protocol"):

- one input tensor per model attribute, named as the attribute, shape
  ``[N]`` or ``[N, 1]`` (N rows = N decisions): ``integer`` attributes are
  INT64, ``number`` FP64, categories BYTES (string codes) or INT64 (integer
  codes). Narrower integer and float datatypes are accepted where widening
  is exact.
- optional BYTES input tensors ``request_id`` and ``subject_id`` ([N]) give
  each row its idempotency key and data subject; request ``parameters`` of
  the same names do it for every row (a comma-separated list of N request
  ids; one subject for all rows).
- without request ids, an infer ``id`` names its rows ``<id>.0`` ... ``<id>.N-1``.
- outputs: ``score`` FP64 [N], ``decision`` BYTES [N], ``contributions`` FP64
  [N, d] (attributes in schema order), ``base_value`` FP64 [N], ``reasons``
  BYTES [N] (a JSON array per row), ``request_id`` BYTES [N] and ``receipt``
  BYTES [N] (a JSON object per row: where and how the decision was recorded).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from verdict.gateway.api_models import DecisionRequest, DecisionResponse
from verdict.gateway.manifest import Manifest
from verdict.gateway.schema import AttributeSpec, FieldError

__all__ = [
    "IDENTITY_INPUTS",
    "OUTPUTS",
    "InputTensor",
    "OutputTensor",
    "TensorError",
    "TensorMetadata",
    "attribute_datatype",
    "decision_requests",
    "decode_raw",
    "encode_raw",
    "input_metadata",
    "output_metadata",
    "output_tensors",
    "row_attributes",
    "tensor_errors",
]

IDENTITY_INPUTS = ("request_id", "subject_id")
"""Optional per-row BYTES inputs that say who a row is about, not what the model reads."""

OUTPUTS = ("score", "decision", "contributions", "base_value", "reasons", "request_id", "receipt")
"""Every output an infer response can carry, in the order they are returned."""

_DTYPES: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_INTEGERS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOATS = frozenset({"FP16", "FP32", "FP64"})
DATATYPES = frozenset(_DTYPES) | {"BYTES"}


class TensorError(ValueError):
    """A tensor (or request parameter) breaks a rule: which, which rule, a sentence.
    REST answers it as ``{"error": ...}`` with 400, gRPC as INVALID_ARGUMENT."""

    def __init__(self, tensor: str, rule: str, message: str, *, detail: str | None = None) -> None:
        self.tensor, self.rule = tensor, rule
        super().__init__(detail or f"{tensor}: {message} (rule: {rule})")


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: its declared datatype and shape, and its elements flattened
    row-major, as Python values (int, float, bool, or bytes for BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]


@dataclass(frozen=True)
class OutputTensor:
    """One output: ``values`` is a numpy array (numeric) or a list of bytes (BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray | list[bytes]


def attribute_datatype(spec: AttributeSpec) -> str:
    """The datatype an attribute's tensor is declared with in the model's metadata."""
    if spec.kind == "category":
        return "INT64" if spec.categories and isinstance(spec.categories[0], int) else "BYTES"
    return "INT64" if spec.kind == "integer" else "FP64"


def input_metadata(manifest: Manifest) -> list[TensorMetadata]:
    return [TensorMetadata(spec.name, attribute_datatype(spec), (-1, 1)) for spec in manifest.inputs]


def output_metadata(manifest: Manifest) -> list[TensorMetadata]:
    width = len(manifest.inputs)
    shapes = {"contributions": (-1, width)}
    types = {"score": "FP64", "contributions": "FP64", "base_value": "FP64"}
    return [TensorMetadata(name, types.get(name, "BYTES"), shapes.get(name, (-1,))) for name in OUTPUTS]


def _accepted(declared: str) -> frozenset[str]:
    """Datatypes a client may send for an attribute declared ``declared``: exact widenings only."""
    if declared == "FP64":
        return _FLOATS | _INTEGERS  # an integer is a number, as in JSON
    if declared == "INT64":
        return _INTEGERS
    return frozenset({declared})


def _rows_of(tensor: InputTensor) -> int:
    shape = tensor.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        if shape[0] < 1:
            raise TensorError(tensor.name, "shape", f"must hold at least one row, got shape {list(shape)}")
        return shape[0]
    raise TensorError(tensor.name, "shape", f"must have shape [N] or [N, 1], got {list(shape)}")


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def _check_elements(tensor: InputTensor) -> None:
    """Elements match the shape and the datatype (a JSON tensor's data carries its own types)."""
    if len(tensor.values) != _count(tensor.shape):
        raise TensorError(
            tensor.name,
            "shape",
            f"holds {len(tensor.values)} element(s) but shape {list(tensor.shape)} needs {_count(tensor.shape)}",
        )
    kind = tensor.datatype
    for value in tensor.values:
        if kind == "BYTES":
            ok = isinstance(value, bytes)
        elif kind == "BOOL":
            ok = isinstance(value, bool)
        elif kind in _INTEGERS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise TensorError(tensor.name, "datatype", f"element {value!r} is not a {kind} value")


def _text(tensor: InputTensor, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TensorError(tensor.name, "encoding", "BYTES elements must be UTF-8 text") from None


def row_attributes(manifest: Manifest, tensors: Sequence[InputTensor]) -> tuple[int, list[dict[str, Any]]]:
    """The rows' raw attributes (as a ``/v1`` body would carry them), checked for
    unknown, missing and repeated tensors, datatypes and shapes. Values are checked
    against the model's schema later, by the same code as ``/v1``."""
    specs = {spec.name: spec for spec in manifest.inputs}
    seen: set[str] = set()
    for tensor in tensors:
        if tensor.name in seen:
            raise TensorError(tensor.name, "duplicate_input", "is given more than once")
        seen.add(tensor.name)
        if tensor.name not in specs and tensor.name not in IDENTITY_INPUTS:
            raise TensorError(
                tensor.name, "unknown_input", f"is not an input of model {manifest.name} (see its metadata)"
            )
    missing = [name for name in specs if name not in seen]
    if missing:
        raise TensorError(missing[0], "required", f"is a required input of model {manifest.name}; missing: {missing}")
    rows: int | None = None
    for tensor in tensors:
        n = _rows_of(tensor)
        if rows is None:
            rows = n
        elif n != rows:
            raise TensorError(tensor.name, "shape", f"has {n} row(s) but the other inputs have {rows}")
        declared = "BYTES" if tensor.name in IDENTITY_INPUTS else attribute_datatype(specs[tensor.name])
        if tensor.datatype not in _accepted(declared):
            raise TensorError(tensor.name, "datatype", f"must be {declared}, got {tensor.datatype}")
        _check_elements(tensor)
    assert rows is not None  # a model has at least one input
    out: list[dict[str, Any]] = [{} for _ in range(rows)]
    for tensor in tensors:
        if tensor.name in IDENTITY_INPUTS:
            continue
        for row, value in zip(out, tensor.values, strict=True):
            row[tensor.name] = _text(tensor, value) if tensor.datatype == "BYTES" else value
    return rows, out


def _identity(
    tensors: Sequence[InputTensor], parameters: Mapping[str, Any], name: str, rows: int
) -> list[str | None] | None:
    """Per-row values of ``request_id`` / ``subject_id`` from the BYTES input or the parameter."""
    tensor = next((t for t in tensors if t.name == name), None)
    given = parameters.get(name)
    if tensor is not None and given is not None:
        raise TensorError(name, "identity", f"give {name} as an input tensor or as a parameter, not both")
    if tensor is not None:
        return [_text(tensor, v) for v in tensor.values]
    if given is None:
        return None
    if not isinstance(given, str):
        raise TensorError(f"parameters.{name}", "type", "must be a string")
    if name == "subject_id":
        return [given] * rows
    ids = given.split(",")
    if len(ids) != rows:
        raise TensorError(
            "parameters.request_id",
            "count",
            f"names {len(ids)} request id(s) for {rows} row(s): give one per row, separated by commas",
        )
    return list(ids)


def decision_requests(
    model: str,
    version: str | None,
    rows: list[dict[str, Any]],
    tensors: Sequence[InputTensor],
    parameters: Mapping[str, Any],
    infer_id: str | None,
) -> list[DecisionRequest]:
    """The ``/v1`` request each row is: same fields, hence the same request hash and record."""
    n = len(rows)
    request_ids = _identity(tensors, parameters, "request_id", n)
    id_source = "request_id"
    if request_ids is None and infer_id:
        request_ids, id_source = [f"{infer_id}.{i}" for i in range(n)], "id"
    subjects = _identity(tensors, parameters, "subject_id", n)
    requests = []
    for i, attributes in enumerate(rows):
        fields: dict[str, Any] = {"model": model, "attributes": attributes}
        if version is not None:
            fields["version"] = version
        if request_ids is not None:
            fields["request_id"] = request_ids[i]
        if subjects is not None:
            fields["subject_id"] = subjects[i]
        try:
            requests.append(msgspec.convert(fields, DecisionRequest))
        except msgspec.ValidationError as exc:
            source = id_source if "$.request_id" in str(exc) else "subject_id"
            raise TensorError(source, "identity", f"row {i}: {exc}") from None
    return requests


def tensor_errors(errors: Sequence[tuple[int, FieldError]]) -> TensorError:
    """Schema errors of rows (row index, the /v1 field error) as one TensorError naming the
    first tensor and rule, and listing every broken rule."""
    parts = []
    for row, error in errors:
        name = error.field.removeprefix("attributes.")
        value = f", got {error.value!r}" if error.value is not None else ""
        parts.append(f"{name} (row {row}): {error.message}{value} (rule: {error.rule})")
    first = errors[0][1]
    return TensorError(first.field.removeprefix("attributes."), first.rule, "", detail="; ".join(parts))


def output_tensors(manifest: Manifest, decisions: Sequence[DecisionResponse]) -> list[OutputTensor]:
    """Every output of an infer response, built from the recorded decisions only."""
    n = len(decisions)
    names = [spec.name for spec in manifest.inputs]
    contributions = np.array(
        [[d.contributions.get(name, 0.0) for name in names] for d in decisions], dtype=np.float64
    ).reshape(n, len(names))
    reasons = [msgspec.json.encode(d.reasons) for d in decisions]
    receipts = [
        msgspec.json.encode(
            {
                **msgspec.structs.asdict(d.receipt),
                "model_sha256": d.model.sha256,
                "decided_at": d.decided_at,
                "idempotent_replay": d.idempotent_replay,
            }
        )
        for d in decisions
    ]
    return [
        OutputTensor("score", "FP64", (n,), np.array([d.score for d in decisions], dtype=np.float64)),
        OutputTensor("decision", "BYTES", (n,), [d.decision.encode() for d in decisions]),
        OutputTensor("contributions", "FP64", (n, len(names)), contributions),
        OutputTensor("base_value", "FP64", (n,), np.array([d.base_value for d in decisions], dtype=np.float64)),
        OutputTensor("reasons", "BYTES", (n,), reasons),
        OutputTensor("request_id", "BYTES", (n,), [d.request_id.encode() for d in decisions]),
        OutputTensor("receipt", "BYTES", (n,), receipts),
    ]


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> InputTensor:
    """An input tensor from its raw bytes (the binary tensor data extension, gRPC's
    ``raw_input_contents``): little-endian, row-major; BYTES elements each prefixed
    with their length as a 4-byte little-endian unsigned integer."""
    if datatype not in DATATYPES:
        raise TensorError(name, "datatype", f"{datatype!r} is not an Open Inference Protocol datatype")
    if any(d < 0 for d in shape):
        raise TensorError(name, "shape", f"dimensions must not be negative, got {list(shape)}")
    count = _count(shape)
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise TensorError(name, "binary_data", "a BYTES element's 4-byte length prefix is cut short")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise TensorError(name, "binary_data", "a BYTES element is shorter than its length prefix")
            values.append(bytes(raw[offset : offset + length]))
            offset += length
        return InputTensor(name, datatype, tuple(shape), values)
    dtype = np.dtype(_DTYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise TensorError(
            name,
            "binary_data",
            f"holds {len(raw)} byte(s); shape {list(shape)} of {datatype} needs {count * dtype.itemsize}",
        )
    array = np.frombuffer(raw, dtype=dtype)
    return InputTensor(name, datatype, tuple(shape), array.tolist())


def encode_raw(tensor: OutputTensor) -> bytes:
    """An output tensor's raw bytes (the inverse of :func:`decode_raw`)."""
    if tensor.datatype == "BYTES":
        assert isinstance(tensor.values, list)
        return b"".join(struct.pack("<I", len(v)) + v for v in tensor.values)
    assert isinstance(tensor.values, np.ndarray)
    return np.ascontiguousarray(tensor.values, dtype=np.dtype(_DTYPES[tensor.datatype])).tobytes()

"""Open Inference Protocol tensors <-> attributes, in process (the real manifest of the
reference model; no server): raw bytes round-trip, every tensor rule names the tensor and
the rule, rows become exactly the /v1 request bodies, and the checked-in gRPC code is what
the vendored .proto generates."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from verdict.gateway.api_models import DecisionRequest
from verdict.gateway.decisions import request_sha256
from verdict.gateway.inference_tensors import (
    InputTensor,
    OutputTensor,
    TensorError,
    attribute_datatype,
    decision_requests,
    decode_raw,
    encode_raw,
    row_attributes,
)

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest(german_model):
    return german_model.manifest


def _tensors(manifest, rows: list[dict]) -> list[InputTensor]:
    out = []
    for spec in manifest.inputs:
        kind = attribute_datatype(spec)
        values = [row[spec.name] for row in rows]
        out.append(InputTensor(spec.name, kind, (len(rows), 1), [v.encode() if kind == "BYTES" else v for v in values]))
    return out


def _rows(manifest, n: int) -> list[dict]:
    from verdict.gateway.datasets import load_dataset

    names = {spec.name for spec in manifest.inputs}
    return [{k: v for k, v in row.items() if k in names} for row in load_dataset(manifest.name).rows[:n]]


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP64", [0.1, -2.5e300, 3.0]),
        ("FP32", [0.5, -1.25, 7.0]),
        ("INT64", [1, -(2**62), 2**40]),
        ("UINT8", [0, 255, 7]),
        ("BOOL", [True, False, True]),
        ("BYTES", [b"A11", b"", "Zürich".encode()]),
    ],
)
def test_raw_tensors_round_trip(datatype, values):
    array = values if datatype == "BYTES" else np.array(values)
    raw = encode_raw(OutputTensor("t", datatype, (3,), array))
    decoded = decode_raw("t", datatype, [3], raw)
    assert decoded.values == values


def test_raw_bytes_that_do_not_fit_the_shape_name_the_tensor_and_the_rule():
    with pytest.raises(TensorError) as short:
        decode_raw("duration_months", "INT64", [2, 1], b"\0" * 12)
    assert short.value.tensor == "duration_months" and short.value.rule == "binary_data"
    with pytest.raises(TensorError) as cut:
        decode_raw("purpose", "BYTES", [1], struct.pack("<I", 10) + b"abc")
    assert cut.value.rule == "binary_data"
    with pytest.raises(TensorError) as unknown:
        decode_raw("purpose", "STRING", [1], b"")
    assert unknown.value.rule == "datatype"


def test_rows_become_the_v1_request_bodies(manifest):
    rows = _rows(manifest, 3)
    n, attributes = row_attributes(manifest, _tensors(manifest, rows))
    assert n == 3 and attributes == rows
    requests = decision_requests(manifest.name, None, attributes, [], {"subject_id": "p-1"}, "batch-7")
    assert [r.request_id for r in requests] == ["batch-7.0", "batch-7.1", "batch-7.2"]
    v1 = DecisionRequest(model=manifest.name, attributes=rows[1], request_id="batch-7.1", subject_id="p-1")
    assert request_sha256(requests[1]) == request_sha256(v1)  # same body, same hash: the same record
    named = decision_requests(manifest.name, None, attributes, [], {"request_id": "a,b,c"}, "ignored")
    assert [r.request_id for r in named] == ["a", "b", "c"]
    with pytest.raises(TensorError) as count:
        decision_requests(manifest.name, None, attributes, [], {"request_id": "a,b"}, None)
    assert count.value.rule == "count"
    with pytest.raises(TensorError) as pattern:
        decision_requests(manifest.name, None, attributes, [], {}, "no spaces allowed")
    assert pattern.value.tensor == "id"


def test_each_tensor_rule_names_the_tensor(manifest):
    good = _tensors(manifest, _rows(manifest, 2))
    category = next(t for t in good if t.datatype == "BYTES")
    integer = next(t for t in good if t.datatype == "INT64")
    cases = {
        "unknown_input": [*good, InputTensor("shoe_size", "INT64", (2,), [1, 2])],
        "duplicate_input": [*good, good[0]],
        "required": good[1:],
        "datatype": [t if t is not integer else InputTensor(t.name, "FP32", t.shape, [1.0, 2.0]) for t in good],
        "shape": [t if t is not category else InputTensor(t.name, "BYTES", (1, 2), t.values) for t in good],
    }
    for rule, tensors in cases.items():
        with pytest.raises(TensorError) as refused:
            row_attributes(manifest, tensors)
        assert refused.value.rule == rule, (rule, str(refused.value))
    rows_differ = [t if t is not integer else InputTensor(t.name, "INT64", (3, 1), [1, 2, 3]) for t in good]
    with pytest.raises(TensorError) as rows:
        row_attributes(manifest, rows_differ)
    assert rows.value.tensor == integer.name and "row" in str(rows.value)


def test_the_checked_in_grpc_messages_are_what_the_vendored_proto_generates(tmp_path):
    done = subprocess.run(
        ["bash", "scripts/generate_oip.sh", str(tmp_path)], cwd=PROJECT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi"]
    for name in ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (PROJECT / "gateway" / "oip" / name).read_bytes(), name

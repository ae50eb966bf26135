"""``explanation.fidelity`` on decision records (docs/audit-format.md §3, "Fidelity"):
the golden shapes per explainer algorithm, canonical round trips, the shape checks a
verifier makes, and records without the field (older ones) still decoding."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from tests.audit.golden import make_golden
from verdict.audit.records import (
    DecisionBody,
    Explanation,
    Fidelity,
    Record,
    RecordError,
    decode_record,
    record_bytes,
)


def _fidelity_records() -> list[Record]:
    vectors = json.loads(make_golden.VECTORS.read_text())["fidelity"]
    return [decode_record(v["canonical"].encode()) for v in vectors["records"]]


def _decisions() -> list[DecisionBody]:
    bodies = [r.body for r in _fidelity_records()[1:]]
    assert all(isinstance(b, DecisionBody) for b in bodies)
    return bodies  # type: ignore[return-value]


def test_golden_fidelity_chain_pins_one_decision_per_algorithm():
    """The writer's rules per algorithm, as the golden vectors hold them byte for byte."""
    certified, permutation, exact = (b.explanation for b in _decisions())
    assert certified.method.endswith("certified-per-reference-permutations")
    assert certified.fidelity == Fidelity(
        certified=True,
        evaluations=2913,
        pairs=24,
        z=3.0,
        error_bounds={"duration": 0.0078125, "credit_amount": 0.001953125, "age": 0.0, "purpose": 0.00390625},
    )
    assert permutation.method.endswith("antithetic-permutations")
    assert permutation.fidelity == Fidelity(certified=False, evaluations=913, pairs=1)
    assert exact.method.endswith("exact-enumeration")
    assert exact.fidelity is not None and exact.fidelity.pairs == 0 and exact.fidelity.z is None
    assert exact.fidelity.error_bounds == dict.fromkeys(exact.contributions, 0.0)
    for e in (certified, permutation, exact):
        assert e.fidelity is not None and e.fidelity.evaluations == e.budget["evaluations"]


def test_fidelity_bytes_false_is_written_empty_bounds_and_no_z_are_absent():
    certified, permutation, exact = (record_bytes(r) for r in _fidelity_records()[1:])
    assert b'"fidelity":{"certified":false,"evaluations":913,"pairs":1}' in permutation
    assert b'"fidelity":{"certified":true,"error_bounds":{"age":0,"credit_amount":0,' in exact
    assert b'"pairs":0}' in exact and b'"z"' not in exact
    assert b'"pairs":24,"z":3}' in certified  # an integral float is written as an integer (spec §2)


def test_fidelity_round_trips_canonically():
    for record in _fidelity_records():
        data = record_bytes(record)
        assert decode_record(data) == record and record_bytes(decode_record(data)) == data
    fidelity = Fidelity(certified=False, evaluations=7, pairs=3, error_bounds={"a": 1e-7, "b": 0.0}, z=1.959964)
    assert msgspec.json.decode(msgspec.json.encode(fidelity), type=Fidelity) == fidelity


def test_a_decision_without_fidelity_still_decodes_and_re_encodes_to_its_bytes():
    """Records written before the field: golden-1's explained decision and golden-0's."""
    vectors = json.loads(make_golden.VECTORS.read_text())
    for v in (vectors["explain_bucket"]["records"][1], vectors["records"][1]):
        record = decode_record(v["canonical"].encode())
        assert record.body.explanation.fidelity is None
        assert record_bytes(record) == v["canonical"].encode() and b"fidelity" not in record_bytes(record)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"error_bounds": {"duration": -0.5}}, "error_bounds"),
        ({"error_bounds": {"duration": math.nan}}, "error_bounds"),
        ({"error_bounds": {"duration": math.inf}}, "error_bounds"),
        ({"evaluations": 0}, "evaluations"),
        ({"pairs": -1}, "pairs"),
        ({"z": 0.0}, "z"),
        ({"z": math.nan}, "z"),
    ],
)
def test_invalid_fidelity_values_are_refused(change, message):
    valid = {"certified": True, "evaluations": 9, "pairs": 2, "error_bounds": {"duration": 0.5}, "z": 3.0}
    with pytest.raises(ValueError, match=message):
        Fidelity(**{**valid, **change})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f["error_bounds"].update(duration=-0.5), "error_bounds"),
        (lambda f: f.update(evaluations=0), "evaluations"),
        (lambda f: f.update(pairs=-1), "pairs"),
        (lambda f: f.update(z=0), "z"),
        (lambda f: f.update(certified="yes"), "certified"),
        (lambda f: f.pop("certified"), "certified"),
        (lambda f: f.update(extra=1), "extra"),
        (lambda f: f["error_bounds"].update(income=0.1), "without a contribution: income"),
    ],
)
def test_a_stored_record_with_a_malformed_fidelity_is_a_bad_record(mutate, message):
    """What the verifier's schema step (spec §10 step 3.2) refuses: the shape, not the certificate."""
    data = json.loads(record_bytes(_fidelity_records()[1]))
    mutate(data["body"]["explanation"]["fidelity"])
    with pytest.raises(RecordError, match=message):
        decode_record(json.dumps(data).encode())


def test_error_bounds_may_name_fewer_attributes_than_the_contributions():
    explanation = Explanation(
        method="m",
        output_space="probability",
        base_value=0.1,
        contributions={"a": 0.5, "b": -0.25},
        seed=1,
        fidelity=Fidelity(certified=False, evaluations=5, pairs=1, error_bounds={"a": 0.01}, z=2.0),
    )
    assert msgspec.json.decode(msgspec.json.encode(explanation), type=Explanation) == explanation
    with pytest.raises(ValueError, match="without a contribution: c"):
        msgspec.structs.replace(explanation, fidelity=Fidelity(True, 5, 0, {"a": 0.0, "c": 0.0}))

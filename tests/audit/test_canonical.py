"""Canonical JSON (RFC 8785): golden vectors and a property test against the
independent ``rfc8785`` package, for plain values and for whole audit records."""

from __future__ import annotations

import json
import math

import msgspec
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verdict.audit.canonical import CanonicalEncodingError, canonical_bytes, format_number
from verdict.audit.records import Record, record_bytes

# (value, canonical text): RFC 8785 appendix B numbers and section 3.2.3 key order.
GOLDEN = [
    (0.0, "0"),
    (-0.0, "0"),
    (1.0, "1"),
    (-1.5, "-1.5"),
    (1e-7, "1e-7"),
    (1e-6, "0.000001"),
    (1e-5, "0.00001"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (1e16, "10000000000000000"),
    (5e-324, "5e-324"),
    (-5e-324, "-5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (333333333.3333333, "333333333.3333333"),
    (9007199254740991, "9007199254740991"),
    (-9007199254740991, "-9007199254740991"),
    (0.1 + 0.2, "0.30000000000000004"),
    (123456789012345680000.0, "123456789012345680000"),
    (4.5, "4.5"),
    (2e-3, "0.002"),
    (0.000001234, "0.000001234"),
    (1.234e-7, "1.234e-7"),
    ([1, 1.0, "1"], '[1,1,"1"]'),
    (None, "null"),
    (True, "true"),
    ({"b": 1, "a": [False, None]}, '{"a":[false,null],"b":1}'),
    ('\u20ac$\u000f\nA\'B"\\\\"/', '"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'),
    (
        # RFC 8785 3.2.3: keys sorted by UTF-16 code units (the emoji sorts before U+FB33).
        {
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\U0001f600": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis",
        },
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
        '"\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
]


@pytest.mark.parametrize(("value", "text"), GOLDEN, ids=[repr(v)[:40] for v, _ in GOLDEN])
def test_golden_vectors(value, text):
    assert canonical_bytes(value) == text.encode("utf-8")
    assert rfc8785.dumps(value) == text.encode("utf-8")  # the vectors themselves are right


def test_format_number_matches_ecmascript_examples():
    assert format_number(100.0) == "100"
    assert format_number(1e-7) == "1e-7"
    assert format_number(-1e21) == "-1e+21"
    assert format_number(1.5e300) == "1.5e+300"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**53 + 1, -(2**53) - 1])
def test_values_without_canonical_form_are_refused(bad):
    with pytest.raises(CanonicalEncodingError):
        canonical_bytes({"field": [bad]})


def test_non_string_keys_are_refused():
    with pytest.raises((CanonicalEncodingError, TypeError)):
        canonical_bytes({"field": {1: "x"}})


json_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e-7, 1e21, 1e-6, 1e-5, 1e16, 1e15, 5e-324, 1.7976931348623157e308, 100.0, 0.1]
)
safe_ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | st.lists(
    # Text that looks like JSON structure: the fast path must never touch numbers inside strings.
    st.sampled_from([*'0123456789.-+e,:[]{}"\\ n', "null", "1.0", '\\"', "\U0001f600"]),
    max_size=10,
).map("".join)
keys = texts | st.sampled_from(["\U0001f600", "\ufb33", "\u20ac", "a", "A", "\U00010000x", "\uffff"])
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | json_floats | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_canonical_bytes_equals_rfc8785_package(value):
    assert canonical_bytes(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({'k\\"': 1.0, "v": "\\"}, '{"k\\\\\\"":1,"v":"\\\\"}'),
        ([None, 'a"b', -0.0, 12.0], '[null,"a\\"b",0,12]'),
        (["x:1.0,", 2.0, "[1e16]"], '["x:1.0,",2,"[1e16]"]'),
        ({"a": None, "b": [1.0]}, '{"a":null,"b":[1]}'),
        (
            {"seed": 9007199254740991, "digest": "1234567890123456789e5"},
            '{"digest":"1234567890123456789e5","seed":9007199254740991}',
        ),
    ],
)
def test_strings_that_look_like_numbers_are_left_alone(value, text):
    assert canonical_bytes(value) == text.encode() == rfc8785.dumps(value)


@pytest.mark.parametrize("bad", [{"a": None, "b": math.nan}, [None, math.inf], {"x": [None, -math.inf]}])
def test_non_finite_floats_beside_nulls_are_refused(bad):
    with pytest.raises(CanonicalEncodingError):
        canonical_bytes(bad)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonical_bytes_round_trip_is_stable(value):
    once = canonical_bytes(value)
    try:
        decoded = json.loads(once)
    except ValueError:
        return
    # JCS writes integral floats >= 2**53 as integer digits, which read back as
    # integers outside I-JSON; everything else must re-encode to the same bytes.
    try:
        again = canonical_bytes(decoded)
    except CanonicalEncodingError:
        assert any(abs(x) > 2**53 - 1 for x in _integers(decoded))
        return
    assert again == once


def _integers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _integers(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _integers(item)


# Whole records: build random decision records and compare with rfc8785.
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
stamp = st.just("2025-01-02T03:04:05.123456Z")
# Scalars that may be an int or a float must stay below 2**53 in magnitude:
# an integral float above it is written as integer digits (see docs/audit-format.md).
record_floats = st.floats(min_value=-(2.0**53) + 1, max_value=2.0**53 - 1) | st.sampled_from([0.0, -0.0, 1e-7, 0.5])
scalar = safe_ints | record_floats | texts
record_dicts = st.fixed_dictionaries(
    {
        "chain_id": st.sampled_from(["gateway-0", "g.1", "x_y"]),
        "seq": st.integers(0, 2**40),
        "prev_hash": hex64,
        "time": stamp,
        "key_id": st.just("ed25519:0123456789abcdef"),
        "body": st.fixed_dictionaries(
            {
                "kind": st.just("decision"),
                "request_id": texts,
                "request_sha256": hex64,
                "received_at": stamp,
                "decided_at": stamp,
                "model": st.fixed_dictionaries({"name": texts, "version": texts, "sha256": hex64}),
                "environment_sha256": hex64,
                "runtime": st.fixed_dictionaries(
                    {"device": texts, "dtype": texts, "bucket": st.integers(1, 4096), "threads": st.integers(1, 64)}
                ),
                "inputs": st.fixed_dictionaries(
                    {"kind": st.just("plain"), "attributes": st.dictionaries(keys, scalar, max_size=6)}
                ),
                "score": json_floats,
                "decision": texts,
                "explanation": st.fixed_dictionaries(
                    {
                        "method": texts,
                        "output_space": texts,
                        "base_value": json_floats,
                        "contributions": st.dictionaries(keys, json_floats, max_size=6),
                        "seed": safe_ints,
                    }
                ),
            }
        ),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_dicts)
def test_record_bytes_equal_rfc8785_of_the_record(data):
    record = msgspec.convert(data, Record)
    encoded = record_bytes(record)
    assert encoded == rfc8785.dumps(msgspec.to_builtins(record))
    # and decoding what is stored gives back the same bytes (what the verifier checks)
    assert record_bytes(msgspec.json.decode(encoded, type=Record)) == encoded

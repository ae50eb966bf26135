"""Report encoding details that the examiner's tools rely on."""

from __future__ import annotations

import math

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verdict.audit.canonical import canonical_bytes
from verdict.replay.report import canonical_json

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=6), inner, max_size=6),
    max_leaves=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(st.text(max_size=6), _json, max_size=4),
    st.lists(st.dictionaries(st.text(max_size=4), _json, max_size=3), min_size=33, max_size=36),
)
def test_composed_canonical_json_is_rfc8785(top, decisions):
    """The report is encoded member by member for speed; the bytes must be exactly canonical_bytes'."""
    value = {**top, "decisions": decisions, "nested": {"list": decisions, "x": 1.0}}
    assert canonical_json(value) == canonical_bytes(value)


def test_report_numbers_round_trip_exactly():
    value = {"decisions": [{"delta": 5.960464477539063e-08, "bound": 1e-06 + 1e-05 * 0.3, "zero": 0.0}] * 40}
    decoded = msgspec.json.decode(canonical_json(value))
    assert decoded["decisions"][0]["delta"] == 5.960464477539063e-08
    assert (
        decoded["decisions"][0]["bound"] == 1e-06 + 1e-05 * 0.3
        and not math.copysign(1, decoded["decisions"][0]["zero"]) < 0
    )


def test_manifest_key_matches_the_registry():
    from verdict.gateway.registry import manifest_key as registry_key
    from verdict.replay.batch import manifest_key

    assert manifest_key("german-credit", "1.0.0-tight") == registry_key("german-credit", "1.0.0-tight")
